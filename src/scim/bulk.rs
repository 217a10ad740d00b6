//! `/Bulk` (RFC 7644 §3.7): several operations in one request, with `bulkId` references
//! between them and `failOnErrors`. Operations run in order; an operation that refers to a
//! `bulkId` not yet created waits for a later pass, and one whose reference never resolves
//! fails with 409.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::service::{Projection, ScimService};
use crate::resources::{ScimGroup, ScimUser};

/// URN of bulk requests.
pub const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// URN of bulk responses.
pub const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
/// Most operations one bulk request may hold; announced in ServiceProviderConfig.
pub const MAX_OPERATIONS: usize = 1000;

/// One parsed operation.
struct Operation {
    method: String,
    bulk_id: Option<String>,
    path: String,
    data: Option<Value>,
    version: Option<String>,
}

fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn parse(body: &Value) -> Result<(Vec<Operation>, Option<usize>), ScimError> {
    let map = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a bulk request must be a JSON object"))?;
    if let Some(schemas) = field(map, "schemas").and_then(Value::as_array)
        && !schemas.iter().any(|s| s.as_str() == Some(BULK_REQUEST))
    {
        return Err(ScimError::invalid_value(format!(
            "a bulk request must use the schema {BULK_REQUEST}"
        )));
    }
    let fail_on_errors =
        match field(map, "failOnErrors") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                ScimError::invalid_value("failOnErrors must be a positive integer")
            })? as usize),
        };
    let ops = field(map, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a bulk request needs an Operations list"))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::status(
            413,
            format!("a bulk request may hold at most {MAX_OPERATIONS} operations"),
        ));
    }
    let mut parsed = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let op = op
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax(format!("operation {i} is not an object")))?;
        let text = |name: &str| field(op, name).and_then(Value::as_str).map(str::to_string);
        let method = text("method")
            .ok_or_else(|| ScimError::invalid_syntax(format!("operation {i} has no method")))?
            .to_ascii_uppercase();
        let path = text("path")
            .ok_or_else(|| ScimError::invalid_syntax(format!("operation {i} has no path")))?;
        let bulk_id = text("bulkId");
        if method == "POST" && bulk_id.is_none() {
            return Err(ScimError::invalid_syntax(format!(
                "operation {i} is a POST without a bulkId"
            )));
        }
        parsed.push(Operation {
            method,
            bulk_id,
            path,
            data: field(op, "data").cloned(),
            version: text("version"),
        });
    }
    Ok((parsed, fail_on_errors))
}

/// The bulkIds the operations declare; a request that declares one twice is refused, as a
/// reference to it could not be told apart.
fn declared_ids(ops: &[Operation]) -> Result<HashSet<String>, ScimError> {
    let mut declared = HashSet::new();
    for op in ops {
        if let Some(id) = &op.bulk_id
            && !declared.insert(id.clone())
        {
            return Err(ScimError::invalid_syntax(format!(
                "bulkId {id:?} is declared by more than one operation"
            )));
        }
    }
    Ok(declared)
}

/// The declared bulkIds a value or path refers to. A `bulkId:` string naming no declared
/// operation is an ordinary value.
fn references(value: &Value, declared: &HashSet<String>, found: &mut HashSet<String>) {
    match value {
        Value::String(s) => {
            if let Some(key) = s.strip_prefix("bulkId:").filter(|k| declared.contains(*k)) {
                found.insert(key.to_string());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, declared, found)),
        Value::Object(map) => map.values().for_each(|v| references(v, declared, found)),
        _ => {}
    }
}

fn references_of(op: &Operation, declared: &HashSet<String>) -> HashSet<String> {
    let mut found = HashSet::new();
    if let Some((_, key)) = op.path.split_once("/bulkId:")
        && declared.contains(key)
    {
        found.insert(key.to_string());
    }
    if let Some(data) = &op.data {
        references(data, declared, &mut found);
    }
    found
}

/// Replaces references to created bulkIds with their ids.
fn resolve(value: &Value, ids: &Map<String, Value>) -> Value {
    match value {
        Value::String(s) => match s.strip_prefix("bulkId:").and_then(|k| ids.get(k)) {
            Some(id) => id.clone(),
            None => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, ids)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve(v, ids)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn resolve_path(path: &str, ids: &Map<String, Value>) -> String {
    match path.split_once("/bulkId:") {
        Some((prefix, key)) => match ids.get(key).and_then(Value::as_str) {
            Some(id) => format!("{prefix}/{id}"),
            None => path.to_string(),
        },
        None => path.to_string(),
    }
}

impl ScimService {
    /// Runs a bulk request and returns the BulkResponse body.
    pub async fn bulk(&self, tenant: &str, body: &Value, base: &str) -> Result<Value, ScimError> {
        let (ops, fail_on_errors) = parse(body)?;
        let mut ids = Map::new();
        let mut results: Vec<Option<Value>> = vec![None; ops.len()];
        let mut errors = 0;
        let mut pending: Vec<usize> = (0..ops.len()).collect();
        let declared = declared_ids(&ops)?;
        'passes: while !pending.is_empty() {
            let mut waiting = Vec::new();
            // An operation that waits for a bulkId holds back every later one that refers to
            // the same bulkId, so operations on one resource keep their order.
            let mut held: HashSet<String> = HashSet::new();
            for &i in &pending {
                let op = &ops[i];
                let refs = references_of(op, &declared);
                if refs
                    .iter()
                    .any(|r| !ids.contains_key(r) || held.contains(r))
                {
                    held.extend(refs);
                    waiting.push(i);
                    continue;
                }
                let path = resolve_path(&op.path, &ids);
                let data = op.data.as_ref().map(|d| resolve(d, &ids));
                let outcome = self.bulk_one(tenant, op, &path, data.as_ref(), base).await;
                let mut result = json!({"method": op.method});
                if let Some(bulk_id) = &op.bulk_id {
                    result["bulkId"] = json!(bulk_id);
                }
                match outcome {
                    Ok((status, answer)) => {
                        result["status"] = json!(status.to_string());
                        if let Some(answer) = answer {
                            if let (Some(bulk_id), Some(id)) = (&op.bulk_id, answer.get("id")) {
                                ids.insert(bulk_id.clone(), id.clone());
                            }
                            result["location"] = answer
                                .pointer("/meta/location")
                                .cloned()
                                .unwrap_or(Value::Null);
                            result["version"] = answer
                                .pointer("/meta/version")
                                .cloned()
                                .unwrap_or(Value::Null);
                        }
                    }
                    Err(error) => {
                        errors += 1;
                        result["status"] = json!(error.status.to_string());
                        result["response"] = error.to_json();
                    }
                }
                results[i] = Some(result);
                if fail_on_errors.is_some_and(|limit| errors >= limit) {
                    break 'passes;
                }
            }
            if waiting.len() == pending.len() {
                for &i in &waiting {
                    let error = ScimError::status(
                        409,
                        "the operation refers to a bulkId that no operation creates, or the references form a cycle",
                    );
                    results[i] = Some(json!({
                        "method": ops[i].method,
                        "bulkId": ops[i].bulk_id,
                        "status": "409",
                        "response": error.to_json(),
                    }));
                }
                break;
            }
            pending = waiting;
        }
        Ok(json!({
            "schemas": [BULK_RESPONSE],
            "Operations": results.into_iter().flatten().collect::<Vec<_>>(),
        }))
    }

    async fn bulk_one(
        &self,
        tenant: &str,
        op: &Operation,
        path: &str,
        data: Option<&Value>,
        base: &str,
    ) -> Result<(u16, Option<Value>), ScimError> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let projection = Projection::default();
        let need_data =
            || data.ok_or_else(|| ScimError::invalid_syntax("the operation has no data"));
        let version = op.version.as_deref();
        match (op.method.as_str(), parts.as_slice()) {
            ("POST", ["Users"]) => {
                let a = self
                    .create::<ScimUser>(tenant, need_data()?, base, &projection)
                    .await?;
                Ok((201, Some(a.body)))
            }
            ("POST", ["Groups"]) => {
                let a = self
                    .create::<ScimGroup>(tenant, need_data()?, base, &projection)
                    .await?;
                Ok((201, Some(a.body)))
            }
            ("PUT", ["Users", id]) => {
                let a = self
                    .replace::<ScimUser>(tenant, id, need_data()?, version, base, &projection)
                    .await?;
                Ok((200, Some(a.body)))
            }
            ("PUT", ["Groups", id]) => {
                let a = self
                    .replace::<ScimGroup>(tenant, id, need_data()?, version, base, &projection)
                    .await?;
                Ok((200, Some(a.body)))
            }
            ("PATCH", ["Users", id]) => {
                let a = self
                    .patch::<ScimUser>(tenant, id, need_data()?, version, base, &projection)
                    .await?;
                Ok((200, Some(a.body)))
            }
            ("PATCH", ["Groups", id]) => {
                let a = self
                    .patch::<ScimGroup>(tenant, id, need_data()?, version, base, &projection)
                    .await?;
                Ok((200, Some(a.body)))
            }
            ("DELETE", ["Users", id]) => {
                self.delete_user(tenant, id, version, base).await?;
                Ok((204, None))
            }
            ("DELETE", ["Groups", id]) => {
                self.delete::<ScimGroup>(tenant, id, version).await?;
                Ok((204, None))
            }
            _ => Err(ScimError::invalid_path(format!(
                "{} {path} is not a supported bulk operation",
                op.method
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_inside_values_and_paths() {
        let mut ids = Map::new();
        ids.insert("u1".into(), json!("abc"));
        let data = json!({"members": [{"value": "bulkId:u1"}], "displayName": "g"});
        assert_eq!(
            resolve(&data, &ids),
            json!({"members": [{"value": "abc"}], "displayName": "g"})
        );
        assert_eq!(resolve_path("/Users/bulkId:u1", &ids), "/Users/abc");
    }

    #[test]
    fn only_declared_bulk_ids_are_references() {
        let declared: HashSet<String> = ["u1".to_string()].into();
        let mut found = HashSet::new();
        references(
            &json!({"title": "bulkId:notes", "m": ["bulkId:u1"]}),
            &declared,
            &mut found,
        );
        assert_eq!(found, ["u1".to_string()].into());
    }

    #[test]
    fn a_post_without_bulk_id_is_refused() {
        let body = json!({"schemas": [BULK_REQUEST], "Operations": [{"method": "POST", "path": "/Users", "data": {}}]});
        assert!(parse(&body).is_err());
    }
}

//! Tolerant reading of POST and PUT bodies into canonical resources, and the response-side
//! selection of `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9).
//!
//! Input is read the way identity providers really send it (names in any case, booleans
//! and integers as strings, one object where a list belongs, schema-qualified and dotted
//! keys); output is always the canonical RFC 7643 form. The coercion helpers here are
//! shared with the PATCH engine so that both paths store the same shapes.

use serde_json::{Map, Number, Value};

use super::error::ScimError;
use super::schema::{AttrPath, AttrType, AttributeDef, Mutability, ResourceSchema, Returned};

/// URN of the SCIM 1.x core schema, which some templates still list in `schemas`.
pub const SCIM1_CORE_SCHEMA_ID: &str = "urn:scim:schemas:core:1.0";

/// The Group attribute whose elements name members; its elements are keyed by `value`.
const MEMBERS: &str = "members";

/// Reads a POST or PUT body into a canonical resource of `schema`.
///
/// The result holds only client-writable attributes under their canonical names, with
/// `schemas` set to the core URN and the URNs of the extensions present. Read-only
/// attributes (`id`, `meta`, `groups`) and unknown attributes are ignored; a password is
/// accepted and dropped, and never appears in an error. Nulls and empty lists mean
/// unassigned. In a multi-valued attribute the first `primary: true` wins.
pub fn normalize_input(body: &Value, schema: &ResourceSchema) -> Result<Value, ScimError> {
    let Some(body) = body.as_object() else {
        return Err(ScimError::invalid_syntax(
            "the request body must be a JSON object",
        ));
    };

    // The declared schemas must name this resource type.
    validate_schemas(body, schema)?;

    // Fold every key onto its canonical attribute.
    let mut out = Map::new();
    for (key, value) in body {
        fold_key(&mut out, schema, key, value)?;
    }

    // Required attributes, then the schemas actually present.
    drop_empty_extensions(&mut out, schema);
    validate_required(&out, schema)?;
    set_schemas(&mut out, schema);
    Ok(Value::Object(out))
}

/// Applies `attributes` or `excludedAttributes` to a resource about to be returned.
///
/// With `attributes`, only the named attributes (and sub-attributes) appear, plus those
/// returned `always` (`id`) and `schemas`; otherwise every attribute returned by default
/// appears except the excluded ones, and `always` attributes cannot be excluded.
/// Attributes returned `never` never appear, and those returned on `request` only when
/// named. An extension object left empty is removed; `schemas` is kept as it is.
pub fn project(
    resource: &Value,
    schema: &ResourceSchema,
    attributes: &[AttrPath],
    excluded: &[AttrPath],
) -> Value {
    let Some(resource) = resource.as_object() else {
        return resource.clone();
    };
    let selection = Selection::new(schema, attributes, excluded);
    let mut out = Map::new();
    for (key, value) in resource {
        if key == "schemas" {
            out.insert(key.clone(), value.clone());
        } else if let Some(ext) = schema.find_extension(key) {
            let Some(inner) = value.as_object() else {
                continue;
            };
            let kept: Map<String, Value> = inner
                .iter()
                .filter_map(|(name, v)| {
                    let path = AttrPath {
                        schema: Some(ext.id.to_owned()),
                        attr: name.clone(),
                        sub: None,
                    };
                    selection
                        .project_attr(schema, &path, v)
                        .map(|v| (name.clone(), v))
                })
                .collect();
            if !kept.is_empty() {
                out.insert(key.clone(), Value::Object(kept));
            }
        } else if let Some(v) = selection.project_attr(schema, &AttrPath::new(key.as_str()), value)
        {
            out.insert(key.clone(), v);
        }
    }
    Value::Object(out)
}

/// Parses a comma-separated `attributes` or `excludedAttributes` query parameter.
///
/// Names unknown to the schema are ignored; a whole extension URN is kept (as
/// [`AttrPath::parse`] reads it) and selects the whole extension. An item that is not an
/// attribute path at all is a 400 `invalidValue`.
pub fn parse_attribute_list(s: &str, schema: &ResourceSchema) -> Result<Vec<AttrPath>, ScimError> {
    let mut paths = Vec::new();
    for item in s.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let Some(path) = AttrPath::parse(item) else {
            return Err(ScimError::invalid_value(format!(
                "`{item}` in the attribute list is not an attribute name"
            )));
        };
        if schema.is_extension_urn(item).is_some() || schema.resolve(&path).is_some() {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Checks `schemas`, when present: it must name the core schema of this resource type or
/// the SCIM 1.x core schema; other URNs beside it are ignored.
fn validate_schemas(body: &Map<String, Value>, schema: &ResourceSchema) -> Result<(), ScimError> {
    let Some((_, declared)) = body.iter().find(|(k, _)| k.eq_ignore_ascii_case("schemas")) else {
        return Ok(());
    };
    let names_core = |urn: &Value| {
        urn.as_str().is_some_and(|urn| {
            urn.eq_ignore_ascii_case(schema.core.id)
                || urn.eq_ignore_ascii_case(SCIM1_CORE_SCHEMA_ID)
        })
    };
    let ok = match declared {
        Value::Array(urns) => urns.iter().any(names_core),
        single => names_core(single),
    };
    if ok {
        Ok(())
    } else {
        Err(ScimError::invalid_value(format!(
            "unknown schemas: expected `{}`",
            schema.core.id
        )))
    }
}

/// Folds one top-level key of a body into `out`: an extension object, a core-schema
/// object, or an attribute name that may be dotted or schema-qualified.
fn fold_key(
    out: &mut Map<String, Value>,
    schema: &ResourceSchema,
    key: &str,
    value: &Value,
) -> Result<(), ScimError> {
    if key.eq_ignore_ascii_case("schemas") {
        return Ok(());
    }
    let qualifier = if let Some(ext) = schema.is_extension_urn(key) {
        Some(ext.id)
    } else if key.eq_ignore_ascii_case(schema.core.id) {
        Some(schema.core.id)
    } else {
        return fold_attribute(out, schema, None, key, value);
    };
    match value {
        Value::Null => Ok(()),
        Value::Object(inner) => {
            for (name, v) in inner {
                fold_attribute(out, schema, qualifier, name, v)?;
            }
            Ok(())
        }
        _ => Err(ScimError::invalid_value(format!(
            "`{key}` must be an object"
        ))),
    }
}

/// Folds one attribute, named relative to `qualifier` when the name has no URN of its own.
fn fold_attribute(
    out: &mut Map<String, Value>,
    schema: &ResourceSchema,
    qualifier: Option<&str>,
    key: &str,
    value: &Value,
) -> Result<(), ScimError> {
    let Some(mut path) = AttrPath::parse(key) else {
        return Ok(());
    };
    if path.schema.is_none() {
        path.schema = qualifier.map(str::to_owned);
    }
    let Some(resolved) = schema.resolve(&path) else {
        return Ok(());
    };
    let attr = resolved.attr;
    if !is_client_writable(attr) {
        return Ok(());
    }
    let container = match resolved.extension {
        Some(urn) => object_entry(out, urn),
        None => out,
    };
    match resolved.sub {
        None => {
            let Some(mut v) = coerce_value(attr, value, attr.name)? else {
                return Ok(());
            };
            if let Value::Array(items) = &mut v {
                enforce_single_primary(items, None);
            }
            match (container.get_mut(attr.name), v) {
                (Some(Value::Object(existing)), Value::Object(fields)) => existing.extend(fields),
                (_, v) => {
                    container.insert(attr.name.to_owned(), v);
                }
            }
        }
        Some(sub) => {
            if attr.multi_valued || !is_client_writable(sub) {
                return Ok(());
            }
            let label = format!("{}.{}", attr.name, sub.name);
            if let Some(v) = coerce_value(sub, value, &label)? {
                object_entry(container, attr.name).insert(sub.name.to_owned(), v);
            }
        }
    }
    Ok(())
}

/// Whether a client may set the attribute in a body; `password` is accepted but never
/// stored, and read-only attributes are ignored.
pub(crate) fn is_client_writable(attr: &AttributeDef) -> bool {
    attr.mutability != Mutability::ReadOnly && !is_discarded(attr)
}

/// Whether the server accepts the attribute but never keeps it (`password`).
pub(crate) fn is_discarded(attr: &AttributeDef) -> bool {
    attr.mutability == Mutability::WriteOnly || attr.returned == Returned::Never
}

/// Whether the attribute is a Group's member list, whose elements are keyed by `value`.
pub(crate) fn is_members(attr: &AttributeDef) -> bool {
    attr.multi_valued && attr.name == MEMBERS
}

/// The object under `key`, created (or replacing a non-object) when needed.
pub(crate) fn object_entry<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> &'a mut Map<String, Value> {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
        .expect("the slot was just made an object")
}

/// Coerces a client-sent value to the attribute's type, or `None` when it is unassigned
/// (null, an empty list, an object with no known sub-attributes).
///
/// A single value where a list is expected becomes a one-element list; booleans, integers
/// and decimals may arrive as strings; a bare string where a single-valued complex
/// attribute with a `value` is expected (a manager's id) is that `value`; sub-attribute
/// names are matched without regard to case and unknown ones dropped. Equal elements of
/// a list are kept once (members are equal when their `value` is). `label` names the
/// attribute in errors; the value itself is never quoted, so a secret cannot leak into a
/// response.
pub(crate) fn coerce_value(
    attr: &'static AttributeDef,
    value: &Value,
    label: &str,
) -> Result<Option<Value>, ScimError> {
    if !attr.multi_valued {
        return coerce_single(attr, value, label);
    }
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        if let Some(v) = coerce_single(attr, item, label)? {
            if !out.iter().any(|seen| same_element(attr, seen, &v)) {
                out.push(v);
            }
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// Coerces one value (an element of a multi-valued attribute, or a single value).
pub(crate) fn coerce_single(
    attr: &'static AttributeDef,
    value: &Value,
    label: &str,
) -> Result<Option<Value>, ScimError> {
    let coerced = match (attr.kind, value) {
        (_, Value::Null) => None,
        (AttrType::Complex, Value::Object(fields)) => return coerce_complex(attr, fields, label),
        // Entra sends a manager as its bare id.
        (AttrType::Complex, Value::String(id))
            if !attr.multi_valued && attr.find_sub("value").is_some() =>
        {
            let fields = Map::from_iter([("value".to_owned(), Value::String(id.clone()))]);
            return coerce_complex(attr, &fields, label);
        }
        (AttrType::Boolean, Value::Bool(_)) => Some(value.clone()),
        (AttrType::Boolean, Value::String(s)) => parse_bool(s).map(Value::Bool),
        (AttrType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Some(value.clone()),
        (AttrType::Integer, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
        (AttrType::Decimal, Value::Number(_)) => Some(value.clone()),
        (AttrType::Decimal, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number),
        (AttrType::Binary, Value::String(s)) => is_base64(s).then(|| value.clone()),
        (AttrType::String | AttrType::Reference | AttrType::DateTime, Value::String(s)) => {
            Some(Value::String(canonical_spelling(attr, s)))
        }
        _ => None,
    };
    match (coerced, value) {
        (None, Value::Null) => Ok(None),
        (Some(v), _) => Ok(Some(v)),
        (None, _) => Err(ScimError::invalid_value(format!(
            "attribute `{label}` must be {}",
            expected_kind(attr)
        ))),
    }
}

/// Coerces a complex value with [`coerce_fields`]; a member must name a `value`.
fn coerce_complex(
    attr: &'static AttributeDef,
    fields: &Map<String, Value>,
    label: &str,
) -> Result<Option<Value>, ScimError> {
    let out = coerce_fields(attr, fields, label)?;
    let has_id = out
        .get("value")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty());
    if is_members(attr) && !has_id {
        return Err(ScimError::invalid_value(format!(
            "each element of `{label}` must have a string `value`"
        )));
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// The sub-attributes of a complex value under canonical names, with coerced values;
/// unknown, read-only and null sub-attributes are dropped, and so is a member `type`
/// other than the canonical ones.
pub(crate) fn coerce_fields(
    attr: &'static AttributeDef,
    fields: &Map<String, Value>,
    label: &str,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (key, value) in fields {
        let Some(sub) = attr.find_sub(key) else {
            continue;
        };
        if !is_client_writable(sub) {
            continue;
        }
        let sub_label = format!("{label}.{}", sub.name);
        let Some(v) = coerce_value(sub, value, &sub_label)? else {
            continue;
        };
        let is_canonical = |s: &str| sub.canonical_values.contains(&s);
        if is_members(attr)
            && !sub.canonical_values.is_empty()
            && !v.as_str().is_some_and(is_canonical)
        {
            continue;
        }
        out.insert(sub.name.to_owned(), v);
    }
    Ok(out)
}

/// `true` or `false` in any case, as Entra sends booleans.
fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A canonical value in its canonical spelling (`Work` becomes `work`); other strings as sent.
fn canonical_spelling(attr: &AttributeDef, s: &str) -> String {
    attr.canonical_values
        .iter()
        .find(|canonical| canonical.eq_ignore_ascii_case(s))
        .map_or_else(|| s.to_owned(), |canonical| (*canonical).to_owned())
}

/// Whether a string is base64 (RFC 4648, standard alphabet, padded), as SCIM binary
/// values are; clients that decode them fail on anything else.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() % 4 == 0
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// How the type of an attribute reads in an error detail.
fn expected_kind(attr: &AttributeDef) -> &'static str {
    match attr.kind {
        AttrType::String | AttrType::DateTime | AttrType::Reference => "a string",
        AttrType::Binary => "a base64 string",
        AttrType::Boolean => "a boolean",
        AttrType::Integer => "an integer",
        AttrType::Decimal => "a number",
        AttrType::Complex => "an object",
    }
}

/// Whether two elements of a multi-valued attribute are the same element: members with the
/// same `value`, other elements when equal.
pub(crate) fn same_element(attr: &AttributeDef, a: &Value, b: &Value) -> bool {
    if is_members(attr) {
        return a.get("value").is_some() && a.get("value") == b.get("value");
    }
    a == b
}

/// Leaves at most one element with `primary: true` (RFC 7643 §2.4): the one at `preferred`
/// when it is primary, the first primary otherwise; the others get `primary: false`.
pub(crate) fn enforce_single_primary(items: &mut [Value], preferred: Option<usize>) {
    let is_primary = |v: &Value| v.get("primary") == Some(&Value::Bool(true));
    let winner = preferred
        .filter(|&i| items.get(i).is_some_and(is_primary))
        .or_else(|| items.iter().position(is_primary));
    for (i, item) in items.iter_mut().enumerate() {
        if Some(i) != winner && is_primary(item) {
            if let Some(fields) = item.as_object_mut() {
                fields.insert("primary".to_owned(), Value::Bool(false));
            }
        }
    }
}

/// Removes extension objects that hold no attributes.
pub(crate) fn drop_empty_extensions(resource: &mut Map<String, Value>, schema: &ResourceSchema) {
    for ext in schema.extensions {
        if resource
            .get(ext.id)
            .is_some_and(|v| v.as_object().is_none_or(Map::is_empty))
        {
            resource.remove(ext.id);
        }
    }
}

/// Checks that every required, client-writable attribute holds a value (a string one that
/// is not blank).
pub(crate) fn validate_required(
    resource: &Map<String, Value>,
    schema: &ResourceSchema,
) -> Result<(), ScimError> {
    let core = schema
        .core
        .attributes
        .iter()
        .map(|attr| (resource.get(attr.name), attr));
    let extensions = schema.extensions.iter().flat_map(|ext| {
        let container = resource.get(ext.id);
        ext.attributes
            .iter()
            .map(move |attr| (container.and_then(|c| c.get(attr.name)), attr))
    });
    for (value, attr) in core.chain(extensions) {
        if !attr.required || attr.mutability == Mutability::ReadOnly {
            continue;
        }
        let present = match value {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(Value::Array(items)) => !items.is_empty(),
            Some(_) => true,
        };
        if !present {
            return Err(ScimError::invalid_value(format!(
                "attribute `{}` is required",
                attr.name
            )));
        }
    }
    Ok(())
}

/// Sets `schemas` to the core URN and the URNs of the extensions present, in schema order.
pub(crate) fn set_schemas(resource: &mut Map<String, Value>, schema: &ResourceSchema) {
    let urns: Vec<Value> = std::iter::once(schema.core.id)
        .chain(
            schema
                .extensions
                .iter()
                .map(|ext| ext.id)
                .filter(|urn| resource.contains_key(*urn)),
        )
        .map(Value::from)
        .collect();
    resource.insert("schemas".to_owned(), Value::Array(urns));
}

/// The attributes a response asks for or leaves out, resolved against the schema.
struct Selection {
    /// Whether `attributes` was given (then only what it names is returned).
    only_requested: bool,
    requested: Vec<Selected>,
    excluded: Vec<Selected>,
}

/// One resolved entry of an attribute list.
#[derive(Debug, PartialEq, Eq)]
enum Selected {
    /// Every attribute of an extension.
    Extension(&'static str),
    /// An attribute (with the extension that holds it), whole or one sub-attribute.
    Attr {
        extension: Option<&'static str>,
        attr: &'static str,
        sub: Option<&'static str>,
    },
}

impl Selection {
    fn new(schema: &ResourceSchema, attributes: &[AttrPath], excluded: &[AttrPath]) -> Self {
        let resolve_all = |paths: &[AttrPath]| -> Vec<Selected> {
            paths
                .iter()
                .filter_map(|path| resolve_selected(schema, path))
                .collect()
        };
        Self {
            only_requested: !attributes.is_empty(),
            requested: resolve_all(attributes),
            excluded: resolve_all(excluded),
        }
    }

    /// The value to return for one attribute of the resource, or `None` to leave it out.
    fn project_attr(
        &self,
        schema: &ResourceSchema,
        path: &AttrPath,
        value: &Value,
    ) -> Option<Value> {
        let Some(resolved) = schema.resolve(path) else {
            return (!self.only_requested).then(|| value.clone());
        };
        let (ext, attr) = (resolved.extension, resolved.attr);
        match attr.returned {
            Returned::Never => return None,
            Returned::Always => return Some(value.clone()),
            Returned::Default | Returned::Request => {}
        }
        if self.only_requested {
            if names_whole(&self.requested, ext, attr.name) {
                return keep_subs(attr, value, |sub| sub.returned != Returned::Never);
            }
            let subs: Vec<&str> = named_subs(&self.requested, ext, attr.name).collect();
            if subs.is_empty() {
                return None;
            }
            return keep_subs(attr, value, |sub| {
                sub.returned == Returned::Always || subs.contains(&sub.name)
            });
        }
        if attr.returned == Returned::Request || names_whole(&self.excluded, ext, attr.name) {
            return None;
        }
        let dropped: Vec<&str> = named_subs(&self.excluded, ext, attr.name).collect();
        keep_subs(attr, value, |sub| match sub.returned {
            Returned::Always => true,
            Returned::Never | Returned::Request => false,
            Returned::Default => !dropped.contains(&sub.name),
        })
    }
}

/// Resolves one entry of an attribute list; `None` for names the schema does not know.
fn resolve_selected(schema: &ResourceSchema, path: &AttrPath) -> Option<Selected> {
    if let (Some(prefix), None) = (&path.schema, &path.sub) {
        if let Some(ext) = schema.is_extension_urn(&format!("{prefix}:{}", path.attr)) {
            return Some(Selected::Extension(ext.id));
        }
    }
    let resolved = schema.resolve(path)?;
    Some(Selected::Attr {
        extension: resolved.extension,
        attr: resolved.attr.name,
        sub: resolved.sub.map(|sub| sub.name),
    })
}

/// Whether the list names the whole attribute (or its whole extension).
fn names_whole(list: &[Selected], ext: Option<&str>, attr: &str) -> bool {
    list.iter().any(|selected| match selected {
        Selected::Extension(urn) => ext == Some(*urn),
        Selected::Attr {
            extension,
            attr: name,
            sub: None,
        } => *extension == ext && *name == attr,
        Selected::Attr { .. } => false,
    })
}

/// The sub-attributes of the attribute that the list names.
fn named_subs<'a>(
    list: &'a [Selected],
    ext: Option<&'a str>,
    attr: &'a str,
) -> impl Iterator<Item = &'static str> + 'a {
    list.iter().filter_map(move |selected| match selected {
        Selected::Attr {
            extension,
            attr: name,
            sub: Some(sub),
        } if *extension == ext && *name == attr => Some(*sub),
        _ => None,
    })
}

/// The value with only the sub-attributes that `keep` accepts (each element of a list);
/// `None` when nothing is left. Values of simple attributes pass unchanged.
fn keep_subs(
    attr: &AttributeDef,
    value: &Value,
    keep: impl Fn(&AttributeDef) -> bool,
) -> Option<Value> {
    if attr.kind != AttrType::Complex {
        return Some(value.clone());
    }
    let filter_object = |v: &Value| -> Option<Value> {
        let fields = v.as_object()?;
        let kept: Map<String, Value> = fields
            .iter()
            .filter(|(name, _)| attr.find_sub(name).is_none_or(&keep))
            .map(|(name, v)| (name.clone(), v.clone()))
            .collect();
        (!kept.is_empty()).then_some(Value::Object(kept))
    };
    match value {
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(filter_object).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => filter_object(other),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scim::error::ScimType;
    use crate::scim::schema::{GROUP, USER};

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn attrs(s: &str, schema: &ResourceSchema) -> Vec<AttrPath> {
        parse_attribute_list(s, schema).expect("test attribute lists are valid")
    }

    fn error_of(body: Value, schema: &ResourceSchema) -> (Option<ScimType>, String) {
        let err = normalize_input(&body, schema).expect_err("the body is invalid");
        assert_eq!(err.status, 400);
        (err.scim_type, err.detail)
    }

    #[test]
    fn a_plain_user_comes_out_unchanged_but_with_schemas() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@example.com",
            "name": {"givenName": "Ada", "familyName": "One"},
            "active": true,
        });
        assert_eq!(normalize_input(&body, &USER).expect("valid"), body);
    }

    #[test]
    fn read_only_and_secret_attributes_are_dropped() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "abc", "userName": "okta@example.com", "groups": [],
            "meta": {"resourceType": "User"}, "password": "not-a-real-secret-1",
            "externalId": "00u1", "locale": "en-US",
        });
        assert_eq!(
            normalize_input(&body, &USER).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "okta@example.com", "externalId": "00u1", "locale": "en-US",
            })
        );
    }

    #[test]
    fn names_in_any_case_and_string_booleans_become_canonical() {
        let body = json!({
            "UserName": "ent@example.com", "Active": "False", "DISPLAYNAME": "Eve",
            "Emails": [{"Value": "e@example.com", "Type": "Work", "Primary": "True"}],
        });
        assert_eq!(
            normalize_input(&body, &USER).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "ent@example.com", "active": false, "displayName": "Eve",
                "emails": [{"value": "e@example.com", "type": "work", "primary": true}],
            })
        );
    }

    #[test]
    fn a_onelogin_template_with_a_single_email_and_the_old_schema_is_accepted() {
        let body = json!({
            "schemas": ["urn:scim:schemas:core:1.0"],
            "userName": "ol@example.com", "active": "true",
            "emails": {"value": "ol@example.com", "primary": true},
        });
        assert_eq!(
            normalize_input(&body, &USER).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "ol@example.com", "active": true,
                "emails": [{"value": "ol@example.com", "primary": true}],
            })
        );
    }

    #[test]
    fn the_entra_create_keeps_the_extension_and_drops_empty_lists() {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "externalId": "ent-1", "userName": "ent-1@example.com", "active": true,
            "displayName": "Eve Ent",
            "emails": [{"primary": true, "type": "work", "value": "ent-1@example.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "Eve Ent", "familyName": "Ent", "givenName": "Eve"},
            "roles": [],
            ENTERPRISE: {"department": "Finance", "employeeNumber": "701"},
        });
        assert_eq!(
            normalize_input(&body, &USER).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "externalId": "ent-1", "userName": "ent-1@example.com", "active": true,
                "displayName": "Eve Ent",
                "emails": [{"primary": true, "type": "work", "value": "ent-1@example.com"}],
                "name": {"formatted": "Eve Ent", "familyName": "Ent", "givenName": "Eve"},
                ENTERPRISE: {"department": "Finance", "employeeNumber": "701"},
            })
        );
    }

    #[test]
    fn qualified_and_dotted_keys_are_folded_in() {
        let body = json!({
            "urn:ietf:params:scim:schemas:core:2.0:User:userName": "q@example.com",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value": "m1",
            "name.givenName": "Q",
            "name": {"familyName": "Ux"},
        });
        assert_eq!(
            normalize_input(&body, &USER).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "userName": "q@example.com",
                "name": {"givenName": "Q", "familyName": "Ux"},
                ENTERPRISE: {"employeeNumber": "42", "manager": {"value": "m1"}},
            })
        );
    }

    #[test]
    fn a_manager_sent_as_a_bare_id_becomes_its_value() {
        let body = json!({"userName": "m@example.com", ENTERPRISE: {"manager": "boss-1"}});
        assert_eq!(
            normalize_input(&body, &USER).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "userName": "m@example.com",
                ENTERPRISE: {"manager": {"value": "boss-1"}},
            })
        );
    }

    #[test]
    fn nulls_and_unknown_attributes_are_ignored() {
        let body = json!({
            "userName": "n@example.com", "title": null, "shoeSize": 44,
            "name": {"givenName": null, "nickname": "x"},
            ENTERPRISE: null,
        });
        assert_eq!(
            normalize_input(&body, &USER).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "n@example.com",
            })
        );
    }

    #[test]
    fn only_the_first_primary_stays_primary() {
        let body = json!({
            "userName": "p@example.com",
            "emails": [
                {"value": "a@example.com", "primary": false},
                {"value": "b@example.com", "primary": true},
                {"value": "c@example.com", "primary": "true"},
            ],
        });
        assert_eq!(
            normalize_input(&body, &USER).expect("valid")["emails"],
            json!([
                {"value": "a@example.com", "primary": false},
                {"value": "b@example.com", "primary": true},
                {"value": "c@example.com", "primary": false},
            ])
        );
    }

    #[test]
    fn an_entra_group_with_a_foreign_schema_and_null_refs_is_accepted() {
        let body = json!({
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:Group",
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
            ],
            "externalId": "grp-1", "displayName": "finance", "meta": {"resourceType": "Group"},
            "members": [
                {"$ref": null, "value": "u1"},
                {"value": "u2", "type": "user", "display": "Two", "$ref": "../Users/u2"},
                {"value": "u3", "type": "Robot"},
                {"value": "u1"},
            ],
        });
        assert_eq!(
            normalize_input(&body, &GROUP).expect("valid"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "externalId": "grp-1", "displayName": "finance",
                "members": [
                    {"value": "u1"},
                    {"value": "u2", "type": "User", "display": "Two", "$ref": "../Users/u2"},
                    {"value": "u3"},
                ],
            })
        );
    }

    #[test]
    fn a_member_without_a_string_value_is_rejected() {
        for member in [json!({"display": "x"}), json!({"value": 5}), json!("u1")] {
            let (scim_type, _) = error_of(json!({"displayName": "g", "members": [member]}), &GROUP);
            assert_eq!(scim_type, Some(ScimType::InvalidValue));
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_invalid_syntax() {
        assert_eq!(error_of(json!([1]), &USER).0, Some(ScimType::InvalidSyntax));
    }

    #[test]
    fn schemas_that_do_not_name_the_resource_type_are_rejected() {
        for schemas in [
            json!([]),
            json!([GROUP.core.id]),
            json!([ENTERPRISE]),
            json!(7),
        ] {
            let (scim_type, detail) = error_of(json!({"schemas": schemas, "userName": "u"}), &USER);
            assert_eq!(scim_type, Some(ScimType::InvalidValue));
            assert!(detail.starts_with("unknown schemas"), "{detail}");
        }
    }

    #[test]
    fn a_missing_or_blank_required_attribute_is_named() {
        let cases = [
            (json!({"active": true}), &USER, "userName"),
            (json!({"userName": "  "}), &USER, "userName"),
            (json!({"members": []}), &GROUP, "displayName"),
        ];
        for (body, schema, name) in cases {
            let (scim_type, detail) = error_of(body, schema);
            assert_eq!(scim_type, Some(ScimType::InvalidValue));
            assert_eq!(detail, format!("attribute `{name}` is required"));
        }
    }

    #[test]
    fn values_that_cannot_be_coerced_are_rejected_by_name() {
        let cases = [
            (
                json!({"userName": "u", "active": "maybe"}),
                "attribute `active` must be a boolean",
            ),
            (
                json!({"userName": 5}),
                "attribute `userName` must be a string",
            ),
            (
                json!({"userName": "u", "emails": "x"}),
                "attribute `emails` must be an object",
            ),
            (
                json!({"userName": "u", "emails": [{"value": "a", "primary": "yes"}]}),
                "attribute `emails.primary` must be a boolean",
            ),
            (
                json!({"userName": "u", ENTERPRISE: "x"}),
                "`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User` must be an object",
            ),
        ];
        for (body, expected) in cases {
            let (scim_type, detail) = error_of(body, &USER);
            assert_eq!(scim_type, Some(ScimType::InvalidValue));
            assert_eq!(detail, expected);
        }
    }

    #[test]
    fn a_password_never_appears_in_an_error() {
        let body = json!({"userName": "u", "password": {"secret": "hunter2"}, "active": "maybe"});
        let (_, detail) = error_of(body, &USER);
        assert!(!detail.contains("hunter2") && !detail.contains("password"));
    }

    fn stored_user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "id": "u1",
            "userName": "ada@example.com",
            "name": {"givenName": "Ada", "familyName": "One"},
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
            "active": true,
            "meta": {"resourceType": "User", "version": "W/\"1\""},
            ENTERPRISE: {"employeeNumber": "7", "department": "R&D"},
        })
    }

    #[test]
    fn no_selection_returns_every_default_attribute() {
        assert_eq!(project(&stored_user(), &USER, &[], &[]), stored_user());
    }

    #[test]
    fn attributes_keep_only_the_named_ones_plus_id_and_schemas() {
        let selected = attrs("UserName,name.givenName,emails.value", &USER);
        assert_eq!(
            project(&stored_user(), &USER, &selected, &[]),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "id": "u1",
                "userName": "ada@example.com",
                "name": {"givenName": "Ada"},
                "emails": [{"value": "ada@example.com"}],
            })
        );
    }

    #[test]
    fn extension_attributes_are_selected_by_qualified_name_or_whole_urn() {
        let one = attrs(&format!("{ENTERPRISE}:employeeNumber"), &USER);
        assert_eq!(
            project(&stored_user(), &USER, &one, &[]),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "id": "u1",
                ENTERPRISE: {"employeeNumber": "7"},
            })
        );
        let whole = attrs(ENTERPRISE, &USER);
        assert_eq!(
            project(&stored_user(), &USER, &whole, &[])[ENTERPRISE],
            json!({"employeeNumber": "7", "department": "R&D"})
        );
    }

    #[test]
    fn excluded_attributes_drop_all_but_the_always_returned() {
        let excluded = attrs(
            &format!(
                "id,emails,name.familyName,meta,{ENTERPRISE}:employeeNumber,{ENTERPRISE}:department"
            ),
            &USER,
        );
        assert_eq!(
            project(&stored_user(), &USER, &[], &excluded),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "id": "u1",
                "userName": "ada@example.com",
                "name": {"givenName": "Ada"},
                "active": true,
            })
        );
    }

    #[test]
    fn excluding_members_leaves_the_rest_of_the_group() {
        let group = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1", "displayName": "finance", "members": [{"value": "u1"}],
        });
        assert_eq!(
            project(&group, &GROUP, &[], &attrs("members", &GROUP)),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g1", "displayName": "finance",
            })
        );
    }

    #[test]
    fn a_password_is_never_projected_even_when_asked_for() {
        let user = json!({"id": "u1", "userName": "u", "password": "x"});
        assert_eq!(
            project(&user, &USER, &attrs("password,userName", &USER), &[]),
            json!({"id": "u1", "userName": "u"})
        );
        assert_eq!(
            project(&user, &USER, &[], &[]),
            json!({"id": "u1", "userName": "u"})
        );
    }

    #[test]
    fn attribute_lists_ignore_unknown_names_and_reject_malformed_ones() {
        assert_eq!(
            parse_attribute_list(" userName , shoeSize,,name.givenName", &USER),
            Ok(vec![
                AttrPath::new("userName"),
                AttrPath {
                    schema: None,
                    attr: "name".into(),
                    sub: Some("givenName".into())
                },
            ])
        );
        assert_eq!(parse_attribute_list("", &USER), Ok(vec![]));
        let err = parse_attribute_list("emails[type eq \"work\"]", &USER)
            .expect_err("a filter is not an attribute name");
        assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
    }
}

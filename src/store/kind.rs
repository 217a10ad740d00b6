//! What the store needs to know about each SCIM resource kind: its schema, its identifiers
//! and how its custom resource maps to and from SCIM JSON.

use std::fmt::Debug;

use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::resources::{
    CREATED_ANNOTATION, ID_LABEL, LAST_MODIFIED_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL,
    ScimGroup, ScimGroupSpec, ScimUser, ScimUserSpec,
};
use crate::scim::error::ScimError;
use crate::scim::schema::{ENTERPRISE_USER_SCHEMA_ID, GROUP, ResourceSchema, USER};

/// A SCIM resource kind stored as a namespaced custom resource.
pub trait ScimKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kube spec type.
    type Spec: Clone + Debug + PartialEq + Send + Sync;

    /// SCIM resource type name (`User`, `Group`).
    const RESOURCE_TYPE: &'static str;
    /// Endpoint below the base URL (`Users`, `Groups`).
    const ENDPOINT: &'static str;
    /// Prefix of object names, so that kinds are told apart at a glance.
    const NAME_PREFIX: &'static str;
    /// Name of the unique attribute, for messages.
    const UNIQUE_ATTRIBUTE: &'static str;

    /// The SCIM schema of this kind.
    fn schema() -> &'static ResourceSchema;
    /// Builds an object.
    fn from_parts(meta: kube::api::ObjectMeta, spec: Self::Spec) -> Self;
    /// The spec.
    fn spec(&self) -> &Self::Spec;
    /// The SCIM id.
    fn scim_id(&self) -> &str;
    /// The value of the unique attribute (userName, displayName) as sent.
    fn unique_value(&self) -> &str;
    /// The externalId.
    fn external_id(&self) -> Option<&str>;
    /// SCIM attributes of the spec, without `id`, `meta` and `schemas`.
    fn spec_to_scim(spec: &Self::Spec) -> Value;
    /// Builds a spec from normalized SCIM attributes and an id.
    fn spec_from_scim(id: &str, value: &Value) -> Result<Self::Spec, ScimError>;
    /// The unique value of a spec.
    fn spec_unique_value(spec: &Self::Spec) -> &str;
    /// Member ids of a group; empty for users.
    fn member_ids(&self) -> Vec<&str> {
        Vec::new()
    }
}

impl ScimKind for ScimUser {
    type Spec = ScimUserSpec;
    const RESOURCE_TYPE: &'static str = "User";
    const ENDPOINT: &'static str = "Users";
    const NAME_PREFIX: &'static str = "u";
    const UNIQUE_ATTRIBUTE: &'static str = "userName";

    fn schema() -> &'static ResourceSchema {
        &USER
    }

    fn from_parts(meta: kube::api::ObjectMeta, spec: ScimUserSpec) -> Self {
        ScimUser {
            metadata: meta,
            spec,
            status: None,
        }
    }

    fn spec(&self) -> &ScimUserSpec {
        &self.spec
    }

    fn scim_id(&self) -> &str {
        &self.spec.id
    }

    fn unique_value(&self) -> &str {
        &self.spec.user_name
    }

    fn external_id(&self) -> Option<&str> {
        self.spec.external_id.as_deref()
    }

    fn spec_to_scim(spec: &ScimUserSpec) -> Value {
        let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
        let Some(map) = value.as_object_mut() else {
            return json!({});
        };
        map.remove("id");
        if let Some(enterprise) = map.remove("enterprise") {
            map.insert(ENTERPRISE_USER_SCHEMA_ID.to_string(), enterprise);
        }
        value
    }

    fn spec_from_scim(id: &str, value: &Value) -> Result<ScimUserSpec, ScimError> {
        let mut map = value.as_object().cloned().unwrap_or_default();
        if let Some(enterprise) = map.remove(ENTERPRISE_USER_SCHEMA_ID) {
            map.insert("enterprise".to_string(), enterprise);
        }
        strip_server_attributes(&mut map);
        map.insert("id".to_string(), json!(id));
        serde_json::from_value(Value::Object(map))
            .map_err(|e| ScimError::invalid_value(format!("the user is not valid: {e}")))
    }

    fn spec_unique_value(spec: &ScimUserSpec) -> &str {
        &spec.user_name
    }
}

impl ScimKind for ScimGroup {
    type Spec = ScimGroupSpec;
    const RESOURCE_TYPE: &'static str = "Group";
    const ENDPOINT: &'static str = "Groups";
    const NAME_PREFIX: &'static str = "g";
    const UNIQUE_ATTRIBUTE: &'static str = "displayName";

    fn schema() -> &'static ResourceSchema {
        &GROUP
    }

    fn from_parts(meta: kube::api::ObjectMeta, spec: ScimGroupSpec) -> Self {
        ScimGroup {
            metadata: meta,
            spec,
            status: None,
        }
    }

    fn spec(&self) -> &ScimGroupSpec {
        &self.spec
    }

    fn scim_id(&self) -> &str {
        &self.spec.id
    }

    fn unique_value(&self) -> &str {
        &self.spec.display_name
    }

    fn external_id(&self) -> Option<&str> {
        self.spec.external_id.as_deref()
    }

    fn spec_to_scim(spec: &ScimGroupSpec) -> Value {
        let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
        let Some(map) = value.as_object_mut() else {
            return json!({});
        };
        map.remove("id");
        // Members are always listed, even when empty, so clients see an empty group.
        map.entry("members").or_insert_with(|| json!([]));
        value
    }

    fn spec_from_scim(id: &str, value: &Value) -> Result<ScimGroupSpec, ScimError> {
        let mut map = value.as_object().cloned().unwrap_or_default();
        strip_server_attributes(&mut map);
        if let Some(Value::Array(members)) = map.get_mut("members") {
            for member in members.iter_mut() {
                if let Some(m) = member.as_object_mut() {
                    m.remove("$ref");
                }
            }
        }
        map.insert("id".to_string(), json!(id));
        serde_json::from_value(Value::Object(map))
            .map_err(|e| ScimError::invalid_value(format!("the group is not valid: {e}")))
    }

    fn spec_unique_value(spec: &ScimGroupSpec) -> &str {
        &spec.display_name
    }

    fn member_ids(&self) -> Vec<&str> {
        self.spec.members.iter().map(|m| m.value.as_str()).collect()
    }
}

fn strip_server_attributes(map: &mut Map<String, Value>) {
    for key in ["schemas", "meta", "groups", "password"] {
        map.remove(key);
    }
}

/// The object name for a unique value: a readable slug of the lower-cased value and a hash
/// of it, so that two values differing only in case map to the same name and the API
/// server refuses the second.
pub fn object_name_for<K: ScimKind>(unique_value: &str) -> String {
    let lowered = unique_value.to_lowercase();
    let digest = Sha256::digest(lowered.as_bytes());
    let mut slug = String::new();
    for c in lowered.chars() {
        if slug.len() >= 40 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let hash = hex::encode(&digest[..5]);
    if slug.is_empty() {
        format!("{}-{hash}", K::NAME_PREFIX)
    } else {
        format!("{}-{slug}-{hash}", K::NAME_PREFIX)
    }
}

/// Builds a new object with the labels and annotations the store relies on.
pub fn new_object<K: ScimKind>(
    namespace: &str,
    spec: K::Spec,
    id: &str,
    created: &str,
    now: &str,
) -> K {
    let name = object_name_for::<K>(K::spec_unique_value(&spec));
    let meta = kube::api::ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(
            [
                (ID_LABEL.to_string(), id.to_string()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            ]
            .into(),
        ),
        annotations: Some(
            [
                (CREATED_ANNOTATION.to_string(), created.to_string()),
                (LAST_MODIFIED_ANNOTATION.to_string(), now.to_string()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    K::from_parts(meta, spec)
}

/// `meta.created` of an object.
pub fn created_of<K: ScimKind>(obj: &K) -> String {
    obj.annotations()
        .get(CREATED_ANNOTATION)
        .cloned()
        .or_else(|| {
            obj.meta()
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .unwrap_or_default()
}

/// `meta.lastModified` of an object.
pub fn last_modified_of<K: ScimKind>(obj: &K) -> String {
    obj.annotations()
        .get(LAST_MODIFIED_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| created_of(obj))
}

/// The ETag of an object: a weak validator over its uid and generation. The generation
/// moves only when the spec changes, so the controller's status writes do not turn an IdP's
/// `If-Match` stale; the uid tells apart objects that replaced each other under one name.
pub fn version_of<K: ScimKind>(obj: &K) -> String {
    let uid = obj.uid().unwrap_or_default();
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    format!(
        "W/\"{short}.{}\"",
        obj.meta().generation.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ignore_case_and_stay_valid() {
        let a = object_name_for::<ScimUser>("Alice.Smith@Example.com");
        let b = object_name_for::<ScimUser>("alice.smith@example.com");
        assert_eq!(a, b);
        assert!(a.starts_with("u-alice-smith-example-com-"));
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn names_of_symbols_only_are_just_the_hash() {
        let name = object_name_for::<ScimGroup>("@@@");
        assert_eq!(name.len(), "g-".len() + 10);
    }

    #[test]
    fn user_spec_round_trips_through_scim_json() {
        let scim = json!({
            "userName": "a@example.com",
            "active": false,
            "name": {"givenName": "A"},
            ENTERPRISE_USER_SCHEMA_ID: {"department": "Finance"},
        });
        let spec = ScimUser::spec_from_scim("id-1", &scim).unwrap();
        assert_eq!(spec.id, "id-1");
        assert_eq!(
            spec.enterprise.as_ref().unwrap().department.as_deref(),
            Some("Finance")
        );
        assert_eq!(ScimUser::spec_to_scim(&spec), scim);
    }
}

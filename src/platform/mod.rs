//! Data platform access configuration: what AccessPolicies' `platformGrants` imply for each
//! configured [`PlatformTarget`], rendered as a ConfigMap or Secret that the platform reads.
//!
//! The content of a target is a pure function of (policies, users, groups, settings,
//! target) ([`build_platform_outputs`]); [`sync`] keeps the objects in a cluster equal to
//! it, and writes the same files in the local mode. Formats:
//! - `json`: the operator's versioned document ([`format`]), under `platform-access.json`;
//! - `trino`: Trino's rules and group files ([`trino`]), under `rules.json` and `group.txt`.
//!
//! Every object carries [`CONTENT_HASH_ANNOTATION`], a hash of its data, so that the
//! platform (or a reloader) can tell a change without comparing the data.

pub mod format;
pub mod sync;
pub mod target;
pub mod trino;

pub use format::{
    PlatformAccess, PlatformAccessGrant, PlatformBuild, PlatformDocument, PlatformGroup,
    PlatformProblem, PlatformUser, ResourcePattern, build_platform_access, build_platform_document,
    build_platform_json,
};
pub use sync::{
    AppliedTargets, apply_platform_targets, render_platform_files, run_platform_sync,
    write_platform_files,
};
pub use target::{
    ObjectKind, PlatformFormat, PlatformTarget, TargetError, TargetProblem, parse_platform_targets,
};
pub use trino::{build_trino_group_file, build_trino_rules};

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::controller::ControllerSettings;
use crate::resources::{AccessPolicy, MANAGED_BY, MANAGED_BY_LABEL, ScimGroup, ScimUser};

/// Annotation holding `sha256:<hex>` of the object's data.
pub const CONTENT_HASH_ANNOTATION: &str = "scim-operator.dev/content-hash";
/// Label naming the target an object belongs to.
pub const TARGET_LABEL: &str = "scim-operator.dev/platform-target";
/// Key of the document in a `json` target's object.
pub const JSON_KEY: &str = "platform-access.json";

/// Everything the operator writes for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformOutput {
    /// The target.
    pub target: PlatformTarget,
    /// The document the files are rendered from.
    pub document: PlatformDocument,
    /// The files, by key in the object's data.
    pub files: BTreeMap<String, String>,
    /// `sha256:<hex>` of the files.
    pub hash: String,
    /// The object to apply.
    pub object: PlatformObject,
    /// Policies left out of the document, and names the format could not hold.
    pub warnings: Vec<String>,
}

/// The object of a target; it serializes as the object itself.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum PlatformObject {
    /// A ConfigMap.
    ConfigMap(ConfigMap),
    /// A Secret.
    Secret(Secret),
}

/// Failures of rendering or writing platform configuration.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The API server refused to list a resource the sync watches.
    #[error("failed to list {kind} at startup")]
    Startup {
        /// The resource.
        kind: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A target's files could not be rendered.
    #[error("failed to render platform target {target}")]
    Render {
        /// The target.
        target: String,
        /// Why it failed.
        #[source]
        source: serde_json::Error,
    },
    /// A target's live object could not be read.
    #[error("failed to read {object} of platform target {target}")]
    Fetch {
        /// The target.
        target: String,
        /// `Kind namespace/name` of the object.
        object: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A target's object could not be applied.
    #[error("failed to apply {object} of platform target {target}")]
    Apply {
        /// The target.
        target: String,
        /// `Kind namespace/name` of the object.
        object: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A file of the local mode could not be written.
    #[error("failed to write {path}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The policies of the local mode could not be loaded.
    #[error("failed to load the policies")]
    Policies(#[source] Box<crate::render::RenderError>),
    /// A rendering pass stopped abnormally.
    #[error("failed to run a platform pass")]
    Pass(#[source] tokio::task::JoinError),
}

impl PlatformError {
    /// A stable category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            PlatformError::Startup { .. } => "startup",
            PlatformError::Render { .. } => "render",
            PlatformError::Fetch { .. } => "fetch",
            PlatformError::Apply { .. } => "apply",
            PlatformError::Write { .. } => "write",
            PlatformError::Policies(_) => "invalid_policy",
            PlatformError::Pass(_) => "pass",
        }
    }
}

/// Builds the output of every target, in the order of `targets`.
pub fn build_platform_outputs<P, U, G>(
    targets: &[PlatformTarget],
    policies: &[P],
    users: &[U],
    groups: &[G],
    settings: &ControllerSettings,
) -> Result<Vec<PlatformOutput>, PlatformError>
where
    P: Borrow<AccessPolicy>,
    U: Borrow<ScimUser>,
    G: Borrow<ScimGroup>,
{
    targets
        .iter()
        .map(|target| {
            let build = build_platform_document(target, policies, users, groups, settings);
            build_platform_output(target, build).map_err(|source| PlatformError::Render {
                target: target.name.clone(),
                source,
            })
        })
        .collect()
}

/// Renders one target's document in the target's format.
pub fn build_platform_output(
    target: &PlatformTarget,
    build: PlatformBuild,
) -> Result<PlatformOutput, serde_json::Error> {
    let PlatformBuild { document, problems } = build;
    let mut warnings: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let files = match target.format {
        PlatformFormat::Json => {
            BTreeMap::from([(JSON_KEY.to_string(), build_platform_json(&document)?)])
        }
        PlatformFormat::Trino => {
            warnings.extend(trino::build_trino_warnings(&document));
            let rules = trino::build_trino_rules_json(&build_trino_rules(&document))?;
            BTreeMap::from([
                (trino::TRINO_RULES_KEY.to_string(), rules),
                (
                    trino::TRINO_GROUP_FILE_KEY.to_string(),
                    build_trino_group_file(&document),
                ),
            ])
        }
    };
    let hash = build_content_hash(&files);
    let object = build_platform_object(target, &files, &hash);
    Ok(PlatformOutput {
        target: target.clone(),
        document,
        files,
        hash,
        object,
        warnings,
    })
}

/// `sha256:<hex>` over the files in key order, each as key, NUL, content, NUL.
pub fn build_content_hash<K: AsRef<str>, V: AsRef<[u8]>>(files: &BTreeMap<K, V>) -> String {
    let mut hasher = Sha256::new();
    for (key, content) in files {
        hasher.update(key.as_ref().as_bytes());
        hasher.update([0]);
        hasher.update(content.as_ref());
        hasher.update([0]);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// The ConfigMap or Secret holding `files`, labelled as the operator's and annotated with
/// `hash`.
pub fn build_platform_object(
    target: &PlatformTarget,
    files: &BTreeMap<String, String>,
    hash: &str,
) -> PlatformObject {
    let metadata = ObjectMeta {
        name: Some(target.object.clone()),
        namespace: Some(target.namespace.clone()),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (TARGET_LABEL.to_string(), target.name.clone()),
        ])),
        annotations: Some(BTreeMap::from([(
            CONTENT_HASH_ANNOTATION.to_string(),
            hash.to_string(),
        )])),
        ..ObjectMeta::default()
    };
    match target.kind {
        ObjectKind::ConfigMap => PlatformObject::ConfigMap(ConfigMap {
            metadata,
            data: Some(files.clone()),
            ..ConfigMap::default()
        }),
        ObjectKind::Secret => PlatformObject::Secret(Secret {
            metadata,
            data: Some(
                files
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::format::tests::{directory, grant, policy};
    use super::*;
    use crate::resources::PlatformPrivilege::Select;

    fn trino_target(kind: ObjectKind) -> PlatformTarget {
        PlatformTarget {
            name: "analytics".into(),
            format: PlatformFormat::Trino,
            kind,
            namespace: "trino".into(),
            object: "trino-access".into(),
            tenant: Some("idp-acme".into()),
        }
    }

    #[test]
    fn the_hash_covers_keys_and_contents_and_is_prefixed_with_its_algorithm() {
        let one = BTreeMap::from([("a", "xy"), ("b", "")]);
        let moved = BTreeMap::from([("a", "x"), ("b", "y")]);

        assert_eq!(
            build_content_hash(&one),
            format!("sha256:{}", hex::encode(Sha256::digest(b"a\0xy\0b\0\0")))
        );
        assert_ne!(build_content_hash(&one), build_content_hash(&moved));
    }

    #[test]
    fn a_trino_target_renders_a_labelled_configmap_with_both_files_and_their_hash() {
        let (users, groups) = directory();
        let policies = vec![policy(
            "analysts",
            &["Analysts"],
            vec![grant(&["analytics.*.*"], &[Select])],
        )];
        let target = trino_target(ObjectKind::ConfigMap);

        let outputs = build_platform_outputs(
            std::slice::from_ref(&target),
            &policies,
            &users,
            &groups,
            &ControllerSettings::default(),
        )
        .unwrap();

        let output = &outputs[0];
        let rules = r#"{
  "catalogs": [
    {
      "group": "Analysts",
      "catalog": "analytics",
      "allow": "read-only"
    }
  ],
  "schemas": [],
  "tables": [
    {
      "group": "Analysts",
      "catalog": "analytics",
      "schema": ".*",
      "table": ".*",
      "privileges": [
        "SELECT"
      ]
    }
  ]
}
"#;
        let group_file = "# Trino group file written by scim-operator from the SCIM directory; \
                          edits are overwritten.\nAnalysts:ada@example.com,bob@example.com\n\
                          Engineers:ada@example.com,carol@example.com\n";
        let files = BTreeMap::from([
            ("group.txt".to_string(), group_file.to_string()),
            ("rules.json".to_string(), rules.to_string()),
        ]);
        let hash = build_content_hash(&files);
        assert_eq!(output.files, files);
        assert_eq!(output.hash, hash);
        assert_eq!(
            serde_json::to_value(&output.object).unwrap(),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "trino-access",
                    "namespace": "trino",
                    "labels": {
                        "app.kubernetes.io/managed-by": "scim-operator",
                        "scim-operator.dev/platform-target": "analytics",
                    },
                    "annotations": {"scim-operator.dev/content-hash": hash},
                },
                "data": {"group.txt": group_file, "rules.json": rules},
            })
        );
        assert_eq!(output.warnings, Vec::<String>::new());
    }

    #[test]
    fn a_secret_target_carries_the_same_files_base64_encoded() {
        let (users, groups) = directory();
        let target = trino_target(ObjectKind::Secret);
        let as_configmap = trino_target(ObjectKind::ConfigMap);
        let policies: Vec<AccessPolicy> = vec![];
        let build = |t: &PlatformTarget| {
            build_platform_outputs(
                std::slice::from_ref(t),
                &policies,
                &users,
                &groups,
                &ControllerSettings::default(),
            )
            .unwrap()
            .remove(0)
        };

        let secret = build(&target);
        let configmap = build(&as_configmap);

        let PlatformObject::Secret(object) = &secret.object else {
            panic!("a Secret target renders a Secret");
        };
        let data: BTreeMap<String, String> = object
            .data
            .clone()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect();
        assert_eq!(data, configmap.files);
        assert_eq!(secret.hash, configmap.hash);
    }
}

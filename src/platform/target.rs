//! Platform targets: which object receives a data platform's access configuration, and in
//! which format. Targets are operator settings, parsed from `key=value` lists.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::controller::desired::is_dns1123_subdomain;

/// Keys a target understands, in the order [`PlatformTarget`]'s `Display` writes them.
const KEYS: &[&str] = &["name", "format", "kind", "namespace", "object", "tenant"];
/// Label values and namespace names end at 63 characters.
const MAX_LABEL_LEN: usize = 63;

/// One object the operator keeps equal to the access configuration of a data platform.
///
/// Written as `name=NAME,format=json|trino,kind=ConfigMap|Secret,namespace=NS,object=OBJ`
/// with an optional `,tenant=T`, which restricts the target to the policies and the
/// identities of one tenant namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlatformTarget {
    /// Name that `platformGrants[].targets` refers to; a DNS-1123 label.
    pub name: String,
    /// What the object holds.
    pub format: PlatformFormat,
    /// Whether the object is a ConfigMap or a Secret.
    pub kind: ObjectKind,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub object: String,
    /// The only tenant whose policies and identities the target receives; every tenant
    /// that a policy names when unset.
    pub tenant: Option<String>,
}

/// The format of a target's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlatformFormat {
    /// The operator's own versioned JSON document (`platform-access.json`).
    Json,
    /// Trino file-based access control (`rules.json`) and a Trino group file (`group.txt`).
    Trino,
}

impl PlatformFormat {
    /// The value of `format=` that selects this format.
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformFormat::Json => "json",
            PlatformFormat::Trino => "trino",
        }
    }
}

/// The kind of a target's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A ConfigMap, readable by anyone who may read the namespace's ConfigMaps.
    ConfigMap,
    /// A Secret, for platforms whose access rules are themselves sensitive.
    Secret,
}

impl ObjectKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::Secret => "Secret",
        }
    }
}

/// A target setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse platform target {input:?}: {problem}")]
pub struct TargetError {
    /// The setting as given.
    pub input: String,
    /// What is wrong with it.
    pub problem: TargetProblem,
}

/// What is wrong with a target setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetProblem {
    /// A part is not `key=value`.
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    /// A key is not one of [`KEYS`].
    #[error("unknown key {0:?}; the keys are name, format, kind, namespace, object and tenant")]
    UnknownKey(String),
    /// A key appears twice in one target.
    #[error("key {0:?} is set twice")]
    DuplicateKey(String),
    /// A required key is missing.
    #[error("key {0:?} is missing")]
    MissingKey(&'static str),
    /// A value is malformed.
    #[error("{key}={value:?} is not {expected}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What the value must be.
        expected: &'static str,
    },
    /// A list of targets does not start with `name=`.
    #[error("each target must start with name=")]
    NameNotFirst,
    /// Two targets share a name.
    #[error("target name {0:?} is used twice")]
    DuplicateName(String),
    /// Two targets write the same object, and would overwrite each other.
    #[error("{0} is the object of two targets")]
    DuplicateObject(String),
}

impl FromStr for PlatformTarget {
    type Err = TargetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |problem| TargetError {
            input: input.to_string(),
            problem,
        };
        let mut values: [Option<String>; 6] = Default::default();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| error(TargetProblem::NotKeyValue(part.to_string())))?;
            let (key, value) = (key.trim(), value.trim());
            let index = KEYS
                .iter()
                .position(|k| *k == key)
                .ok_or_else(|| error(TargetProblem::UnknownKey(key.to_string())))?;
            if values[index].replace(value.to_string()).is_some() {
                return Err(error(TargetProblem::DuplicateKey(key.to_string())));
            }
        }
        let [name, format, kind, namespace, object, tenant] = values;
        let required = |value: Option<String>, key| value.ok_or(TargetProblem::MissingKey(key));
        let build = || -> Result<Self, TargetProblem> {
            Ok(PlatformTarget {
                name: validate_label("name", required(name, "name")?)?,
                format: parse_format(required(format, "format")?)?,
                kind: parse_kind(required(kind, "kind")?)?,
                namespace: validate_label("namespace", required(namespace, "namespace")?)?,
                object: validate_object(required(object, "object")?)?,
                tenant: tenant.map(|t| validate_label("tenant", t)).transpose()?,
            })
        };
        build().map_err(error)
    }
}

impl fmt::Display for PlatformTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "name={},format={},kind={},namespace={},object={}",
            self.name,
            self.format.as_str(),
            self.kind.as_str(),
            self.namespace,
            self.object
        )?;
        match &self.tenant {
            Some(tenant) => write!(f, ",tenant={tenant}"),
            None => Ok(()),
        }
    }
}

impl PlatformTarget {
    /// `Kind namespace/name` of the target's object, for messages.
    pub fn object_ref(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.object)
    }
}

/// Parses every target of `values`, sorted by name.
///
/// One value may hold several targets, each starting at its `name=` key, so that a single
/// comma-separated environment variable can list them all:
/// `name=a,format=json,...,name=b,format=trino,...`.
pub fn parse_platform_targets<S: AsRef<str>>(
    values: &[S],
) -> Result<Vec<PlatformTarget>, TargetError> {
    let mut targets: Vec<PlatformTarget> = Vec::new();
    for value in values {
        for spec in split_targets(value.as_ref())? {
            targets.push(spec.parse()?);
        }
    }
    targets.sort();
    let mut names = BTreeSet::new();
    let mut objects = BTreeSet::new();
    for target in &targets {
        let error = |problem| TargetError {
            input: target.to_string(),
            problem,
        };
        if !names.insert(&target.name) {
            return Err(error(TargetProblem::DuplicateName(target.name.clone())));
        }
        if !objects.insert(target.object_ref()) {
            return Err(error(TargetProblem::DuplicateObject(target.object_ref())));
        }
    }
    Ok(targets)
}

/// Splits a value into one string per target, at each `name=` key.
fn split_targets(value: &str) -> Result<Vec<String>, TargetError> {
    let mut specs: Vec<Vec<&str>> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let is_name = part
            .split_once('=')
            .is_some_and(|(key, _)| key.trim() == "name");
        match specs.last_mut() {
            Some(spec) if !is_name => spec.push(part),
            None if !is_name => {
                return Err(TargetError {
                    input: value.to_string(),
                    problem: TargetProblem::NameNotFirst,
                });
            }
            _ => specs.push(vec![part]),
        }
    }
    Ok(specs.into_iter().map(|parts| parts.join(",")).collect())
}

fn parse_format(value: String) -> Result<PlatformFormat, TargetProblem> {
    match value.to_ascii_lowercase().as_str() {
        "json" => Ok(PlatformFormat::Json),
        "trino" => Ok(PlatformFormat::Trino),
        _ => Err(TargetProblem::InvalidValue {
            key: "format",
            value,
            expected: "json or trino",
        }),
    }
}

fn parse_kind(value: String) -> Result<ObjectKind, TargetProblem> {
    match value.to_ascii_lowercase().as_str() {
        "configmap" => Ok(ObjectKind::ConfigMap),
        "secret" => Ok(ObjectKind::Secret),
        _ => Err(TargetProblem::InvalidValue {
            key: "kind",
            value,
            expected: "ConfigMap or Secret",
        }),
    }
}

fn validate_label(key: &'static str, value: String) -> Result<String, TargetProblem> {
    if is_dns1123_subdomain(&value) && !value.contains('.') && value.len() <= MAX_LABEL_LEN {
        Ok(value)
    } else {
        Err(TargetProblem::InvalidValue {
            key,
            value,
            expected: "a DNS-1123 label (lower-case letters, digits and '-')",
        })
    }
}

fn validate_object(value: String) -> Result<String, TargetProblem> {
    if is_dns1123_subdomain(&value) {
        Ok(value)
    } else {
        Err(TargetProblem::InvalidValue {
            key: "object",
            value,
            expected: "a DNS-1123 subdomain",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn target(name: &str, format: PlatformFormat, tenant: Option<&str>) -> PlatformTarget {
        PlatformTarget {
            name: name.into(),
            format,
            kind: ObjectKind::ConfigMap,
            namespace: "trino".into(),
            object: format!("{name}-access"),
            tenant: tenant.map(Into::into),
        }
    }

    #[test]
    fn a_target_parses_from_key_value_pairs_in_any_order_and_prints_back() {
        let parsed: PlatformTarget =
            " object=analytics-access, kind=Secret,format=trino,namespace=trino,name=analytics,tenant=idp-acme"
                .parse()
                .unwrap();

        assert_eq!(
            parsed,
            PlatformTarget {
                kind: ObjectKind::Secret,
                ..target("analytics", PlatformFormat::Trino, Some("idp-acme"))
            }
        );
        assert_eq!(
            parsed.to_string(),
            "name=analytics,format=trino,kind=Secret,namespace=trino,object=analytics-access,\
             tenant=idp-acme"
        );
    }

    #[test]
    fn one_value_may_list_several_targets_each_starting_at_name() {
        let targets = parse_platform_targets(&[
            "name=b,format=json,kind=ConfigMap,namespace=trino,object=b-access,\
             name=a,format=trino,kind=configmap,namespace=trino,object=a-access,tenant=t",
        ])
        .unwrap();

        assert_eq!(
            targets,
            vec![
                target("a", PlatformFormat::Trino, Some("t")),
                target("b", PlatformFormat::Json, None),
            ]
        );
    }

    #[test]
    fn malformed_targets_are_refused_with_the_reason() {
        let problem = |input: &str| parse_platform_targets(&[input]).unwrap_err().problem;
        let base = "name=a,format=json,kind=ConfigMap,namespace=ns";

        assert_eq!(
            problem(base),
            TargetProblem::MissingKey("object"),
            "a target needs an object"
        );
        assert_eq!(
            problem(&format!("{base},object=o,colour=red")),
            TargetProblem::UnknownKey("colour".into())
        );
        assert_eq!(
            problem(&format!("{base},object=o,object=p")),
            TargetProblem::DuplicateKey("object".into())
        );
        assert_eq!(
            problem(&format!("{base},object=o,tenant")),
            TargetProblem::NotKeyValue("tenant".into())
        );
        assert_eq!(problem("format=json,name=a"), TargetProblem::NameNotFirst);
        assert_eq!(
            problem("name=a,format=yaml,kind=ConfigMap,namespace=ns,object=o"),
            TargetProblem::InvalidValue {
                key: "format",
                value: "yaml".into(),
                expected: "json or trino"
            }
        );
        assert_eq!(
            problem("name=A,format=json,kind=ConfigMap,namespace=ns,object=o"),
            TargetProblem::InvalidValue {
                key: "name",
                value: "A".into(),
                expected: "a DNS-1123 label (lower-case letters, digits and '-')"
            }
        );
        assert_eq!(
            problem("name=a,format=json,kind=Pod,namespace=ns,object=o"),
            TargetProblem::InvalidValue {
                key: "kind",
                value: "Pod".into(),
                expected: "ConfigMap or Secret"
            }
        );
    }

    #[test]
    fn two_targets_may_share_neither_a_name_nor_an_object() {
        let first = "name=a,format=json,kind=ConfigMap,namespace=ns,object=o";

        let same_name = parse_platform_targets(&[
            first,
            "name=a,format=json,kind=ConfigMap,namespace=ns,object=p",
        ]);
        let same_object = parse_platform_targets(&[
            first,
            "name=b,format=trino,kind=ConfigMap,namespace=ns,object=o",
        ]);

        assert_eq!(
            same_name.unwrap_err().problem,
            TargetProblem::DuplicateName("a".into())
        );
        assert_eq!(
            same_object.unwrap_err().problem,
            TargetProblem::DuplicateObject("ConfigMap ns/o".into())
        );
    }

    #[test]
    fn the_error_message_names_the_input_and_the_problem() {
        let error = "name=a,format=json".parse::<PlatformTarget>().unwrap_err();

        assert_eq!(
            error.to_string(),
            "failed to parse platform target \"name=a,format=json\": key \"kind\" is missing"
        );
    }
}

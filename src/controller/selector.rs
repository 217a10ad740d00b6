//! Label selectors (`matchLabels` and `matchExpressions`), checked and matched the way the
//! API server does, without I/O.
//!
//! The API server does not validate a selector inside a custom resource, so a policy may
//! carry one it would refuse elsewhere; [`validate_label_selector`] says what is wrong, and a
//! grant with such a selector grants nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Operator: the label's value is one of `values`.
const IN: &str = "In";
/// Operator: the label is absent, or its value is none of `values`.
const NOT_IN: &str = "NotIn";
/// Operator: the label is present.
const EXISTS: &str = "Exists";
/// Operator: the label is absent.
const DOES_NOT_EXIST: &str = "DoesNotExist";

/// Why a selector cannot be used, or `Ok` when every requirement is well formed.
pub fn validate_label_selector(selector: &LabelSelector) -> Result<(), String> {
    if let Some(key) = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| k.is_empty())
    {
        return Err(format!("matchLabels has the empty key {key:?}"));
    }
    for (index, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        validate_requirement(requirement)
            .map_err(|reason| format!("matchExpressions[{index}] {reason}"))?;
    }
    Ok(())
}

/// Whether `labels` satisfy every part of `selector`; an empty selector matches everything.
/// A selector that [`validate_label_selector`] refuses matches nothing.
pub fn matches_label_selector(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if validate_label_selector(selector).is_err() {
        return false;
    }
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_match
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| matches_requirement(requirement, labels))
}

fn validate_requirement(requirement: &LabelSelectorRequirement) -> Result<(), String> {
    if requirement.key.is_empty() {
        return Err("has an empty key".into());
    }
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        IN | NOT_IN if values.is_empty() => {
            Err(format!("uses {} without values", requirement.operator))
        }
        EXISTS | DOES_NOT_EXIST if !values.is_empty() => {
            Err(format!("uses {} with values", requirement.operator))
        }
        IN | NOT_IN | EXISTS | DOES_NOT_EXIST => Ok(()),
        other => Err(format!(
            "uses the unknown operator {other:?} (In, NotIn, Exists or DoesNotExist)"
        )),
    }
}

fn matches_requirement(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        IN => value.is_some_and(|v| values.contains(v)),
        NOT_IN => value.is_none_or(|v| !values.contains(v)),
        EXISTS => value.is_some(),
        DOES_NOT_EXIST => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        expressions: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!expressions.is_empty()).then_some(expressions),
        }
    }

    #[test]
    fn an_empty_selector_matches_every_label_set() {
        let empty = LabelSelector::default();

        assert!(matches_label_selector(&empty, &labels(&[])));
        assert!(matches_label_selector(&empty, &labels(&[("team", "a")])));
    }

    #[test]
    fn match_labels_and_every_operator_follow_kubernetes_semantics() {
        let team_a = labels(&[("team", "a"), ("tier", "prod")]);
        let team_b = labels(&[("team", "b")]);
        let unlabelled = labels(&[]);
        let cases = [
            (selector(&[("team", "a")], vec![]), [true, false, false]),
            (
                selector(&[], vec![expression("team", "In", &["a", "c"])]),
                [true, false, false],
            ),
            (
                selector(&[], vec![expression("team", "NotIn", &["a"])]),
                [false, true, true],
            ),
            (
                selector(&[], vec![expression("tier", "Exists", &[])]),
                [true, false, false],
            ),
            (
                selector(&[], vec![expression("tier", "DoesNotExist", &[])]),
                [false, true, true],
            ),
            (
                selector(
                    &[("team", "a")],
                    vec![expression("tier", "In", &["staging"])],
                ),
                [false, false, false],
            ),
        ];

        for (selector, expected) in cases {
            let matched =
                [&team_a, &team_b, &unlabelled].map(|l| matches_label_selector(&selector, l));

            assert_eq!(matched, expected, "{selector:?}");
        }
    }

    #[test]
    fn malformed_requirements_are_refused_and_match_nothing() {
        let cases = [
            (
                expression("team", "In", &[]),
                "matchExpressions[0] uses In without values",
            ),
            (
                expression("team", "Exists", &["a"]),
                "matchExpressions[0] uses Exists with values",
            ),
            (
                expression("team", "Equals", &["a"]),
                "matchExpressions[0] uses the unknown operator \"Equals\" (In, NotIn, Exists or \
                 DoesNotExist)",
            ),
            (
                expression("", "Exists", &[]),
                "matchExpressions[0] has an empty key",
            ),
        ];

        for (requirement, message) in cases {
            let selector = selector(&[], vec![requirement]);

            assert_eq!(validate_label_selector(&selector), Err(message.to_string()));
            assert!(!matches_label_selector(
                &selector,
                &labels(&[("team", "a")])
            ));
        }
    }
}

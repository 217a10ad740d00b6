//! Status of AccessPolicies, ScimUsers and ScimGroups, computed without I/O.
//!
//! A condition's `lastTransitionTime` moves only when its status flips, so a status built
//! twice from the same inputs is equal and a driver can skip the write.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::desired::DesiredAccess;
use super::directory::{Snapshot, TenantView};
use crate::resources::{AccessPolicyStatus, ScimGroupStatus, ScimUserStatus, SelectedGroup};

/// Condition: the bindings match what the policy grants.
pub const CONDITION_READY: &str = "Ready";
/// Condition: part of the policy was refused, not found, held or not applied.
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Reason: everything the policy grants is in place.
pub const REASON_RECONCILED: &str = "Reconciled";
/// Reason: a selector matches no group of the tenant.
pub const REASON_UNKNOWN_GROUP: &str = "UnknownGroup";
/// Reason: a selector sets no identifier or more than one.
pub const REASON_INVALID_SELECTOR: &str = "InvalidSelector";
/// Reason: a grant is malformed.
pub const REASON_INVALID_GRANT: &str = "InvalidGrant";
/// Reason: a grant names a role outside the allow-list.
pub const REASON_ROLE_NOT_ALLOWED: &str = "RoleNotAllowed";
/// Reason: a subject name is reserved and was not bound.
pub const REASON_RESERVED_SUBJECT: &str = "ReservedSubject";
/// Reason: writing a binding failed; it is retried, and nothing was pruned.
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
/// Reason: more subjects would lose access at once than the settings allow; they keep it
/// until someone confirms.
pub const REASON_REVOCATION_HELD: &str = "RevocationHeld";
/// Reason: the directory lists members it cannot resolve; subjects that may be among them
/// keep their access.
pub const REASON_INCOMPLETE_DIRECTORY: &str = "IncompleteDirectory";
/// Reason: the caches have not been filled, so nothing was changed.
pub const REASON_NOT_SYNCED: &str = "NotSynced";

/// Problems listed in one condition message; the rest are counted.
const MAX_PROBLEMS_IN_MESSAGE: usize = 10;

/// The status of a policy after a pass that built `desired` and, if `apply_failure` is set,
/// failed to write some of it.
///
/// `selectedGroups` records the groups the bindings now reflect: the selected ones after a
/// clean pass, and also those of the previous record while revocations are held or writes
/// failed, so that a vanished group keeps counting as vanished until its members are gone.
pub fn build_policy_status(
    desired: &DesiredAccess,
    apply_failure: Option<&str>,
    generation: Option<i64>,
    previous: Option<&AccessPolicyStatus>,
    now: &Time,
) -> AccessPolicyStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let current = &desired.outcome.selected_groups;
    let selected_groups = if desired.hold.is_none() && apply_failure.is_none() {
        current.clone()
    } else {
        let previous = previous
            .map(|s| s.selected_groups.as_slice())
            .unwrap_or_default();
        let all: BTreeSet<&SelectedGroup> = previous.iter().chain(current).collect();
        all.into_iter().cloned().collect()
    };
    AccessPolicyStatus {
        observed_generation: generation,
        group_count: to_count(desired.outcome.groups.len()),
        subject_count: to_count(desired.outcome.subjects.len()),
        binding_count: to_count(desired.binding_count()),
        held_subject_count: to_count(desired.hold.as_ref().map_or(0, |h| h.subjects.len())),
        selected_groups,
        conditions: compute_conditions(
            desired,
            apply_failure,
            generation,
            previous_conditions,
            now,
        ),
    }
}

/// The status of a policy whose pass could not start because `message` (a cache is not
/// filled): the previous counts stay, and the conditions say that nothing was changed.
pub fn build_not_synced_status(
    message: &str,
    generation: Option<i64>,
    previous: Option<&AccessPolicyStatus>,
    now: &Time,
) -> AccessPolicyStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let message = format!("{message}; nothing was changed, existing bindings are kept");
    let conditions = [
        (CONDITION_READY, (false, REASON_NOT_SYNCED, message.clone())),
        (CONDITION_DEGRADED, (true, REASON_NOT_SYNCED, message)),
    ];
    status.conditions = build_conditions(conditions, generation, &status.conditions, now);
    status.observed_generation = generation;
    status
}

/// The Ready and Degraded conditions of a policy.
///
/// Ready is False when the policy grants nothing because of a blocking problem, when
/// revocations are held, or when a write failed. Degraded is True when anything was refused,
/// not found, held or not written; its reason is the hold's if there is one, as that needs a
/// person most.
pub fn compute_conditions(
    desired: &DesiredAccess,
    apply_failure: Option<&str>,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let problems = &desired.outcome.problems;
    let hold = desired.hold.as_ref();
    let blocking: Vec<String> = problems
        .iter()
        .filter(|p| p.blocks_policy())
        .map(ToString::to_string)
        .collect();
    let first_blocking = problems
        .iter()
        .find(|p| p.blocks_policy())
        .map(|p| p.reason());
    let ready = match (first_blocking, hold, apply_failure) {
        (Some(reason), _, _) => {
            let message = format!("the policy grants nothing: {}", build_message(&blocking));
            (false, reason, message)
        }
        (None, Some(hold), _) => {
            let message = format!(
                "the bindings keep {} subjects the policy no longer grants; see Degraded",
                hold.subjects.len()
            );
            (false, hold.reason.condition_reason(), message)
        }
        (None, None, Some(failure)) => (false, REASON_APPLY_FAILED, failure.to_string()),
        (None, None, None) => (
            true,
            REASON_RECONCILED,
            "the bindings match the policy".to_string(),
        ),
    };

    let mut all: Vec<String> = problems.iter().map(ToString::to_string).collect();
    all.extend(apply_failure.map(str::to_string));
    let first_reason = hold
        .map(|h| h.reason.condition_reason())
        .or(problems.first().map(|p| p.reason()))
        .or(apply_failure.map(|_| REASON_APPLY_FAILED));
    let degraded = match first_reason {
        Some(reason) => {
            let mut message = build_message(&all);
            if let Some(hold) = hold {
                let held = hold.message();
                message = if message.is_empty() {
                    held
                } else {
                    format!("{held}; {message}")
                };
            }
            (true, reason, message)
        }
        None => (false, REASON_RECONCILED, String::new()),
    };

    let conditions = [(CONDITION_READY, ready), (CONDITION_DEGRADED, degraded)];
    build_conditions(conditions, generation, previous, now)
}

fn build_conditions(
    conditions: [(&str, (bool, &str, String)); 2],
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    conditions
        .into_iter()
        .map(|(type_, (status, reason, message))| {
            let status = if status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Statuses of the users and groups of one tenant, by object name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdentityStatuses {
    /// Status of each ScimUser.
    pub users: BTreeMap<String, ScimUserStatus>,
    /// Status of each ScimGroup.
    pub groups: BTreeMap<String, ScimGroupStatus>,
}

/// Computes the status of every user and group of `tenant` in `snapshot`.
///
/// A member resolves when its value is the SCIM id of a user or of a group of the tenant;
/// duplicate member values count once. A group that keeps its members in shards counts
/// those of the shards present.
pub fn build_identity_statuses(snapshot: &Snapshot<'_>, tenant: &str) -> IdentityStatuses {
    let view = TenantView::build(snapshot, tenant);
    let mut groups_of_user: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut statuses = IdentityStatuses::default();
    for group in &view.groups {
        let members: BTreeSet<&str> = group.members.iter().map(|m| m.value.as_str()).collect();
        let mut status = ScimGroupStatus {
            member_count: to_count(members.len()),
            ..Default::default()
        };
        for member in members {
            match view.users_by_id.get(member) {
                Some(user) => {
                    status.active_member_count += i64::from(user.spec.is_active());
                    groups_of_user
                        .entry(member)
                        .or_default()
                        .insert(&group.group.spec.display_name);
                }
                None if view.group_ids.contains(member) => {}
                None => status.unresolved_members.push(member.to_string()),
            }
        }
        if let Some(name) = &group.group.metadata.name {
            statuses.groups.insert(name.clone(), status);
        }
    }
    let users = snapshot
        .users
        .iter()
        .filter(|u| super::directory::is_in_tenant(**u, tenant));
    for user in users {
        let Some(name) = &user.metadata.name else {
            continue;
        };
        let names = groups_of_user.get(user.spec.id.as_str());
        let groups: Vec<String> = names.into_iter().flatten().map(|g| g.to_string()).collect();
        statuses.users.insert(
            name.clone(),
            ScimUserStatus {
                group_count: to_count(groups.len()),
                groups,
            },
        );
    }
    statuses
}

fn build_message(items: &[String]) -> String {
    let mut message = items
        .iter()
        .take(MAX_PROBLEMS_IN_MESSAGE)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > MAX_PROBLEMS_IN_MESSAGE {
        message.push_str(&format!(
            "; and {} more",
            items.len() - MAX_PROBLEMS_IN_MESSAGE
        ));
    }
    message
}

fn to_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::controller::desired::{PolicyOutcome, Problem, SubjectKey};
    use crate::controller::revocation::{Cause, Hold, HoldReason};
    use crate::resources::{GroupMember, ScimGroup, ScimGroupSpec, ScimUser, ScimUserSpec};
    use k8s_openapi::api::rbac::v1::Subject;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("a valid test timestamp"))
    }

    fn desired(problems: Vec<Problem>) -> DesiredAccess {
        DesiredAccess {
            outcome: PolicyOutcome {
                groups: vec!["Analysts".into()],
                selected_groups: vec![analysts()],
                subjects: vec![Subject {
                    kind: "User".into(),
                    name: "a".into(),
                    ..Default::default()
                }],
                problems,
            },
            ..Default::default()
        }
    }

    fn analysts() -> SelectedGroup {
        SelectedGroup {
            id: "g1".into(),
            display_name: "Analysts".into(),
        }
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str, since: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(3),
            last_transition_time: at(since),
        }
    }

    #[test]
    fn a_clean_pass_is_ready_and_not_degraded() {
        let status = build_policy_status(&desired(vec![]), None, Some(3), None, &at(100));

        assert_eq!(
            status,
            AccessPolicyStatus {
                observed_generation: Some(3),
                group_count: 1,
                subject_count: 1,
                binding_count: 0,
                held_subject_count: 0,
                selected_groups: vec![analysts()],
                conditions: vec![
                    condition(
                        "Ready",
                        "True",
                        "Reconciled",
                        "the bindings match the policy",
                        100
                    ),
                    condition("Degraded", "False", "Reconciled", "", 100),
                ],
            }
        );
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let first = build_policy_status(&desired(vec![]), None, Some(3), None, &at(100));
        let unknown = Problem::UnknownGroup {
            selector: "displayName \"x\"".into(),
        };

        let same = build_policy_status(&desired(vec![]), None, Some(3), Some(&first), &at(200));
        let flipped = build_policy_status(
            &desired(vec![unknown]),
            None,
            Some(3),
            Some(&first),
            &at(300),
        );

        assert_eq!(same, first);
        assert_eq!(
            flipped.conditions,
            vec![
                condition(
                    "Ready",
                    "True",
                    "Reconciled",
                    "the bindings match the policy",
                    100
                ),
                condition(
                    "Degraded",
                    "True",
                    "UnknownGroup",
                    "no group matches displayName \"x\"",
                    300
                ),
            ]
        );
    }

    #[test]
    fn a_blocking_problem_makes_the_policy_not_ready() {
        let problems = vec![
            Problem::ReservedSubject {
                kind: "User",
                name: "system:admin".into(),
            },
            Problem::RoleNotAllowed {
                kind: "ClusterRole",
                name: "cluster-admin".into(),
            },
        ];

        let conditions = compute_conditions(&desired(problems), None, Some(3), &[], &at(5));

        assert_eq!(
            conditions,
            vec![
                condition(
                    "Ready",
                    "False",
                    "RoleNotAllowed",
                    "the policy grants nothing: ClusterRole \"cluster-admin\" is not in the allowed roles",
                    5
                ),
                condition(
                    "Degraded",
                    "True",
                    "ReservedSubject",
                    "User \"system:admin\" is a reserved name and is not bound; ClusterRole \"cluster-admin\" is not in the allowed roles",
                    5
                ),
            ]
        );
    }

    #[test]
    fn a_failed_write_makes_the_policy_not_ready_and_degraded() {
        let failure = "failed to apply RoleBinding a/b";

        let conditions = compute_conditions(&desired(vec![]), Some(failure), Some(3), &[], &at(5));

        assert_eq!(
            conditions,
            vec![
                condition("Ready", "False", "ApplyFailed", failure, 5),
                condition("Degraded", "True", "ApplyFailed", failure, 5),
            ]
        );
    }

    #[test]
    fn long_problem_lists_are_cut_in_the_message() {
        let problems = (0..12)
            .map(|i| Problem::UnknownGroup {
                selector: format!("id \"{i}\""),
            })
            .collect();

        let conditions = compute_conditions(&desired(problems), None, None, &[], &at(5));

        assert!(
            conditions[1]
                .message
                .ends_with("no group matches id \"9\"; and 2 more")
        );
    }

    fn held(reason: HoldReason, names: &[&str]) -> Hold {
        Hold {
            policy: "analysts".into(),
            reason,
            subjects: names
                .iter()
                .map(|n| SubjectKey {
                    kind: "User".into(),
                    name: n.to_string(),
                })
                .collect(),
            causes: BTreeMap::from([(Cause::GroupGone, names.len())]),
            bound_before: 3,
            max_ratio: Some(0.5),
            fingerprint: "0123456789".into(),
            vanished_groups: vec!["Ops".into()],
        }
    }

    #[test]
    fn a_held_revocation_is_not_ready_degraded_and_says_how_to_proceed() {
        let mut desired = desired(vec![Problem::UnknownGroup {
            selector: "displayName \"Ops\"".into(),
        }]);
        desired.hold = Some(held(HoldReason::MassRevocation, &["b", "c"]));
        let ops = SelectedGroup {
            id: "g2".into(),
            display_name: "Ops".into(),
        };
        let previous = AccessPolicyStatus {
            selected_groups: vec![analysts(), ops.clone()],
            ..Default::default()
        };

        let status = build_policy_status(&desired, None, Some(3), Some(&previous), &at(5));

        assert_eq!(
            status,
            AccessPolicyStatus {
                observed_generation: Some(3),
                group_count: 1,
                subject_count: 1,
                binding_count: 0,
                held_subject_count: 2,
                selected_groups: vec![analysts(), ops],
                conditions: vec![
                    condition(
                        "Ready",
                        "False",
                        "RevocationHeld",
                        "the bindings keep 2 subjects the policy no longer grants; see Degraded",
                        5
                    ),
                    condition(
                        "Degraded",
                        "True",
                        "RevocationHeld",
                        "held revoking 2 of the 3 subjects bound (67%, more than the 50% one \
                         pass may revoke without an explicit reason in the directory); 2 were in \
                         groups that are gone or no longer selected (gone or unselected: Ops); \
                         they keep their bindings: b, c. If this is intended, revoke them with: \
                         kubectl annotate accesspolicy analysts \
                         scim-operator.dev/allow-mass-revocation=0123456789 --overwrite; no group \
                         matches displayName \"Ops\"",
                        5
                    ),
                ],
            }
        );
    }

    #[test]
    fn a_pass_that_could_not_read_its_caches_keeps_the_counts_and_says_nothing_changed() {
        let previous = build_policy_status(&desired(vec![]), None, Some(2), None, &at(1));

        let status = build_not_synced_status(
            "failed to read the ScimUser cache: it was not filled within 30s",
            Some(3),
            Some(&previous),
            &at(9),
        );

        let message = "failed to read the ScimUser cache: it was not filled within 30s; nothing \
                       was changed, existing bindings are kept";
        assert_eq!(
            status,
            AccessPolicyStatus {
                observed_generation: Some(3),
                conditions: vec![
                    condition("Ready", "False", "NotSynced", message, 9),
                    condition("Degraded", "True", "NotSynced", message, 9),
                ],
                ..previous
            }
        );
    }

    fn user(name: &str, id: &str, active: bool) -> ScimUser {
        ScimUser::new(
            name,
            ScimUserSpec {
                id: id.into(),
                user_name: name.into(),
                active: Some(active),
                ..Default::default()
            },
        )
    }

    fn group(name: &str, id: &str, members: &[&str]) -> ScimGroup {
        let members = members.iter().map(|m| GroupMember {
            value: (*m).into(),
            ..Default::default()
        });
        ScimGroup::new(
            name,
            ScimGroupSpec {
                id: id.into(),
                display_name: name.to_uppercase(),
                members: members.collect(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn identity_statuses_count_members_and_list_each_users_groups() {
        let users = vec![
            user("alice", "u1", true),
            user("bob", "u2", false),
            user("carol", "u3", true),
        ];
        let groups = vec![
            group("ops", "g1", &["u1", "u2", "u2", "u-gone", "g2"]),
            group("dev", "g2", &["u1"]),
        ];

        let statuses = build_identity_statuses(&Snapshot::new(&users, &groups), "acme");

        assert_eq!(
            statuses,
            IdentityStatuses {
                users: BTreeMap::from([
                    (
                        "alice".into(),
                        ScimUserStatus {
                            group_count: 2,
                            groups: vec!["DEV".into(), "OPS".into()]
                        }
                    ),
                    (
                        "bob".into(),
                        ScimUserStatus {
                            group_count: 1,
                            groups: vec!["OPS".into()]
                        }
                    ),
                    (
                        "carol".into(),
                        ScimUserStatus {
                            group_count: 0,
                            groups: vec![]
                        }
                    ),
                ]),
                groups: BTreeMap::from([
                    (
                        "dev".into(),
                        ScimGroupStatus {
                            member_count: 1,
                            active_member_count: 1,
                            unresolved_members: vec![]
                        },
                    ),
                    (
                        "ops".into(),
                        ScimGroupStatus {
                            member_count: 4,
                            active_member_count: 1,
                            unresolved_members: vec!["u-gone".into()],
                        },
                    ),
                ]),
            }
        );
    }
}

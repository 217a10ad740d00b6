//! When a pass may take access away, and when it must keep it: the revocation guard.
//!
//! A subject is *revoked* when it leaves every binding of a policy; moving between bindings
//! (a namespace whose labels changed, a role split across more bindings) is no revocation.
//! Each revoked subject gets a [`Cause`] read from the directory as it is now, and from the
//! groups the policy selected on its last pass (`status.selectedGroups`):
//!
//! Explained, so revoked at once:
//! - `deactivated`: the user is `active: false`;
//! - `deleted`: the user is gone, and every selected group is complete and lists only
//!   members that resolve (the SCIM server removes a deleted user from every group);
//! - `left-group`: the user exists, no selected group lists them, and every group selected
//!   last time is still selected;
//! - `renamed`: a Group subject whose group (same SCIM id) is still selected under a new
//!   displayName;
//! - `reserved`: the name reaches a reserved identity;
//! - `role-not-allowed`: the policy names a role outside the allow-list;
//! - `foreign`: a subject kind this operator never writes.
//!
//! Unexplained:
//! - `group-gone`: a group selected last time is gone or no longer selected, or that history
//!   is unknown;
//! - `unbound`: the policy still grants the subject but binds it nowhere (its grants or
//!   namespaces changed);
//! - `policy-invalid`: the policy still selects the subject but is malformed;
//! - `policy-changed`: the subject no longer follows from the subject kind or the prefixes;
//! - `unresolved`: the user is gone while a selected group lists members that resolve to
//!   nothing, or a selected group misses member shards.
//!
//! Only explained revocations are certain to be what the directory's owners asked for. The
//! others are held (the subjects keep the bindings they have, while everything else in the
//! pass goes ahead, deactivations included):
//! - **IncompleteDirectory**: every `unresolved` revocation, whatever their number, because a
//!   directory that lists members it cannot resolve is an incomplete read, and an error is
//!   never a reason to revoke;
//! - **RevocationHeld**: every unexplained revocation, when there are more of them than
//!   [`max_revocation_ratio`](super::ControllerSettings::max_revocation_ratio) of the subjects
//!   bound before the pass (so a deleted group or a rewritten policy that would strip most
//!   of a policy's subjects stops and asks); when they are all `unresolved`, the hold is
//!   reported as IncompleteDirectory, the more precise reason.
//!
//! A hold is released by the policy annotation
//! [`ALLOW_MASS_REVOCATION_ANNOTATION`](super::ALLOW_MASS_REVOCATION_ANNOTATION): set to the
//! fingerprint the condition message shows, it releases that very set of revocations once
//! (a different set holds again); set to `"true"`, it turns the guard off for the policy.
//! Raising the ratio (or turning it off) in the settings releases RevocationHeld as well.
//!
//! Deleting a policy is not a pass: the garbage collector removes its bindings, and nothing
//! here holds them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::desired::{
    CurrentAccess, GROUP_SUBJECT, Plan, SubjectKey, USER_SUBJECT, is_reserved_subject,
};
use super::directory::{GroupView, TenantView};
use super::status::{REASON_INCOMPLETE_DIRECTORY, REASON_REVOCATION_HELD};
use super::{ALLOW_MASS_REVOCATION_ANNOTATION, ControllerSettings};
use crate::resources::{AccessPolicy, ScimUser, SelectedGroup, SubjectKind};

/// Annotation value that turns the guard off for a policy.
const RELEASE_ALWAYS: &str = "true";
/// Hex digits of a hold's fingerprint.
const FINGERPRINT_LEN: usize = 10;
/// Subject names listed in a hold's message; the rest are counted.
const NAMES_IN_MESSAGE: usize = 10;

/// Why a subject gains or loses access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The policy grants the subject: a member of a selected group, or a selected group.
    Granted,
    /// The user is `active: false`.
    Deactivated,
    /// The user was deleted.
    Deleted,
    /// The IdP removed the user from the selected groups.
    LeftGroup,
    /// The group was renamed; its new name is bound instead.
    Renamed,
    /// The name reaches a reserved identity.
    Reserved,
    /// The policy names a role outside the allow-list and grants nothing.
    RoleNotAllowed,
    /// A subject kind this operator never writes.
    Foreign,
    /// A group selected on the last pass is gone or no longer selected.
    GroupGone,
    /// The policy grants the subject but no longer binds it there.
    Unbound,
    /// The policy is malformed and grants nothing.
    PolicyInvalid,
    /// The subject no longer follows from the subject kind or prefixes.
    PolicyChanged,
    /// The directory lists members it cannot resolve, or misses member shards.
    Unresolved,
}

impl Cause {
    /// Whether the directory or the settings state this revocation explicitly.
    pub fn is_explained(self) -> bool {
        matches!(
            self,
            Cause::Granted
                | Cause::Deactivated
                | Cause::Deleted
                | Cause::LeftGroup
                | Cause::Renamed
                | Cause::Reserved
                | Cause::RoleNotAllowed
                | Cause::Foreign
        )
    }

    /// A stable name for logs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Granted => "granted",
            Cause::Deactivated => "deactivated",
            Cause::Deleted => "deleted",
            Cause::LeftGroup => "left-group",
            Cause::Renamed => "renamed",
            Cause::Reserved => "reserved",
            Cause::RoleNotAllowed => "role-not-allowed",
            Cause::Foreign => "foreign",
            Cause::GroupGone => "group-gone",
            Cause::Unbound => "unbound",
            Cause::PolicyInvalid => "policy-invalid",
            Cause::PolicyChanged => "policy-changed",
            Cause::Unresolved => "unresolved",
        }
    }

    /// What happened to subjects of this cause, after their number.
    fn describe(self) -> &'static str {
        match self {
            Cause::Granted => "are granted",
            Cause::Deactivated => "were deactivated",
            Cause::Deleted => "were deleted",
            Cause::LeftGroup => "left the selected groups",
            Cause::Renamed => "were renamed",
            Cause::Reserved => "have reserved names",
            Cause::RoleNotAllowed => "are refused by the allow-list",
            Cause::Foreign => "were not written by this operator",
            Cause::GroupGone => "were in groups that are gone or no longer selected",
            Cause::Unbound => "are no longer bound by the policy's grants",
            Cause::PolicyInvalid => "lose access because the policy is invalid",
            Cause::PolicyChanged => "no longer follow from the subject kind or prefixes",
            Cause::Unresolved => "are missing while a selected group may still list them",
        }
    }
}

/// Why revocations are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// More unexplained revocations than the settings allow in one pass.
    MassRevocation,
    /// The directory is incomplete: revoking could act on a read error.
    IncompleteDirectory,
}

impl HoldReason {
    /// The condition reason of the hold.
    pub fn condition_reason(self) -> &'static str {
        match self {
            HoldReason::MassRevocation => REASON_REVOCATION_HELD,
            HoldReason::IncompleteDirectory => REASON_INCOMPLETE_DIRECTORY,
        }
    }
}

/// Revocations a pass holds back: the subjects keep the bindings they have.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    /// Name of the policy.
    pub policy: String,
    /// Why.
    pub reason: HoldReason,
    /// The subjects kept, sorted.
    pub subjects: Vec<SubjectKey>,
    /// How many of them have each cause.
    pub causes: BTreeMap<Cause, usize>,
    /// Distinct subjects bound before the pass.
    pub bound_before: usize,
    /// The share of those a pass may revoke without an explicit reason.
    pub max_ratio: Option<f64>,
    /// Identifies this set of subjects; the annotation releases it.
    pub fingerprint: String,
    /// displayNames of the groups selected last time that are gone or no longer selected.
    pub vanished_groups: Vec<String>,
}

impl Hold {
    /// The condition message: how many, why, and how to proceed.
    pub fn message(&self) -> String {
        let policy = &self.policy;
        let held = self.subjects.len();
        let mut message = match self.reason {
            HoldReason::MassRevocation => {
                let share = percent(held, self.bound_before);
                let limit = self.max_ratio.map_or(100.0, |r| r * 100.0);
                format!(
                    "held revoking {held} of the {} subjects bound ({share:.0}%, more than the \
                     {limit:.0}% one pass may revoke without an explicit reason in the directory)",
                    self.bound_before
                )
            }
            HoldReason::IncompleteDirectory => format!(
                "kept {held} subjects whose access the directory cannot settle: a selected group \
                 lists members that resolve to no user or misses member shards"
            ),
        };
        let causes: Vec<String> = self
            .causes
            .iter()
            .map(|(cause, n)| format!("{n} {}", cause.describe()))
            .collect();
        let _ = write!(message, "; {}", causes.join(", "));
        if !self.vanished_groups.is_empty() {
            let _ = write!(
                message,
                " (gone or unselected: {})",
                self.vanished_groups.join(", ")
            );
        }
        let names: Vec<&str> = self
            .subjects
            .iter()
            .take(NAMES_IN_MESSAGE)
            .map(|s| s.name.as_str())
            .collect();
        let _ = write!(message, "; they keep their bindings: {}", names.join(", "));
        if held > NAMES_IN_MESSAGE {
            let _ = write!(message, " and {} more", held - NAMES_IN_MESSAGE);
        }
        let _ = write!(
            message,
            ". If this is intended, revoke them with: kubectl annotate accesspolicy {policy} \
             {ALLOW_MASS_REVOCATION_ANNOTATION}={} --overwrite",
            self.fingerprint
        );
        message
    }
}

/// What [`review`] needs besides the plan and the current bindings.
pub(crate) struct ReviewInput<'a> {
    pub policy: &'a AccessPolicy,
    pub settings: &'a ControllerSettings,
    pub view: &'a TenantView<'a>,
    /// The selected groups that exist.
    pub selected: &'a [&'a GroupView<'a>],
    /// The subjects the directory yields for the policy, even if it is blocked.
    pub resolved: &'a BTreeSet<SubjectKey>,
    /// The policy names a role outside the allow-list.
    pub allow_list_refused: bool,
    /// The policy grants nothing because of a problem.
    pub blocked: bool,
}

/// The verdict on one pass's revocations.
pub(crate) struct Review {
    /// What is held, if anything.
    pub hold: Option<Hold>,
    /// The cause of each revoked subject.
    pub causes: BTreeMap<SubjectKey, Cause>,
    /// Groups selected last time that are gone or no longer selected.
    pub vanished: Vec<SelectedGroup>,
}

/// Classifies the subjects that `plan` would revoke from `current` and decides what to hold.
pub(crate) fn review(input: &ReviewInput<'_>, plan: &Plan, current: &CurrentAccess) -> Review {
    let before = current.subjects();
    let after: BTreeSet<&SubjectKey> = plan.values().flatten().collect();
    let removed: Vec<&SubjectKey> = before.difference(&after).copied().collect();
    let recorded = input
        .policy
        .status
        .as_ref()
        .map(|s| s.selected_groups.as_slice())
        .unwrap_or_default();
    let selected_ids: HashSet<&str> = input
        .selected
        .iter()
        .map(|g| g.group.spec.id.as_str())
        .collect();
    let vanished: Vec<SelectedGroup> = recorded
        .iter()
        .filter(|g| !selected_ids.contains(g.id.as_str()))
        .cloned()
        .collect();
    if removed.is_empty() {
        return Review {
            hold: None,
            causes: BTreeMap::new(),
            vanished,
        };
    }

    // Classify: each revoked subject, against the directory as it is now.
    let facts = Facts::build(input, recorded, &vanished, &selected_ids);
    let causes: BTreeMap<SubjectKey, Cause> = removed
        .iter()
        .map(|s| ((*s).clone(), facts.explain(s, input)))
        .collect();

    // Decide: hold what is unexplained, if it is too much or looks like a read error.
    let unexplained: Vec<(&SubjectKey, Cause)> = causes
        .iter()
        .filter(|(_, c)| !c.is_explained())
        .map(|(s, c)| (s, *c))
        .collect();
    let max_ratio = input.settings.max_revocation_ratio;
    let too_many = max_ratio.is_some_and(|r| unexplained.len() as f64 > r * before.len() as f64);
    let unresolved: Vec<(&SubjectKey, Cause)> = unexplained
        .iter()
        .copied()
        .filter(|(_, c)| *c == Cause::Unresolved)
        .collect();
    // When every unexplained revocation comes from an incomplete directory, that is the
    // reason to name, whatever their number.
    let (reason, held) = if too_many && unresolved.len() < unexplained.len() {
        (HoldReason::MassRevocation, unexplained)
    } else {
        (HoldReason::IncompleteDirectory, unresolved)
    };
    if held.is_empty() {
        return Review {
            hold: None,
            causes,
            vanished,
        };
    }
    let subjects: Vec<SubjectKey> = held.iter().map(|(s, _)| (*s).clone()).collect();
    let fingerprint = build_fingerprint(&subjects);
    let release = input
        .policy
        .annotations()
        .get(ALLOW_MASS_REVOCATION_ANNOTATION);
    let released = release.is_some_and(|value| {
        let value = value.trim();
        value.eq_ignore_ascii_case(RELEASE_ALWAYS) || value == fingerprint
    });
    if released {
        return Review {
            hold: None,
            causes,
            vanished,
        };
    }
    let mut counts = BTreeMap::new();
    for (_, cause) in &held {
        *counts.entry(*cause).or_insert(0) += 1;
    }
    let hold = Hold {
        policy: input.policy.name_any(),
        reason,
        subjects,
        causes: counts,
        bound_before: before.len(),
        max_ratio,
        fingerprint,
        vanished_groups: vanished.iter().map(|g| g.display_name.clone()).collect(),
    };
    Review {
        hold: Some(hold),
        causes,
        vanished,
    }
}

/// Adds the held subjects back to every target that binds them now.
pub(crate) fn keep_held(plan: &mut Plan, current: &CurrentAccess, hold: &Hold) {
    let held: BTreeSet<&SubjectKey> = hold.subjects.iter().collect();
    for (target, existing) in &current.targets {
        let kept: Vec<SubjectKey> = existing
            .subjects
            .iter()
            .filter(|s| held.contains(s))
            .cloned()
            .collect();
        if !kept.is_empty() {
            plan.entry(target.clone()).or_default().extend(kept);
        }
    }
}

/// Identifies a set of subjects: the first hex digits of a hash of their sorted keys.
pub fn build_fingerprint(subjects: &[SubjectKey]) -> String {
    let mut hasher = Sha256::new();
    for subject in subjects {
        hasher.update(subject.kind.as_bytes());
        hasher.update([0]);
        hasher.update(subject.name.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())[..FINGERPRINT_LEN].to_string()
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// What the directory says about the policy's members, gathered once per review.
struct Facts<'a> {
    /// Users by userName; an inactive record wins over an active one with the same name.
    users_by_name: HashMap<&'a str, &'a ScimUser>,
    /// Member ids of the selected groups.
    listed: HashSet<&'a str>,
    /// A selected group lists a member that names no user or group.
    unresolved_members: bool,
    /// A selected group misses member shards.
    incomplete_groups: bool,
    /// Whether the groups of the last pass are known and all still selected.
    groups_unchanged: bool,
    /// Groups selected last time that are still selected, as (id, displayName then).
    renamed_from: HashMap<&'a str, &'a str>,
}

impl<'a> Facts<'a> {
    fn build(
        input: &ReviewInput<'a>,
        recorded: &'a [SelectedGroup],
        vanished: &[SelectedGroup],
        selected_ids: &HashSet<&str>,
    ) -> Self {
        let mut users_by_name: HashMap<&str, &ScimUser> = HashMap::new();
        for user in input.view.users_by_id.values() {
            users_by_name
                .entry(user.spec.user_name.as_str())
                .and_modify(|known| {
                    if !user.spec.is_active() {
                        *known = user;
                    }
                })
                .or_insert(user);
        }
        let listed: HashSet<&str> = input
            .selected
            .iter()
            .flat_map(|g| g.members.iter().map(|m| m.value.as_str()))
            .collect();
        let unresolved_members = listed.iter().any(|id| !input.view.resolves(id));
        let incomplete_groups = input.selected.iter().any(|g| !g.complete);
        let renamed_from = recorded
            .iter()
            .filter(|g| selected_ids.contains(g.id.as_str()))
            .map(|g| (g.display_name.as_str(), g.id.as_str()))
            .collect();
        Self {
            users_by_name,
            listed,
            unresolved_members,
            incomplete_groups,
            groups_unchanged: !recorded.is_empty() && vanished.is_empty(),
            renamed_from,
        }
    }

    fn explain(&self, subject: &SubjectKey, input: &ReviewInput<'_>) -> Cause {
        if is_reserved_subject(&subject.name) {
            return Cause::Reserved;
        }
        if input.allow_list_refused {
            return Cause::RoleNotAllowed;
        }
        match subject.kind.as_str() {
            USER_SUBJECT => self.explain_user(subject, input),
            GROUP_SUBJECT => self.explain_group(subject, input),
            _ => Cause::Foreign,
        }
    }

    fn explain_user(&self, subject: &SubjectKey, input: &ReviewInput<'_>) -> Cause {
        let prefix = input.settings.user_prefix.as_str();
        let Some(user_name) = subject.name.strip_prefix(prefix) else {
            return Cause::PolicyChanged;
        };
        let Some(user) = self.users_by_name.get(user_name) else {
            return if self.unresolved_members || self.incomplete_groups {
                Cause::Unresolved
            } else {
                Cause::Deleted
            };
        };
        if !user.spec.is_active() {
            Cause::Deactivated
        } else if input.resolved.contains(subject) {
            if input.blocked {
                Cause::PolicyInvalid
            } else {
                Cause::Unbound
            }
        } else if input.policy.spec.subjects == SubjectKind::Group
            || self.listed.contains(user.spec.id.as_str())
        {
            Cause::PolicyChanged
        } else if self.incomplete_groups {
            Cause::Unresolved
        } else if !self.groups_unchanged {
            Cause::GroupGone
        } else {
            Cause::LeftGroup
        }
    }

    fn explain_group(&self, subject: &SubjectKey, input: &ReviewInput<'_>) -> Cause {
        let prefix = input.settings.group_prefix.as_str();
        let Some(display_name) = subject.name.strip_prefix(prefix) else {
            return Cause::PolicyChanged;
        };
        if input.resolved.contains(subject) {
            if input.blocked {
                Cause::PolicyInvalid
            } else {
                Cause::Unbound
            }
        } else if input.policy.spec.subjects == SubjectKind::User {
            Cause::PolicyChanged
        } else if self.renamed_from.contains_key(display_name) {
            Cause::Renamed
        } else {
            Cause::GroupGone
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::controller::desired::{DesiredAccess, build_policy_access};
    use crate::controller::directory::Snapshot;
    use crate::controller::status::build_policy_status;
    use crate::resources::{
        AccessPolicySpec, Grant, GroupMember, GroupSelector, ScimGroup, ScimGroupMembers,
        ScimGroupMembersSpec, ScimGroupSpec, ScimUserSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    const TENANT: &str = "acme";

    fn user(id: &str, active: bool) -> ScimUser {
        let mut user = ScimUser::new(
            id,
            ScimUserSpec {
                id: id.into(),
                user_name: format!("{id}@example.com"),
                active: Some(active),
                ..Default::default()
            },
        );
        user.metadata.namespace = Some(TENANT.into());
        user
    }

    fn group(id: &str, name: &str, members: &[&str]) -> ScimGroup {
        let mut group = ScimGroup::new(
            &name.to_lowercase(),
            ScimGroupSpec {
                id: id.into(),
                display_name: name.into(),
                members: members
                    .iter()
                    .map(|m| GroupMember {
                        value: (*m).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        );
        group.metadata.namespace = Some(TENANT.into());
        group
    }

    fn policy(subjects: SubjectKind) -> AccessPolicy {
        let mut policy = AccessPolicy::new(
            "analysts",
            AccessPolicySpec {
                tenant: TENANT.into(),
                groups: vec![GroupSelector {
                    display_name: Some("Analysts".into()),
                    ..Default::default()
                }],
                grants: vec![Grant {
                    cluster_role: Some("view".into()),
                    ..Default::default()
                }],
                subjects,
                ..Default::default()
            },
        );
        policy.metadata.uid = Some("uid".into());
        policy
    }

    fn key(id: &str) -> SubjectKey {
        SubjectKey {
            kind: USER_SUBJECT.into(),
            name: format!("{id}@example.com"),
        }
    }

    /// A policy after a clean pass over four active analysts: its bindings and its status.
    struct Before {
        policy: AccessPolicy,
        current: CurrentAccess,
        users: Vec<ScimUser>,
        groups: Vec<ScimGroup>,
    }

    fn before(subjects: SubjectKind) -> Before {
        let users: Vec<ScimUser> = ["u1", "u2", "u3", "u4"]
            .iter()
            .map(|id| user(id, true))
            .collect();
        let groups = vec![group("g1", "Analysts", &["u1", "u2", "u3", "u4"])];
        let mut policy = policy(subjects);
        let settings = ControllerSettings::default();
        let first = build_policy_access(
            &policy,
            &Snapshot::new(&users, &groups),
            &CurrentAccess::default(),
            &settings,
        );
        let now = Time(Timestamp::UNIX_EPOCH);
        policy.status = Some(build_policy_status(&first, None, None, None, &now));
        let current =
            CurrentAccess::from_bindings(&first.cluster_role_bindings, &first.role_bindings);
        Before {
            policy,
            current,
            users,
            groups,
        }
    }

    impl Before {
        fn pass(&self, settings: &ControllerSettings) -> DesiredAccess {
            let snapshot = Snapshot::new(&self.users, &self.groups);
            build_policy_access(&self.policy, &snapshot, &self.current, settings)
        }

        fn bound(desired: &DesiredAccess) -> Vec<String> {
            let bound: BTreeSet<String> = desired
                .subjects_by_target()
                .into_values()
                .flatten()
                .map(|s| s.name)
                .collect();
            bound.into_iter().collect()
        }
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| format!("{id}@example.com")).collect()
    }

    #[test]
    fn deactivating_every_member_at_once_revokes_all_of_them() {
        let mut state = before(SubjectKind::User);
        for user in &mut state.users {
            user.spec.active = Some(false);
        }

        let desired = state.pass(&ControllerSettings::default());

        assert_eq!(desired.hold, None);
        assert_eq!(Before::bound(&desired), Vec::<String>::new());
        assert_eq!(desired.explanations[&key("u1")].cause, Cause::Deactivated);
        assert_eq!(
            desired.explanations[&key("u1")].groups,
            vec!["Analysts".to_string()]
        );
    }

    #[test]
    fn members_the_idp_removed_from_the_group_are_revoked_however_many() {
        let mut state = before(SubjectKind::User);
        state.groups[0].spec.members.truncate(1);

        let desired = state.pass(&ControllerSettings::default());

        assert_eq!(desired.hold, None);
        assert_eq!(Before::bound(&desired), names(&["u1"]));
        assert_eq!(desired.explanations[&key("u2")].cause, Cause::LeftGroup);
    }

    #[test]
    fn a_deleted_group_that_would_revoke_most_subjects_is_held_with_the_subjects_kept() {
        let mut state = before(SubjectKind::User);
        state.groups.clear();
        state.users[0].spec.active = Some(false);

        let desired = state.pass(&ControllerSettings::default());

        let hold = desired.hold.clone().unwrap();
        assert_eq!(
            (hold.reason, hold.subjects.clone(), hold.bound_before),
            (
                HoldReason::MassRevocation,
                vec![key("u2"), key("u3"), key("u4")],
                4
            )
        );
        assert_eq!(hold.causes, BTreeMap::from([(Cause::GroupGone, 3)]));
        assert_eq!(hold.vanished_groups, vec!["Analysts".to_string()]);
        assert_eq!(hold.fingerprint, build_fingerprint(&hold.subjects));
        // The deactivated user leaves even while the rest is held.
        assert_eq!(Before::bound(&desired), names(&["u2", "u3", "u4"]));
    }

    #[test]
    fn unexplained_revocations_within_the_ratio_go_ahead() {
        let mut state = before(SubjectKind::User);
        state.groups = vec![group("g1", "Analysts", &["u1", "u2", "u3"])];
        state.policy.spec.groups.push(GroupSelector {
            display_name: Some("Ops".into()),
            ..Default::default()
        });
        let mut record = state.policy.status.clone().unwrap();
        record.selected_groups.push(SelectedGroup {
            id: "g2".into(),
            display_name: "Ops".into(),
        });
        state.policy.status = Some(record);

        let desired = state.pass(&ControllerSettings::default());

        assert_eq!(desired.hold, None);
        assert_eq!(Before::bound(&desired), names(&["u1", "u2", "u3"]));
        assert_eq!(desired.explanations[&key("u4")].cause, Cause::GroupGone);
        assert_eq!(
            desired.explanations[&key("u4")].groups,
            vec!["Ops".to_string()]
        );
    }

    #[test]
    fn a_policy_edit_that_selects_another_group_is_held_until_released() {
        let mut state = before(SubjectKind::User);
        state.groups.push(group("g2", "Others", &[]));
        state.policy.spec.groups[0].display_name = Some("Others".into());
        let settings = ControllerSettings::default();

        let held = state.pass(&settings);
        let fingerprint = held.hold.as_ref().unwrap().fingerprint.clone();
        let annotate = |state: &mut Before, value: &str| {
            state
                .policy
                .annotations_mut()
                .insert(ALLOW_MASS_REVOCATION_ANNOTATION.into(), value.into());
        };
        annotate(&mut state, "0000000000");
        let wrong = state.pass(&settings);
        annotate(&mut state, &fingerprint);
        let released = state.pass(&settings);
        annotate(&mut state, "true");
        let always = state.pass(&settings);

        assert_eq!(Before::bound(&held), names(&["u1", "u2", "u3", "u4"]));
        assert_eq!(wrong.hold, held.hold);
        assert_eq!(
            (released.hold.clone(), Before::bound(&released)),
            (None, vec![])
        );
        assert_eq!(always.hold, None);
        assert_eq!(released.explanations[&key("u1")].cause, Cause::GroupGone);
    }

    #[test]
    fn raising_the_ratio_or_turning_it_off_releases_a_mass_revocation() {
        let mut state = before(SubjectKind::User);
        state.groups.clear();

        let off = state.pass(&ControllerSettings {
            max_revocation_ratio: None,
            ..Default::default()
        });
        let all = state.pass(&ControllerSettings {
            max_revocation_ratio: Some(1.0),
            ..Default::default()
        });
        let none = state.pass(&ControllerSettings {
            max_revocation_ratio: Some(0.0),
            ..Default::default()
        });

        assert_eq!((off.hold.clone(), Before::bound(&off)), (None, vec![]));
        assert_eq!(all.hold, None);
        assert_eq!(none.hold.unwrap().reason, HoldReason::MassRevocation);
    }

    #[test]
    fn a_user_missing_while_the_group_lists_unresolved_members_is_kept_whatever_the_ratio() {
        let mut state = before(SubjectKind::User);
        state.users.retain(|u| u.spec.id != "u4");
        let settings = ControllerSettings {
            max_revocation_ratio: None,
            ..Default::default()
        };

        let desired = state.pass(&settings);

        let hold = desired.hold.clone().unwrap();
        assert_eq!(
            (hold.reason, hold.subjects),
            (HoldReason::IncompleteDirectory, vec![key("u4")])
        );
        assert_eq!(Before::bound(&desired), names(&["u1", "u2", "u3", "u4"]));
    }

    #[test]
    fn an_incomplete_directory_is_named_even_when_it_is_most_of_the_policy() {
        let mut state = before(SubjectKind::User);
        state.users.retain(|u| u.spec.id == "u1");

        let desired = state.pass(&ControllerSettings::default());

        let hold = desired.hold.unwrap();
        assert_eq!(
            (hold.reason, hold.subjects.len()),
            (HoldReason::IncompleteDirectory, 3)
        );
    }

    #[test]
    fn a_user_deleted_and_removed_from_the_group_is_revoked() {
        let mut state = before(SubjectKind::User);
        state.users.retain(|u| u.spec.id != "u4");
        state.groups[0].spec.members.retain(|m| m.value != "u4");

        let desired = state.pass(&ControllerSettings::default());

        assert_eq!(desired.hold, None);
        assert_eq!(Before::bound(&desired), names(&["u1", "u2", "u3"]));
        assert_eq!(desired.explanations[&key("u4")].cause, Cause::Deleted);
    }

    #[test]
    fn a_group_missing_a_member_shard_keeps_the_members_it_might_hold() {
        let state = before(SubjectKind::User);
        let mut sharded = state.groups[0].clone();
        sharded.spec.members.clear();
        sharded.spec.member_shards = Some(2);
        let mut shard = ScimGroupMembers::new(
            "gm-g1-0",
            ScimGroupMembersSpec {
                group_id: "g1".into(),
                shard: 0,
                members: state.groups[0].spec.members[..2].to_vec(),
            },
        );
        shard.metadata.namespace = Some(TENANT.into());
        let groups = vec![sharded];
        let shards = vec![shard];
        let snapshot = Snapshot::new(&state.users, &groups).with_member_shards(&shards);

        let desired = build_policy_access(
            &state.policy,
            &snapshot,
            &state.current,
            &ControllerSettings::default(),
        );

        let hold = desired.hold.unwrap();
        assert_eq!(
            (hold.reason, hold.subjects),
            (HoldReason::IncompleteDirectory, vec![key("u3"), key("u4")])
        );
        assert_eq!(desired.outcome.subjects.len(), 2);
    }

    #[test]
    fn a_role_the_allow_list_refuses_is_revoked_at_once_but_a_malformed_grant_is_held() {
        let mut refused = before(SubjectKind::User);
        refused.policy.spec.grants[0].cluster_role = Some("cluster-admin".into());
        let mut malformed = before(SubjectKind::User);
        malformed.policy.spec.grants[0].role = Some("reader".into());
        let settings = ControllerSettings {
            allowed_roles: Some(vec!["view".into()]),
            ..Default::default()
        };

        let refused = refused.pass(&settings);
        let malformed = malformed.pass(&settings);

        assert_eq!(
            (refused.hold.clone(), Before::bound(&refused)),
            (None, vec![])
        );
        assert_eq!(
            refused.explanations[&key("u1")].cause,
            Cause::RoleNotAllowed
        );
        let hold = malformed.hold.clone().unwrap();
        assert_eq!(hold.causes, BTreeMap::from([(Cause::PolicyInvalid, 4)]));
        assert_eq!(Before::bound(&malformed), names(&["u1", "u2", "u3", "u4"]));
    }

    #[test]
    fn a_renamed_group_moves_its_group_subject_without_a_hold() {
        let mut state = before(SubjectKind::Group);
        state.groups[0].spec.display_name = "Data Analysts".into();
        state.policy.spec.groups[0] = GroupSelector {
            id: Some("g1".into()),
            ..Default::default()
        };

        let desired = state.pass(&ControllerSettings::default());

        assert_eq!(desired.hold, None);
        assert_eq!(Before::bound(&desired), vec!["Data Analysts".to_string()]);
        let old = SubjectKey {
            kind: GROUP_SUBJECT.into(),
            name: "Analysts".into(),
        };
        assert_eq!(desired.explanations[&old].cause, Cause::Renamed);
    }

    #[test]
    fn the_hold_message_says_how_many_why_and_how_to_proceed() {
        let mut state = before(SubjectKind::User);
        state.groups.clear();

        let hold = state.pass(&ControllerSettings::default()).hold.unwrap();

        assert_eq!(
            hold.message(),
            format!(
                "held revoking 4 of the 4 subjects bound (100%, more than the 50% one pass may \
                 revoke without an explicit reason in the directory); 4 were in groups that are \
                 gone or no longer selected (gone or unselected: Analysts); they keep their \
                 bindings: u1@example.com, u2@example.com, u3@example.com, u4@example.com. If \
                 this is intended, revoke them with: kubectl annotate accesspolicy analysts \
                 scim-operator.dev/allow-mass-revocation={} --overwrite",
                hold.fingerprint
            )
        );
    }
}

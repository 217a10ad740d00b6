//! The audit trail of access changes: one structured log line per subject and role that
//! gains or loses access, naming the subject, its groups, the policy and the reason, and
//! the notes of the Kubernetes Events that sum up a pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::desired::{Explanation, GROUP_SUBJECT, SubjectKey, Target, USER_SUBJECT};
use super::revocation::Cause;

/// Event reason of a pass that granted access.
pub const EVENT_ACCESS_GRANTED: &str = "AccessGranted";
/// Event reason of a pass that revoked access.
pub const EVENT_ACCESS_REVOKED: &str = "AccessRevoked";
/// The API server refuses Event notes longer than this many bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Whether access was granted or revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// The subject gained the role there.
    Granted,
    /// The subject lost the role there.
    Revoked,
}

impl Action {
    /// The reason of the Event that sums up changes of this action.
    pub fn event_reason(self) -> &'static str {
        match self {
            Action::Granted => EVENT_ACCESS_GRANTED,
            Action::Revoked => EVENT_ACCESS_REVOKED,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Granted => "granted",
            Action::Revoked => "revoked",
        }
    }
}

/// One subject gaining or losing one role in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessChange {
    /// Granted or revoked.
    pub action: Action,
    /// Who.
    pub subject: SubjectKey,
    /// Which role, where.
    pub target: Target,
    /// Why.
    pub cause: Cause,
    /// The groups concerned, by displayName.
    pub groups: Vec<String>,
}

/// The changes between the subjects each target held `before` and holds `after` a pass,
/// with the reasons from `explanations`; sorted by action, target, subject.
pub fn build_access_changes(
    before: &BTreeMap<Target, BTreeSet<SubjectKey>>,
    after: &BTreeMap<Target, BTreeSet<SubjectKey>>,
    explanations: &BTreeMap<SubjectKey, Explanation>,
) -> Vec<AccessChange> {
    let empty = BTreeSet::new();
    let targets: BTreeSet<&Target> = before.keys().chain(after.keys()).collect();
    let mut changes = Vec::new();
    for target in targets {
        let was = before.get(target).unwrap_or(&empty);
        let is = after.get(target).unwrap_or(&empty);
        for (action, subjects) in [
            (Action::Granted, is.difference(was)),
            (Action::Revoked, was.difference(is)),
        ] {
            for subject in subjects {
                let explanation = explanations.get(subject);
                let cause = match (action, explanation.map(|e| e.cause)) {
                    // A subject the policy still grants lost this binding only: its
                    // namespace or grant went away.
                    (Action::Revoked, Some(Cause::Granted) | None) => Cause::Unbound,
                    (Action::Granted, None) => Cause::Granted,
                    (_, Some(cause)) => cause,
                };
                changes.push(AccessChange {
                    action,
                    subject: subject.clone(),
                    target: target.clone(),
                    cause,
                    groups: explanation.map(|e| e.groups.clone()).unwrap_or_default(),
                });
            }
        }
    }
    changes
        .sort_by(|a, b| (a.action, &a.target, &a.subject).cmp(&(b.action, &b.target, &b.subject)));
    changes
}

/// Logs each change at info level, as the audit trail of access.
pub fn log_access_changes(policy: &str, changes: &[AccessChange]) {
    for change in changes {
        let user = (change.subject.kind == USER_SUBJECT).then_some(change.subject.name.as_str());
        let group = match change.subject.kind.as_str() {
            GROUP_SUBJECT => change.subject.name.clone(),
            _ => change.groups.join(","),
        };
        let namespace = change.target.namespace.as_deref().unwrap_or_default();
        let role = format!(
            "{}/{}",
            change.target.role_kind.as_str(),
            change.target.role
        );
        match change.action {
            Action::Granted => tracing::info!(
                policy,
                kind = %change.subject.kind,
                subject = %change.subject.name,
                user = user.unwrap_or_default(),
                group,
                role,
                namespace,
                reason = change.cause.as_str(),
                "access granted"
            ),
            Action::Revoked => tracing::info!(
                policy,
                kind = %change.subject.kind,
                subject = %change.subject.name,
                user = user.unwrap_or_default(),
                group,
                role,
                namespace,
                reason = change.cause.as_str(),
                "access revoked"
            ),
        }
    }
}

/// The notes of the Events that sum up `changes`: at most one for grants and one for
/// revocations, each within [`MAX_NOTE_BYTES`].
pub fn build_event_notes(changes: &[AccessChange]) -> Vec<(Action, String)> {
    let mut notes = Vec::new();
    for action in [Action::Granted, Action::Revoked] {
        let verb = action.verb();
        let of_action: Vec<&AccessChange> = changes.iter().filter(|c| c.action == action).collect();
        if of_action.is_empty() {
            continue;
        }
        let mut subjects: BTreeMap<&SubjectKey, Cause> = BTreeMap::new();
        for change in &of_action {
            subjects.entry(&change.subject).or_insert(change.cause);
        }
        let targets: BTreeSet<String> = of_action.iter().map(|c| c.target.to_string()).collect();
        let first = targets.iter().next().cloned().unwrap_or_default();
        let places = match targets.len() {
            1 => first,
            n => format!("{first} and {} more", n - 1),
        };
        let head = format!(
            "{verb} {} in {} ({places})",
            count(subjects.len(), "subject"),
            count(targets.len(), "place"),
        );
        let items: Vec<String> = subjects
            .iter()
            .map(|(subject, cause)| {
                let name = match subject.kind.as_str() {
                    USER_SUBJECT => subject.name.clone(),
                    kind => format!("{kind} {}", subject.name),
                };
                format!("{name} ({})", cause.as_str())
            })
            .collect();
        notes.push((action, build_note(&head, &items)));
    }
    notes
}

/// `head: item, item, …` cut to fit [`MAX_NOTE_BYTES`], counting what was left out.
fn build_note(head: &str, items: &[String]) -> String {
    // Room for ", and 1234567 more".
    const TAIL_RESERVE: usize = 24;
    let mut note = truncate(head, MAX_NOTE_BYTES - TAIL_RESERVE);
    for (index, item) in items.iter().enumerate() {
        let separator = if index == 0 { ": " } else { ", " };
        if note.len() + separator.len() + item.len() > MAX_NOTE_BYTES - TAIL_RESERVE {
            let _ = write!(note, ", and {} more", items.len() - index);
            return note;
        }
        note.push_str(separator);
        note.push_str(item);
    }
    note
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::controller::desired::RoleKind;

    fn user(name: &str) -> SubjectKey {
        SubjectKey {
            kind: "User".into(),
            name: name.into(),
        }
    }

    fn view_in(namespace: Option<&str>) -> Target {
        Target {
            namespace: namespace.map(str::to_string),
            role_kind: RoleKind::Cluster,
            role: "view".into(),
        }
    }

    fn explained(cause: Cause, groups: &[&str]) -> Explanation {
        Explanation {
            cause,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn changes_name_the_subject_target_reason_and_groups_and_a_moved_binding_reads_as_unbound() {
        let before = BTreeMap::from([
            (view_in(None), BTreeSet::from([user("alice"), user("bob")])),
            (view_in(Some("old")), BTreeSet::from([user("alice")])),
        ]);
        let after = BTreeMap::from([
            (
                view_in(None),
                BTreeSet::from([user("alice"), user("carol")]),
            ),
            (view_in(Some("new")), BTreeSet::from([user("alice")])),
        ]);
        let explanations = BTreeMap::from([
            (user("alice"), explained(Cause::Granted, &["Analysts"])),
            (user("bob"), explained(Cause::Deactivated, &["Analysts"])),
            (user("carol"), explained(Cause::Granted, &["Analysts"])),
        ]);

        let changes = build_access_changes(&before, &after, &explanations);

        let change = |action, subject: &str, target, cause| AccessChange {
            action,
            subject: user(subject),
            target,
            cause,
            groups: vec!["Analysts".into()],
        };
        assert_eq!(
            changes,
            vec![
                change(Action::Granted, "carol", view_in(None), Cause::Granted),
                change(
                    Action::Granted,
                    "alice",
                    view_in(Some("new")),
                    Cause::Granted
                ),
                change(Action::Revoked, "bob", view_in(None), Cause::Deactivated),
                change(
                    Action::Revoked,
                    "alice",
                    view_in(Some("old")),
                    Cause::Unbound
                ),
            ]
        );
    }

    #[test]
    fn event_notes_sum_up_a_pass_per_action() {
        let before = BTreeMap::from([(view_in(None), BTreeSet::from([user("bob")]))]);
        let after = BTreeMap::from([
            (view_in(None), BTreeSet::from([user("alice")])),
            (view_in(Some("data")), BTreeSet::from([user("alice")])),
        ]);
        let explanations = BTreeMap::from([
            (user("alice"), explained(Cause::Granted, &[])),
            (user("bob"), explained(Cause::Deactivated, &[])),
        ]);
        let changes = build_access_changes(&before, &after, &explanations);

        let notes = build_event_notes(&changes);

        assert_eq!(
            notes,
            vec![
                (
                    Action::Granted,
                    "granted 1 subject in 2 places (ClusterRole view cluster-wide and 1 \
                     more): alice (granted)"
                        .to_string()
                ),
                (
                    Action::Revoked,
                    "revoked 1 subject in 1 place (ClusterRole view cluster-wide): bob \
                     (deactivated)"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_note_of_many_subjects_stays_within_the_limit_and_counts_the_rest() {
        let after = BTreeMap::from([(
            view_in(None),
            (0..5000)
                .map(|i| user(&format!("user-{i:05}@example.com")))
                .collect(),
        )]);

        let notes = build_event_notes(&build_access_changes(
            &BTreeMap::new(),
            &after,
            &BTreeMap::new(),
        ));

        let (action, note) = &notes[0];
        assert_eq!(*action, Action::Granted);
        assert!(note.len() <= MAX_NOTE_BYTES, "{}", note.len());
        assert!(note.starts_with("granted 5000 subjects in 1 place (ClusterRole view"));
        assert!(note.contains("user-00000@example.com (granted), user-00001@example.com"));
        assert!(note.ends_with(" more"), "{note}");
    }
}

//! Trino's own formats, which Trino reads as they are: the rules file of file-based access
//! control (`access-control.name=file`, `security.config-file=.../rules.json`) and the group
//! file of the file group provider (`group-provider.name=file`,
//! `file.group-file=.../group.txt`). Both are pure functions of a [`PlatformDocument`].
//!
//! Trino applies the first rule that matches, where this operator's grants add up. The
//! rules are ordered so that first-match gives the sum:
//! - table rules are written for every intersection of the granted patterns, the most
//!   specific first, each carrying every privilege of the patterns that contain it;
//! - at one pattern, the group holding more privileges comes first; a user whose groups
//!   still disagree (neither holds all the user's privileges) gets rules of their own,
//!   ahead of every group rule;
//! - catalog rules granting `all` come before those granting `read-only`.
//!
//! Every section is written, even when empty: Trino reads a missing section as "allow
//! everything" and an empty one as "deny".
//!
//! Group names are the groups' displayNames when the target is restricted to one tenant,
//! and `<tenant>/<displayName>` otherwise, so that two IdPs' groups never merge. Names the
//! group file cannot hold (a group name with `:`, a userName with `,`, surrounding spaces,
//! line breaks) are left out, so such a group or user holds nothing in Trino.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::format::{PlatformDocument, ResourcePattern};
use crate::resources::PlatformPrivilege;

/// Key of the rules file in the target's object.
pub const TRINO_RULES_KEY: &str = "rules.json";
/// Key of the group file in the target's object.
pub const TRINO_GROUP_FILE_KEY: &str = "group.txt";
/// First line of the group file; Trino skips lines that start with `#`.
const GROUP_FILE_HEADER: &str =
    "# Trino group file written by scim-operator from the SCIM directory; edits are overwritten.";
/// Characters with a meaning in a Java regular expression outside a character class.
const REGEX_SPECIAL: &[char] = &[
    '\\', '^', '$', '.', '|', '?', '*', '+', '(', ')', '[', ']', '{', '}',
];
/// Matches any name.
const ANY: &str = ".*";

/// The rules file of Trino's file-based system access control.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TrinoRules {
    /// Which catalogs each group may use, and whether only to read.
    pub catalogs: Vec<TrinoCatalogRule>,
    /// Always empty: no one owns a schema through this operator, and an empty list (unlike
    /// a missing one) says so to Trino.
    pub schemas: Vec<serde_json::Value>,
    /// Privileges on tables.
    pub tables: Vec<TrinoTableRule>,
}

/// One catalog rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TrinoCatalogRule {
    /// Regular expression matching the group's name.
    pub group: String,
    /// Regular expression matching the catalog's name.
    pub catalog: String,
    /// What the group may do in the catalog.
    pub allow: CatalogAccess,
}

/// Access to a catalog; the variants are ordered from most to least access.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum CatalogAccess {
    /// Reading and writing, as the table rules allow.
    All,
    /// Reading only.
    ReadOnly,
}

/// One table rule; exactly one of `user` and `group` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TrinoTableRule {
    /// Regular expression matching one user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Regular expression matching one group's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Regular expression matching catalog names.
    pub catalog: String,
    /// Regular expression matching schema names.
    pub schema: String,
    /// Regular expression matching table names.
    pub table: String,
    /// What the rule allows, sorted.
    pub privileges: Vec<PlatformPrivilege>,
}

/// Privileges by table pattern.
type Grants = Vec<(ResourcePattern, BTreeSet<PlatformPrivilege>)>;

/// Builds the rules that give each group, through Trino's first-match evaluation, exactly
/// the privileges the document grants it, and each user the sum over their groups.
pub fn build_trino_rules(document: &PlatformDocument) -> TrinoRules {
    let grants = build_group_grants(document);
    let patterns = build_pattern_closure(grants.values().flatten().map(|(p, _)| p));

    // Groups: at each pattern, the group with more privileges first.
    let ranked: Vec<Vec<(&str, BTreeSet<PlatformPrivilege>)>> = patterns
        .iter()
        .map(|pattern| {
            let mut at: Vec<_> = grants
                .iter()
                .map(|(group, grants)| (group.as_str(), build_privileges_at(grants, pattern)))
                .filter(|(_, privileges)| !privileges.is_empty())
                .collect();
            at.sort_by_key(|(group, privileges)| (Reverse(privileges.len()), *group));
            at
        })
        .collect();

    // Users: their own rules, first, where first-match over their groups falls short.
    let mut tables = Vec::new();
    for (user, groups) in build_user_groups(document, &grants) {
        let effective: Vec<BTreeSet<PlatformPrivilege>> = patterns
            .iter()
            .map(|p| {
                let held = groups.iter().filter_map(|g| grants.get(*g));
                held.flat_map(|grants| build_privileges_at(grants, p))
                    .collect()
            })
            .collect();
        let first_match_falls_short = ranked.iter().zip(&effective).any(|(at, effective)| {
            let first = at.iter().find(|(g, _)| groups.contains(g));
            first.map(|(_, privileges)| privileges) != Some(effective) && !effective.is_empty()
        });
        if !first_match_falls_short {
            continue;
        }
        for (pattern, privileges) in patterns.iter().zip(effective) {
            if !privileges.is_empty() {
                tables.push(build_table_rule(Principal::User(user), pattern, privileges));
            }
        }
    }
    for (pattern, at) in patterns.iter().zip(ranked) {
        for (group, privileges) in at {
            tables.push(build_table_rule(
                Principal::Group(group),
                pattern,
                privileges,
            ));
        }
    }

    TrinoRules {
        catalogs: build_catalog_rules(&grants),
        schemas: Vec::new(),
        tables,
    }
}

/// The rules file as pretty-printed JSON with a final newline.
pub fn build_trino_rules_json(rules: &TrinoRules) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(rules)?;
    text.push('\n');
    Ok(text)
}

/// Builds the group file: a comment line, then `group:user1,user2` per group with active
/// members, sorted by group and by user.
pub fn build_trino_group_file(document: &PlatformDocument) -> String {
    let mut members: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for group in &document.groups {
        let name = build_trino_group_name(document, &group.tenant, &group.name);
        if !is_trino_group_name(&name) {
            continue;
        }
        let users = group.members.iter().map(String::as_str);
        members
            .entry(name)
            .or_default()
            .extend(users.filter(|u| is_trino_user_name(u)));
    }
    let mut text = format!("{GROUP_FILE_HEADER}\n");
    for (group, users) in members.into_iter().filter(|(_, u)| !u.is_empty()) {
        let users: Vec<&str> = users.into_iter().collect();
        text.push_str(&format!("{group}:{}\n", users.join(",")));
    }
    text
}

/// What the Trino files leave out of `document`, one sentence each, sorted.
pub fn build_trino_warnings(document: &PlatformDocument) -> Vec<String> {
    let mut warnings = BTreeSet::new();
    for group in &document.groups {
        let name = build_trino_group_name(document, &group.tenant, &group.name);
        if !is_trino_group_name(&name) {
            warnings.insert(format!(
                "group {name:?} is left out of Trino: a Trino group name cannot hold ':' or line \
                 breaks, start with '#' or with spaces"
            ));
        }
        for user in group.members.iter().filter(|u| !is_trino_user_name(u)) {
            warnings.insert(format!(
                "user {user:?} is left out of the Trino group file: a name there cannot hold ',' \
                 or line breaks, or start or end with spaces"
            ));
        }
    }
    warnings.into_iter().collect()
}

/// The Trino name of the group `name` of `tenant`.
pub fn build_trino_group_name(document: &PlatformDocument, tenant: &str, name: &str) -> String {
    if document.tenant.is_some() {
        name.to_string()
    } else {
        format!("{tenant}/{name}")
    }
}

/// Quotes `literal` as a Java regular expression that matches exactly it.
pub fn build_trino_regex(literal: &str) -> String {
    let mut regex = String::with_capacity(literal.len());
    for c in literal.chars() {
        if REGEX_SPECIAL.contains(&c) {
            regex.push('\\');
        }
        regex.push(c);
    }
    regex
}

/// Each group's grants, by Trino group name.
fn build_group_grants(document: &PlatformDocument) -> BTreeMap<String, Grants> {
    let mut grants: BTreeMap<String, Grants> = BTreeMap::new();
    for grant in &document.grants {
        // The document holds only validated patterns; one that is not is skipped rather
        // than guessed at.
        let patterns: Vec<ResourcePattern> = grant
            .resources
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        let privileges: BTreeSet<PlatformPrivilege> = grant.privileges.iter().copied().collect();
        for group in &grant.groups {
            let name = build_trino_group_name(document, &grant.tenant, group);
            if !is_trino_group_name(&name) {
                continue;
            }
            let entry = grants.entry(name).or_default();
            entry.extend(patterns.iter().map(|p| (p.clone(), privileges.clone())));
        }
    }
    grants
}

/// The Trino groups of each user listed in the group file, for the groups that hold grants.
fn build_user_groups<'a>(
    document: &'a PlatformDocument,
    grants: &'a BTreeMap<String, Grants>,
) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for group in &document.groups {
        let name = build_trino_group_name(document, &group.tenant, &group.name);
        let Some((name, _)) = grants.get_key_value(&name) else {
            continue;
        };
        for user in group.members.iter().filter(|u| is_trino_user_name(u)) {
            users.entry(user).or_default().insert(name);
        }
    }
    users
}

/// Every pattern and every non-empty intersection of patterns, the most specific first.
///
/// The set is closed under intersection, so for any table the patterns that match it have
/// a most specific member, and it comes before the others.
fn build_pattern_closure<'a>(
    patterns: impl Iterator<Item = &'a ResourcePattern>,
) -> Vec<ResourcePattern> {
    let mut closure: BTreeSet<ResourcePattern> = patterns.cloned().collect();
    loop {
        let current: Vec<ResourcePattern> = closure.iter().cloned().collect();
        let mut grew = false;
        for (index, a) in current.iter().enumerate() {
            for b in &current[index + 1..] {
                if let Some(both) = a.intersect(b) {
                    grew |= closure.insert(both);
                }
            }
        }
        if !grew {
            break;
        }
    }
    let mut ordered: Vec<ResourcePattern> = closure.into_iter().collect();
    ordered.sort_by_key(|p| Reverse(p.specificity()));
    ordered
}

/// Everything `grants` allow on the tables `pattern` matches.
fn build_privileges_at(grants: &Grants, pattern: &ResourcePattern) -> BTreeSet<PlatformPrivilege> {
    grants
        .iter()
        .filter(|(granted, _)| pattern.is_within(granted))
        .flat_map(|(_, privileges)| privileges.iter().copied())
        .collect()
}

/// Catalog rules: `all` where any write privilege is granted, `read-only` otherwise.
fn build_catalog_rules(grants: &BTreeMap<String, Grants>) -> Vec<TrinoCatalogRule> {
    let mut access: BTreeMap<(&str, String), CatalogAccess> = BTreeMap::new();
    for (group, grants) in grants {
        for (pattern, privileges) in grants {
            let needed = if privileges.iter().all(|p| is_read_privilege(*p)) {
                CatalogAccess::ReadOnly
            } else {
                CatalogAccess::All
            };
            let catalog = build_part_regex(pattern.catalog.as_deref());
            let entry = access.entry((group, catalog)).or_insert(needed);
            *entry = (*entry).min(needed);
        }
    }
    let mut rules: Vec<TrinoCatalogRule> = access
        .into_iter()
        .map(|((group, catalog), allow)| TrinoCatalogRule {
            group: build_trino_regex(group),
            catalog,
            allow,
        })
        .collect();
    rules.sort_by(|a, b| (a.allow, &a.catalog, &a.group).cmp(&(b.allow, &b.catalog, &b.group)));
    rules
}

enum Principal<'a> {
    User(&'a str),
    Group(&'a str),
}

fn build_table_rule(
    principal: Principal<'_>,
    pattern: &ResourcePattern,
    privileges: BTreeSet<PlatformPrivilege>,
) -> TrinoTableRule {
    let (user, group) = match principal {
        Principal::User(user) => (Some(build_trino_regex(user)), None),
        Principal::Group(group) => (None, Some(build_trino_regex(group))),
    };
    TrinoTableRule {
        user,
        group,
        catalog: build_part_regex(pattern.catalog.as_deref()),
        schema: build_part_regex(pattern.schema.as_deref()),
        table: build_part_regex(pattern.table.as_deref()),
        privileges: privileges.into_iter().collect(),
    }
}

fn build_part_regex(part: Option<&str>) -> String {
    part.map_or_else(|| ANY.to_string(), build_trino_regex)
}

/// Privileges that a `read-only` catalog still permits.
fn is_read_privilege(privilege: PlatformPrivilege) -> bool {
    matches!(
        privilege,
        PlatformPrivilege::Select | PlatformPrivilege::GrantSelect
    )
}

/// Whether the group file can name the group: Trino splits a line at its first `:`, trims
/// both sides and skips lines that start with `#`.
fn is_trino_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.trim() == name
        && !name.starts_with('#')
        && !name.contains([':', '\n', '\r'])
}

/// Whether the group file can name the user: Trino splits the members at `,` and trims each.
fn is_trino_user_name(name: &str) -> bool {
    !name.is_empty() && name.trim() == name && !name.contains([',', '\n', '\r'])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::platform::format::{PLATFORM_API_VERSION, PLATFORM_KIND};
    use crate::platform::format::{PlatformAccessGrant, PlatformGroup};
    use crate::resources::PlatformPrivilege::{Delete, Insert, Select};

    const TENANT: &str = "idp-acme";

    fn document(
        groups: &[(&str, &[&str])],
        grants: &[(&str, &[&str], &[PlatformPrivilege])],
    ) -> PlatformDocument {
        PlatformDocument {
            api_version: PLATFORM_API_VERSION.into(),
            kind: PLATFORM_KIND.into(),
            target: "analytics".into(),
            tenant: Some(TENANT.into()),
            users: vec![],
            groups: groups
                .iter()
                .map(|(name, members)| PlatformGroup {
                    name: name.to_string(),
                    members: members.iter().map(|m| m.to_string()).collect(),
                    id: format!("id-{name}"),
                    tenant: TENANT.into(),
                })
                .collect(),
            grants: grants
                .iter()
                .map(|(group, resources, privileges)| PlatformAccessGrant {
                    policy: format!("{}-policy", group.to_lowercase()),
                    tenant: TENANT.into(),
                    groups: vec![group.to_string()],
                    users: vec![],
                    resources: resources.iter().map(|r| r.to_string()).collect(),
                    privileges: privileges.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn nested_grants_become_specific_rules_first_with_the_wider_privileges_folded_in() {
        let doc = document(
            &[
                ("Analysts", &["ada@example.com", "bob@example.com"]),
                ("Engineers", &["ada@example.com", "carol@example.com"]),
            ],
            &[
                ("Analysts", &["analytics.*.*"], &[Select]),
                ("Engineers", &["analytics.raw.*"], &[Insert, Select]),
            ],
        );

        let rules = build_trino_rules(&doc);

        assert_eq!(
            serde_json::to_value(&rules).unwrap(),
            json!({
                "catalogs": [
                    {"group": "Engineers", "catalog": "analytics", "allow": "all"},
                    {"group": "Analysts", "catalog": "analytics", "allow": "read-only"},
                ],
                "schemas": [],
                "tables": [
                    {"group": "Engineers", "catalog": "analytics", "schema": "raw", "table": ".*",
                     "privileges": ["INSERT", "SELECT"]},
                    {"group": "Analysts", "catalog": "analytics", "schema": "raw", "table": ".*",
                     "privileges": ["SELECT"]},
                    {"group": "Analysts", "catalog": "analytics", "schema": ".*", "table": ".*",
                     "privileges": ["SELECT"]},
                ],
            })
        );
    }

    #[test]
    fn a_user_whose_groups_grant_incomparable_privileges_gets_rules_of_their_own() {
        let doc = document(
            &[
                ("Readers", &["ada@example.com", "bob@example.com"]),
                ("Cleaners", &["ada@example.com"]),
            ],
            &[
                ("Readers", &["sales.orders.*"], &[Select]),
                ("Cleaners", &["sales.*.staging"], &[Delete]),
            ],
        );

        let rules = build_trino_rules(&doc);

        assert_eq!(
            serde_json::to_value(&rules.tables).unwrap(),
            json!([
                {"user": "ada@example\\.com", "catalog": "sales", "schema": "orders",
                 "table": "staging", "privileges": ["DELETE", "SELECT"]},
                {"user": "ada@example\\.com", "catalog": "sales", "schema": ".*",
                 "table": "staging", "privileges": ["DELETE"]},
                {"user": "ada@example\\.com", "catalog": "sales", "schema": "orders",
                 "table": ".*", "privileges": ["SELECT"]},
                {"group": "Cleaners", "catalog": "sales", "schema": "orders", "table": "staging",
                 "privileges": ["DELETE"]},
                {"group": "Readers", "catalog": "sales", "schema": "orders", "table": "staging",
                 "privileges": ["SELECT"]},
                {"group": "Cleaners", "catalog": "sales", "schema": ".*", "table": "staging",
                 "privileges": ["DELETE"]},
                {"group": "Readers", "catalog": "sales", "schema": "orders", "table": ".*",
                 "privileges": ["SELECT"]},
            ])
        );
    }

    #[test]
    fn an_empty_document_denies_everything_explicitly() {
        let rules = build_trino_rules(&document(&[], &[]));

        assert_eq!(
            build_trino_rules_json(&rules).unwrap(),
            "{\n  \"catalogs\": [],\n  \"schemas\": [],\n  \"tables\": []\n}\n"
        );
    }

    #[test]
    fn the_group_file_lists_groups_with_active_members_and_leaves_out_what_it_cannot_hold() {
        let doc = document(
            &[
                ("Engineers", &["carol@example.com", "ada@example.com"]),
                ("Empty", &[]),
                ("a:b", &["ada@example.com"]),
                ("Analysts", &["bob,admin", "ada@example.com"]),
            ],
            &[],
        );

        assert_eq!(
            build_trino_group_file(&doc),
            format!(
                "{GROUP_FILE_HEADER}\nAnalysts:ada@example.com\n\
                 Engineers:ada@example.com,carol@example.com\n"
            )
        );
        assert_eq!(
            build_trino_warnings(&doc),
            vec![
                "group \"a:b\" is left out of Trino: a Trino group name cannot hold ':' or line \
                 breaks, start with '#' or with spaces"
                    .to_string(),
                "user \"bob,admin\" is left out of the Trino group file: a name there cannot \
                 hold ',' or line breaks, or start or end with spaces"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn groups_of_a_target_spanning_tenants_carry_their_tenant() {
        let mut doc = document(
            &[("Analysts", &["ada@example.com"])],
            &[("Analysts", &["a.*.*"], &[Select])],
        );
        doc.tenant = None;

        let rules = build_trino_rules(&doc);

        assert_eq!(rules.catalogs[0].group, "idp-acme/Analysts");
        assert_eq!(
            build_trino_group_file(&doc),
            format!("{GROUP_FILE_HEADER}\nidp-acme/Analysts:ada@example.com\n")
        );
    }

    #[test]
    fn regex_quoting_escapes_exactly_the_special_characters() {
        assert_eq!(
            build_trino_regex("a.b+c@d-e|f(g)*"),
            "a\\.b\\+c@d-e\\|f\\(g\\)\\*"
        );
    }
}

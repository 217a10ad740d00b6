//! The PATCH engine (RFC 7644 §3.5.2): reads a PatchOp request and applies its operations
//! to a resource all-or-nothing, with the tolerances that real identity providers need.
//!
//! Choices where the RFC leaves room or real clients bend it:
//!
//! - `schemas` is not checked: the `Operations` list alone says what the request means.
//! - Op names and the `Operations`, `op`, `path` and `value` keys match in any case.
//! - A path that names no attribute of the schema is 400 `invalidPath`; in a pathless
//!   value, unknown keys are ignored, as are read-only attributes other than `id` and
//!   `meta`, which may be echoed unchanged but never changed.
//! - Removing elements that a value filter does not match is not an error (identity
//!   providers remove members that are already gone).
//! - `remove` with path `members` (or any complex attribute) and a `value` list removes
//!   only the listed elements, matched by their `value`.
//! - `add` or `replace` through a value filter that matches nothing creates the element,
//!   seeded with the filter's `eq` terms.
//! - A password is accepted and dropped; it is never stored and never quoted in an error.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::error::{ScimError, ScimType};
use super::filter::{self, Filter, PatchPath};
use super::normalize::{
    coerce_fields, coerce_single, coerce_value, drop_empty_extensions, enforce_single_primary,
    is_discarded, is_members, object_entry, same_element, set_schemas, validate_required,
};
use super::schema::{
    AttrPath, AttrType, AttributeDef, COMMON_ATTRIBUTES, Mutability, ResourceSchema, SchemaDef,
};

/// URN of the PATCH request message.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// What a PATCH operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Set a value, append to a list or merge into a complex value.
    Add,
    /// Unassign a value or remove elements of a list.
    Remove,
    /// Set a value, or replace a list or the elements a filter picks.
    Replace,
}

/// One operation of a PATCH request.
#[derive(Debug, Clone)]
pub struct PatchOp {
    pub op: OpKind,
    /// `None` for `add` or `replace` whose value is an object of attributes.
    pub path: Option<PatchPath>,
    /// Never `null`; required for `add` and `replace`, a list of elements for `remove`.
    pub value: Option<Value>,
}

/// Reads the operations of a PATCH request body.
///
/// An empty `Operations` list is valid and changes nothing. Errors (all 400): a body or
/// operation that is not an object, a missing `Operations` list or an unknown op name is
/// `invalidSyntax`; a malformed path is `invalidPath`; `remove` without a path is
/// `noTarget`; `add` or `replace` without a value (or with `null`) is `invalidValue`.
pub fn parse_patch_request(body: &Value) -> Result<Vec<PatchOp>, ScimError> {
    let Some(body) = body.as_object() else {
        return Err(ScimError::invalid_syntax(
            "the request body must be a JSON object",
        ));
    };
    let operations = match get_ignore_case(body, "Operations") {
        Some(Value::Array(operations)) => operations,
        Some(_) => return Err(ScimError::invalid_syntax("`Operations` must be a list")),
        None => {
            return Err(ScimError::invalid_syntax(
                "the request has no `Operations` list",
            ));
        }
    };
    operations
        .iter()
        .enumerate()
        .map(|(i, op)| parse_op(i, op))
        .collect()
}

/// Applies the operations in order to `resource`, or changes nothing when one fails.
///
/// Values are coerced to the schema types as [`super::normalize::normalize_input`] does,
/// so the result stays a canonical resource: required attributes present, at most one
/// `primary` per multi-valued attribute (the newest wins), `schemas` listing the
/// extensions present, and no empty lists or extension objects.
pub fn apply_patch(
    resource: &mut Value,
    ops: &[PatchOp],
    schema: &ResourceSchema,
) -> Result<(), ScimError> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut work = resource.clone();
    let Some(fields) = work.as_object_mut() else {
        return Err(ScimError::status(
            500,
            "the stored resource is not an object",
        ));
    };

    // Apply every operation to the copy; the first failure discards it.
    for op in ops {
        apply_op(fields, op, schema)?;
    }

    // Check and tidy the result as a whole before it replaces the original.
    drop_empty_extensions(fields, schema);
    validate_required(fields, schema)?;
    set_schemas(fields, schema);
    *resource = work;
    Ok(())
}

/// Reads one element of `Operations`.
fn parse_op(index: usize, op: &Value) -> Result<PatchOp, ScimError> {
    let Some(op) = op.as_object() else {
        return Err(ScimError::invalid_syntax(format!(
            "Operations[{index}] must be an object"
        )));
    };
    let kind = match get_ignore_case(op, "op").and_then(Value::as_str) {
        Some(name) if name.eq_ignore_ascii_case("add") => OpKind::Add,
        Some(name) if name.eq_ignore_ascii_case("remove") => OpKind::Remove,
        Some(name) if name.eq_ignore_ascii_case("replace") => OpKind::Replace,
        _ => {
            return Err(ScimError::invalid_syntax(format!(
                "Operations[{index}].op must be `add`, `remove` or `replace`"
            )));
        }
    };
    let path = match get_ignore_case(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) if path.trim().is_empty() => None,
        Some(Value::String(path)) => Some(parse_path(path.trim())?),
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "Operations[{index}].path must be a string"
            )));
        }
    };
    let value = get_ignore_case(op, "value")
        .filter(|v| !v.is_null())
        .cloned();
    match (kind, &path, &value) {
        (OpKind::Remove, None, _) => Err(ScimError::no_target(format!(
            "Operations[{index}] is a remove without a path"
        ))),
        (OpKind::Add | OpKind::Replace, _, None) => Err(ScimError::invalid_value(format!(
            "Operations[{index}] needs a value"
        ))),
        _ => Ok(PatchOp {
            op: kind,
            path,
            value,
        }),
    }
}

/// Parses a PATCH path; every syntax error is reported as `invalidPath`.
fn parse_path(path: &str) -> Result<PatchPath, ScimError> {
    filter::parse_patch_path(path).map_err(|err| {
        let mut err = ScimError::from(err);
        err.scim_type = Some(ScimType::InvalidPath);
        err
    })
}

/// The value under `key`, preferring an exact match over one that differs in case.
fn get_ignore_case<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Where an operation with a path lands, with canonical definitions.
struct Target<'a> {
    /// The extension URN that holds the attribute, `None` for the core schema.
    extension: Option<&'static str>,
    attr: &'static AttributeDef,
    /// A value filter on the attribute's elements (`emails[type eq "work"]`).
    filter: Option<&'a Filter>,
    sub: Option<&'static AttributeDef>,
}

impl Target<'_> {
    /// The path as it reads in an error detail, without the filter.
    fn label(&self) -> String {
        match self.sub {
            Some(sub) => format!("{}.{}", self.attr.name, sub.name),
            None => self.attr.name.to_owned(),
        }
    }
}

/// Applies one operation to the working copy.
fn apply_op(
    resource: &mut Map<String, Value>,
    op: &PatchOp,
    schema: &ResourceSchema,
) -> Result<(), ScimError> {
    let value = op.value.as_ref().filter(|v| !v.is_null());
    let Some(path) = &op.path else {
        return match (op.op, value) {
            (OpKind::Remove, _) => Err(ScimError::no_target("a remove needs a path")),
            (kind, Some(value)) => apply_pathless(resource, kind, value, schema, None),
            (_, None) => Err(ScimError::invalid_value("the operation needs a value")),
        };
    };

    // A path may name a whole extension object.
    if let Some(ext) = whole_extension(path, schema) {
        return match (op.op, value) {
            (OpKind::Remove, _) => {
                resource.remove(ext.id);
                Ok(())
            }
            (kind, Some(value)) => apply_pathless(resource, kind, value, schema, Some(ext.id)),
            (_, None) => Err(ScimError::invalid_value("the operation needs a value")),
        };
    }

    let target = resolve_target(path, schema)?;
    if is_discarded(target.attr) {
        return Ok(());
    }
    if target.attr.mutability == Mutability::ReadOnly
        || target
            .sub
            .is_some_and(|sub| sub.mutability == Mutability::ReadOnly)
    {
        return Err(ScimError::mutability(format!(
            "attribute `{}` is read-only",
            target.label()
        )));
    }
    match (op.op, value) {
        (OpKind::Remove, value) => remove_target(resource, &target, value),
        (kind, Some(value)) => write_target(resource, &target, kind, value),
        (_, None) => Err(ScimError::invalid_value("the operation needs a value")),
    }
}

/// The extension when the path is a bare extension URN, which [`AttrPath::parse`] reads
/// as the URN's last segment qualified by the rest.
fn whole_extension(path: &PatchPath, schema: &ResourceSchema) -> Option<&'static SchemaDef> {
    match (&path.attr.schema, &path.attr.sub, &path.filter, &path.sub) {
        (Some(prefix), None, None, None) => {
            schema.is_extension_urn(&format!("{prefix}:{}", path.attr.attr))
        }
        _ => None,
    }
}

/// Resolves a PATCH path against the schema; unknown names are `invalidPath`.
fn resolve_target<'a>(
    path: &'a PatchPath,
    schema: &ResourceSchema,
) -> Result<Target<'a>, ScimError> {
    let unknown = || ScimError::invalid_path(format!("unknown attribute `{}`", path.attr));
    let resolved = schema.resolve(&path.attr).ok_or_else(unknown)?;
    let sub = match (&path.sub, resolved.sub) {
        (None, sub) => sub,
        (Some(name), None) => Some(resolved.attr.find_sub(name).ok_or_else(|| {
            ScimError::invalid_path(format!("unknown attribute `{}.{name}`", resolved.attr.name))
        })?),
        (Some(_), Some(_)) => return Err(unknown()),
    };
    if let Some(filter) = &path.filter {
        if resolved.attr.kind != AttrType::Complex {
            return Err(ScimError::invalid_path(format!(
                "a value filter needs a complex attribute, and `{}` is not one",
                resolved.attr.name
            )));
        }
        let value_path = Filter::ValuePath {
            attr: path.attr.clone(),
            filter: Box::new(filter.clone()),
        };
        value_path.validate(schema)?;
    }
    Ok(Target {
        extension: resolved.extension,
        attr: resolved.attr,
        filter: path.filter.as_ref(),
        sub,
    })
}

/// `add` or `replace` without a path: every key of the value (or of each object in a
/// list of values) is applied as if it were a path. `qualifier` is the schema URN that
/// unqualified keys belong to, when the value is an extension object.
fn apply_pathless(
    resource: &mut Map<String, Value>,
    kind: OpKind,
    value: &Value,
    schema: &ResourceSchema,
    qualifier: Option<&'static str>,
) -> Result<(), ScimError> {
    let objects: Vec<&Map<String, Value>> = match value {
        Value::Object(fields) => vec![fields],
        Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    if objects.is_empty() {
        return Err(ScimError::invalid_value(
            "an operation without a path needs an object value",
        ));
    }
    for fields in objects {
        for (key, v) in fields {
            apply_pathless_key(resource, kind, key, v, schema, qualifier)?;
        }
    }
    Ok(())
}

/// Applies one key of a pathless value.
fn apply_pathless_key(
    resource: &mut Map<String, Value>,
    kind: OpKind,
    key: &str,
    value: &Value,
    schema: &ResourceSchema,
    qualifier: Option<&'static str>,
) -> Result<(), ScimError> {
    if qualifier.is_none() {
        if key.eq_ignore_ascii_case("schemas") {
            return Ok(());
        }
        let nested = schema.is_extension_urn(key).map(|ext| ext.id).or_else(|| {
            key.eq_ignore_ascii_case(schema.core.id)
                .then_some(schema.core.id)
        });
        if let Some(urn) = nested {
            return match value {
                Value::Null if kind == OpKind::Replace && urn != schema.core.id => {
                    resource.remove(urn);
                    Ok(())
                }
                Value::Null => Ok(()),
                Value::Object(_) => apply_pathless(resource, kind, value, schema, Some(urn)),
                _ => Err(ScimError::invalid_value(format!(
                    "`{urn}` must be an object"
                ))),
            };
        }
    }

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
    if attr.mutability == Mutability::ReadOnly {
        return check_echo(resource, attr, resolved.sub, value);
    }
    if is_discarded(attr)
        || resolved
            .sub
            .is_some_and(|sub| sub.mutability == Mutability::ReadOnly)
    {
        return Ok(());
    }
    let target = Target {
        extension: resolved.extension,
        attr,
        filter: None,
        sub: resolved.sub,
    };
    match (kind, value) {
        (OpKind::Replace, Value::Null) => remove_target(resource, &target, None),
        (_, Value::Null) => Ok(()),
        (kind, value) => write_target(resource, &target, kind, value),
    }
}

/// A read-only attribute in a pathless value: `id` and `meta` may be echoed unchanged
/// (Okta repeats the group's own `id` when it renames it) but never changed; other
/// read-only attributes (`groups`) are ignored, and so are `id` and `meta` when the
/// resource passed in does not hold them.
fn check_echo(
    resource: &Map<String, Value>,
    attr: &'static AttributeDef,
    sub: Option<&'static AttributeDef>,
    value: &Value,
) -> Result<(), ScimError> {
    if !COMMON_ATTRIBUTES
        .iter()
        .any(|common| std::ptr::eq(common, attr))
    {
        return Ok(());
    }
    // What the caller did not pass in cannot be compared, and is never written anyway.
    let Some(current) = resource.get(attr.name) else {
        return Ok(());
    };
    let current = match sub {
        Some(sub) => current.get(sub.name),
        None => Some(current),
    };
    if is_echo(current, value) {
        Ok(())
    } else {
        Err(ScimError::mutability(format!(
            "attribute `{}` is read-only and cannot change",
            attr.name
        )))
    }
}

/// Whether `given` repeats what is stored: equal, null, or an object whose every member
/// (named in any case) repeats the stored one.
fn is_echo(current: Option<&Value>, given: &Value) -> bool {
    match (current, given) {
        (_, Value::Null) => true,
        (Some(Value::Object(current)), Value::Object(given)) => given
            .iter()
            .all(|(key, v)| is_echo(get_ignore_case(current, key), v)),
        (Some(current), given) => current == given,
        (None, _) => false,
    }
}

/// `add` or `replace` at a resolved target.
fn write_target(
    resource: &mut Map<String, Value>,
    target: &Target<'_>,
    kind: OpKind,
    value: &Value,
) -> Result<(), ScimError> {
    let container = match target.extension {
        Some(urn) => object_entry(resource, urn),
        None => resource,
    };
    let attr = target.attr;
    match (target.filter, target.sub) {
        (None, None) if attr.multi_valued => write_list(container, attr, kind, value),
        (None, None) => write_single(container, attr, value),
        (None, Some(sub)) if !attr.multi_valued => write_sub(container, attr, sub, value),
        _ => write_elements(container, target, kind, value),
    }
}

/// A whole multi-valued attribute: `add` appends the elements not already there,
/// `replace` sets the list (an empty list unassigns it).
fn write_list(
    container: &mut Map<String, Value>,
    attr: &'static AttributeDef,
    kind: OpKind,
    value: &Value,
) -> Result<(), ScimError> {
    let new_items = match coerce_value(attr, value, attr.name)? {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    let items = match kind {
        OpKind::Add => {
            let mut items = take_elements(container, attr);
            let preferred = append_new(attr, &mut items, new_items);
            enforce_single_primary(&mut items, preferred);
            items
        }
        OpKind::Replace | OpKind::Remove => {
            container.remove(attr.name);
            let mut items = new_items;
            enforce_single_primary(&mut items, None);
            items
        }
    };
    put_elements(container, attr, items);
    Ok(())
}

/// Appends the elements that are not already in the list; returns the index of the first
/// appended primary, which wins over older ones.
fn append_new(attr: &AttributeDef, items: &mut Vec<Value>, new_items: Vec<Value>) -> Option<usize> {
    let mut member_ids: HashSet<String> = if is_members(attr) {
        items
            .iter()
            .filter_map(element_value)
            .map(str::to_owned)
            .collect()
    } else {
        HashSet::new()
    };
    let mut preferred = None;
    for item in new_items {
        let seen = if is_members(attr) {
            element_value(&item).is_some_and(|id| !member_ids.insert(id.to_owned()))
        } else {
            items
                .iter()
                .any(|existing| same_element(attr, existing, &item))
        };
        if seen {
            continue;
        }
        if preferred.is_none() && is_primary(&item) {
            preferred = Some(items.len());
        }
        items.push(item);
    }
    preferred
}

/// A single-valued attribute: a simple value is set; a complex value sets the
/// sub-attributes it names and leaves the others (RFC 7644 §3.5.2.1 and §3.5.2.3).
fn write_single(
    container: &mut Map<String, Value>,
    attr: &'static AttributeDef,
    value: &Value,
) -> Result<(), ScimError> {
    let Some(new) = coerce_value(attr, value, attr.name)? else {
        return Ok(());
    };
    match (container.get_mut(attr.name), new) {
        (Some(Value::Object(existing)), Value::Object(fields)) => {
            for (name, v) in fields {
                if let Some(sub) = attr.find_sub(&name) {
                    check_immutable(sub, existing.get(&name), &v, attr.name)?;
                }
                existing.insert(name, v);
            }
        }
        (existing, new) => {
            check_immutable(attr, existing.as_deref(), &new, attr.name)?;
            container.insert(attr.name.to_owned(), new);
        }
    }
    Ok(())
}

/// One sub-attribute of a single-valued complex attribute (`name.givenName`).
fn write_sub(
    container: &mut Map<String, Value>,
    attr: &'static AttributeDef,
    sub: &'static AttributeDef,
    value: &Value,
) -> Result<(), ScimError> {
    let label = format!("{}.{}", attr.name, sub.name);
    let Some(v) = coerce_value(sub, value, &label)? else {
        return Ok(());
    };
    let fields = object_entry(container, attr.name);
    check_immutable(sub, fields.get(sub.name), &v, &label)?;
    fields.insert(sub.name.to_owned(), v);
    Ok(())
}

/// Elements picked by a value filter (or all elements, for a sub-attribute path without
/// one). Matching elements are updated: `replace` without a sub-attribute replaces them,
/// `add` merges into them. When nothing matches, a new element is created from the
/// filter's `eq` terms and the value. A single-valued complex attribute is treated as a
/// list of at most one element.
fn write_elements(
    container: &mut Map<String, Value>,
    target: &Target<'_>,
    kind: OpKind,
    value: &Value,
) -> Result<(), ScimError> {
    let attr = target.attr;
    let mut items = take_elements(container, attr);
    let matched: Vec<usize> = (0..items.len())
        .filter(|&i| element_matches(target.filter, attr, &items[i]))
        .collect();

    let preferred = if matched.is_empty() {
        let seed = target
            .filter
            .map(|filter| seed_from_filter(filter, attr))
            .unwrap_or_default();
        let created = update_element(target, kind, &Value::Object(seed), value)?;
        match coerce_single(attr, &created, attr.name)? {
            // Only `eq` terms joined by `and` describe an element; for any other filter the
            // new element would not be one the filter picks, so nothing is guessed.
            Some(element)
                if target
                    .filter
                    .is_some_and(|f| !f.matches_element(&element, attr)) =>
            {
                return Err(ScimError::no_target(format!(
                    "no `{}` element matches the path's filter, and one that does cannot be                      derived from it (only `eq` terms joined by `and` describe a new element)",
                    attr.name
                )));
            }
            Some(element) => {
                if !attr.multi_valued {
                    items.clear();
                }
                items.push(element);
                Some(items.len() - 1)
            }
            None => None,
        }
    } else {
        for &i in &matched {
            let updated = update_element(target, kind, &items[i], value)?;
            items[i] = coerce_single(attr, &updated, attr.name)?.unwrap_or(updated);
        }
        matched.into_iter().find(|&i| is_primary(&items[i]))
    };

    // A replaced element may now repeat another one.
    if is_members(attr) {
        let mut seen = HashSet::new();
        items.retain(|item| element_value(item).is_none_or(|id| seen.insert(id.to_owned())));
    }
    enforce_single_primary(&mut items, preferred);
    put_elements(container, attr, items);
    Ok(())
}

/// A matched element after `add` or `replace`.
fn update_element(
    target: &Target<'_>,
    kind: OpKind,
    element: &Value,
    value: &Value,
) -> Result<Value, ScimError> {
    let attr = target.attr;
    let mut fields = element.as_object().cloned().unwrap_or_default();
    if let Some(sub) = target.sub {
        let label = target.label();
        if let Some(v) = coerce_value(sub, value, &label)? {
            check_immutable(sub, fields.get(sub.name), &v, &label)?;
            fields.insert(sub.name.to_owned(), v);
        }
        return Ok(Value::Object(fields));
    }
    let given = match value {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    };
    let given = match given {
        Value::Object(given) => coerce_fields(attr, given, attr.name)?,
        other => match coerce_single(attr, other, attr.name)? {
            Some(Value::Object(given)) => given,
            _ => return Ok(Value::Object(fields)),
        },
    };
    match kind {
        OpKind::Replace => {
            // The filter's terms describe the element, so they stay unless the value
            // says otherwise.
            let mut replaced = seed_from_fields(&fields, target);
            replaced.extend(given);
            Ok(Value::Object(replaced))
        }
        OpKind::Add | OpKind::Remove => {
            for (name, v) in given {
                if let Some(sub) = attr.find_sub(&name) {
                    check_immutable(sub, fields.get(&name), &v, attr.name)?;
                }
                fields.insert(name, v);
            }
            Ok(Value::Object(fields))
        }
    }
}

/// `remove` at a resolved target. Removing what is not there is not an error.
fn remove_target(
    resource: &mut Map<String, Value>,
    target: &Target<'_>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let container = match target.extension {
        Some(urn) => match resource.get_mut(urn).and_then(Value::as_object_mut) {
            Some(container) => container,
            None => return Ok(()),
        },
        None => resource,
    };
    let attr = target.attr;
    match (target.filter, target.sub) {
        (None, None) => match value {
            Some(listed) if attr.kind == AttrType::Complex => {
                remove_listed(container, attr, listed)
            }
            _ => {
                container.remove(attr.name);
                Ok(())
            }
        },
        (None, Some(sub)) if !attr.multi_valued => {
            let Some(fields) = container.get_mut(attr.name).and_then(Value::as_object_mut) else {
                return Ok(());
            };
            check_removable(sub, fields, &target.label())?;
            fields.remove(sub.name);
            if fields.is_empty() {
                container.remove(attr.name);
            }
            Ok(())
        }
        _ => remove_elements(container, target),
    }
}

/// Removes only the listed elements, matched by `value` (each listed element is an object
/// with a `value`, or a bare string id). An empty list removes nothing.
fn remove_listed(
    container: &mut Map<String, Value>,
    attr: &'static AttributeDef,
    listed: &Value,
) -> Result<(), ScimError> {
    let listed: Vec<&Value> = match listed {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let case_exact = attr.find_sub("value").is_none_or(|sub| sub.case_exact);
    let fold = |s: &str| {
        if case_exact {
            s.to_owned()
        } else {
            s.to_lowercase()
        }
    };
    let mut ids = HashSet::with_capacity(listed.len());
    for item in listed {
        let id = match item {
            Value::Object(fields) => get_ignore_case(fields, "value").and_then(Value::as_str),
            Value::String(id) => Some(id.as_str()),
            _ => None,
        };
        let Some(id) = id else {
            return Err(ScimError::invalid_value(format!(
                "each element removed from `{}` must have a string `value`",
                attr.name
            )));
        };
        ids.insert(fold(id));
    }
    if ids.is_empty() {
        return Ok(());
    }
    let mut items = take_elements(container, attr);
    items.retain(|item| !element_value(item).is_some_and(|id| ids.contains(&fold(id))));
    put_elements(container, attr, items);
    Ok(())
}

/// Removes the elements a filter matches, or a sub-attribute of them.
fn remove_elements(
    container: &mut Map<String, Value>,
    target: &Target<'_>,
) -> Result<(), ScimError> {
    let attr = target.attr;
    let mut items = take_elements(container, attr);
    match target.sub {
        None => items.retain(|item| !element_matches(target.filter, attr, item)),
        Some(sub) => {
            let label = target.label();
            for item in &mut items {
                if !element_matches(target.filter, attr, item) {
                    continue;
                }
                if let Some(fields) = item.as_object_mut() {
                    check_removable(sub, fields, &label)?;
                    fields.remove(sub.name);
                }
            }
            items.retain(|item| item.as_object().is_none_or(|fields| !fields.is_empty()));
        }
    }
    put_elements(container, attr, items);
    Ok(())
}

/// An immutable attribute may be set once, or set again to the same value.
fn check_immutable(
    attr: &AttributeDef,
    existing: Option<&Value>,
    new: &Value,
    label: &str,
) -> Result<(), ScimError> {
    match existing {
        Some(existing) if attr.mutability == Mutability::Immutable && existing != new => Err(
            ScimError::mutability(format!("attribute `{label}` is immutable")),
        ),
        _ => Ok(()),
    }
}

/// An immutable sub-attribute that holds a value cannot be removed on its own.
fn check_removable(
    sub: &AttributeDef,
    fields: &Map<String, Value>,
    label: &str,
) -> Result<(), ScimError> {
    if sub.mutability == Mutability::Immutable && fields.contains_key(sub.name) {
        return Err(ScimError::mutability(format!(
            "attribute `{label}` is immutable"
        )));
    }
    Ok(())
}

/// Takes the elements of a complex attribute out of the container: a list, or a single
/// object as a list of one.
fn take_elements(container: &mut Map<String, Value>, attr: &AttributeDef) -> Vec<Value> {
    match container.remove(attr.name) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(single) => vec![single],
    }
}

/// Puts elements back: a list for a multi-valued attribute, the single object otherwise;
/// nothing at all when there are none.
fn put_elements(container: &mut Map<String, Value>, attr: &AttributeDef, mut items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    let value = if attr.multi_valued {
        Value::Array(items)
    } else {
        items.swap_remove(0)
    };
    container.insert(attr.name.to_owned(), value);
}

/// The `value` of an element, when it is a string.
fn element_value(item: &Value) -> Option<&str> {
    item.get("value").and_then(Value::as_str)
}

/// Whether an element says `primary: true`.
fn is_primary(item: &Value) -> bool {
    item.get("primary") == Some(&Value::Bool(true))
}

/// Whether an element is picked by the filter; without a filter every element is.
fn element_matches(filter: Option<&Filter>, attr: &AttributeDef, element: &Value) -> bool {
    filter.is_none_or(|filter| filter.matches_element(element, attr))
}

/// The sub-attribute values a filter pins with `eq` (joined by `and`), which describe an
/// element created where nothing matched. Terms that do not fit the schema are left out.
fn seed_from_filter(filter: &Filter, attr: &'static AttributeDef) -> Map<String, Value> {
    let mut seed = Map::new();
    for (path, value) in filter.eq_terms() {
        if path.schema.is_some() || path.sub.is_some() {
            continue;
        }
        let Some(sub) = attr.find_sub(&path.attr) else {
            continue;
        };
        if let Ok(Some(value)) = coerce_value(sub, value, sub.name) {
            seed.insert(sub.name.to_owned(), value);
        }
    }
    seed
}

/// The fields of an element that the target's filter pins, kept when it is replaced.
fn seed_from_fields(fields: &Map<String, Value>, target: &Target<'_>) -> Map<String, Value> {
    let Some(filter) = target.filter else {
        return Map::new();
    };
    seed_from_filter(filter, target.attr)
        .into_iter()
        .filter_map(|(name, _)| fields.get(&name).map(|v| (name, v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::scim::normalize::normalize_input;
    use crate::scim::schema::{GROUP, USER};

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn request(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
    }

    /// Parses and applies a request, returning the patched copy.
    fn patched(
        resource: &Value,
        schema: &ResourceSchema,
        operations: Value,
    ) -> Result<Value, ScimError> {
        let ops = parse_patch_request(&request(operations))?;
        let mut out = resource.clone();
        apply_patch(&mut out, &ops, schema)?;
        Ok(out)
    }

    fn ok(resource: &Value, schema: &ResourceSchema, operations: Value) -> Value {
        patched(resource, schema, operations).expect("the patch applies")
    }

    fn err(
        resource: &Value,
        schema: &ResourceSchema,
        operations: Value,
    ) -> (Option<ScimType>, String) {
        let before = resource.to_string();
        let mut copy = resource.clone();
        let error = parse_patch_request(&request(operations))
            .and_then(|ops| apply_patch(&mut copy, &ops, schema))
            .expect_err("the patch fails");
        assert_eq!(error.status, 400);
        assert_eq!(copy.to_string(), before, "a failed patch changes nothing");
        (error.scim_type, error.detail)
    }

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "u1",
            "userName": "eve@example.com",
            "name": {"givenName": "Eve", "familyName": "Ent"},
            "emails": [{"value": "eve@example.com", "type": "work", "primary": true}],
            "active": true,
            "meta": {"resourceType": "User", "version": "W/\"1\""},
        })
    }

    fn group(members: &[&str]) -> Value {
        let members: Vec<Value> = members.iter().map(|id| json!({"value": id})).collect();
        let mut group = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1",
            "displayName": "engineering",
            "meta": {"resourceType": "Group"},
        });
        if !members.is_empty() {
            group["members"] = Value::Array(members);
        }
        group
    }

    /// `user()` with one top-level attribute replaced (or removed, with `null`).
    fn user_with(key: &str, value: Value) -> Value {
        let mut user = user();
        let fields = user.as_object_mut().expect("the fixture is an object");
        if value.is_null() {
            fields.remove(key);
        } else {
            fields.insert(key.to_owned(), value);
        }
        user
    }

    #[test]
    fn op_names_and_keys_are_read_in_any_case() {
        let body = json!({
            "schemas": [PATCH_OP_SCHEMA],
            "operations": [
                {"OP": "Replace", "Path": "displayName", "Value": "Eve"},
                {"op": "ADD", "value": {"active": true}},
                {"op": "remove", "path": "title"},
            ],
        });
        let ops = parse_patch_request(&body).expect("valid");
        let kinds: Vec<OpKind> = ops.iter().map(|op| op.op).collect();
        assert_eq!(kinds, [OpKind::Replace, OpKind::Add, OpKind::Remove]);
        assert_eq!(ops[0].value, Some(json!("Eve")));
        assert_eq!(
            ops[0].path.as_ref().map(|p| p.attr.clone()),
            Some(AttrPath::new("displayName"))
        );
        assert!(ops[1].path.is_none());
    }

    #[test]
    fn an_empty_operations_list_is_a_no_op() {
        let ops = parse_patch_request(&request(json!([]))).expect("valid");
        assert!(ops.is_empty());
        let mut resource = user();
        apply_patch(&mut resource, &ops, &USER).expect("nothing to do");
        assert_eq!(resource, user());
    }

    #[test]
    fn a_missing_schemas_list_is_tolerated() {
        let body = json!({"Operations": [{"op": "replace", "value": {"active": false}}]});
        assert_eq!(parse_patch_request(&body).map(|ops| ops.len()), Ok(1));
    }

    #[test]
    fn malformed_requests_are_rejected_with_the_rfc_scim_type() {
        let cases = [
            (json!([]), ScimType::InvalidSyntax),
            (
                json!({"schemas": [PATCH_OP_SCHEMA]}),
                ScimType::InvalidSyntax,
            ),
            (request(json!({"op": "add"})), ScimType::InvalidSyntax),
            (request(json!(["add"])), ScimType::InvalidSyntax),
            (
                request(json!([{"op": "merge", "path": "title", "value": "x"}])),
                ScimType::InvalidSyntax,
            ),
            (
                request(json!([{"path": "title", "value": "x"}])),
                ScimType::InvalidSyntax,
            ),
            (request(json!([{"op": "remove"}])), ScimType::NoTarget),
            (
                request(json!([{"op": "remove", "path": ""}])),
                ScimType::NoTarget,
            ),
            (
                request(json!([{"op": "add", "path": "title"}])),
                ScimType::InvalidValue,
            ),
            (
                request(json!([{"op": "replace", "path": "title", "value": null}])),
                ScimType::InvalidValue,
            ),
            (
                request(json!([{"op": "add", "path": "title..x", "value": "x"}])),
                ScimType::InvalidPath,
            ),
            (
                request(json!([{"op": "add", "path": 7, "value": "x"}])),
                ScimType::InvalidPath,
            ),
            (
                request(json!([{"op": "remove", "path": "members[value eq"}])),
                ScimType::InvalidPath,
            ),
        ];
        for (body, expected) in cases {
            let error = parse_patch_request(&body).expect_err(&body.to_string());
            assert_eq!(
                (error.status, error.scim_type),
                (400, Some(expected)),
                "{body}"
            );
        }
    }

    #[test]
    fn okta_deactivates_with_a_pathless_replace() {
        let out = ok(
            &user(),
            &USER,
            json!([{"op": "replace", "value": {"active": false}}]),
        );
        assert_eq!(out, user_with("active", json!(false)));
    }

    #[test]
    fn entra_capitalised_replace_sets_an_attribute() {
        let out = ok(
            &user(),
            &USER,
            json!([{"op": "Replace", "path": "displayName", "value": "Eve Entwhistle"}]),
        );
        assert_eq!(out, user_with("displayName", json!("Eve Entwhistle")));
    }

    #[test]
    fn string_booleans_are_stored_as_booleans() {
        let off = ok(
            &user(),
            &USER,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        );
        assert_eq!(off, user_with("active", json!(false)));
        let on = ok(
            &off,
            &USER,
            json!([{"op": "Add", "path": "active", "value": "True"}]),
        );
        assert_eq!(on, user());
        let pathless = ok(
            &user(),
            &USER,
            json!([{"op": "Add", "value": {"Active": "false"}}]),
        );
        assert_eq!(pathless, user_with("active", json!(false)));
    }

    #[test]
    fn a_value_that_cannot_be_coerced_is_rejected_by_name() {
        let cases = [
            (
                json!([{"op": "replace", "path": "active", "value": "maybe"}]),
                "attribute `active` must be a boolean",
            ),
            (
                json!([{"op": "replace", "path": "userName", "value": 5}]),
                "attribute `userName` must be a string",
            ),
            (
                json!([{"op": "replace", "value": {"userName": ""}}]),
                "attribute `userName` is required",
            ),
            (
                json!([{"op": "remove", "path": "userName"}]),
                "attribute `userName` is required",
            ),
            (
                json!([{"op": "add", "path": "emails", "value": "x"}]),
                "attribute `emails` must be an object",
            ),
        ];
        for (operations, expected) in cases {
            assert_eq!(
                err(&user(), &USER, operations),
                (Some(ScimType::InvalidValue), expected.to_owned())
            );
        }
    }

    #[test]
    fn add_on_a_filtered_email_path_with_no_match_creates_the_element() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "Add",
                "path": "emails[type eq \"home\"].value",
                "value": "eve@home.example",
            }]),
        );
        let emails = json!([
            {"value": "eve@example.com", "type": "work", "primary": true},
            {"value": "eve@home.example", "type": "home"},
        ]);
        assert_eq!(out, user_with("emails", emails));
    }

    #[test]
    fn replace_on_a_filtered_path_changes_only_the_matching_elements() {
        let two = user_with(
            "emails",
            json!([
                {"value": "eve@example.com", "type": "work", "primary": true},
                {"value": "eve@home.example", "type": "home"},
            ]),
        );
        let sub = ok(
            &two,
            &USER,
            json!([{
                "op": "replace",
                "path": "emails[type eq \"work\"].value",
                "value": "e@example.com",
            }]),
        );
        assert_eq!(
            sub,
            user_with(
                "emails",
                json!([
                    {"value": "e@example.com", "type": "work", "primary": true},
                    {"value": "eve@home.example", "type": "home"},
                ])
            )
        );
        let whole = ok(
            &two,
            &USER,
            json!([{
                "op": "replace",
                "path": "emails[type eq \"home\"]",
                "value": {"value": "h@example.net", "primary": true},
            }]),
        );
        assert_eq!(
            whole,
            user_with(
                "emails",
                json!([
                    {"value": "eve@example.com", "type": "work", "primary": false},
                    {"value": "h@example.net", "type": "home", "primary": true},
                ])
            )
        );
    }

    #[test]
    fn the_newest_primary_wins() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "add",
                "path": "emails",
                "value": [{"value": "new@example.com", "primary": "true"}],
            }]),
        );
        assert_eq!(
            out,
            user_with(
                "emails",
                json!([
                    {"value": "eve@example.com", "type": "work", "primary": false},
                    {"value": "new@example.com", "primary": true},
                ])
            )
        );
    }

    #[test]
    fn add_to_a_list_skips_elements_already_there() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "add",
                "path": "emails",
                "value": {"value": "eve@example.com", "type": "work", "primary": true},
            }]),
        );
        assert_eq!(out, user());
    }

    #[test]
    fn replace_of_a_whole_list_sets_it() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "replace",
                "path": "emails",
                "value": [{"value": "x@example.com", "type": "Other"}],
            }]),
        );
        assert_eq!(
            out,
            user_with(
                "emails",
                json!([{"value": "x@example.com", "type": "other"}])
            )
        );
    }

    #[test]
    fn a_sub_attribute_path_sets_only_that_sub_attribute() {
        let out = ok(
            &user(),
            &USER,
            json!([{"op": "replace", "path": "name.givenName", "value": "Bob"}]),
        );
        assert_eq!(
            out,
            user_with("name", json!({"givenName": "Bob", "familyName": "Ent"}))
        );
        let removed = ok(
            &user(),
            &USER,
            json!([{"op": "remove", "path": "name.givenName"}]),
        );
        assert_eq!(removed, user_with("name", json!({"familyName": "Ent"})));
    }

    #[test]
    fn replace_of_a_complex_attribute_keeps_the_sub_attributes_it_does_not_name() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "replace",
                "path": "name",
                "value": {"GivenName": "Evelyn", "middleName": "M"},
            }]),
        );
        assert_eq!(
            out,
            user_with(
                "name",
                json!({"givenName": "Evelyn", "familyName": "Ent", "middleName": "M"})
            )
        );
    }

    #[test]
    fn entra_pathless_replace_folds_dotted_and_qualified_keys() {
        let out = ok(
            &user(),
            &USER,
            json!([{"op": "replace", "value": {
                "displayName": "Otto Opt",
                "name.givenName": "Otto-Karl",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "4242",
                "active": true,
            }}]),
        );
        let mut expected = user_with("displayName", json!("Otto Opt"));
        expected["name"]["givenName"] = json!("Otto-Karl");
        expected[ENTERPRISE] = json!({"employeeNumber": "4242"});
        expected["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
        assert_eq!(out, expected);
    }

    #[test]
    fn extension_attributes_are_reached_by_path_and_by_urn_key() {
        let by_path = ok(
            &user(),
            &USER,
            json!([{
                "op": "add",
                "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "value": "Finance",
            }]),
        );
        let by_key = ok(
            &user(),
            &USER,
            json!([{"op": "add", "value": {ENTERPRISE: {"Department": "Finance"}}}]),
        );
        let mut expected = user_with(ENTERPRISE, json!({"department": "Finance"}));
        expected["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
        assert_eq!(by_path, expected);
        assert_eq!(by_key, expected);

        // Removing the last extension attribute removes the object and its URN.
        let removed = ok(
            &expected,
            &USER,
            json!([{
                "op": "remove",
                "path": "employeeNumber"}, {"op": "remove",
                "path": "department",
            }]),
        );
        assert_eq!(removed, user());
    }

    #[test]
    fn a_manager_is_removed_through_a_value_filter() {
        let mut managed = user_with(
            ENTERPRISE,
            json!({"manager": {"value": "m1"}, "department": "R&D"}),
        );
        managed["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
        let kept = ok(
            &managed,
            &USER,
            json!([{"op": "remove", "path": "manager[value eq \"m2\"]"}]),
        );
        assert_eq!(kept, managed);
        let out = ok(
            &managed,
            &USER,
            json!([{"op": "Remove", "path": "manager[value eq \"m1\"]"}]),
        );
        let mut expected = managed.clone();
        expected[ENTERPRISE] = json!({"department": "R&D"});
        assert_eq!(out, expected);
    }

    #[test]
    fn read_only_attributes_cannot_be_targeted() {
        for path in ["id", "meta", "meta.version", "groups"] {
            let (scim_type, _) = err(
                &user(),
                &USER,
                json!([{"op": "replace", "path": path, "value": "x"}]),
            );
            assert_eq!(scim_type, Some(ScimType::Mutability), "{path}");
        }
        let (scim_type, _) = err(&user(), &USER, json!([{"op": "remove", "path": "id"}]));
        assert_eq!(scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn an_echoed_id_and_groups_are_ignored_but_a_changed_id_is_not() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "replace",
                "value": {
                    "id": "u1", "groups": [], "meta": {"resourceType": "User"}, "title": "CFO",
                },
            }]),
        );
        assert_eq!(out, user_with("title", json!("CFO")));
        let (scim_type, detail) = err(
            &user(),
            &USER,
            json!([{"op": "replace", "value": {"id": "u2", "title": "CFO"}}]),
        );
        assert_eq!(
            (scim_type, detail.as_str()),
            (
                Some(ScimType::Mutability),
                "attribute `id` is read-only and cannot change"
            )
        );
        let (scim_type, _) = err(
            &user(),
            &USER,
            json!([{"op": "replace", "value": {"meta": {"version": "W/\"9\""}}}]),
        );
        assert_eq!(scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn a_password_is_accepted_and_never_stored() {
        let out = ok(
            &user(),
            &USER,
            json!([
                {"op": "replace", "path": "password", "value": "hunter2"},
                {"op": "replace", "value": {"password": "hunter2", "title": "CFO"}},
                {"op": "remove", "path": "password"},
            ]),
        );
        assert_eq!(out, user_with("title", json!("CFO")));
    }

    #[test]
    fn unknown_attributes_are_an_error_in_a_path_and_ignored_in_a_value() {
        let (scim_type, detail) = err(
            &user(),
            &USER,
            json!([{"op": "replace", "path": "shoeSize", "value": 44}]),
        );
        assert_eq!(
            (scim_type, detail.as_str()),
            (Some(ScimType::InvalidPath), "unknown attribute `shoeSize`")
        );
        let (scim_type, _) = err(
            &user(),
            &USER,
            json!([{"op": "replace", "path": "name.nickname", "value": "x"}]),
        );
        assert_eq!(scim_type, Some(ScimType::InvalidPath));
        let out = ok(
            &user(),
            &USER,
            json!([{"op": "replace", "value": {"shoeSize": 44, "title": "CFO"}}]),
        );
        assert_eq!(out, user_with("title", json!("CFO")));
    }

    #[test]
    fn a_null_in_a_pathless_replace_unassigns_the_attribute() {
        let out = ok(
            &user(),
            &USER,
            json!([{"op": "replace", "value": {"name": null, "title": null}}]),
        );
        assert_eq!(out, user_with("name", Value::Null));
    }

    #[test]
    fn okta_membership_swap_removes_by_filter_and_adds_in_one_request() {
        let with_a = ok(
            &group(&[]),
            &GROUP,
            json!([{
                "op": "add",
                "path": "members",
                "value": [{"value": "a", "display": "a@example.com"}],
            }]),
        );
        let mut expected = group(&[]);
        expected["members"] = json!([{"value": "a", "display": "a@example.com"}]);
        assert_eq!(with_a, expected);

        let swapped = ok(
            &with_a,
            &GROUP,
            json!([
                {"op": "remove", "path": "members[value eq \"a\"]"},
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": "b", "display": "b@example.com"}],
                },
            ]),
        );
        expected["members"] = json!([{"value": "b", "display": "b@example.com"}]);
        assert_eq!(swapped, expected);
    }

    #[test]
    fn okta_rename_repeats_the_group_id() {
        let out = ok(
            &group(&["b"]),
            &GROUP,
            json!([{"op": "replace", "value": {"id": "g1", "displayName": "platform"}}]),
        );
        let mut expected = group(&["b"]);
        expected["displayName"] = json!("platform");
        assert_eq!(out, expected);
    }

    #[test]
    fn replace_members_with_an_empty_list_empties_the_group() {
        let out = ok(
            &group(&["a", "b"]),
            &GROUP,
            json!([{"op": "replace", "path": "members", "value": []}]),
        );
        assert_eq!(out, group(&[]));
    }

    #[test]
    fn entra_adds_members_with_null_refs_once_each() {
        let out = ok(
            &group(&["a"]),
            &GROUP,
            json!([{
                "op": "Add",
                "path": "members",
                "value": [
                    {"$ref": null, "value": "a"}, {"$ref": null, "value": "b"}, {"value": "b"},
                ],
            }]),
        );
        assert_eq!(out, group(&["a", "b"]));
    }

    #[test]
    fn remove_with_a_value_list_removes_only_the_listed_members() {
        let entra = ok(
            &group(&["a", "b", "c"]),
            &GROUP,
            json!([{
                "op": "Remove",
                "path": "members",
                "value": [{"$ref": null, "value": "a"}, {"value": "gone"}],
            }]),
        );
        assert_eq!(entra, group(&["b", "c"]));
        let nothing = ok(
            &group(&["a", "b"]),
            &GROUP,
            json!([{"op": "remove", "path": "members", "value": []}]),
        );
        assert_eq!(nothing, group(&["a", "b"]));
        let (scim_type, _) = err(
            &group(&["a"]),
            &GROUP,
            json!([{"op": "remove", "path": "members", "value": [{"display": "a"}]}]),
        );
        assert_eq!(scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn remove_of_members_without_a_value_removes_them_all() {
        let out = ok(
            &group(&["a", "b"]),
            &GROUP,
            json!([{"op": "remove", "path": "members"}]),
        );
        assert_eq!(out, group(&[]));
    }

    #[test]
    fn removing_a_member_that_is_already_gone_is_not_an_error() {
        let out = ok(
            &group(&["a"]),
            &GROUP,
            json!([{"op": "remove", "path": "members[value eq \"zz\"]"}]),
        );
        assert_eq!(out, group(&["a"]));
    }

    #[test]
    fn member_parts_are_immutable() {
        let (scim_type, _) = err(
            &group(&["a"]),
            &GROUP,
            json!([{"op": "replace", "path": "members[value eq \"a\"].value", "value": "b"}]),
        );
        assert_eq!(scim_type, Some(ScimType::Mutability));
        let (scim_type, _) = err(
            &group(&["a"]),
            &GROUP,
            json!([{"op": "add", "path": "members", "value": [{"display": "no id"}]}]),
        );
        assert_eq!(scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn a_filtered_member_path_creates_the_member_from_the_filter() {
        let out = ok(
            &group(&["a"]),
            &GROUP,
            json!([{"op": "add", "path": "members[value eq \"c\"]", "value": {"display": "C"}}]),
        );
        let mut expected = group(&["a"]);
        expected["members"] = json!([{"value": "a"}, {"value": "c", "display": "C"}]);
        assert_eq!(out, expected);
    }

    #[test]
    fn replacing_a_member_with_one_already_there_keeps_it_once() {
        let out = ok(
            &group(&["a", "b"]),
            &GROUP,
            json!([{"op": "replace", "path": "members[value eq \"a\"]", "value": {"value": "b"}}]),
        );
        assert_eq!(out, group(&["b"]));
    }

    #[test]
    fn an_echoed_id_is_ignored_when_the_resource_passed_in_has_none() {
        let mut stored = group(&["a"]);
        stored.as_object_mut().map(|fields| fields.remove("id"));
        let out = ok(
            &stored,
            &GROUP,
            json!([{"op": "replace", "value": {"id": "g1", "displayName": "platform"}}]),
        );
        stored["displayName"] = json!("platform");
        assert_eq!(out, stored);
    }

    #[test]
    fn a_request_whose_second_operation_fails_changes_nothing() {
        let (scim_type, _) = err(
            &group(&["a", "b"]),
            &GROUP,
            json!([
                {"op": "remove", "path": "members[value eq \"a\"]"},
                {"op": "replace", "path": "id", "value": "g2"},
            ]),
        );
        assert_eq!(scim_type, Some(ScimType::Mutability));
        let (scim_type, _) = err(
            &user(),
            &USER,
            json!([
                {"op": "replace", "value": {"active": false}},
                {"op": "replace", "path": "active", "value": "maybe"},
            ]),
        );
        assert_eq!(scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn jumpcloud_one_operation_per_attribute() {
        let out = ok(
            &user(),
            &USER,
            json!([
                {"op": "replace", "path": "name.givenName", "value": "Bob"},
                {"op": "replace", "path": "active", "value": false},
            ]),
        );
        let mut expected = user_with("active", json!(false));
        expected["name"]["givenName"] = json!("Bob");
        assert_eq!(out, expected);
    }

    #[test]
    fn entra_sets_a_manager_by_its_bare_id() {
        let out = ok(
            &user(),
            &USER,
            json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": "boss-1"}]),
        );
        let mut expected = user_with(ENTERPRISE, json!({"manager": {"value": "boss-1"}}));
        expected["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_path_may_name_the_whole_extension() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "add",
                "path": ENTERPRISE,
                "value": {"employeeNumber": "9", "shoeSize": 1},
            }]),
        );
        let mut expected = user_with(ENTERPRISE, json!({"employeeNumber": "9"}));
        expected["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]);
        assert_eq!(out, expected);
        assert_eq!(
            ok(&out, &USER, json!([{"op": "remove", "path": ENTERPRISE}])),
            user()
        );
    }

    #[test]
    fn a_path_may_carry_the_core_schema_urn() {
        let out = ok(
            &user(),
            &USER,
            json!([{
                "op": "replace",
                "path": "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName",
                "value": "Smith",
            }]),
        );
        assert_eq!(
            out,
            user_with("name", json!({"givenName": "Eve", "familyName": "Smith"}))
        );
    }

    #[test]
    fn a_sub_attribute_of_a_list_without_a_filter_applies_to_every_element() {
        let two = user_with(
            "emails",
            json!([{
                "value": "a@example.com",
                "type": "work"}, {"value": "b@example.com",
                "type": "home",
            }]),
        );
        let out = ok(
            &two,
            &USER,
            json!([{"op": "replace", "path": "emails.type", "value": "other"}]),
        );
        assert_eq!(
            out,
            user_with(
                "emails",
                json!([{
                    "value": "a@example.com",
                    "type": "other"}, {"value": "b@example.com",
                    "type": "other",
                }])
            )
        );
    }

    #[test]
    fn a_filter_that_cannot_apply_is_invalid_filter() {
        let (scim_type, _) = err(
            &user(),
            &USER,
            json!([{"op": "replace", "path": "emails[primary gt true].value", "value": "x"}]),
        );
        assert_eq!(scim_type, Some(ScimType::InvalidFilter));
        let (scim_type, _) = err(
            &user(),
            &USER,
            json!([{"op": "replace", "path": "active[value eq 1]", "value": true}]),
        );
        assert_eq!(scim_type, Some(ScimType::InvalidPath));
    }

    /// A resource as the server stores it after a POST of `body`.
    fn created(body: Value, schema: &ResourceSchema, id: &str) -> Value {
        let mut resource = normalize_input(&body, schema).expect("the case body is valid");
        resource["id"] = json!(id);
        resource
    }

    #[test]
    fn case_okta_group_push() {
        let mut group = created(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "okg-engineering",
                "members": [],
            }),
            &GROUP,
            "g",
        );
        let steps = [
            json!([{
                "op": "add",
                "path": "members",
                "value": [{"value": "a", "display": "okg-a@example.com"}],
            }]),
            json!([
                {"op": "remove", "path": "members[value eq \"a\"]"},
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": "b", "display": "okg-b@example.com"}],
                },
            ]),
            json!([{"op": "replace", "value": {"id": "g", "displayName": "okg-platform"}}]),
        ];
        for step in steps {
            group = ok(&group, &GROUP, step);
        }
        assert_eq!(
            group,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g",
                "displayName": "okg-platform",
                "members": [{"value": "b", "display": "okg-b@example.com"}],
            })
        );
        let emptied = ok(
            &group,
            &GROUP,
            json!([{"op": "replace", "path": "members", "value": []}]),
        );
        assert_eq!(
            emptied,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g",
                "displayName": "okg-platform",
            })
        );
    }

    #[test]
    fn case_entra_default_dialect() {
        let mut user = created(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "externalId": "ent", "userName": "ent@example.com", "active": true,
                "displayName": "Eve Ent",
                "emails": [{"primary": true, "type": "work", "value": "ent@example.com"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "Eve Ent", "familyName": "Ent", "givenName": "Eve"},
                "roles": [],
                ENTERPRISE: {"department": "Finance", "employeeNumber": "701"},
            }),
            &USER,
            "uid",
        );
        let steps = [
            json!([{"op": "Replace", "path": "displayName", "value": "Eve Entwhistle"}]),
            json!([{
                "op": "Add",
                "path": "emails[type eq \"home\"].value",
                "value": "eve.home@example.net",
            }]),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        ];
        for step in steps {
            user = ok(&user, &USER, step);
        }
        assert_eq!(
            user,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "id": "uid", "externalId": "ent", "userName": "ent@example.com", "active": false,
                "displayName": "Eve Entwhistle",
                "emails": [
                    {"primary": true, "type": "work", "value": "ent@example.com"},
                    {"type": "home", "value": "eve.home@example.net"},
                ],
                "name": {"formatted": "Eve Ent", "familyName": "Ent", "givenName": "Eve"},
                ENTERPRISE: {"department": "Finance", "employeeNumber": "701"},
            })
        );

        let mut group = created(
            json!({
                "schemas": [
                    "urn:ietf:params:scim:schemas:core:2.0:Group",
                    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
                ],
                "externalId": "grp", "displayName": "ent-finance",
                "meta": {"resourceType": "Group"},
            }),
            &GROUP,
            "g",
        );
        let steps = [
            json!([{
                "op": "Add",
                "path": "members",
                "value": [{"$ref": null, "value": "uid"}, {"$ref": null, "value": "u2"}],
            }]),
            json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "uid"}]}]),
        ];
        for step in steps {
            group = ok(&group, &GROUP, step);
        }
        assert_eq!(
            group,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g", "externalId": "grp", "displayName": "ent-finance",
                "members": [{"value": "u2"}],
            })
        );
    }

    #[test]
    fn case_entra_aadopt_dialect() {
        let user = created(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "opt@example.com", "externalId": "opt", "active": true,
                "name": {"givenName": "Otto", "familyName": "Pt"},
            }),
            &USER,
            "uid",
        );
        let user = ok(
            &user,
            &USER,
            json!([{"op": "replace", "value": {
                "displayName": "Otto Opt",
                "name.givenName": "Otto-Karl",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "4242",
                "active": true}}]),
        );
        assert_eq!(
            user,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "id": "uid", "userName": "opt@example.com", "externalId": "opt", "active": true,
                "displayName": "Otto Opt",
                "name": {"givenName": "Otto-Karl", "familyName": "Pt"},
                ENTERPRISE: {"employeeNumber": "4242"},
            })
        );

        let group = created(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "opt-grp",
                "members": [{"value": "uid"}],
            }),
            &GROUP,
            "g",
        );
        let group = ok(
            &group,
            &GROUP,
            json!([{"op": "remove", "path": "members[value eq \"uid\"]"}]),
        );
        assert_eq!(
            group,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g",
                "displayName": "opt-grp",
            })
        );
    }

    #[test]
    fn case_jumpcloud_membership() {
        let group = created(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "jc-analysts", "members": [{"value": "a"}, {"value": "b"}],
            }),
            &GROUP,
            "g",
        );
        let group = ok(
            &group,
            &GROUP,
            json!([{"op": "remove", "path": "members", "value": [{"value": "a"}]}]),
        );
        let group = ok(
            &group,
            &GROUP,
            json!([{"op": "replace", "path": "displayName", "value": "jc-data-analysts"}]),
        );
        assert_eq!(
            group,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": "g", "displayName": "jc-data-analysts", "members": [{"value": "b"}],
            })
        );

        let user = created(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "jc-b@example.com",
                "name": {"givenName": "Bo", "familyName": "Two"}, "active": true,
            }),
            &USER,
            "b",
        );
        let user = ok(
            &user,
            &USER,
            json!([{"op": "replace", "path": "name.givenName", "value": "Bob"}]),
        );
        let user = ok(
            &user,
            &USER,
            json!([{"op": "replace", "path": "active", "value": false}]),
        );
        assert_eq!(
            user,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "b", "userName": "jc-b@example.com",
                "name": {"givenName": "Bob", "familyName": "Two"}, "active": false,
            })
        );
    }

    #[test]
    fn case_okta_user_lifecycle() {
        let user = created(
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "okta@example.com",
                "name": {"givenName": "Olga", "familyName": "Kay"},
                "emails": [{"primary": true, "value": "okta@example.com", "type": "work"}],
                "displayName": "Olga Kay", "locale": "en-US", "externalId": "00u1", "groups": [],
                "password": "not-a-real-secret-1", "active": true,
            }),
            &USER,
            "uid",
        );
        let user = ok(
            &user,
            &USER,
            json!([{"op": "replace", "value": {"active": false}}]),
        );
        assert_eq!(
            user,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": "uid", "userName": "okta@example.com",
                "name": {"givenName": "Olga", "familyName": "Kay"},
                "emails": [{"primary": true, "value": "okta@example.com", "type": "work"}],
                "displayName": "Olga Kay", "locale": "en-US", "externalId": "00u1", "active": false,
            })
        );
    }

    /// Any JSON value, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec!["a", "b", "True", "false", "work", "g1", "u1", ""])
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((any_key(), inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// Attribute names, paths and keys that real requests use, and some that they do not.
    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "value",
                "display",
                "primary",
                "type",
                "$ref",
                "members",
                "emails",
                "active",
                "userName",
                "displayName",
                "name",
                "name.givenName",
                "id",
                "meta",
                "groups",
                "password",
                "title",
                "manager",
                ENTERPRISE,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
                "members[value eq \"a\"]",
                "emails[type eq \"work\"].value",
                "emails[type eq \"home\" and primary eq true]",
                "manager[value eq \"m\"]",
                "members[value eq \"a\"].display",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z.\\[\\] \"]{0,16}",
        ]
    }

    fn any_operation() -> impl Strategy<Value = Value> {
        let op = prop_oneof![
            prop::sample::select(vec!["add", "Add", "remove", "REPLACE", "replace", "merge"])
                .prop_map(Value::from),
            any_json(),
        ];
        (
            op,
            prop::option::of(any_key()),
            prop::option::of(any_json()),
            any_json(),
        )
            .prop_map(|(op, path, value, noise)| {
                let mut fields = Map::new();
                fields.insert("op".into(), op);
                if let Some(path) = path {
                    fields.insert("path".into(), Value::from(path));
                }
                if let Some(value) = value {
                    fields.insert("value".into(), value);
                }
                if noise.is_object() {
                    fields.insert("noise".into(), noise);
                }
                Value::Object(fields)
            })
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            operations in prop::collection::vec(any_operation(), 0..5),
            raw in any_json(),
        ) {
            let _ = parse_patch_request(&raw);
            if let Ok(ops) = parse_patch_request(&request(Value::Array(operations))) {
                for (resource, schema) in [(user(), &USER), (group(&["a", "b"]), &GROUP)] {
                    let before = resource.clone();
                    let mut copy = resource;
                    if apply_patch(&mut copy, &ops, schema).is_err() {
                        prop_assert_eq!(copy, before);
                    }
                }
            }
        }
    }
}

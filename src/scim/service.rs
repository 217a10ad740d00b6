//! SCIM operations on the store: create, read, list, replace, patch and delete, with
//! uniqueness, optimistic concurrency and the RFC 7643 representation of each resource.

use std::cmp::Ordering;
use std::sync::Arc;

use kube::ResourceExt;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::error::{ScimError, ScimType};
use super::filter::{self, Filter};
use super::normalize::{normalize_input, project};
use super::patch::{apply_patch, parse_patch_request};
use super::schema::{AttrPath, ResourceSchema};
use crate::resources::{LAST_MODIFIED_ANNOTATION, ScimGroup, ScimUser};
use crate::store::kind::{ScimKind, created_of, last_modified_of, new_object, version_of};
use crate::store::{IndexOf, Store, StoreError};

/// How often a write is retried after another writer changed the object first. Writers of
/// one busy group (an IdP pushing many memberships at once, through several replicas) win
/// one at a time, so this is generous; backoff with jitter spreads the retries.
const MAX_WRITE_ATTEMPTS: usize = 100;
/// Longest pause between two attempts of one write, in milliseconds.
const MAX_RETRY_PAUSE_MS: u64 = 50;

/// Settings of the SCIM service.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Largest page a list answers, announced as `filter.maxResults`.
    pub max_page_size: usize,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            max_page_size: 1000,
        }
    }
}

/// The parameters of a list or search request.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub sort_descending: bool,
    pub start_index: Option<i64>,
    pub count: Option<i64>,
    pub attributes: Vec<AttrPath>,
    pub excluded_attributes: Vec<AttrPath>,
    /// Cursor pagination (RFC 9865): `Some("")` asks for the first page.
    pub cursor: Option<String>,
    /// Every match, ignoring `count` and the page size limit: for the root search, which
    /// pages over both resource types itself.
    pub unpaged: bool,
}

/// A page of results, ready to serialise as a ListResponse.
#[derive(Debug)]
pub struct ListPage {
    pub total: usize,
    pub start_index: usize,
    pub resources: Vec<Value>,
    /// Set in cursor pagination: the cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
    /// Whether the request used cursor pagination.
    pub by_cursor: bool,
}

/// A resource as answered, with its ETag.
#[derive(Debug)]
pub struct Answer {
    pub body: Value,
    pub version: String,
}

/// What a request asked to be returned.
#[derive(Debug, Default, Clone)]
pub struct Projection {
    pub attributes: Vec<AttrPath>,
    pub excluded: Vec<AttrPath>,
}

impl Projection {
    /// Whether the member list may be left out.
    fn skips_members(&self) -> bool {
        let named = |p: &AttrPath| p.schema.is_none() && p.attr.eq_ignore_ascii_case("members");
        self.excluded.iter().any(named)
            || (!self.attributes.is_empty() && !self.attributes.iter().any(named))
    }
}

/// Behaviour that differs between Users and Groups.
pub trait ServiceKind: ScimKind
where
    Store: IndexOf<Self>,
{
    /// Adds what the representation derives from other resources.
    fn decorate(
        &self,
        body: &mut Value,
        store: &Store,
        tenant: &str,
        base_url: &str,
        members: bool,
    );
    /// Checks a spec against the rest of the tenant before it is written; what `previous`
    /// already held is not checked again, so a member whose user went away since does not
    /// block unrelated changes.
    fn validate(
        spec: &Self::Spec,
        previous: Option<&Self::Spec>,
        store: &Store,
        tenant: &str,
    ) -> Result<(), ScimError>;
}

impl ServiceKind for ScimUser {
    fn decorate(&self, body: &mut Value, store: &Store, tenant: &str, base_url: &str, _: bool) {
        let read = store.groups.read();
        let groups: Vec<Value> = read
            .tenant(tenant)
            .map(|t| t.find_by_member(self.scim_id()))
            .unwrap_or_default()
            .into_iter()
            .map(|g| {
                json!({
                    "value": g.scim_id(),
                    "display": g.spec.display_name,
                    "type": "direct",
                    "$ref": format!("{base_url}/Groups/{}", g.scim_id()),
                })
            })
            .collect();
        if !groups.is_empty() {
            body["groups"] = Value::Array(groups);
        }
    }

    fn validate(
        _: &Self::Spec,
        _: Option<&Self::Spec>,
        _: &Store,
        _: &str,
    ) -> Result<(), ScimError> {
        Ok(())
    }
}

impl ServiceKind for ScimGroup {
    fn decorate(&self, body: &mut Value, _: &Store, _: &str, base_url: &str, members: bool) {
        let Some(map) = body.as_object_mut() else {
            return;
        };
        if !members {
            map.remove("members");
            return;
        }
        if let Some(Value::Array(list)) = map.get_mut("members") {
            for member in list.iter_mut() {
                let Some(m) = member.as_object_mut() else {
                    continue;
                };
                let id = m
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                m.entry("type").or_insert_with(|| json!("User"));
                m.insert("$ref".into(), json!(format!("{base_url}/Users/{id}")));
            }
        }
    }

    fn validate(
        spec: &Self::Spec,
        previous: Option<&Self::Spec>,
        store: &Store,
        tenant: &str,
    ) -> Result<(), ScimError> {
        let users = store.users.read();
        let groups = store.groups.read();
        let held: std::collections::HashSet<&str> = previous
            .map(|p| p.members.iter().map(|m| m.value.as_str()).collect())
            .unwrap_or_default();
        for member in spec
            .members
            .iter()
            .filter(|m| !held.contains(m.value.as_str()))
        {
            if let Some(kind) = &member.kind
                && !kind.eq_ignore_ascii_case("User")
            {
                let nested = groups
                    .tenant(tenant)
                    .and_then(|t| t.get_by_id(&member.value));
                if nested.is_some() {
                    return Err(ScimError::invalid_value(format!(
                        "member {} is a group; nested groups are not supported",
                        member.value
                    )));
                }
            }
            if users
                .tenant(tenant)
                .and_then(|t| t.get_by_id(&member.value))
                .is_none()
            {
                return Err(ScimError::invalid_value(format!(
                    "member {} names no user of this connection; members must be ids that \
                     this server assigned",
                    member.value
                )));
            }
        }
        Ok(())
    }
}

/// The SCIM operations.
pub struct ScimService {
    pub store: Arc<Store>,
    pub settings: ServiceSettings,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn store_error(e: StoreError) -> ScimError {
    match e {
        StoreError::AlreadyExists => ScimError::uniqueness("the resource already exists"),
        StoreError::Conflict => ScimError::status(412, "the resource changed; read it again"),
        StoreError::NotFound => ScimError::not_found("the resource does not exist"),
        StoreError::Invalid(detail) => ScimError::invalid_value(detail),
        StoreError::Unavailable(detail) => {
            warn!(%detail, "store unavailable");
            ScimError::status(503, "the store is unavailable; retry later")
        }
    }
}

impl ScimService {
    /// The full SCIM representation of an object.
    pub fn represent<K: ServiceKind>(&self, obj: &K, tenant: &str, base_url: &str) -> Value
    where
        Store: IndexOf<K>,
    {
        self.represent_with(obj, tenant, base_url, true)
    }

    fn represent_with<K: ServiceKind>(
        &self,
        obj: &K,
        tenant: &str,
        base: &str,
        members: bool,
    ) -> Value
    where
        Store: IndexOf<K>,
    {
        let mut body = K::spec_to_scim(obj.spec());
        let schema = K::schema();
        let mut schemas = vec![json!(schema.core.id)];
        for ext in schema.extensions {
            if body.get(ext.id).is_some() {
                schemas.push(json!(ext.id));
            }
        }
        body["schemas"] = Value::Array(schemas);
        body["id"] = json!(obj.scim_id());
        body["meta"] = json!({
            "resourceType": K::RESOURCE_TYPE,
            "created": created_of(obj),
            "lastModified": last_modified_of(obj),
            "version": version_of(obj),
            "location": format!("{base}/{}/{}", K::ENDPOINT, obj.scim_id()),
        });
        obj.decorate(&mut body, &self.store, tenant, base, members);
        body
    }

    fn answer<K: ServiceKind>(&self, obj: &K, tenant: &str, base: &str, p: &Projection) -> Answer
    where
        Store: IndexOf<K>,
    {
        let body = self.represent_with(obj, tenant, base, !p.skips_members());
        // Without a selection, projection only drops `returned: never` attributes, which the
        // store never holds (passwords), so the common read skips a copy of the body.
        let body = if p.attributes.is_empty() && p.excluded.is_empty() {
            body
        } else {
            project(&body, K::schema(), &p.attributes, &p.excluded)
        };
        Answer {
            body,
            version: version_of(obj),
        }
    }

    /// The object with a SCIM id, from the index.
    pub fn find<K: ServiceKind>(&self, tenant: &str, id: &str) -> Result<Arc<K>, ScimError>
    where
        Store: IndexOf<K>,
    {
        let read = self.store.index().read();
        read.tenant(tenant)
            .and_then(|t| t.get_by_id(id))
            .cloned()
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", K::RESOURCE_TYPE)))
    }

    /// GET by id.
    pub fn get<K: ServiceKind>(
        &self,
        tenant: &str,
        id: &str,
        base: &str,
        p: &Projection,
    ) -> Result<Answer, ScimError>
    where
        Store: IndexOf<K>,
    {
        let obj = self.find::<K>(tenant, id)?;
        Ok(self.answer(obj.as_ref(), tenant, base, p))
    }

    /// POST.
    pub async fn create<K: ServiceKind>(
        &self,
        tenant: &str,
        body: &Value,
        base: &str,
        p: &Projection,
    ) -> Result<Answer, ScimError>
    where
        Store: IndexOf<K>,
    {
        let attrs = normalize_input(body, K::schema())?;
        let id = uuid::Uuid::new_v4().to_string();
        let spec = K::spec_from_scim(&id, &attrs)?;
        self.check_unique::<K>(tenant, K::spec_unique_value(&spec), None)?;
        validate_unique_value::<K>(&spec)?;
        K::validate(&spec, None, &self.store, tenant)?;
        let stamp = now();
        let obj: K = new_object(tenant, spec, &id, &stamp, &stamp);
        let created = self.store.create(&obj).await.map_err(|e| match e {
            StoreError::AlreadyExists => {
                self.uniqueness_error::<K>(K::spec_unique_value(obj.spec()))
            }
            other => store_error(other),
        })?;
        info!(kind = K::RESOURCE_TYPE, id = %id, tenant, "resource created");
        Ok(self.answer(&created, tenant, base, p))
    }

    fn uniqueness_error<K: ScimKind>(&self, value: &str) -> ScimError {
        ScimError::uniqueness(format!(
            "a {} with {} {value:?} already exists (compared without regard to case)",
            K::RESOURCE_TYPE,
            K::UNIQUE_ATTRIBUTE
        ))
    }

    fn check_unique<K: ServiceKind>(
        &self,
        tenant: &str,
        value: &str,
        except_id: Option<&str>,
    ) -> Result<(), ScimError>
    where
        Store: IndexOf<K>,
    {
        let read = self.store.index().read();
        match read.tenant(tenant).and_then(|t| t.get_by_unique(value)) {
            Some(other) if Some(other.scim_id()) != except_id => {
                Err(self.uniqueness_error::<K>(value))
            }
            _ => Ok(()),
        }
    }

    /// PUT: a full replace that keeps what the server owns.
    pub async fn replace<K: ServiceKind>(
        &self,
        tenant: &str,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        base: &str,
        p: &Projection,
    ) -> Result<Answer, ScimError>
    where
        Store: IndexOf<K>,
    {
        let attrs = normalize_input(body, K::schema())?;
        if let Some(sent) = body.get("id").and_then(Value::as_str)
            && sent != id
        {
            return Err(ScimError::mutability(format!(
                "id {sent:?} differs from the resource's id {id:?}"
            )));
        }
        self.modify::<K>(tenant, id, if_match, base, p, |_| Ok(attrs.clone()))
            .await
    }

    /// PATCH.
    pub async fn patch<K: ServiceKind>(
        &self,
        tenant: &str,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        base: &str,
        p: &Projection,
    ) -> Result<Answer, ScimError>
    where
        Store: IndexOf<K>,
    {
        let ops = parse_patch_request(body)?;
        let schema: &ResourceSchema = K::schema();
        self.modify::<K>(tenant, id, if_match, base, p, |current| {
            let mut resource = current.clone();
            apply_patch(&mut resource, &ops, schema)?;
            Ok(resource)
        })
        .await
    }

    /// Reads, changes and writes an object, retrying when another writer got there first
    /// (unless the client pinned a version with If-Match).
    async fn modify<K: ServiceKind>(
        &self,
        tenant: &str,
        id: &str,
        if_match: Option<&str>,
        base: &str,
        p: &Projection,
        change: impl Fn(&Value) -> Result<Value, ScimError>,
    ) -> Result<Answer, ScimError>
    where
        Store: IndexOf<K>,
    {
        let mut current: K = self.find::<K>(tenant, id)?.as_ref().clone();
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            if let Some(expected) = if_match
                && !etag_matches(expected, &version_of(&current))
            {
                return Err(ScimError::status(
                    412,
                    "the resource's version does not match If-Match",
                ));
            }
            let representation = self.represent(&current, tenant, base);
            let changed = change(&representation)?;
            let spec = K::spec_from_scim(id, &changed)?;
            let new_unique = K::spec_unique_value(&spec).to_string();
            self.check_unique::<K>(tenant, &new_unique, Some(id))?;
            validate_unique_value::<K>(&spec)?;
            K::validate(&spec, Some(current.spec()), &self.store, tenant)?;
            let stamp = now();
            let renamed = new_unique.to_lowercase() != current.unique_value().to_lowercase();
            let result = if renamed {
                self.rename(&current, spec, tenant, &stamp).await
            } else {
                let mut next = K::from_parts(current.meta().clone(), spec);
                next.annotations_mut()
                    .insert(LAST_MODIFIED_ANNOTATION.to_string(), stamp);
                self.store.replace_from(Some(&current), &next).await
            };
            match result {
                Ok(written) => return Ok(self.answer(&written, tenant, base, p)),
                // Someone else wrote first (another request, another replica, or the
                // controller's status). Read the object again and re-apply the change; an
                // If-Match is checked again against what was read, at the top of the loop.
                Err(StoreError::Conflict) => {
                    let name = current.name_any();
                    current = match self
                        .store
                        .get_live::<K>(tenant, &name)
                        .await
                        .map_err(store_error)?
                    {
                        Some(live) if live.scim_id() == id => live,
                        _ => self.find::<K>(tenant, id)?.as_ref().clone(),
                    };
                    let pause =
                        rand::random_range(0..=MAX_RETRY_PAUSE_MS.min(1 + attempt as u64 * 5));
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(StoreError::AlreadyExists) => {
                    return Err(self.uniqueness_error::<K>(&new_unique));
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ScimError::status(
            503,
            "the resource is changing too often; retry later",
        ))
    }

    /// Moves an object to the name of its new unique value: create the new object (which
    /// the API server refuses if the name is taken), then delete the old one.
    async fn rename<K: ServiceKind>(
        &self,
        current: &K,
        spec: K::Spec,
        tenant: &str,
        stamp: &str,
    ) -> Result<K, StoreError>
    where
        Store: IndexOf<K>,
    {
        let next: K = new_object(tenant, spec, current.scim_id(), &created_of(current), stamp);
        let created = self.store.create(&next).await?;
        match self.store.delete_exact(current).await {
            Ok(()) => Ok(created),
            // Another writer changed or renamed the resource first: undo this rename, and let
            // the caller retry from what is there now.
            Err(StoreError::Conflict | StoreError::NotFound) => {
                if let Err(error) = self.store.delete(&created).await {
                    warn!(id = current.scim_id(), %error, "failed to undo a rename that lost a race");
                }
                Err(StoreError::Conflict)
            }
            Err(e) => Err(e),
        }
    }

    /// DELETE.
    pub async fn delete<K: ServiceKind>(
        &self,
        tenant: &str,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError>
    where
        Store: IndexOf<K>,
    {
        let current = self.find::<K>(tenant, id)?;
        if let Some(expected) = if_match
            && !etag_matches(expected, &version_of(current.as_ref()))
        {
            return Err(ScimError::status(
                412,
                "the resource's version does not match If-Match",
            ));
        }
        self.store
            .delete(current.as_ref())
            .await
            .map_err(store_error)?;
        info!(kind = K::RESOURCE_TYPE, id, tenant, "resource deleted");
        Ok(())
    }

    /// DELETE of a user: the user also leaves every group.
    pub async fn delete_user(
        &self,
        tenant: &str,
        id: &str,
        if_match: Option<&str>,
        base: &str,
    ) -> Result<(), ScimError> {
        self.delete::<ScimUser>(tenant, id, if_match).await?;
        let groups: Vec<String> = {
            let read = self.store.groups.read();
            read.tenant(tenant)
                .map(|t| {
                    t.find_by_member(id)
                        .iter()
                        .map(|g| g.scim_id().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        for gid in groups {
            let removal = json!({"Operations": [{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]});
            if let Err(e) = self
                .patch::<ScimGroup>(tenant, &gid, &removal, None, base, &Projection::default())
                .await
            {
                warn!(user = id, group = %gid, error = %e, "failed to remove a deleted user from a group");
            }
        }
        Ok(())
    }

    /// GET list and POST .search.
    pub fn list<K: ServiceKind>(
        &self,
        tenant: &str,
        query: &ListQuery,
        base: &str,
    ) -> Result<ListPage, ScimError>
    where
        Store: IndexOf<K>,
    {
        let schema = K::schema();
        let filter = query.filter.as_deref().map(filter::parse).transpose()?;
        if let Some(f) = &filter {
            f.validate(schema)?;
        }
        let projection = Projection {
            attributes: query.attributes.clone(),
            excluded: query.excluded_attributes.clone(),
        };
        let read = self.store.index().read();
        let Some(index) = read.tenant(tenant) else {
            return Ok(ListPage {
                total: 0,
                start_index: start_of(query),
                resources: vec![],
                next_cursor: None,
                by_cursor: query.cursor.is_some(),
            });
        };
        let candidates: Vec<&Arc<K>> = match filter
            .as_ref()
            .and_then(|f| indexed_candidates::<K>(f, index))
        {
            Some(found) => found,
            None => index.iter().collect(),
        };
        let mut matched: Vec<&Arc<K>> = match &filter {
            Some(f) => candidates
                .into_iter()
                .filter(|obj| {
                    f.matches(
                        &self.represent_with(obj.as_ref(), tenant, base, true),
                        schema,
                    )
                })
                .collect(),
            None => candidates,
        };
        if let Some(sort_by) = &query.sort_by {
            let path = AttrPath::parse(sort_by).ok_or_else(|| {
                ScimError::invalid_value(format!("sortBy {sort_by:?} is not an attribute"))
            })?;
            let mut keyed: Vec<(Option<Value>, &Arc<K>)> = matched
                .into_iter()
                .map(|obj| {
                    let body = self.represent_with(obj.as_ref(), tenant, base, false);
                    (sort_key(&body, &path, schema), obj)
                })
                .collect();
            // A stable sort keeps the id order among equal keys, so pages do not shuffle.
            keyed.sort_by(|a, b| compare_keys(&a.0, &b.0, query.sort_descending));
            matched = keyed.into_iter().map(|(_, obj)| obj).collect();
        }
        let total = matched.len();
        let count = if query.unpaged {
            usize::MAX
        } else {
            query
                .count
                .map(|c| c.max(0) as usize)
                .unwrap_or(self.settings.max_page_size)
                .min(self.settings.max_page_size)
        };
        // Cursor pages continue after the last id seen when the order is the id order, so
        // inserts and deletes between pages shift nothing; sorted lists continue by offset.
        let (skip, start) = match query.cursor.as_deref() {
            None => (start_of(query) - 1, start_of(query)),
            Some("") => (0, 1),
            Some(cursor) => match decode_cursor(cursor)? {
                Cursor::Offset(n) => (n, n + 1),
                Cursor::AfterId(id) if query.sort_by.is_none() => {
                    let n = matched
                        .iter()
                        .take_while(|o| o.scim_id() <= id.as_str())
                        .count();
                    (n, n + 1)
                }
                Cursor::AfterId(_) => return Err(invalid_cursor()),
            },
        };
        let page: Vec<&Arc<K>> = matched.iter().skip(skip).take(count).copied().collect();
        let next_cursor = match (&query.cursor, page.last()) {
            (Some(_), Some(last)) if skip + page.len() < total => {
                Some(if query.sort_by.is_none() {
                    encode_cursor(&Cursor::AfterId(last.scim_id().to_string()))
                } else {
                    encode_cursor(&Cursor::Offset(skip + page.len()))
                })
            }
            _ => None,
        };
        let resources = page
            .into_iter()
            .map(|obj| self.answer(obj.as_ref(), tenant, base, &projection).body)
            .collect();
        Ok(ListPage {
            total,
            start_index: start,
            resources,
            next_cursor,
            by_cursor: query.cursor.is_some(),
        })
    }
}

/// Where a cursor continues.
enum Cursor {
    Offset(usize),
    AfterId(String),
}

fn encode_cursor(cursor: &Cursor) -> String {
    match cursor {
        Cursor::Offset(n) => hex::encode(format!("o:{n}")),
        Cursor::AfterId(id) => hex::encode(format!("k:{id}")),
    }
}

fn decode_cursor(text: &str) -> Result<Cursor, ScimError> {
    let bytes = hex::decode(text).map_err(|_| invalid_cursor())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid_cursor())?;
    match text.split_once(':') {
        Some(("o", n)) => n.parse().map(Cursor::Offset).map_err(|_| invalid_cursor()),
        Some(("k", id)) => Ok(Cursor::AfterId(id.to_string())),
        _ => Err(invalid_cursor()),
    }
}

fn invalid_cursor() -> ScimError {
    ScimError::bad_request(
        ScimType::InvalidCursor,
        "the cursor is not one this server issued for this query; start again with cursor=",
    )
}

/// Refuses a userName or displayName holding control characters: they end up in
/// RoleBinding subjects, where they make look-alike names in kubectl output.
fn validate_unique_value<K: ScimKind>(spec: &K::Spec) -> Result<(), ScimError> {
    let value = K::spec_unique_value(spec);
    if value.chars().any(char::is_control) {
        return Err(ScimError::invalid_value(format!(
            "{} must not contain control characters such as tabs or line breaks",
            K::UNIQUE_ATTRIBUTE
        )));
    }
    Ok(())
}

fn start_of(query: &ListQuery) -> usize {
    query.start_index.unwrap_or(1).max(1) as usize
}

/// Uses the index for an `eq` on id, the unique attribute or externalId that every match
/// must satisfy, so such lookups do not scan the tenant.
fn indexed_candidates<'a, K: ScimKind>(
    filter: &Filter,
    index: &'a crate::store::index::TenantIndex<K>,
) -> Option<Vec<&'a Arc<K>>> {
    for (path, value) in filter.eq_terms() {
        if path.sub.is_some() {
            continue;
        }
        let Some(text) = value.as_str() else {
            continue;
        };
        let attr = path.attr.as_str();
        if attr.eq_ignore_ascii_case("id") {
            return Some(index.get_by_id(text).into_iter().collect());
        }
        if attr.eq_ignore_ascii_case(K::UNIQUE_ATTRIBUTE) {
            return Some(index.get_by_unique(text).into_iter().collect());
        }
        if attr.eq_ignore_ascii_case("externalId") {
            return Some(index.find_by_external_id(text));
        }
    }
    None
}

fn sort_key(body: &Value, path: &AttrPath, schema: &ResourceSchema) -> Option<Value> {
    let case_exact = schema
        .resolve(path)
        .map(|r| r.target().case_exact)
        .unwrap_or(true);
    let lookup = |v: &Value, key: &str| -> Option<Value> {
        v.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let mut value = match &path.schema {
        Some(urn) if body.get(urn.as_str()).is_some() => {
            lookup(body.get(urn.as_str())?, &path.attr)?
        }
        _ => lookup(body, &path.attr)?,
    };
    if let Value::Array(items) = &value {
        let primary = items
            .iter()
            .find(|i| i.get("primary") == Some(&json!(true)));
        value = primary.or(items.first()).cloned()?;
    }
    if let Some(sub) = path.sub.as_deref().or(if value.is_object() {
        Some("value")
    } else {
        None
    }) {
        value = lookup(&value, sub)?;
    }
    match value {
        Value::String(s) if !case_exact => Some(Value::String(s.to_lowercase())),
        other => Some(other),
    }
}

/// Orders sort keys; resources without a value sort last in either direction (RFC 7644
/// §3.4.2.3).
fn compare_keys(a: &Option<Value>, b: &Option<Value>, descending: bool) -> Ordering {
    let order = |x: &Value, y: &Value| match (x, y) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => x.to_string().cmp(&y.to_string()),
    };
    match (a, b) {
        (Some(x), Some(y)) if descending => order(y, x),
        (Some(x), Some(y)) => order(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Whether an If-Match value names the current version (`*` names any).
pub fn etag_matches(header: &str, current: &str) -> bool {
    let strip = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    header
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == strip(current))
}

/// The error for a request whose scimType must be `invalidSyntax`.
pub fn syntax_error(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidSyntax, detail)
}

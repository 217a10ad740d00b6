//! The SCIM HTTP surface (RFC 7644) under `/scim/v2`: routing, authentication, request
//! parsing and response shapes. Every failure answers a SCIM error body.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tracing::debug;

use super::auth::{Authenticator, ConnectionState, TokenEntry};
use super::error::ScimError;
use super::normalize::parse_attribute_list;
use super::schema::{GROUP, USER, resource_type_to_json, schema_to_json};
use super::service::{ListQuery, Projection, ScimService, ServiceKind, etag_matches};
use crate::resources::{ScimGroup, ScimUser};
use crate::store::{IndexOf, Store};
use crate::telemetry;

/// Media type of SCIM responses.
pub const SCIM_MEDIA_TYPE: &str = "application/scim+json";
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// URN of list responses.
const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// URN of search requests.
const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub service: ScimService,
    pub auth: Arc<Authenticator>,
    /// Public base URL (`https://host/scim/v2`); derived from the Host header when unset.
    pub public_url: Option<String>,
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.to_json().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(SCIM_MEDIA_TYPE),
        );
        response
    }
}

fn scim_json(status: StatusCode, body: &Value, etag: Option<&str>) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_MEDIA_TYPE),
    );
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(header::ETAG, tag);
    }
    if let Some(location) = body
        .pointer("/meta/location")
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok())
        && status == StatusCode::CREATED
    {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// The router for `/scim/v2`.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/Users", get(list::<ScimUser>).post(create::<ScimUser>))
        .route("/Users/.search", post(search::<ScimUser>))
        .route(
            "/Users/{id}",
            get(get_one::<ScimUser>)
                .put(replace::<ScimUser>)
                .patch(patch::<ScimUser>)
                .delete(delete_user),
        )
        .route("/Groups", get(list::<ScimGroup>).post(create::<ScimGroup>))
        .route("/Groups/.search", post(search::<ScimGroup>))
        .route(
            "/Groups/{id}",
            get(get_one::<ScimGroup>)
                .put(replace::<ScimGroup>)
                .patch(patch::<ScimGroup>)
                .delete(delete_group),
        )
        .route("/.search", post(search_root))
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{name}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema_by_id))
        .route("/Me", axum::routing::any(me))
        .route("/Bulk", post(bulk))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside authentication, where the caller's connection is known.
        .layer(middleware::from_fn(record_write))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    Router::new()
        .nest("/scim/v2", api)
        .fallback(not_found)
        // Outermost, so refused and unknown requests are counted too.
        .layer(middleware::from_fn(telemetry::track_request))
}

/// Records the time of each successful write per connection, so a connection whose IdP
/// stopped provisioning shows up as stale.
async fn record_write(request: Request, next: Next) -> Response {
    let connection = request
        .extensions()
        .get::<Tenant>()
        .filter(|_| telemetry::is_write(request.method(), request.uri().path()))
        .map(|tenant| tenant.entry.connection.clone());
    let response = next.run(request).await;
    if let Some(connection) = connection
        && response.status().is_success()
    {
        telemetry::record_successful_write(&connection);
    }
    response
}

async fn not_found() -> ScimError {
    ScimError::not_found("no such endpoint; the SCIM base path is /scim/v2")
}

async fn method_not_allowed() -> ScimError {
    ScimError::status(405, "this method is not supported on this endpoint")
}

async fn me() -> ScimError {
    ScimError::status(
        501,
        "/Me is not supported: a provisioning token has no user identity",
    )
}

async fn bulk(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    request: Request,
) -> Result<Response, ScimError> {
    let body = read_json(request.into_body()).await?;
    let answer = state
        .service
        .bulk(tenant.name(), &body, &tenant.base)
        .await?;
    Ok(scim_json(StatusCode::OK, &answer, None))
}

/// Checks the bearer token and records the tenant for the handlers.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let Some(entry) = token.and_then(|t| state.auth.authenticate(&t)) else {
        let mut response =
            ScimError::status(401, "a valid bearer token is required").into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    match entry.state {
        ConnectionState::Active => {}
        ConnectionState::Paused => {
            let mut response = ScimError::status(
                503,
                format!("connection {:?} is paused; retry later", entry.connection),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return response;
        }
        ConnectionState::Disabled => {
            return ScimError::status(
                403,
                format!(
                    "connection {:?} is disabled; an administrator can enable it",
                    entry.connection
                ),
            )
            .into_response();
        }
    }
    // A body that says it is not JSON cannot be a SCIM message; an absent type is fine.
    let declared = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Some(declared) = declared
        && !declared.to_ascii_lowercase().contains("json")
        && matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        )
    {
        return ScimError::status(
            415,
            format!("content type {declared:?} is not accepted; send application/scim+json"),
        )
        .into_response();
    }
    let base = base_url(&state, request.headers());
    request.extensions_mut().insert(Tenant { entry, base });
    next.run(request).await
}

/// The caller's tenant and the base URL for locations.
#[derive(Clone)]
struct Tenant {
    entry: TokenEntry,
    base: String,
}

impl Tenant {
    fn name(&self) -> &str {
        &self.entry.tenant
    }
}

fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}/scim/v2")
}

/// Parses a JSON request body; bodies are read with a size limit and must be UTF-8 JSON.
async fn read_json(body: Body) -> Result<Value, ScimError> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ScimError::status(
                413,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ScimError::invalid_syntax("the request body is not valid UTF-8"))?;
    serde_json::from_str(text)
        .map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")))
}

/// Query parameters, with names compared without regard to case.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Result<Self, ScimError> {
        let mut pairs = Vec::new();
        for part in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| ScimError::invalid_value("a query parameter is not valid UTF-8"))
            };
            pairs.push((decode(key)?, decode(value)?));
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ScimError> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ScimError::invalid_value(format!("{name} must be an integer, got {v:?}"))
                })
            })
            .transpose()
    }
}

fn projection<K: ServiceKind>(params: &Params) -> Result<Projection, ScimError>
where
    Store: IndexOf<K>,
{
    let parse = |name: &str| -> Result<Vec<_>, ScimError> {
        match params.get(name) {
            Some(list) => parse_attribute_list(list, K::schema()),
            None => Ok(Vec::new()),
        }
    };
    Ok(Projection {
        attributes: parse("attributes")?,
        excluded: parse("excludedAttributes")?,
    })
}

fn list_query<K: ServiceKind>(params: &Params) -> Result<ListQuery, ScimError>
where
    Store: IndexOf<K>,
{
    let p = projection::<K>(params)?;
    Ok(ListQuery {
        filter: params.get("filter").map(str::to_string),
        sort_by: params
            .get("sortBy")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        sort_descending: sort_descending(params.get("sortOrder"))?,
        start_index: params.int("startIndex")?,
        count: params.int("count")?,
        attributes: p.attributes,
        excluded_attributes: p.excluded,
        cursor: params.get("cursor").map(str::to_string),
        unpaged: false,
    })
}

fn sort_descending(order: Option<&str>) -> Result<bool, ScimError> {
    match order.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("ascending") => Ok(false),
        Some("descending") => Ok(true),
        Some(other) => Err(ScimError::invalid_value(format!(
            "sortOrder must be ascending or descending, got {other:?}"
        ))),
    }
}

fn list_response(page: super::service::ListPage) -> Response {
    let mut body = json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": page.total,
        "itemsPerPage": page.resources.len(),
        "Resources": page.resources,
    });
    if page.by_cursor {
        if let Some(next) = page.next_cursor {
            body["nextCursor"] = json!(next);
        }
    } else {
        body["startIndex"] = json!(page.start_index);
    }
    scim_json(StatusCode::OK, &body, None)
}

async fn list<K: ServiceKind>(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    request: Request,
) -> Result<Response, ScimError>
where
    Store: IndexOf<K>,
{
    let params = Params::parse(request.uri().query())?;
    let query = list_query::<K>(&params)?;
    debug!(tenant = tenant.name(), kind = K::RESOURCE_TYPE, filter = ?query.filter, "list");
    Ok(list_response(state.service.list::<K>(
        tenant.name(),
        &query,
        &tenant.base,
    )?))
}

fn search_query<K: ServiceKind>(body: &Value) -> Result<ListQuery, ScimError>
where
    Store: IndexOf<K>,
{
    let Some(map) = body.as_object() else {
        return Err(ScimError::invalid_syntax(
            "a search request must be a JSON object",
        ));
    };
    let field = |name: &str| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if let Some(schemas) = field("schemas").and_then(Value::as_array)
        && !schemas.iter().any(|s| s.as_str() == Some(SEARCH_REQUEST))
    {
        return Err(ScimError::invalid_value(format!(
            "a search request must use the schema {SEARCH_REQUEST}"
        )));
    }
    let text = |name: &str| -> Result<Option<String>, ScimError> {
        match field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ScimError::invalid_value(format!("{name} must be a string"))),
        }
    };
    let int = |name: &str| -> Result<Option<i64>, ScimError> {
        match field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ScimError::invalid_value(format!("{name} must be an integer"))),
        }
    };
    let attrs = |name: &str| -> Result<Vec<_>, ScimError> {
        match field(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                let joined: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                parse_attribute_list(&joined.join(","), K::schema())
            }
            Some(Value::String(s)) => parse_attribute_list(s, K::schema()),
            Some(_) => Err(ScimError::invalid_value(format!(
                "{name} must be a list of names"
            ))),
        }
    };
    Ok(ListQuery {
        filter: text("filter")?,
        sort_by: text("sortBy")?,
        sort_descending: sort_descending(text("sortOrder")?.as_deref())?,
        start_index: int("startIndex")?,
        count: int("count")?,
        attributes: attrs("attributes")?,
        excluded_attributes: attrs("excludedAttributes")?,
        cursor: text("cursor")?,
        unpaged: false,
    })
}

async fn search<K: ServiceKind>(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    request: Request,
) -> Result<Response, ScimError>
where
    Store: IndexOf<K>,
{
    let body = read_json(request.into_body()).await?;
    let query = search_query::<K>(&body)?;
    Ok(list_response(state.service.list::<K>(
        tenant.name(),
        &query,
        &tenant.base,
    )?))
}

/// `POST /.search` over both resource types: users first, then groups.
async fn search_root(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    request: Request,
) -> Result<Response, ScimError> {
    let body = read_json(request.into_body()).await?;
    // Attribute names resolve per resource type, so each type parses the request itself.
    let mut user_query = search_query::<ScimUser>(&body)?;
    let mut group_query = search_query::<ScimGroup>(&body)?;
    let start = user_query.start_index.unwrap_or(1).max(1) as usize;
    let count = user_query.count;
    for query in [&mut user_query, &mut group_query] {
        query.start_index = Some(1);
        query.cursor = None;
        query.unpaged = true;
    }
    let users = state
        .service
        .list::<ScimUser>(tenant.name(), &user_query, &tenant.base)?;
    let groups = state
        .service
        .list::<ScimGroup>(tenant.name(), &group_query, &tenant.base)?;
    let total = users.total + groups.total;
    let limit = count
        .map(|c| c.max(0) as usize)
        .unwrap_or(state.service.settings.max_page_size)
        .min(state.service.settings.max_page_size);
    let resources: Vec<Value> = users
        .resources
        .into_iter()
        .chain(groups.resources)
        .skip(start - 1)
        .take(limit)
        .collect();
    Ok(list_response(super::service::ListPage {
        total,
        start_index: start,
        resources,
        next_cursor: None,
        by_cursor: false,
    }))
}

async fn get_one<K: ServiceKind>(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ScimError>
where
    Store: IndexOf<K>,
{
    let params = Params::parse(request.uri().query())?;
    let p = projection::<K>(&params)?;
    let answer = state
        .service
        .get::<K>(tenant.name(), &id, &tenant.base, &p)?;
    if let Some(tag) = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && etag_matches(tag, &answer.version)
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&answer.version) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    Ok(scim_json(
        StatusCode::OK,
        &answer.body,
        Some(&answer.version),
    ))
}

async fn create<K: ServiceKind>(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    request: Request,
) -> Result<Response, ScimError>
where
    Store: IndexOf<K>,
{
    let params = Params::parse(request.uri().query())?;
    let p = projection::<K>(&params)?;
    let body = read_json(request.into_body()).await?;
    let answer = state
        .service
        .create::<K>(tenant.name(), &body, &tenant.base, &p)
        .await?;
    Ok(scim_json(
        StatusCode::CREATED,
        &answer.body,
        Some(&answer.version),
    ))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn replace<K: ServiceKind>(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ScimError>
where
    Store: IndexOf<K>,
{
    let params = Params::parse(request.uri().query())?;
    let p = projection::<K>(&params)?;
    let precondition = if_match(request.headers());
    let body = read_json(request.into_body()).await?;
    let answer = state
        .service
        .replace::<K>(
            tenant.name(),
            &id,
            &body,
            precondition.as_deref(),
            &tenant.base,
            &p,
        )
        .await?;
    Ok(scim_json(
        StatusCode::OK,
        &answer.body,
        Some(&answer.version),
    ))
}

async fn patch<K: ServiceKind>(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ScimError>
where
    Store: IndexOf<K>,
{
    let params = Params::parse(request.uri().query())?;
    let p = projection::<K>(&params)?;
    let precondition = if_match(request.headers());
    let body = read_json(request.into_body()).await?;
    let answer = state
        .service
        .patch::<K>(
            tenant.name(),
            &id,
            &body,
            precondition.as_deref(),
            &tenant.base,
            &p,
        )
        .await?;
    Ok(scim_json(
        StatusCode::OK,
        &answer.body,
        Some(&answer.version),
    ))
}

async fn delete_user(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ScimError> {
    let precondition = if_match(&headers);
    state
        .service
        .delete_user(tenant.name(), &id, precondition.as_deref(), &tenant.base)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_group(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ScimError> {
    let precondition = if_match(&headers);
    state
        .service
        .delete::<ScimGroup>(tenant.name(), &id, precondition.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn service_provider_config(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
) -> Response {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/scim-operator/scim-operator",
        "patch": {"supported": true},
        "bulk": {
            "supported": true,
            "maxOperations": super::bulk::MAX_OPERATIONS,
            "maxPayloadSize": MAX_BODY_BYTES,
        },
        "filter": {"supported": true, "maxResults": state.service.settings.max_page_size},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": state.service.settings.max_page_size,
            "maxPageSize": state.service.settings.max_page_size,
        },
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A token made for one IdP connection, sent as Authorization: Bearer",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", tenant.base),
        },
    });
    scim_json(StatusCode::OK, &body, None)
}

fn all_resource_types(base: &str) -> Vec<Value> {
    vec![
        resource_type_to_json(&USER, base),
        resource_type_to_json(&GROUP, base),
    ]
}

fn all_schemas(base: &str) -> Vec<Value> {
    let mut defs = vec![USER.core, GROUP.core];
    defs.extend(USER.extensions.iter().copied());
    defs.into_iter().map(|d| schema_to_json(d, base)).collect()
}

fn discovery_list(resources: Vec<Value>) -> Response {
    let body = json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    scim_json(StatusCode::OK, &body, None)
}

async fn resource_types(Extension(tenant): Extension<Tenant>) -> Response {
    discovery_list(all_resource_types(&tenant.base))
}

async fn resource_type(
    Extension(tenant): Extension<Tenant>,
    Path(name): Path<String>,
) -> Result<Response, ScimError> {
    all_resource_types(&tenant.base)
        .into_iter()
        .find(|rt| {
            rt["id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(&name))
        })
        .map(|rt| scim_json(StatusCode::OK, &rt, None))
        .ok_or_else(|| ScimError::not_found(format!("resource type {name:?} not found")))
}

async fn schemas(Extension(tenant): Extension<Tenant>) -> Response {
    discovery_list(all_schemas(&tenant.base))
}

async fn schema_by_id(
    Extension(tenant): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    all_schemas(&tenant.base)
        .into_iter()
        .find(|s| {
            s["id"]
                .as_str()
                .is_some_and(|sid| sid.eq_ignore_ascii_case(&id))
        })
        .map(|s| scim_json(StatusCode::OK, &s, None))
        .ok_or_else(|| ScimError::not_found(format!("schema {id:?} not found")))
}

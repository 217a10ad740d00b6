//! Operational telemetry: Prometheus metrics of the SCIM API, the controller and leader
//! election, and the `/metrics`, `/healthz` and `/readyz` endpoints on their own listener.
//!
//! Every label value comes from a fixed set (route kinds, methods, status codes, error
//! categories, object kinds) or from an administrator's configuration (connection names), so
//! the number of series stays bounded. No label, value or log here carries a token.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Media type of the exposition that `prometheus-client` writes (OpenMetrics text, which
/// Prometheus scrapes natively).
const METRICS_MEDIA_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Bucket bounds, in seconds, of SCIM request durations: an index read takes about a
/// millisecond, a write one API-server round trip, a large Bulk several.
const REQUEST_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Bucket bounds, in seconds, of reconcile durations: a pass that changes nothing makes no
/// call; one that writes makes a few round trips.
const RECONCILE_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];
/// The first path segment after the SCIM base path of every route, as the `resource` label.
const RESOURCES: [&str; 8] = [
    "Users",
    "Groups",
    "Schemas",
    "ResourceTypes",
    "ServiceProviderConfig",
    "Bulk",
    "Me",
    ".search",
];
/// The `resource` label of paths that match no route.
const UNKNOWN_RESOURCE: &str = "other";
/// Base path of the SCIM API.
const SCIM_BASE: &str = "/scim/v2";

/// Labels of `scim_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    resource: &'static str,
    status: u16,
}

/// Labels of `scim_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    resource: &'static str,
}

/// Labels of `scim_operator_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

/// Labels of `scim_operator_managed_objects`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Labels of `scim_operator_last_successful_write_timestamp_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    connection: String,
}

/// The metrics of the process and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    reconciles: Counter,
    reconcile_errors: Family<CategoryLabels, Counter>,
    reconcile_duration: Histogram,
    managed_objects: Family<KindLabels, Gauge>,
    last_write: Family<ConnectionLabels, Gauge<f64, AtomicU64>>,
    is_leader: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(request_histogram as fn() -> _);
        let reconciles = Counter::default();
        let reconcile_errors = Family::<CategoryLabels, Counter>::default();
        let reconcile_duration = Histogram::new(RECONCILE_BUCKETS);
        let managed_objects = Family::<KindLabels, Gauge>::default();
        let last_write = Family::<ConnectionLabels, Gauge<f64, AtomicU64>>::default();
        let is_leader = Gauge::default();

        let mut registry = Registry::default();
        registry.register(
            "scim_requests",
            "SCIM requests answered, by method, route kind and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "scim_request_duration",
            "Time to answer a SCIM request, by method and route kind",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register(
            "scim_operator_reconciles",
            "AccessPolicy reconciles run",
            reconciles.clone(),
        );
        registry.register(
            "scim_operator_reconcile_errors",
            "AccessPolicy reconciles that failed, by error category",
            reconcile_errors.clone(),
        );
        registry.register_with_unit(
            "scim_operator_reconcile_duration",
            "Time an AccessPolicy reconcile takes",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register(
            "scim_operator_managed_objects",
            "Objects in the controller's caches, by kind: policies, identities and the \
             bindings it owns; reset when this replica stops running the controller",
            managed_objects.clone(),
        );
        registry.register_with_unit(
            "scim_operator_last_successful_write_timestamp",
            "Unix time of the last SCIM write that succeeded, by IdP connection",
            Unit::Seconds,
            last_write.clone(),
        );
        registry.register(
            "scim_operator_is_leader",
            "1 while this replica runs the controller (it holds the Lease, or leader election \
             is off), else 0",
            is_leader.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            managed_objects,
            last_write,
            is_leader,
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an error would mean a broken encoder.
        if let Err(error) = encode(&mut text, &self.registry) {
            warn!(%error, "failed to encode the metrics");
        }
        text
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The process-wide metrics. One set serves every router and controller in the process, as
/// one `/metrics` endpoint reports them.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The `resource` label of a request path: the route kind after the SCIM base path, never
/// an id; `other` for paths outside the SCIM API or matching no route.
pub fn build_resource_label(path: &str) -> &'static str {
    path.strip_prefix(SCIM_BASE)
        .map_or(UNKNOWN_RESOURCE, build_route_kind)
}

/// The route kind of a path relative to the SCIM base path (`/Users/2819c223`), as routes
/// nested under the base path see it.
fn build_route_kind(relative: &str) -> &'static str {
    let Some(relative) = relative.strip_prefix('/') else {
        return UNKNOWN_RESOURCE;
    };
    let first = relative.split('/').next().unwrap_or_default();
    RESOURCES
        .iter()
        .find(|resource| **resource == first)
        .copied()
        .unwrap_or(UNKNOWN_RESOURCE)
}

/// The `method` label: the standard methods by name, anything else as `other`.
fn build_method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Whether a request changes identities: a create, replace, patch or delete of a user or
/// group, or a Bulk request. Searches are POSTs but read only. `relative` is the path after
/// the SCIM base path, as routes nested under it see it.
pub fn is_write(method: &Method, relative: &str) -> bool {
    let changes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let resource = build_route_kind(relative);
    changes && matches!(resource, "Users" | "Groups" | "Bulk") && !relative.ends_with("/.search")
}

/// Middleware counting and timing every request by method, route kind and status.
pub async fn track_request(request: Request, next: Next) -> Response {
    let method = build_method_label(request.method());
    let resource = build_resource_label(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = metrics();
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            resource,
            status,
        })
        .inc();
    metrics
        .request_duration
        .get_or_create(&RouteLabels { method, resource })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Records that a SCIM write through `connection` succeeded just now.
pub fn record_successful_write(connection: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    metrics()
        .last_write
        .get_or_create(&ConnectionLabels {
            connection: connection.to_string(),
        })
        .set(now);
}

/// Runs one reconcile, counting it, timing it and counting its failure by `category`.
pub async fn observe_reconcile<T, E>(
    reconcile: impl Future<Output = Result<T, E>>,
    category: fn(&E) -> &'static str,
) -> Result<T, E> {
    let started = Instant::now();
    let result = reconcile.await;
    let metrics = metrics();
    metrics.reconciles.inc();
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        metrics
            .reconcile_errors
            .get_or_create(&CategoryLabels {
                category: category(error),
            })
            .inc();
    }
    result
}

/// Sets how many objects of `kind` the controller's cache holds.
pub fn set_managed_objects(kind: &str, count: usize) {
    metrics()
        .managed_objects
        .get_or_create(&KindLabels {
            kind: kind.to_string(),
        })
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// Sets whether this replica runs the controller.
pub fn set_leader(leading: bool) {
    metrics().is_leader.set(i64::from(leading));
}

/// Clears the managed-object counts when dropped, so a replica that stopped running the
/// controller does not keep reporting the counts of its last run.
pub struct ManagedObjectsReset;

impl Drop for ManagedObjectsReset {
    fn drop(&mut self) {
        metrics().managed_objects.clear();
    }
}

/// What `/readyz` reports: ready once the identity indexes and the token watch have their
/// first complete listing.
#[derive(Debug, Default)]
pub struct Readiness {
    indexes: AtomicBool,
    tokens: AtomicBool,
}

impl Readiness {
    /// Records that the user and group indexes hold a complete listing.
    pub fn set_indexes_synced(&self) {
        self.indexes.store(true, Ordering::Release);
    }

    /// Records that the token watch has loaded the accepted tokens (or that there is none to
    /// wait for).
    pub fn set_tokens_ready(&self) {
        self.tokens.store(true, Ordering::Release);
    }

    /// Whether the server can answer SCIM requests correctly.
    pub fn is_ready(&self) -> bool {
        self.indexes.load(Ordering::Acquire) && self.tokens.load(Ordering::Acquire)
    }
}

/// The router of `/metrics`, `/healthz` and `/readyz`.
pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn serve_metrics() -> Response {
    let mut response = metrics().encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(METRICS_MEDIA_TYPE),
    );
    response
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the identity indexes or the tokens are still loading\n",
        )
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    info!(address = %listener.local_addr()?, "metrics server listening");
    axum::serve(listener, router(readiness))
        .with_graceful_shutdown(shutdown)
        .into_future()
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_text(router: Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn the_resource_label_is_the_route_kind_and_never_an_id() {
        let cases = [
            ("/scim/v2/Users", "Users"),
            (
                "/scim/v2/Users/2819c223-7f76-453a-919d-413861904646",
                "Users",
            ),
            ("/Users/abc", "other"),
            ("/scim/v2/Users/.search", "Users"),
            ("/scim/v2/Groups/g1", "Groups"),
            (
                "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
                "Schemas",
            ),
            ("/scim/v2/ServiceProviderConfig", "ServiceProviderConfig"),
            ("/scim/v2/Bulk", "Bulk"),
            ("/scim/v2/.search", ".search"),
            ("/scim/v2/secret-looking-path", "other"),
            ("/scim/v2", "other"),
            ("/metrics", "other"),
            ("", "other"),
        ];

        let labels: Vec<_> = cases
            .iter()
            .map(|(path, _)| (*path, build_resource_label(path)))
            .collect();

        assert_eq!(labels, cases.to_vec());
    }

    #[test]
    fn writes_are_changes_to_users_groups_and_bulk_but_not_searches() {
        let cases = [
            (Method::POST, "/Users", true),
            (Method::PATCH, "/Groups/g1", true),
            (Method::DELETE, "/Users/u1", true),
            (Method::POST, "/Bulk", true),
            (Method::POST, "/Users/.search", false),
            (Method::POST, "/.search", false),
            (Method::GET, "/Users", false),
            (Method::PUT, "/Schemas/x", false),
        ];

        for (method, path, expected) in cases {
            assert_eq!(is_write(&method, path), expected, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn readyz_answers_503_until_indexes_and_tokens_are_loaded() {
        let readiness = Arc::new(Readiness::default());
        let router = router(readiness.clone());

        let before = get_text(router.clone(), "/readyz").await.0;
        readiness.set_indexes_synced();
        let half = get_text(router.clone(), "/readyz").await.0;
        readiness.set_tokens_ready();
        let after = get_text(router.clone(), "/readyz").await.0;
        let alive = get_text(router, "/healthz").await.0;

        assert_eq!(
            [before, half, after, alive],
            [
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::OK,
                StatusCode::OK
            ]
        );
    }

    #[tokio::test]
    async fn metrics_expose_every_family_by_its_documented_name() {
        let scim = Router::new()
            .route("/scim/v2/Groups/{id}", get(|| async { "group" }))
            .layer(axum::middleware::from_fn(track_request));
        get_text(scim, "/scim/v2/Groups/7f3e2a").await;
        record_successful_write("okta-prod");
        set_managed_objects("RoleBinding", 3);
        let failed: Result<(), &str> = observe_reconcile(async { Err("boom") }, |_| "apply").await;

        let (status, text) = get_text(router(Arc::default()), "/metrics").await;

        assert!(failed.is_err());
        assert_eq!(status, StatusCode::OK);
        for expected in [
            "scim_requests_total{method=\"GET\",resource=\"Groups\",status=\"200\"}",
            "scim_request_duration_seconds_count{method=\"GET\",resource=\"Groups\"}",
            "scim_operator_reconcile_errors_total{category=\"apply\"}",
            "# TYPE scim_operator_reconcile_duration_seconds histogram",
            "scim_operator_reconciles_total ",
            "scim_operator_managed_objects{kind=\"RoleBinding\"} 3",
            "scim_operator_last_successful_write_timestamp_seconds{connection=\"okta-prod\"}",
            "scim_operator_is_leader ",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }
}

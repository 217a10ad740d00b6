//! Serving the SCIM API: builds the store for a mode and runs the HTTP server until shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::connections::spawn_token_watch;
use crate::controller::{ControllerSettings, error_chain};
use crate::leader::{self, LeaseSettings, Timings};
use crate::platform::{PlatformTarget, render_platform_files, run_platform_sync};
use crate::scim::auth::{ConnectionState, TokenEntry, hash_token};
use crate::telemetry::{self, Readiness};

use crate::controller::Directory;
use crate::resources::{ScimGroup, ScimUser};
use crate::scim::auth::Authenticator;
use crate::scim::http::{AppState, router};
use crate::scim::service::{ScimService, ServiceSettings};
use crate::store::embedded::EmbeddedBackend;
use crate::store::index::Index;
use crate::store::kube::{KubeBackend, spawn_shard_watch, spawn_watch};
use crate::store::shards::ShardCache;
use crate::store::{Backend, Store, StoreError};

/// How often readiness of the watch-fed indexes is checked at start.
const SYNC_POLL: Duration = Duration::from_millis(50);
/// How often the local mode re-renders data-platform files to pick up policy file edits.
const LOCAL_PLATFORM_POLL: Duration = Duration::from_secs(1);
/// How long requests in flight at shutdown may take to finish before their connections are
/// closed; with the controller's own stop this fits the chart's 30-second grace period.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A store on a folder of YAML files.
pub fn open_embedded(dir: &Path) -> Result<Arc<Store>, StoreError> {
    let users = Arc::new(Default::default());
    let groups = Arc::new(Default::default());
    let backend = EmbeddedBackend::open::<ScimUser, ScimGroup>(dir, &users, &groups)?;
    Ok(Arc::new(Store {
        backend: Backend::Embedded(backend),
        users,
        groups,
        shards: Arc::default(),
    }))
}

/// A store on the Kubernetes API, with its indexes fed by watches on `namespace` (or all
/// namespaces). Returns once both indexes hold a complete listing.
pub async fn open_kube(client: kube::Client, namespace: Option<&str>) -> Arc<Store> {
    let users: Arc<Index<ScimUser>> = Arc::new(Default::default());
    let groups: Arc<Index<ScimGroup>> = Arc::new(Default::default());
    let shards: Arc<ShardCache> = Arc::default();
    // Shards first, so a group that arrives finds the members it keeps there.
    let shards_synced =
        spawn_shard_watch(client.clone(), namespace, shards.clone(), groups.clone());
    while !shards_synced.get() {
        tokio::time::sleep(SYNC_POLL).await;
    }
    let users_synced = spawn_watch::<ScimUser>(client.clone(), namespace, users.clone(), |u| u);
    let merge = {
        let shards = shards.clone();
        move |group| shards.merge(group)
    };
    let groups_synced = spawn_watch::<ScimGroup>(client.clone(), namespace, groups.clone(), merge);
    while !(users_synced.get() && groups_synced.get()) {
        tokio::time::sleep(SYNC_POLL).await;
    }
    Arc::new(Store {
        backend: Backend::Kube(KubeBackend::new(client)),
        users,
        groups,
        shards,
    })
}

impl Directory for Store {
    fn users(&self, tenant: &str) -> Vec<ScimUser> {
        let read = self.users.read();
        read.tenant(tenant)
            .map(|t| t.iter().map(|u| u.as_ref().clone()).collect())
            .unwrap_or_default()
    }

    fn groups(&self, tenant: &str) -> Vec<ScimGroup> {
        let read = self.groups.read();
        read.tenant(tenant)
            .map(|t| t.iter().map(|g| g.as_ref().clone()).collect())
            .unwrap_or_default()
    }
}

/// The application state for a store and an authenticator.
pub fn app_state(
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    public_url: Option<String>,
    settings: ServiceSettings,
) -> Arc<AppState> {
    Arc::new(AppState {
        service: ScimService { store, settings },
        auth,
        public_url,
    })
}

/// Serves the SCIM API until `shutdown` resolves, then stops accepting connections and lets
/// the requests in flight finish, for at most [`DRAIN_TIMEOUT`].
pub async fn serve(
    listen: SocketAddr,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    info!(address = %listener.local_addr()?, "scim server listening");
    let app = router(state).layer(tower_http::trace::TraceLayer::new_for_http());
    let (draining, drain_started) = oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = draining.send(());
    };
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    let drain_limit = async move {
        // An error means the server ended before shutdown began: no limit applies.
        if drain_started.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        served = serving => {
            info!("scim server stopped");
            served
        }
        () = drain_limit => {
            warn!(timeout = ?DRAIN_TIMEOUT, "requests still running at the drain timeout; closing");
            Ok(())
        }
    }
}

/// One receiver that ticks whenever users or groups change.
pub fn store_changes(store: &Store) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let mut users = store.users.subscribe();
    let mut groups = store.groups.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = users.changed() => if changed.is_err() { break },
                changed = groups.changed() => if changed.is_err() { break },
            }
            tx.send_modify(|v| *v += 1);
        }
    });
    rx
}

/// Failures that end a mode.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data folder could not be opened.
    #[error("failed to open the data folder")]
    Store(#[from] StoreError),
    /// The SCIM listener failed.
    #[error("failed to serve SCIM")]
    Serve(#[source] std::io::Error),
    /// The metrics and health listener could not be opened.
    #[error("failed to listen for metrics and health probes")]
    Metrics(#[source] std::io::Error),
    /// Leader election is on, but no namespace was given for its Lease.
    #[error("failed to start leader election: set --operator-namespace, which holds the Lease")]
    LeaseNamespace,
    /// The controller stopped with an error.
    #[error("the controller failed: {0}")]
    Controller(String),
}

/// Settings of the local mode.
pub struct LocalOptions {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub tenant: String,
    pub token: String,
    pub public_url: Option<String>,
    pub service: ServiceSettings,
    pub controller: ControllerSettings,
    /// Data-platform configs rendered under `<data>/output/platform/`.
    pub platform_targets: Vec<PlatformTarget>,
}

/// Settings of the cluster mode.
pub struct ClusterOptions {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub namespace: Option<String>,
    pub operator_namespace: Option<String>,
    pub static_token: Option<String>,
    pub leader_election: bool,
    pub lease_name: String,
    pub run_controller: bool,
    pub public_url: Option<String>,
    pub service: ServiceSettings,
    pub controller: ControllerSettings,
    /// Data-platform configs kept by the reconciling replica.
    pub platform_targets: Vec<PlatformTarget>,
}

/// Resolves on Ctrl-C or SIGTERM; every clone of the receiver sees it.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// A future that resolves when shutdown begins.
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The local mode: SCIM over a folder of YAML files, and the controller writing what it
/// would apply under `<data>/output`.
pub async fn run_local(o: LocalOptions) -> Result<(), ServerError> {
    let auth = Arc::new(Authenticator::single(&o.token, &o.tenant));
    let store = open_embedded(&o.data.join("store"))?;
    let stop = shutdown_signal();
    let local = crate::controller::local::run_local(
        o.data.clone(),
        store.clone(),
        store_changes(&store),
        o.controller.clone(),
        stopped(stop.clone()),
    );
    let platform = render_platform_loop(
        o.data.clone(),
        o.platform_targets,
        store.clone(),
        o.controller,
        store_changes(&store),
        stopped(stop.clone()),
    );
    let state = app_state(store, auth, o.public_url, o.service);
    let serving = serve(o.listen, state, stopped(stop));
    let (served, reconciled, ()) = tokio::join!(serving, local, platform);
    served.map_err(ServerError::Serve)?;
    reconciled.map_err(|e| ServerError::Controller(e.to_string()))
}

/// Renders the local mode's data-platform files after every change of the directory, and
/// at least every [`LOCAL_PLATFORM_POLL`] for changes of the policy files.
async fn render_platform_loop(
    data: PathBuf,
    targets: Vec<PlatformTarget>,
    store: Arc<Store>,
    settings: ControllerSettings,
    mut changes: watch::Receiver<u64>,
    shutdown: impl Future<Output = ()>,
) {
    if targets.is_empty() {
        return;
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        if let Err(error) = render_platform_files(&data, &targets, store.as_ref(), &settings) {
            warn!(error = %error_chain(&error), "failed to render the data-platform files");
        }
        tokio::select! {
            () = &mut shutdown => return,
            _ = changes.changed() => {},
            () = tokio::time::sleep(LOCAL_PLATFORM_POLL) => {},
        }
    }
}

/// The cluster mode: SCIM over the Kubernetes API, the controller (only on the replica that
/// holds the Lease when leader election is on), and metrics and health probes.
///
/// SCIM and the controller run until shutdown or until either of them stops, which stops
/// the other: SCIM drains its requests while the controller stops and then releases the
/// Lease. The metrics listener closes last.
pub async fn run_cluster(client: kube::Client, o: ClusterOptions) -> Result<(), ServerError> {
    let lease_namespace = match (o.leader_election, &o.operator_namespace) {
        (false, _) => None,
        (true, Some(namespace)) => Some(namespace.clone()),
        (true, None) => return Err(ServerError::LeaseNamespace),
    };
    let stop = shutdown_signal();

    // Probes: listening before the start below, so a slow first sync reads as not ready
    // rather than as dead.
    let readiness = Arc::new(Readiness::default());
    let (close_metrics, metrics_closed) = oneshot::channel::<()>();
    let metrics = match o.metrics_listen {
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .map_err(ServerError::Metrics)?;
            let closed = async move {
                let _ = metrics_closed.await;
            };
            Some(tokio::spawn(telemetry::serve(
                listener,
                readiness.clone(),
                closed,
            )))
        }
        None => None,
    };

    // Start: tokens and indexes, unless shutdown comes first.
    let started = tokio::select! {
        state = start_cluster_scim(&client, &o, &readiness) => Some(state),
        () = stopped(stop.clone()) => None,
    };

    // Run: SCIM and the controller, each stopping when the other stops.
    let (halt, halted) = watch::channel(false);
    let until_halted = |stop: watch::Receiver<bool>| {
        let halted = halted.clone();
        async move {
            tokio::select! {
                () = stopped(stop) => {},
                () = stopped(halted) => {},
            }
        }
    };
    let result = match started {
        None => Ok(()),
        Some(state) => {
            let serving = async {
                let served = serve(o.listen, state, until_halted(stop.clone())).await;
                halt.send_replace(true);
                served.map_err(ServerError::Serve)
            };
            let controlling = async {
                if !o.run_controller {
                    return Ok(());
                }
                let controlled = run_controller(
                    client.clone(),
                    o.controller.clone(),
                    o.platform_targets.clone(),
                    lease_namespace.map(|namespace| LeaseSettings {
                        namespace,
                        name: o.lease_name.clone(),
                        identity: leader::default_identity(),
                        timings: Timings::default(),
                    }),
                    until_halted(stop.clone()),
                )
                .await;
                halt.send_replace(true);
                controlled
            };
            let (served, controlled) = tokio::join!(serving, controlling);
            served.and(controlled)
        }
    };

    // Close: the metrics listener last, so probes and scrapes see the shutdown through.
    let _ = close_metrics.send(());
    if let Some(task) = metrics {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "the metrics server failed"),
            Err(error) => warn!(%error, "the metrics server task failed"),
        }
    }
    result
}

/// The SCIM side of the cluster mode, once the accepted tokens and the identity indexes
/// hold a complete listing.
async fn start_cluster_scim(
    client: &kube::Client,
    o: &ClusterOptions,
    readiness: &Readiness,
) -> Arc<AppState> {
    let auth = Arc::new(Authenticator::empty());
    if let (Some(token), Some(ns)) = (&o.static_token, &o.namespace) {
        auth.set_fixed(vec![TokenEntry {
            hash: hash_token(token),
            tenant: ns.clone(),
            connection: "static".to_string(),
            state: ConnectionState::Active,
        }]);
    }
    if let Some(ns) = &o.operator_namespace {
        spawn_token_watch(client.clone(), ns, auth.clone()).await;
    }
    readiness.set_tokens_ready();
    let store = open_kube(client.clone(), o.namespace.as_deref()).await;
    readiness.set_indexes_synced();
    app_state(store, auth, o.public_url.clone(), o.service.clone())
}

/// Runs the controller until `shutdown`: always when `lease` is `None`, else only while
/// this replica holds that Lease.
async fn run_controller(
    client: kube::Client,
    settings: ControllerSettings,
    targets: Vec<PlatformTarget>,
    lease: Option<LeaseSettings>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Some(lease) = lease else {
        telemetry::set_leader(true);
        let _reset = telemetry::ManagedObjectsReset;
        let shutdown = (Box::pin(shutdown) as futures::future::BoxFuture<'static, ()>).shared();
        let (controlled, synced) = tokio::join!(
            crate::controller::kube::run(client.clone(), settings.clone(), shutdown.clone()),
            run_platform_sync(client, targets, settings, shutdown),
        );
        telemetry::set_leader(false);
        controlled.map_err(|e| ServerError::Controller(error_chain(&e)))?;
        return synced.map_err(|e| ServerError::Controller(error_chain(&e)));
    };
    info!(
        lease = %lease.name,
        namespace = %lease.namespace,
        identity = %lease.identity,
        "leader election started"
    );
    let work = |stop: futures::future::BoxFuture<'static, ()>| {
        let stop = stop.shared();
        let running = crate::controller::kube::run(client.clone(), settings.clone(), stop.clone());
        let platform = run_platform_sync(client.clone(), targets.clone(), settings.clone(), stop);
        async move {
            let _reset = telemetry::ManagedObjectsReset;
            let (controlled, synced) = tokio::join!(running, platform);
            controlled.map_err(|e| ServerError::Controller(error_chain(&e)))?;
            synced.map_err(|e| ServerError::Controller(error_chain(&e)))
        }
    };
    leader::run_elected(client.clone(), lease, shutdown, work)
        .await
        .map_err(|e| ServerError::Controller(error_chain(&e)))
}

//! Serving the SCIM API: builds the store for a mode and runs the HTTP server until shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::connections::spawn_token_watch;
use crate::controller::ControllerSettings;
use crate::scim::auth::{ConnectionState, TokenEntry, hash_token};

use crate::controller::Directory;
use crate::resources::{ScimGroup, ScimUser};
use crate::scim::auth::Authenticator;
use crate::scim::http::{AppState, router};
use crate::scim::service::{ScimService, ServiceSettings};
use crate::store::embedded::EmbeddedBackend;
use crate::store::kube::{KubeBackend, spawn_watch};
use crate::store::{Backend, Store, StoreError};

/// How often readiness of the watch-fed indexes is checked at start.
const SYNC_POLL: Duration = Duration::from_millis(50);

/// A store on a folder of YAML files.
pub fn open_embedded(dir: &Path) -> Result<Arc<Store>, StoreError> {
    let users = Arc::new(Default::default());
    let groups = Arc::new(Default::default());
    let backend = EmbeddedBackend::open::<ScimUser, ScimGroup>(dir, &users, &groups)?;
    Ok(Arc::new(Store {
        backend: Backend::Embedded(backend),
        users,
        groups,
    }))
}

/// A store on the Kubernetes API, with its indexes fed by watches on `namespace` (or all
/// namespaces). Returns once both indexes hold a complete listing.
pub async fn open_kube(client: kube::Client, namespace: Option<&str>) -> Arc<Store> {
    let users = Arc::new(Default::default());
    let groups = Arc::new(Default::default());
    let users_synced = spawn_watch::<ScimUser>(client.clone(), namespace, Arc::clone(&users));
    let groups_synced = spawn_watch::<ScimGroup>(client.clone(), namespace, Arc::clone(&groups));
    while !(users_synced.get() && groups_synced.get()) {
        tokio::time::sleep(SYNC_POLL).await;
    }
    Arc::new(Store {
        backend: Backend::Kube(KubeBackend::new(client)),
        users,
        groups,
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

/// Serves the SCIM API until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listen: SocketAddr,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    info!(address = %listener.local_addr()?, "scim server listening");
    let app = router(state).layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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
        o.controller,
        stopped(stop.clone()),
    );
    let state = app_state(store, auth, o.public_url, o.service);
    let serving = serve(o.listen, state, stopped(stop));
    let (served, reconciled) = tokio::join!(serving, local);
    served.map_err(ServerError::Serve)?;
    reconciled.map_err(|e| ServerError::Controller(e.to_string()))
}

/// The cluster mode: SCIM over the Kubernetes API, and the controller.
pub async fn run_cluster(client: kube::Client, o: ClusterOptions) -> Result<(), ServerError> {
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
    let store = open_kube(client.clone(), o.namespace.as_deref()).await;
    let stop = shutdown_signal();
    let state = app_state(store, auth, o.public_url, o.service);
    let serving = serve(o.listen, state, stopped(stop.clone()));
    if !o.run_controller {
        return serving.await.map_err(ServerError::Serve);
    }
    // TODO: hold a Lease before reconciling when leader election is on, and serve metrics;
    // until then every replica reconciles, which is safe (server-side apply is idempotent)
    // but wasteful.
    let _ = (o.leader_election, o.lease_name, o.metrics_listen);
    let reconciling = crate::controller::kube::run(client, o.controller, stopped(stop));
    let (served, reconciled) = tokio::join!(serving, reconciling);
    served.map_err(ServerError::Serve)?;
    reconciled.map_err(|e| ServerError::Controller(e.to_string()))
}

//! Serving the SCIM API: builds the store for a mode and runs the HTTP server until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;

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

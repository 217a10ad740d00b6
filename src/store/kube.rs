//! The Kubernetes backend: ScimUser and ScimGroup objects in the API server, read through
//! watch-fed indexes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::index::Index;
use super::kind::ScimKind;
use super::{FIELD_MANAGER, StoreError};

/// The Kubernetes API as a store backend.
#[derive(Clone)]
pub struct KubeBackend {
    client: Client,
}

impl KubeBackend {
    /// A backend on a client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api<K: ScimKind>(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn post_params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        }
    }

    pub(super) async fn create<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError> {
        let api = self.api::<K>(&obj.namespace().unwrap_or_default());
        api.create(&Self::post_params(), obj)
            .await
            .map_err(map_error)
    }

    pub(super) async fn replace<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError> {
        let api = self.api::<K>(&obj.namespace().unwrap_or_default());
        api.replace(&obj.name_any(), &Self::post_params(), obj)
            .await
            .map_err(map_error)
    }

    pub(super) async fn delete<K: ScimKind>(&self, obj: &K) -> Result<(), StoreError> {
        let api = self.api::<K>(&obj.namespace().unwrap_or_default());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&obj.name_any(), &params).await {
            Ok(_) => Ok(()),
            // A uid precondition that fails means the object under that name is another one.
            Err(e) => match map_error(e) {
                StoreError::Conflict => Err(StoreError::NotFound),
                other => Err(other),
            },
        }
    }

    pub(super) async fn get_live<K: ScimKind>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        self.api::<K>(namespace)
            .get_opt(name)
            .await
            .map_err(map_error)
    }
}

fn map_error(e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(status) => match (status.code, status.reason.as_str()) {
            (409, "AlreadyExists") => StoreError::AlreadyExists,
            (409, _) => StoreError::Conflict,
            (404, _) => StoreError::NotFound,
            (400 | 422, _) => StoreError::Invalid(status.message),
            _ => StoreError::Unavailable(format!("{} {}", status.code, status.message)),
        },
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Whether a watch has delivered its first complete listing.
#[derive(Debug, Default)]
pub struct Synced(AtomicBool);

impl Synced {
    /// True once the first listing has been indexed.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Feeds an index from a watch on one namespace (or all, with `None`) until the process
/// ends. The watcher relists and rewatches on its own after errors.
pub fn spawn_watch<K: ScimKind>(
    client: Client,
    namespace: Option<&str>,
    index: Arc<Index<K>>,
) -> Arc<Synced> {
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let synced = Arc::new(Synced::default());
    let flag = synced.clone();
    tokio::spawn(async move {
        let mut listing: Vec<K> = Vec::new();
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(obj)) => index.upsert(obj),
                Ok(watcher::Event::Delete(obj)) => index.remove(&obj),
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(obj)) => listing.push(obj),
                Ok(watcher::Event::InitDone) => {
                    let count = listing.len();
                    index.replace_all(std::mem::take(&mut listing));
                    if !flag.0.swap(true, Ordering::AcqRel) {
                        info!(kind = K::RESOURCE_TYPE, count, "index synced");
                    }
                }
                Err(error) => warn!(kind = K::RESOURCE_TYPE, %error, "watch failed, retrying"),
            }
        }
    });
    synced
}

//! The Kubernetes backend: ScimUser and ScimGroup objects in the API server, read through
//! watch-fed indexes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use super::index::Index;
use super::kind::ScimKind;
use super::shards::{
    GROUP_ID_LABEL, ShardCache, apply_delta, build_deltas, build_layout, compute_shard_count,
    shard_name,
};
use super::{FIELD_MANAGER, StoreError};
use crate::resources::{
    GroupMember, MANAGED_BY, MANAGED_BY_LABEL, ScimGroup, ScimGroupMembers, ScimGroupMembersSpec,
};

/// How often a shard write is retried when other writers change the shard first.
const SHARD_WRITE_ATTEMPTS: usize = 50;

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

    /// Deletes an object if its uid matches; with `exact`, also its resourceVersion, and a
    /// mismatch is a `Conflict` rather than "already gone".
    pub(super) async fn delete<K: ScimKind>(&self, obj: &K, exact: bool) -> Result<(), StoreError> {
        let api = self.api::<K>(&obj.namespace().unwrap_or_default());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.uid(),
                resource_version: if exact { obj.resource_version() } else { None },
            }),
            ..Default::default()
        };
        match api.delete(&obj.name_any(), &params).await {
            Ok(_) => Ok(()),
            // A uid precondition that fails means the object under that name is another one.
            Err(e) => match map_error(e) {
                StoreError::Conflict if !exact => Err(StoreError::NotFound),
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
    prepare: impl Fn(K) -> K + Send + 'static,
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
                Ok(watcher::Event::Apply(obj)) => index.upsert(prepare(obj)),
                Ok(watcher::Event::Delete(obj)) => index.remove(&obj),
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(obj)) => listing.push(obj),
                Ok(watcher::Event::InitDone) => {
                    let count = listing.len();
                    index.replace_all(
                        std::mem::take(&mut listing)
                            .into_iter()
                            .map(&prepare)
                            .collect(),
                    );
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

impl KubeBackend {
    fn shard_api(&self, namespace: &str) -> Api<ScimGroupMembers> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates a group; a large one keeps its members in shards, written after the group
    /// object (which is what settles uniqueness). If a shard cannot be written, the group
    /// is removed again so that no half-written group remains.
    pub(super) async fn create_group(
        &self,
        group: &ScimGroup,
        cache: &ShardCache,
    ) -> Result<ScimGroup, StoreError> {
        let Some(count) = compute_shard_count(group.spec.members.len(), None) else {
            return self.create(group).await;
        };
        let mut base = group.clone();
        base.spec.members = Vec::new();
        base.spec.member_shards = Some(count);
        let mut created = self.create(&base).await?;
        let namespace = group.namespace().unwrap_or_default();
        for (shard, members) in build_layout(&group.spec.members, count) {
            let written = self
                .write_shard(&namespace, &group.spec.id, shard, &members, &[], true)
                .await;
            match written {
                Ok(shard) => cache.upsert(shard),
                Err(e) => {
                    let _ = self.delete(&created, false).await;
                    let _ = self.delete_shards(group).await;
                    return Err(e);
                }
            }
        }
        created.spec.members = group.spec.members.clone();
        Ok(created)
    }

    /// Replaces a group. The group object is written first, with the caller's
    /// resourceVersion, so concurrent writers of one group are ordered there; the member
    /// changes then go to the shards they belong to, each as a delta on the live shard.
    pub(super) async fn replace_group(
        &self,
        next: &ScimGroup,
        current: Option<&ScimGroup>,
        cache: &ShardCache,
    ) -> Result<ScimGroup, StoreError> {
        let current_count = current.and_then(|c| c.spec.member_shards);
        let count = compute_shard_count(next.spec.members.len(), current_count);
        if count.is_none() && current_count.is_none() {
            return self.replace(next).await;
        }
        let mut base = next.clone();
        base.spec.member_shards = count;
        if count.is_some() {
            base.spec.members = Vec::new();
        }
        let mut written = self.replace(&base).await?;
        let namespace = next.namespace().unwrap_or_default();
        let id = &next.spec.id;
        match (current, count) {
            (Some(current), Some(n)) if current_count == Some(n) => {
                for (shard, (added, removed)) in
                    build_deltas(&current.spec.members, &next.spec.members, n)
                {
                    let shard = self
                        .write_shard(&namespace, id, shard, &added, &removed, false)
                        .await?;
                    cache.upsert(shard);
                }
            }
            (_, Some(n)) => {
                for (shard, members) in build_layout(&next.spec.members, n) {
                    let shard = self
                        .write_shard(&namespace, id, shard, &members, &[], true)
                        .await?;
                    cache.upsert(shard);
                }
                self.delete_shards_from(&namespace, id, n).await?;
            }
            (_, None) => self.delete_shards_from(&namespace, id, 0).await?,
        }
        written.spec.members = next.spec.members.clone();
        Ok(written)
    }

    /// Writes one shard: with `exact`, its members become `added`; otherwise `added` and
    /// `removed` apply to the live shard, retried until no other writer interferes.
    async fn write_shard(
        &self,
        namespace: &str,
        group_id: &str,
        shard: i64,
        added: &[GroupMember],
        removed: &[String],
        exact: bool,
    ) -> Result<ScimGroupMembers, StoreError> {
        let api = self.shard_api(namespace);
        let name = shard_name(group_id, shard);
        for _ in 0..SHARD_WRITE_ATTEMPTS {
            let live = api.get_opt(&name).await.map_err(map_error)?;
            let result = match live {
                None => {
                    let mut obj = ScimGroupMembers::new(
                        &name,
                        ScimGroupMembersSpec {
                            group_id: group_id.to_string(),
                            shard,
                            members: added.to_vec(),
                        },
                    );
                    obj.metadata.namespace = Some(namespace.to_string());
                    obj.metadata.labels = Some(
                        [
                            (GROUP_ID_LABEL.to_string(), group_id.to_string()),
                            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                        ]
                        .into(),
                    );
                    api.create(&Self::post_params(), &obj).await
                }
                Some(mut obj) => {
                    if exact {
                        obj.spec.members = added.to_vec();
                    } else {
                        apply_delta(&mut obj.spec.members, added, removed);
                    }
                    api.replace(&name, &Self::post_params(), &obj).await
                }
            };
            match result.map_err(map_error) {
                Ok(written) => return Ok(written),
                Err(StoreError::Conflict | StoreError::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "shard {name} kept changing; retry later"
        )))
    }

    async fn delete_shards_from(
        &self,
        namespace: &str,
        group_id: &str,
        from: i64,
    ) -> Result<(), StoreError> {
        let api = self.shard_api(namespace);
        let selector = format!("{GROUP_ID_LABEL}={group_id}");
        let shards = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(map_error)?;
        for shard in shards.items {
            let index = shard
                .name_any()
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            if index >= from {
                match api
                    .delete(&shard.name_any(), &DeleteParams::default())
                    .await
                    .map_err(map_error)
                {
                    Ok(_) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Deletes every shard of a group.
    pub(super) async fn delete_shards(&self, group: &ScimGroup) -> Result<(), StoreError> {
        if group.spec.member_shards.is_none() {
            return Ok(());
        }
        self.delete_shards_from(&group.namespace().unwrap_or_default(), &group.spec.id, 0)
            .await
    }
}

/// Feeds the shard cache from a watch, and refreshes the members of the groups whose
/// shards change.
pub fn spawn_shard_watch(
    client: Client,
    namespace: Option<&str>,
    cache: Arc<ShardCache>,
    groups: Arc<Index<ScimGroup>>,
) -> Arc<Synced> {
    let api: Api<ScimGroupMembers> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let synced = Arc::new(Synced::default());
    let flag = synced.clone();
    let refresh = move |cache: &ShardCache, shard: &ScimGroupMembers| {
        let namespace = shard.namespace().unwrap_or_default();
        let group = {
            let read = groups.read();
            read.tenant(&namespace)
                .and_then(|t| t.get_by_id(&shard.spec.group_id))
                .cloned()
        };
        if let Some(group) = group {
            groups.upsert_same_version(cache.merge(group.as_ref().clone()));
        }
    };
    tokio::spawn(async move {
        let mut listing = Vec::new();
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(shard)) => {
                    cache.upsert(shard.clone());
                    refresh(&cache, &shard);
                }
                Ok(watcher::Event::Delete(shard)) => {
                    cache.remove(&shard);
                    refresh(&cache, &shard);
                }
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(shard)) => listing.push(shard),
                Ok(watcher::Event::InitDone) => {
                    let shards = std::mem::take(&mut listing);
                    cache.replace_all(shards.clone());
                    for shard in &shards {
                        refresh(&cache, shard);
                    }
                    flag.0.store(true, Ordering::Release);
                }
                Err(error) => warn!(%error, "shard watch failed, retrying"),
            }
        }
    });
    synced
}

//! Writing platform objects: server-side apply in a cluster, kept current by watch-fed
//! caches ([`run_platform_sync`]), and plain files in the local mode
//! ([`render_platform_files`]).
//!
//! An error never removes a configuration: an object is only ever replaced by a complete
//! newer one, nothing is rendered before every cache holds a full listing, and a failed
//! write leaves the previous object in place until a retry succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::format::build_platform_access;
use super::{
    CONTENT_HASH_ANNOTATION, PlatformDocument, PlatformError, PlatformObject, PlatformOutput,
    PlatformTarget, build_content_hash, build_platform_outputs,
};
use crate::controller::kube::FIELD_MANAGER;
use crate::controller::{ControllerSettings, Directory, error_chain};
use crate::resources::{AccessPolicy, ScimGroup, ScimGroupMembers, ScimUser};
use crate::store::shards::merge_groups;

/// How long a burst of changes may keep arriving before the targets are rendered.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the live objects are read again, so that an object edited or deleted by
/// hand is restored.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Wait before retrying a target whose write failed.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(5);
/// Folder of the platform files under the local mode's output folder.
const PLATFORM_DIR: &str = "platform";

/// What was last written to each target, by target name.
#[derive(Debug, Default)]
pub struct AppliedTargets {
    applied: BTreeMap<String, AppliedTarget>,
}

#[derive(Debug)]
struct AppliedTarget {
    hash: String,
    /// The document written; `None` when the live object already matched at startup.
    document: Option<PlatformDocument>,
}

impl AppliedTargets {
    /// Forgets what was written, so that the next pass reads every live object again.
    pub fn forget(&mut self) {
        for target in self.applied.values_mut() {
            target.hash.clear();
        }
    }
}

/// Runs until `shutdown` resolves: watches AccessPolicies, ScimUsers and ScimGroups, and
/// after every change (once a burst settles for [`DEBOUNCE`]) brings each target's object
/// in line with them.
///
/// Without targets it only waits for `shutdown`. Fails only at startup, when the API
/// server refuses to list one of the resources.
pub async fn run_platform_sync(
    client: Client,
    targets: Vec<PlatformTarget>,
    settings: ControllerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PlatformError> {
    let mut shutdown = pin!(shutdown);
    if targets.is_empty() {
        shutdown.await;
        return Ok(());
    }
    check_access(&client).await?;

    // Feed: one watch-fed cache per resource, each change ticking `changes`.
    let (policies, policy_writer) = reflector::store::<AccessPolicy>();
    let (users, user_writer) = reflector::store::<ScimUser>();
    let (groups, group_writer) = reflector::store::<ScimGroup>();
    let (shards, shard_writer) = reflector::store::<ScimGroupMembers>();
    let (changes_tx, changes) = watch::channel(0u64);
    let feeds = future::join4(
        feed(Api::all(client.clone()), policy_writer, changes_tx.clone()),
        feed(Api::all(client.clone()), user_writer, changes_tx.clone()),
        feed(Api::all(client.clone()), group_writer, changes_tx.clone()),
        feed(Api::all(client.clone()), shard_writer, changes_tx),
    );
    let caches = Caches {
        policies,
        users,
        groups,
        shards,
    };

    // Render and apply after every change, until shutdown.
    info!(targets = targets.len(), "platform sync started");
    let passes = run_passes(client, targets, settings, caches, changes);
    tokio::select! {
        () = &mut shutdown => info!("platform sync stopped"),
        _ = feeds => warn!("platform watchers stopped"),
        () = passes => warn!("platform sync stopped"),
    }
    Ok(())
}

/// Applies each output whose content differs from what its object holds, with server-side
/// apply; an object whose data already matches is left untouched.
///
/// Targets are independent: a failure is returned for its target and the others are still
/// applied.
pub async fn apply_platform_targets(
    client: &Client,
    outputs: &[PlatformOutput],
    applied: &mut AppliedTargets,
) -> Vec<PlatformError> {
    let mut errors = Vec::new();
    for output in outputs {
        let name = &output.target.name;
        let previous = applied.applied.get(name);
        if previous.is_some_and(|p| p.hash == output.hash) {
            continue;
        }
        match apply_platform_target(client, output).await {
            Ok(written) => {
                if written {
                    log_platform_changes(output, previous.and_then(|p| p.document.as_ref()));
                }
                let document = Some(output.document.clone());
                let hash = output.hash.clone();
                applied
                    .applied
                    .insert(name.clone(), AppliedTarget { hash, document });
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}

/// Writes every output's files under `<data>/output/platform/<target>/`, each only when its
/// content changed. Policies come from `<data>/policies/*.yaml`; while any of them cannot
/// be read, nothing is written.
pub fn render_platform_files(
    data: &Path,
    targets: &[PlatformTarget],
    directory: &dyn Directory,
    settings: &ControllerSettings,
) -> Result<Vec<PathBuf>, PlatformError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }

    // Fetch: the policies, then the identities of every tenant in scope.
    let policies_dir = data.join("policies");
    let policies = if policies_dir.exists() {
        crate::render::load_manifests(&policies_dir)
            .map_err(|e| PlatformError::Policies(Box::new(e)))?
            .policies
    } else {
        Vec::new()
    };
    let tenants: BTreeSet<&str> = policies
        .iter()
        .map(|p| p.spec.tenant.as_str())
        .chain(targets.iter().filter_map(|t| t.tenant.as_deref()))
        .collect();
    let (mut users, mut groups) = (Vec::new(), Vec::new());
    for tenant in tenants {
        users.extend(directory.users(tenant).into_iter().map(|mut user| {
            user.metadata.namespace = Some(tenant.to_string());
            user
        }));
        groups.extend(directory.groups(tenant).into_iter().map(|mut group| {
            group.metadata.namespace = Some(tenant.to_string());
            group
        }));
    }

    // Build, then write what changed.
    let outputs = build_platform_outputs(targets, &policies, &users, &groups, settings)?;
    write_platform_files(&data.join("output"), &outputs)
}

/// Writes the files of `outputs` under `<output>/platform/<target>/`, each only when its
/// content changed, and returns the paths written.
pub fn write_platform_files(
    output: &Path,
    outputs: &[PlatformOutput],
) -> Result<Vec<PathBuf>, PlatformError> {
    let mut written = Vec::new();
    for out in outputs {
        let dir = output.join(PLATFORM_DIR).join(&out.target.name);
        for (key, content) in &out.files {
            let path = dir.join(key);
            if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
                continue;
            }
            write_atomically(&path, content)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The watch-fed caches every pass reads from.
struct Caches {
    policies: Store<AccessPolicy>,
    users: Store<ScimUser>,
    groups: Store<ScimGroup>,
    shards: Store<ScimGroupMembers>,
}

async fn run_passes(
    client: Client,
    targets: Vec<PlatformTarget>,
    settings: ControllerSettings,
    caches: Caches,
    mut changes: watch::Receiver<u64>,
) {
    // Wait: an incomplete cache would render too little access, so none is used before
    // it holds a full listing.
    let ready = future::try_join4(
        caches.policies.wait_until_ready(),
        caches.users.wait_until_ready(),
        caches.groups.wait_until_ready(),
        caches.shards.wait_until_ready(),
    );
    if ready.await.is_err() {
        return;
    }
    let (targets, settings) = (Arc::new(targets), Arc::new(settings));
    let mut applied = AppliedTargets::default();
    let mut reported = BTreeSet::new();
    let mut next_resync = Instant::now() + RESYNC_INTERVAL;
    loop {
        changes.borrow_and_update();

        // Build: from a snapshot of the caches, off the async workers.
        let snapshot = (
            caches.policies.state(),
            caches.users.state(),
            caches.groups.state(),
            caches.shards.state(),
        );
        let (t, s) = (Arc::clone(&targets), Arc::clone(&settings));
        let built = tokio::task::spawn_blocking(move || {
            let (policies, users, groups, shards) = snapshot;
            let groups = merge_groups(&groups, &shards);
            build_platform_outputs(&t, &policies, &users, &groups, &s)
        })
        .await
        .map_err(PlatformError::Pass)
        .and_then(|built| built);

        // Apply: each target that changed; a failure keeps the previous object.
        let failed = match built {
            Ok(outputs) => {
                log_warnings(&outputs, &mut reported);
                let errors = apply_platform_targets(&client, &outputs, &mut applied).await;
                for error in &errors {
                    warn!(
                        category = error.category(),
                        error = %error_chain(error),
                        "platform config not written; the previous one stays"
                    );
                }
                !errors.is_empty()
            }
            Err(error) => {
                warn!(
                    category = error.category(),
                    error = %error_chain(&error),
                    "platform config not rendered; the previous one stays"
                );
                true
            }
        };

        // Wait: for a change and the end of its burst, a resync, or a retry.
        let retry = async {
            if failed {
                tokio::time::sleep(ERROR_BACKOFF).await;
            } else {
                future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(DEBOUNCE).await;
            }
            () = tokio::time::sleep_until(next_resync) => {
                applied.forget();
                next_resync = Instant::now() + RESYNC_INTERVAL;
            }
            () = retry => {}
        }
    }
}

/// Keeps `writer` equal to the cluster's objects of kind `K`, ticking `changes` on every
/// change and on every completed listing.
async fn feed<K>(api: Api<K>, mut writer: Writer<K>, changes: watch::Sender<u64>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let kind = K::kind(&());
    let mut events = pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let event = match event {
            // Managed fields are large and never read.
            Ok(event) => event.modify(|object| object.managed_fields_mut().clear()),
            Err(error) => {
                warn!(kind = %kind, error = %error_chain(&error), "platform watch failed; retrying");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        if matches!(event, Event::Apply(_) | Event::Delete(_) | Event::InitDone) {
            changes.send_modify(|tick| *tick += 1);
        }
    }
}

async fn check_access(client: &Client) -> Result<(), PlatformError> {
    async fn list<K>(client: &Client) -> Result<(), PlatformError>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    {
        crate::controller::kube::fetch_listable::<K>(client)
            .await
            .map_err(|source| PlatformError::Startup {
                kind: K::kind(&()).into_owned(),
                source,
            })
    }
    list::<AccessPolicy>(client).await?;
    list::<ScimUser>(client).await?;
    list::<ScimGroup>(client).await?;
    list::<ScimGroupMembers>(client).await
}

/// Writes one target's object unless the live one already holds the same data; returns
/// whether it wrote.
async fn apply_platform_target(
    client: &Client,
    output: &PlatformOutput,
) -> Result<bool, PlatformError> {
    let target = &output.target;
    let (namespace, name) = (target.namespace.as_str(), target.object.as_str());

    // Fetch: the live object; a restart or another replica may have written it already.
    let live_hash = match &output.object {
        PlatformObject::ConfigMap(_) => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let live = api
                .get_opt(name)
                .await
                .map_err(|source| fetch_error(target, source))?;
            live.map(|o| {
                let data = o.data.clone().unwrap_or_default();
                (build_content_hash(&data), annotated_hash(&o))
            })
        }
        PlatformObject::Secret(_) => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let live = api
                .get_opt(name)
                .await
                .map_err(|source| fetch_error(target, source))?;
            live.map(|o| {
                let data: BTreeMap<String, Vec<u8>> = o
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                (build_content_hash(&data), annotated_hash(&o))
            })
        }
    };
    if let Some((data_hash, annotation)) = live_hash
        && data_hash == output.hash
        && annotation.as_deref() == Some(output.hash.as_str())
    {
        debug!(target = %target.name, hash = %output.hash, "platform config already current");
        return Ok(false);
    }

    // Apply: the whole object under the operator's field manager.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let result = match &output.object {
        PlatformObject::ConfigMap(object) => {
            patch(
                Api::<ConfigMap>::namespaced(client.clone(), namespace),
                name,
                object,
                &params,
            )
            .await
        }
        PlatformObject::Secret(object) => {
            patch(
                Api::<Secret>::namespaced(client.clone(), namespace),
                name,
                object,
                &params,
            )
            .await
        }
    };
    result.map_err(|source| PlatformError::Apply {
        target: target.name.clone(),
        object: target.object_ref(),
        source,
    })?;
    info!(
        target = %target.name,
        object = %target.object_ref(),
        hash = %output.hash,
        "platform config written"
    );
    Ok(true)
}

async fn patch<K>(api: Api<K>, name: &str, object: &K, params: &PatchParams) -> kube::Result<()>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    api.patch(name, params, &Patch::Apply(object))
        .await
        .map(|_| ())
}

fn annotated_hash<K: Resource>(object: &K) -> Option<String> {
    object.annotations().get(CONTENT_HASH_ANNOTATION).cloned()
}

fn fetch_error(target: &PlatformTarget, source: kube::Error) -> PlatformError {
    PlatformError::Fetch {
        target: target.name.clone(),
        object: target.object_ref(),
        source,
    }
}

/// Logs each user who gains or loses a privilege, as the audit trail of platform access.
fn log_platform_changes(output: &PlatformOutput, previous: Option<&PlatformDocument>) {
    let Some(previous) = previous else {
        return;
    };
    let before = build_platform_access(previous);
    let after = build_platform_access(&output.document);
    for access in after.difference(&before) {
        info!(
            target = %output.target.name,
            policy = %access.policy,
            user = %access.user,
            privilege = ?access.privilege,
            resource = %access.resource,
            "platform access granted"
        );
    }
    for access in before.difference(&after) {
        info!(
            target = %output.target.name,
            policy = %access.policy,
            user = %access.user,
            privilege = ?access.privilege,
            resource = %access.resource,
            "platform access revoked"
        );
    }
}

/// Logs the warnings of `outputs` that were not logged by the previous pass.
fn log_warnings(outputs: &[PlatformOutput], reported: &mut BTreeSet<String>) {
    let current: BTreeSet<String> = outputs
        .iter()
        .flat_map(|o| o.warnings.iter().map(|w| format!("{}: {w}", o.target.name)))
        .collect();
    for warning in current.difference(reported) {
        warn!(warning = %warning, "platform grant left out");
    }
    *reported = current;
}

fn write_atomically(path: &Path, content: &str) -> Result<(), PlatformError> {
    let write_error = |source| PlatformError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_error)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, content).map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(write_error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::platform::format::tests::{directory, grant, policy};
    use crate::platform::{ObjectKind, PlatformFormat};
    use crate::resources::PlatformPrivilege::Select;

    struct Fixed(Vec<ScimUser>, Vec<ScimGroup>);

    impl Directory for Fixed {
        fn users(&self, _: &str) -> Vec<ScimUser> {
            self.0.clone()
        }
        fn groups(&self, _: &str) -> Vec<ScimGroup> {
            self.1.clone()
        }
    }

    #[test]
    fn the_local_mode_writes_each_file_once_and_again_only_when_it_changes() {
        let data = tempfile::tempdir().unwrap();
        let policies = data.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let analysts = policy(
            "analysts",
            &["Analysts"],
            vec![grant(&["a.*.*"], &[Select])],
        );
        std::fs::write(
            policies.join("analysts.yaml"),
            serde_norway::to_string(&analysts).unwrap(),
        )
        .unwrap();
        let (users, mut groups) = directory();
        let target = PlatformTarget {
            name: "analytics".into(),
            format: PlatformFormat::Trino,
            kind: ObjectKind::ConfigMap,
            namespace: "trino".into(),
            object: "trino-access".into(),
            tenant: None,
        };
        let settings = ControllerSettings::default();
        let dir = data.path().join("output/platform/analytics");

        let first = render_platform_files(
            data.path(),
            std::slice::from_ref(&target),
            &Fixed(users.clone(), groups.clone()),
            &settings,
        )
        .unwrap();
        let second = render_platform_files(
            data.path(),
            std::slice::from_ref(&target),
            &Fixed(users.clone(), groups.clone()),
            &settings,
        )
        .unwrap();
        groups[0].spec.members.retain(|m| m.value == "u-bob");
        let third = render_platform_files(
            data.path(),
            std::slice::from_ref(&target),
            &Fixed(users, groups),
            &settings,
        )
        .unwrap();

        assert_eq!(first, vec![dir.join("group.txt"), dir.join("rules.json")]);
        assert_eq!(second, Vec::<PathBuf>::new());
        assert_eq!(third, vec![dir.join("group.txt")]);
        assert!(
            std::fs::read_to_string(dir.join("group.txt"))
                .unwrap()
                .contains("\nidp-acme/Analysts:bob@example.com\n")
        );
    }

    #[test]
    fn an_unreadable_policy_file_writes_nothing() {
        let data = tempfile::tempdir().unwrap();
        let policies = data.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("broken.yaml"), "kind: AccessPolicy\nspec: [").unwrap();
        let target = PlatformTarget {
            name: "analytics".into(),
            format: PlatformFormat::Json,
            kind: ObjectKind::ConfigMap,
            namespace: "trino".into(),
            object: "access".into(),
            tenant: None,
        };

        let result = render_platform_files(
            data.path(),
            &[target],
            &Fixed(vec![], vec![]),
            &ControllerSettings::default(),
        );

        assert!(matches!(result, Err(PlatformError::Policies(_))));
        assert!(!data.path().join("output").exists());
    }
}

//! The in-cluster controller: keeps the RoleBindings and ClusterRoleBindings of every
//! AccessPolicy equal to what the policy, its tenant's directory and the cluster's
//! namespaces imply, and keeps the status of ScimUsers and ScimGroups.
//!
//! Every input comes from a watch-fed cache, never from a list per pass. The loop that
//! updates a cache is also the one that enqueues the policies a change concerns, after the
//! update, so a reconcile always sees at least the state that triggered it. A reconcile
//! writes only what differs from the cache; a pass over an unchanged policy makes no call.
//!
//! An error is never a reason to revoke: a pass waits for every cache to be filled (and says
//! `NotSynced` when that takes too long), prunes nothing when any write failed, and holds
//! the revocations that [`revocation`](super::revocation) does not find explained.
//!
//! Deleting a policy removes its bindings through their owner references (the garbage
//! collector of kube-controller-manager); no finalizer is needed because nothing lives
//! outside the cluster.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc as trigger_channel;
use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, ReconcileRequest};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::utils::CancelableJoinHandle;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, applier};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::mpsc as tenant_channel;
use tracing::{debug, info, warn};

use super::audit::{
    Action as AccessAction, MAX_NOTE_BYTES, build_access_changes, build_event_notes,
    log_access_changes,
};
use super::desired::build_policy_label_value;
use super::status::{CONDITION_DEGRADED, build_not_synced_status};
use super::{
    ALLOW_MASS_REVOCATION_ANNOTATION, ControllerSettings, CurrentAccess, DesiredAccess,
    POLICY_LABEL, Snapshot, SubjectKey, Target, build_identity_statuses, build_policy_access,
    build_policy_status, error_chain,
};
use crate::resources::{
    AccessPolicy, AccessPolicyStatus, MANAGED_BY, MANAGED_BY_LABEL, ScimGroup, ScimGroupMembers,
    ScimUser,
};
use crate::telemetry;

/// Field manager of every server-side apply, binding and status alike.
pub const FIELD_MANAGER: &str = "scim-operator";
/// Reporting controller named on the Events this controller records.
pub const EVENT_REPORTER: &str = "scim-operator";
/// A policy is reconciled this often even without a trigger, to repair what a lost event
/// left behind.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Wait before retrying a failed reconcile or status update.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(5);
/// Time a burst of directory writes has to gather before statuses are recomputed.
pub const STATUS_BATCH_DELAY: Duration = Duration::from_millis(200);
/// Longest wait of a pass for the caches to be filled before it reports `NotSynced` and
/// retries, changing nothing.
pub const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long running passes may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Status writes in flight at once while a tenant's statuses are brought up to date.
const STATUS_WRITE_CONCURRENCY: usize = 8;
/// Event action of access granted.
const ACTION_GRANT: &str = "Grant";
/// Event action of access revoked.
const ACTION_REVOKE: &str = "Revoke";
/// Event action of a pass that left the policy degraded.
const ACTION_RECONCILE: &str = "Reconcile";

/// Failures of the in-cluster controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a first read, for example because the CRDs are missing.
    #[error("failed to read {kind} at startup")]
    Startup {
        /// The resource kind.
        kind: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A cache stopped before it was filled.
    #[error("failed to read the {0} cache: its watcher stopped")]
    CacheClosed(String),
    /// A cache was not filled in time, for example while the API server is unreachable.
    #[error("failed to read the {kind} cache: it was not filled within {timeout:?}")]
    NotSynced {
        /// The resource kind.
        kind: String,
        /// How long the pass waited.
        timeout: Duration,
    },
    /// The policy came without a uid to own its bindings by.
    #[error("failed to own bindings of AccessPolicy {0}: it has no uid")]
    MissingUid(String),
    /// A binding could not be written.
    #[error("failed to apply {kind} {name}")]
    Apply {
        /// The resource kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A binding no longer desired could not be deleted.
    #[error("failed to delete {kind} {name}")]
    Delete {
        /// The resource kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A status could not be written.
    #[error("failed to write the status of {kind} {name}")]
    Status {
        /// The resource kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A stable category for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Startup { .. } => "startup",
            Error::CacheClosed(_) => "cache",
            Error::NotSynced { .. } => "not_synced",
            Error::MissingUid(_) => "invalid_policy",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Status { .. } => "status",
        }
    }
}

/// Runs the policy controller and the identity status updater until `shutdown` resolves,
/// then lets running reconciles finish for up to [`SHUTDOWN_GRACE`]; retries that failed
/// passes would schedule are not waited for (the next leader starts with a full pass).
///
/// Fails only at startup, when the API server refuses to list one of the resources.
pub async fn run(
    client: Client,
    settings: ControllerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    check_access(&client).await?;

    let (policies, policy_writer) = reflector::store::<AccessPolicy>();
    let (users, user_writer) = reflector::store::<ScimUser>();
    let (groups, group_writer) = reflector::store::<ScimGroup>();
    let (member_shards, shard_writer) = reflector::store::<ScimGroupMembers>();
    let (namespaces, namespace_writer) = reflector::store::<Namespace>();
    let (cluster_role_bindings, crb_writer) = reflector::store::<ClusterRoleBinding>();
    let (role_bindings, rb_writer) = reflector::store::<RoleBinding>();
    let caches = Caches {
        policies,
        users,
        groups,
        member_shards,
        namespaces,
        cluster_role_bindings,
        role_bindings,
    };
    let (policy_tx, policy_rx) = trigger_channel::unbounded();
    let (tenant_tx, tenant_rx) = tenant_channel::unbounded_channel();
    let triggers = Triggers {
        policies: caches.policies.clone(),
        policy_tx,
        tenant_tx,
    };

    // Feed: one watcher per cache; each enqueues what its changes concern.
    let everything = watcher::Config::default();
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let directory_feeds = future::join4(
        feed(
            Api::all(client.clone()),
            everything.clone(),
            policy_writer,
            {
                let triggers = triggers.clone();
                move |event, previous, _| triggers.on_policy_event(event, previous)
            },
        ),
        feed(Api::all(client.clone()), everything.clone(), user_writer, {
            let triggers = triggers.clone();
            move |event, previous, cache| triggers.on_identity_event(event, previous, cache)
        }),
        feed(
            Api::all(client.clone()),
            everything.clone(),
            group_writer,
            {
                let triggers = triggers.clone();
                move |event, previous, cache| triggers.on_identity_event(event, previous, cache)
            },
        ),
        feed(
            Api::all(client.clone()),
            everything.clone(),
            shard_writer,
            {
                let triggers = triggers.clone();
                move |event, previous, cache| triggers.on_identity_event(event, previous, cache)
            },
        ),
    );
    let cluster_feeds = future::join3(
        feed(Api::all(client.clone()), everything, namespace_writer, {
            let triggers = triggers.clone();
            move |event, previous, _| triggers.on_namespace_event(event, previous)
        }),
        feed(Api::all(client.clone()), managed.clone(), crb_writer, {
            let triggers = triggers.clone();
            move |event, _, _| triggers.on_binding_event(event)
        }),
        feed(Api::all(client.clone()), managed, rb_writer, {
            let triggers = triggers.clone();
            move |event, _, _| triggers.on_binding_event(event)
        }),
    );
    drop(triggers);

    // Reconcile: policies from the trigger queue, one at a time per policy.
    let context = Arc::new(Context {
        reporter: Reporter::from(EVENT_REPORTER),
        client,
        settings,
        caches,
        cache_sync_timeout: CACHE_SYNC_TIMEOUT,
    });
    let shutdown = future::FutureExt::shared(Box::pin(shutdown) as future::BoxFuture<'static, ()>);
    let queue = policy_rx
        .map(Ok::<_, Infallible>)
        .take_until(shutdown.clone());
    let reconciles = applier(
        |policy, context| {
            let measured =
                telemetry::observe_reconcile(reconcile(policy, context), Error::category);
            CancelableJoinHandle::spawn(measured, &Handle::current())
        },
        error_policy,
        context.clone(),
        context.caches.policies.clone(),
        queue,
        kube::runtime::Config::default(),
    )
    .for_each(|result| {
        match result {
            Ok((policy, _)) => debug!(policy = %policy.name, "policy reconciled"),
            // error_policy has logged the reconciler's own failures.
            Err(error) => debug!(error = %error, "policy not reconciled"),
        }
        future::ready(())
    });
    let statuses = run_identity_statuses(context, tenant_rx);

    let mut reconciles = pin!(reconciles);
    let stopping = tokio::select! {
        () = &mut reconciles => {
            info!("controller stopped");
            false
        }
        _ = future::join(directory_feeds, cluster_feeds) => {
            warn!("watchers stopped");
            false
        }
        () = statuses => {
            warn!("status updater stopped");
            false
        }
        () = shutdown => true,
    };
    if stopping {
        match tokio::time::timeout(SHUTDOWN_GRACE, reconciles).await {
            Ok(()) => info!("controller stopped"),
            Err(_) => warn!("controller stopped before its passes in flight finished"),
        }
    }
    Ok(())
}

/// The watch-fed caches every pass reads from.
#[derive(Clone)]
struct Caches {
    policies: Store<AccessPolicy>,
    users: Store<ScimUser>,
    groups: Store<ScimGroup>,
    member_shards: Store<ScimGroupMembers>,
    namespaces: Store<Namespace>,
    cluster_role_bindings: Store<ClusterRoleBinding>,
    role_bindings: Store<RoleBinding>,
}

/// What a reconcile needs besides the policy.
struct Context {
    client: Client,
    settings: ControllerSettings,
    caches: Caches,
    /// Who the Events name as their reporter.
    reporter: Reporter,
    /// Longest wait for the caches; [`CACHE_SYNC_TIMEOUT`] outside tests.
    cache_sync_timeout: Duration,
}

/// Where cache changes are turned into work: policy reconciles and tenant status updates.
#[derive(Clone)]
struct Triggers {
    policies: Store<AccessPolicy>,
    policy_tx: trigger_channel::UnboundedSender<ReconcileRequest<AccessPolicy>>,
    tenant_tx: tenant_channel::UnboundedSender<String>,
}

impl Triggers {
    fn on_policy_event(&self, event: &Event<AccessPolicy>, previous: Option<&AccessPolicy>) {
        match event {
            Event::Apply(policy) if is_policy_changed(previous, policy) => {
                self.enqueue([ObjectRef::from_obj(policy)]);
            }
            Event::InitDone => self.enqueue_all(),
            _ => {}
        }
    }

    fn on_identity_event<K: Resource<DynamicType = ()> + Clone>(
        &self,
        event: &Event<K>,
        previous: Option<&K>,
        cache: &Store<K>,
    ) {
        match event {
            Event::Apply(object) if is_spec_changed(previous, object) => {
                self.enqueue_tenant(object.namespace());
            }
            Event::Delete(object) => self.enqueue_tenant(object.namespace()),
            // A relist may have dropped objects without a delete event: redo everything.
            Event::InitDone => {
                let tenants: BTreeSet<_> =
                    cache.state().iter().filter_map(|o| o.namespace()).collect();
                for tenant in tenants {
                    let _ = self.tenant_tx.send(tenant);
                }
                self.enqueue_all();
            }
            _ => {}
        }
    }

    /// A namespace that appears, changes labels, starts terminating or goes concerns the
    /// policies that select namespaces by label or list it by name.
    fn on_namespace_event(&self, event: &Event<Namespace>, previous: Option<&Namespace>) {
        let namespace = match event {
            Event::Apply(ns) if is_namespace_changed(previous, ns) => ns,
            Event::Delete(ns) => ns,
            Event::InitDone => return self.enqueue_all(),
            _ => return,
        };
        let name = namespace.name_any();
        let concerned = self.policies.state_filter(|p| {
            p.spec
                .grants
                .iter()
                .any(|g| g.namespace_selector.is_some() || g.namespaces.contains(&name))
        });
        self.enqueue(concerned.iter().map(|p| ObjectRef::from_obj(&**p)));
    }

    fn on_binding_event<K: Resource<DynamicType = ()>>(&self, event: &Event<K>) {
        match event {
            Event::Apply(binding) | Event::Delete(binding) => {
                let owners = binding.owner_references().iter().filter(|owner| {
                    owner.kind == AccessPolicy::kind(&())
                        && owner.api_version == AccessPolicy::api_version(&())
                });
                self.enqueue(owners.map(|owner| ObjectRef::new(&owner.name)));
            }
            // A relist may have dropped bindings without a delete event.
            Event::InitDone => self.enqueue_all(),
            _ => {}
        }
    }

    fn enqueue_tenant(&self, tenant: Option<String>) {
        let Some(tenant) = tenant else {
            return;
        };
        let policies = self.policies.state_filter(|p| p.spec.tenant == tenant);
        self.enqueue(policies.iter().map(|p| ObjectRef::from_obj(&**p)));
        // The receiver is gone only during shutdown, when nothing needs the update.
        let _ = self.tenant_tx.send(tenant);
    }

    fn enqueue_all(&self) {
        self.enqueue(
            self.policies
                .state()
                .iter()
                .map(|p| ObjectRef::from_obj(&**p)),
        );
    }

    fn enqueue(&self, policies: impl IntoIterator<Item = ObjectRef<AccessPolicy>>) {
        for policy in policies {
            // The receiver is gone only during shutdown, when nothing needs the reconcile.
            let _ = self
                .policy_tx
                .unbounded_send(ReconcileRequest::from(policy));
        }
    }
}

/// Whether `current` carries a spec that `previous` did not; status-only writes do not count,
/// as the API server bumps `generation` only for the spec of resources with a status
/// subresource.
fn is_spec_changed<K: Resource>(previous: Option<&K>, current: &K) -> bool {
    previous.is_none_or(|previous| {
        previous.meta().uid != current.meta().uid
            || previous.meta().generation != current.meta().generation
    })
}

/// Whether a policy's spec or its release annotation changed; the annotation releases held
/// revocations without touching the spec.
fn is_policy_changed(previous: Option<&AccessPolicy>, current: &AccessPolicy) -> bool {
    let release = |p: &AccessPolicy| {
        p.annotations()
            .get(ALLOW_MASS_REVOCATION_ANNOTATION)
            .cloned()
    };
    is_spec_changed(previous, current) || previous.is_some_and(|p| release(p) != release(current))
}

/// Whether a namespace is new, changed its labels, or started or stopped terminating.
fn is_namespace_changed(previous: Option<&Namespace>, current: &Namespace) -> bool {
    let phase = |ns: &Namespace| ns.status.as_ref().and_then(|s| s.phase.clone());
    previous.is_none_or(|previous| {
        previous.labels() != current.labels()
            || previous.metadata.deletion_timestamp.is_some()
                != current.metadata.deletion_timestamp.is_some()
            || phase(previous) != phase(current)
    })
}

/// Keeps `writer`'s cache equal to the API server's objects, calling `on_event` after each
/// change with the object as it was before. Watch failures are retried with backoff; until a
/// relist completes, the cache keeps the last complete listing.
async fn feed<K, F>(api: Api<K>, config: watcher::Config, mut writer: Writer<K>, mut on_event: F)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    F: FnMut(&Event<K>, Option<&K>, &Store<K>),
{
    let cache = writer.as_reader();
    let kind = K::kind(&());
    let mut events = pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        let event = match event {
            // Managed fields are large and never read; caches hold every object.
            Ok(event) => event.modify(|object| object.managed_fields_mut().clear()),
            Err(error) => {
                warn!(kind = %kind, error = %error_chain(&error), "watch failed; retrying");
                continue;
            }
        };
        let previous = match &event {
            Event::Apply(object) | Event::Delete(object) => cache.get(&ObjectRef::from_obj(object)),
            _ => None,
        };
        writer.apply_watcher_event(&event);
        telemetry::set_managed_objects(&kind, cache.len());
        on_event(&event, previous.as_deref(), &cache);
    }
}

async fn check_access(client: &Client) -> Result<(), Error> {
    check_list::<AccessPolicy>(client).await?;
    check_list::<ScimUser>(client).await?;
    check_list::<ScimGroup>(client).await?;
    check_list::<ScimGroupMembers>(client).await?;
    check_list::<Namespace>(client).await
}

async fn check_list<K>(client: &Client) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    fetch_listable::<K>(client)
        .await
        .map_err(|source| Error::Startup {
            kind: K::kind(&()).into_owned(),
            source,
        })
}

/// Lists one object of a kind across namespaces, to learn at startup (with a clear error)
/// whether the CRD is installed and the RBAC allows reading it.
pub(crate) async fn fetch_listable<K>(client: &Client) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
}

/// Brings one policy's bindings and status in line with the policy and its directory.
async fn reconcile(policy: Arc<AccessPolicy>, context: Arc<Context>) -> Result<Action, Error> {
    let name = policy.name_any();
    if policy.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the bindings through their owner references.
        return Ok(Action::await_change());
    }
    let generation = policy.meta().generation;

    // Fetch: the tenant's identities, the namespaces and this policy's bindings, from the
    // caches; a cache that is not filled changes nothing.
    let observed = match fetch_observed(&policy, &context).await {
        Ok(observed) => observed,
        Err(error @ Error::NotSynced { .. }) => {
            let now = Time(Timestamp::now());
            let message = error_chain(&error);
            let status =
                build_not_synced_status(&message, generation, policy.status.as_ref(), &now);
            if let Err(status_error) = apply_policy_status(&context.client, &policy, &status).await
            {
                debug!(policy = %name, error = %error_chain(&status_error), "status not written");
            }
            return Err(error);
        }
        Err(error) => return Err(error),
    };

    // Validate: bindings are owned through the policy's uid.
    if policy.meta().uid.is_none() {
        return Err(Error::MissingUid(name));
    }

    // Build: what the policy grants and what it keeps, without I/O.
    let snapshot = Snapshot::new(&observed.users, &observed.groups)
        .with_member_shards(&observed.member_shards)
        .with_namespaces(&observed.namespaces);
    let current =
        CurrentAccess::from_bindings(&observed.cluster_role_bindings, &observed.role_bindings);
    let desired = build_policy_access(&policy, &snapshot, &current, &context.settings);

    // Apply: server-side apply each binding that differs from its cached copy.
    let mut ledger = Ledger::of(&observed);
    let applied = apply_bindings(&context.client, &desired, &observed, &mut ledger).await;

    // Prune: delete the policy's bindings that this pass does not desire, only once every
    // write succeeded, so that a failed write never leaves a subject without its binding.
    let pruned = match &applied {
        Ok(()) => {
            delete_stale_bindings(&context.client, &name, &desired, &observed, &mut ledger).await
        }
        Err(_) => Ok(()),
    };

    // Audit: log and record what actually changed.
    let before = current
        .targets
        .iter()
        .map(|(target, t)| (target.clone(), t.subjects.clone()))
        .collect();
    let changes =
        build_access_changes(&before, &ledger.subjects_by_target(), &desired.explanations);
    log_access_changes(&name, &changes);
    let mut events: Vec<KubeEvent> = build_event_notes(&changes)
        .into_iter()
        .map(|(action, note)| KubeEvent {
            type_: EventType::Normal,
            reason: action.event_reason().to_string(),
            note: Some(note),
            action: match action {
                AccessAction::Granted => ACTION_GRANT,
                AccessAction::Revoked => ACTION_REVOKE,
            }
            .to_string(),
            secondary: None,
        })
        .collect();
    if let Some(hold) = &desired.hold {
        warn!(
            policy = %name,
            reason = hold.reason.condition_reason(),
            held = hold.subjects.len(),
            fingerprint = %hold.fingerprint,
            "revocations held"
        );
    }

    // Status: record the outcome, written only when it changed.
    let failure = applied.err().or(pruned.err());
    let message = failure.as_ref().map(|error| error_chain(error));
    let now = Time(Timestamp::now());
    let status = build_policy_status(
        &desired,
        message.as_deref(),
        generation,
        policy.status.as_ref(),
        &now,
    );
    events.extend(build_degraded_event(policy.status.as_ref(), &status));
    publish_events(&context, &policy, &events).await;
    let written = apply_policy_status(&context.client, &policy, &status).await;
    match (failure, written) {
        (Some(error), written) => {
            // The write that failed first is what needs fixing; the status follows it.
            if let Err(status_error) = written {
                debug!(policy = %name, error = %error_chain(&status_error), "status not written");
            }
            Err(error)
        }
        (None, Err(status_error)) => Err(status_error),
        (None, Ok(())) => Ok(Action::requeue(RESYNC_INTERVAL)),
    }
}

fn error_policy(policy: Arc<AccessPolicy>, error: &Error, _context: Arc<Context>) -> Action {
    warn!(
        policy = %policy.name_any(),
        category = error.category(),
        error = %error_chain(error),
        "reconcile failed; retrying"
    );
    Action::requeue(ERROR_BACKOFF)
}

/// A Warning Event when the Degraded condition turns True or changes its reason or message.
fn build_degraded_event(
    previous: Option<&AccessPolicyStatus>,
    status: &AccessPolicyStatus,
) -> Option<KubeEvent> {
    let degraded = |s: &AccessPolicyStatus| -> Option<Condition> {
        s.conditions
            .iter()
            .find(|c| c.type_ == CONDITION_DEGRADED && c.status == "True")
            .cloned()
    };
    let now = degraded(status)?;
    let before = previous.and_then(degraded);
    if before.is_some_and(|b| b.reason == now.reason && b.message == now.message) {
        return None;
    }
    let mut note = now.message;
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    Some(KubeEvent {
        type_: EventType::Warning,
        reason: now.reason,
        note: Some(note),
        action: ACTION_RECONCILE.to_string(),
        secondary: None,
    })
}

/// Records `events` on the policy. Events are a courtesy to whoever runs `kubectl
/// describe`: a failure is logged, and never fails the pass.
async fn publish_events(context: &Context, policy: &AccessPolicy, events: &[KubeEvent]) {
    if events.is_empty() {
        return;
    }
    // A recorder per pass: the recorder folds a repeat of the same reason into a series that
    // keeps the first note, and each pass's notes name different subjects.
    let recorder = Recorder::new(context.client.clone(), context.reporter.clone());
    let reference = policy.object_ref(&());
    for event in events {
        if let Err(error) = recorder.publish(event, &reference).await {
            warn!(
                policy = %policy.name_any(),
                reason = %event.reason,
                error = %error_chain(&error),
                "event not recorded"
            );
        }
    }
}

/// The inputs of one reconcile, as the caches hold them.
struct Observed {
    users: Vec<Arc<ScimUser>>,
    groups: Vec<Arc<ScimGroup>>,
    member_shards: Vec<Arc<ScimGroupMembers>>,
    namespaces: Vec<Arc<Namespace>>,
    cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
    role_bindings: Vec<Arc<RoleBinding>>,
}

/// Reads the policy's inputs from the caches, once each has been filled: a cache that is
/// still empty must not read as "no users" and revoke access.
async fn fetch_observed(policy: &AccessPolicy, context: &Context) -> Result<Observed, Error> {
    let caches = &context.caches;
    let timeout = context.cache_sync_timeout;
    wait_until_ready(&caches.users, timeout).await?;
    wait_until_ready(&caches.groups, timeout).await?;
    wait_until_ready(&caches.member_shards, timeout).await?;
    wait_until_ready(&caches.namespaces, timeout).await?;
    wait_until_ready(&caches.cluster_role_bindings, timeout).await?;
    wait_until_ready(&caches.role_bindings, timeout).await?;
    let tenant = policy.spec.tenant.as_str();
    let in_tenant = |namespace: Option<String>| namespace.as_deref() == Some(tenant);
    let label = build_policy_label_value(&policy.name_any());
    let is_owned = |labels: &BTreeMap<String, String>| labels.get(POLICY_LABEL) == Some(&label);
    Ok(Observed {
        users: caches.users.state_filter(|u| in_tenant(u.namespace())),
        groups: caches.groups.state_filter(|g| in_tenant(g.namespace())),
        member_shards: caches
            .member_shards
            .state_filter(|s| in_tenant(s.namespace())),
        namespaces: caches.namespaces.state(),
        cluster_role_bindings: caches
            .cluster_role_bindings
            .state_filter(|b| is_owned(b.labels())),
        role_bindings: caches.role_bindings.state_filter(|b| is_owned(b.labels())),
    })
}

async fn wait_until_ready<K>(cache: &Store<K>, timeout: Duration) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let kind = || K::kind(&()).into_owned();
    match tokio::time::timeout(timeout, cache.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Error::CacheClosed(kind())),
        Err(_) => Err(Error::NotSynced {
            kind: kind(),
            timeout,
        }),
    }
}

/// Identity of a binding: its kind, namespace and name.
type BindingKey = (&'static str, Option<String>, String);

/// What the policy's bindings hold as the pass writes them: it starts from the caches and
/// follows each write that succeeds, so that the audit trail reports what really changed.
struct Ledger {
    bindings: BTreeMap<BindingKey, (Option<Target>, BTreeSet<SubjectKey>)>,
}

impl Ledger {
    fn of(observed: &Observed) -> Self {
        let mut ledger = Self {
            bindings: BTreeMap::new(),
        };
        for binding in &observed.cluster_role_bindings {
            ledger.record(&**binding);
        }
        for binding in &observed.role_bindings {
            ledger.record(&**binding);
        }
        ledger
    }

    fn record<K: Binding>(&mut self, binding: &K) {
        let namespace = binding.namespace();
        let target = Target::of_role_ref(namespace.as_deref(), binding.role_ref());
        let subjects = binding.subjects().iter().map(SubjectKey::of).collect();
        self.bindings
            .insert(binding_key(binding), (target, subjects));
    }

    fn forget<K: Binding>(&mut self, binding: &K) {
        self.bindings.remove(&binding_key(binding));
    }

    fn subjects_by_target(&self) -> BTreeMap<Target, BTreeSet<SubjectKey>> {
        let mut targets: BTreeMap<Target, BTreeSet<SubjectKey>> = BTreeMap::new();
        for (target, subjects) in self.bindings.values() {
            if let Some(target) = target {
                targets
                    .entry(target.clone())
                    .or_default()
                    .extend(subjects.iter().cloned());
            }
        }
        targets
    }
}

fn binding_key<K: Binding>(binding: &K) -> BindingKey {
    (K::KIND, binding.namespace(), binding.name_any())
}

/// Applies every desired binding that differs from its cached copy. Every binding is
/// attempted; the first failure is returned.
async fn apply_bindings(
    client: &Client,
    desired: &DesiredAccess,
    observed: &Observed,
    ledger: &mut Ledger,
) -> Result<(), Error> {
    let mut first_failure = None;
    for binding in &desired.cluster_role_bindings {
        let cached = find_cached(&observed.cluster_role_bindings, binding);
        let result = apply_binding(client, binding, cached, ledger).await;
        first_failure = first_failure.or(result.err());
    }
    for binding in &desired.role_bindings {
        let cached = find_cached(&observed.role_bindings, binding);
        let result = apply_binding(client, binding, cached, ledger).await;
        first_failure = first_failure.or(result.err());
    }
    first_failure.map_or(Ok(()), Err)
}

async fn apply_binding<K: Binding>(
    client: &Client,
    desired: &K,
    cached: Option<&K>,
    ledger: &mut Ledger,
) -> Result<(), Error> {
    if cached.is_some_and(|cached| is_up_to_date(cached, desired)) {
        return Ok(());
    }
    let api = K::api(client.clone(), desired.namespace().as_deref());
    let name = desired.name_any();

    // A roleRef cannot change in place: a binding pointing elsewhere is replaced.
    if let Some(stale) = cached.filter(|cached| cached.role_ref() != desired.role_ref()) {
        delete_binding(&api, stale).await?;
        ledger.forget(stale);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(desired))
        .await
        .map_err(|source| Error::Apply {
            kind: K::KIND.to_string(),
            name: display_name(desired),
            source,
        })?;
    ledger.record(desired);
    debug!(binding = %display_name(desired), "binding applied");
    Ok(())
}

/// Deletes the cached bindings of the policy that this pass does not desire. Every binding
/// is attempted; the first failure is returned.
async fn delete_stale_bindings(
    client: &Client,
    policy: &str,
    desired: &DesiredAccess,
    observed: &Observed,
    ledger: &mut Ledger,
) -> Result<(), Error> {
    let wanted: HashSet<(Option<String>, String)> = desired
        .cluster_role_bindings
        .iter()
        .map(|b| (b.namespace(), b.name_any()))
        .chain(
            desired
                .role_bindings
                .iter()
                .map(|b| (b.namespace(), b.name_any())),
        )
        .collect();
    let mut first_failure = None;
    for stale in observed
        .cluster_role_bindings
        .iter()
        .filter(|b| !wanted.contains(&b.key()))
    {
        let result = delete_stale_binding(client, policy, &**stale, ledger).await;
        first_failure = first_failure.or(result.err());
    }
    for stale in observed
        .role_bindings
        .iter()
        .filter(|b| !wanted.contains(&b.key()))
    {
        let result = delete_stale_binding(client, policy, &**stale, ledger).await;
        first_failure = first_failure.or(result.err());
    }
    first_failure.map_or(Ok(()), Err)
}

async fn delete_stale_binding<K: Binding>(
    client: &Client,
    policy: &str,
    stale: &K,
    ledger: &mut Ledger,
) -> Result<(), Error> {
    let api = K::api(client.clone(), stale.namespace().as_deref());
    delete_binding(&api, stale).await?;
    ledger.forget(stale);
    info!(policy, binding = %display_name(stale), "binding removed");
    Ok(())
}

/// Deletes the very object that was cached; one recreated meanwhile under the same name is
/// left for the pass its creation triggers.
async fn delete_binding<K: Binding>(api: &Api<K>, cached: &K) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cached.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&cached.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: K::KIND.to_string(),
            name: display_name(cached),
            source,
        }),
    }
}

async fn apply_policy_status(
    client: &Client,
    policy: &AccessPolicy,
    status: &AccessPolicyStatus,
) -> Result<(), Error> {
    if policy.status.as_ref() == Some(status) {
        return Ok(());
    }
    apply_status(Api::<AccessPolicy>::all(client.clone()), policy, status).await
}

/// Writes `status` with server-side apply, which also drops the fields it no longer sets
/// (a merge patch would keep an emptied list that serialization skips).
async fn apply_status<K, S>(api: Api<K>, object: &K, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    S: Serialize,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": object.name_any() },
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&object.name_any(), &params, &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Deleted since it was cached: nothing left to describe.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Status {
            kind: K::kind(&()).into_owned(),
            name: display_name(object),
            source,
        }),
    }
}

/// Recomputes the status of the users and groups of each tenant sent on `tenants`, in
/// batches, retrying failed tenants after [`ERROR_BACKOFF`].
async fn run_identity_statuses(
    context: Arc<Context>,
    mut tenants: tenant_channel::UnboundedReceiver<String>,
) {
    let mut retry = BTreeSet::new();
    loop {
        let mut dirty = BTreeSet::new();
        tokio::select! {
            tenant = tenants.recv() => match tenant {
                Some(tenant) => {
                    dirty.insert(tenant);
                }
                None => return,
            },
            () = tokio::time::sleep(ERROR_BACKOFF), if !retry.is_empty() => {}
        }
        dirty.append(&mut retry);

        // Gather: the rest of a burst joins this batch.
        tokio::time::sleep(STATUS_BATCH_DELAY).await;
        while let Ok(tenant) = tenants.try_recv() {
            dirty.insert(tenant);
        }
        for tenant in dirty {
            if let Err(error) = apply_identity_statuses(&context, &tenant).await {
                warn!(
                    tenant,
                    category = error.category(),
                    error = %error_chain(&error),
                    "status update failed; retrying"
                );
                retry.insert(tenant);
            }
        }
    }
}

/// Writes the status of every user and group of `tenant` whose status changed.
async fn apply_identity_statuses(context: &Context, tenant: &str) -> Result<(), Error> {
    // Fetch: the tenant's identities, once the caches are filled.
    let caches = &context.caches;
    let timeout = context.cache_sync_timeout;
    wait_until_ready(&caches.users, timeout).await?;
    wait_until_ready(&caches.groups, timeout).await?;
    wait_until_ready(&caches.member_shards, timeout).await?;
    let in_tenant = |namespace: Option<String>| namespace.as_deref() == Some(tenant);
    let users = caches.users.state_filter(|u| in_tenant(u.namespace()));
    let groups = caches.groups.state_filter(|g| in_tenant(g.namespace()));
    let shards = caches
        .member_shards
        .state_filter(|s| in_tenant(s.namespace()));

    // Build: every status, without I/O.
    let snapshot = Snapshot::new(&users, &groups).with_member_shards(&shards);
    let statuses = build_identity_statuses(&snapshot, tenant);

    // Apply: only the statuses that differ from the cached ones.
    let user_api = Api::<ScimUser>::namespaced(context.client.clone(), tenant);
    let group_api = Api::<ScimGroup>::namespaced(context.client.clone(), tenant);
    let mut writes = Vec::new();
    for user in &users {
        let status = statuses.users.get(&user.name_any());
        if let Some(status) = status.filter(|s| user.status.as_ref() != Some(*s)) {
            writes.push(futures::future::Either::Left(apply_status(
                user_api.clone(),
                &**user,
                status,
            )));
        }
    }
    for group in &groups {
        let status = statuses.groups.get(&group.name_any());
        if let Some(status) = status.filter(|s| group.status.as_ref() != Some(*s)) {
            writes.push(futures::future::Either::Right(apply_status(
                group_api.clone(),
                &**group,
                status,
            )));
        }
    }
    let count = writes.len();
    let results: Vec<Result<(), Error>> = futures::stream::iter(writes)
        .buffer_unordered(STATUS_WRITE_CONCURRENCY)
        .collect()
        .await;
    if count > 0 {
        debug!(tenant, count, "identity statuses written");
    }
    results.into_iter().collect()
}

/// What the controller needs of ClusterRoleBindings and RoleBindings alike.
trait Binding: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned {
    /// The kind, for keys and messages.
    const KIND: &'static str;
    /// The API that holds this binding.
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// The role granted.
    fn role_ref(&self) -> &RoleRef;
    /// The subjects granted; an absent list is an empty one.
    fn subjects(&self) -> &[Subject];
}

impl Binding for ClusterRoleBinding {
    const KIND: &'static str = "ClusterRoleBinding";

    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }

    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }

    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
}

impl Binding for RoleBinding {
    const KIND: &'static str = "RoleBinding";

    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }

    fn role_ref(&self) -> &RoleRef {
        &self.role_ref
    }

    fn subjects(&self) -> &[Subject] {
        self.subjects.as_deref().unwrap_or_default()
    }
}

/// Identity of an object within its kind.
trait ResourceKey {
    fn key(&self) -> (Option<String>, String);
}

impl<K: Resource> ResourceKey for K {
    fn key(&self) -> (Option<String>, String) {
        (self.namespace(), self.name_any())
    }
}

fn find_cached<'a, K: Binding>(cached: &'a [Arc<K>], desired: &K) -> Option<&'a K> {
    let key = desired.key();
    cached.iter().map(|b| &**b).find(|b| b.key() == key)
}

/// Whether the cached binding already holds everything this controller sets. Labels and
/// owners that others added do not count.
fn is_up_to_date<K: Binding>(cached: &K, desired: &K) -> bool {
    cached.role_ref() == desired.role_ref()
        && cached.subjects() == desired.subjects()
        && desired
            .labels()
            .iter()
            .all(|(key, value)| cached.labels().get(key) == Some(value))
        && desired
            .owner_references()
            .iter()
            .all(|owner| cached.owner_references().contains(owner))
}

fn display_name<K: Resource>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use crate::controller::build_desired;
    use crate::resources::{
        AccessPolicySpec, Grant, GroupMember, GroupSelector, ScimGroupSpec, ScimUserSpec,
        SubjectKind,
    };
    use axum::body::Bytes;
    use axum::http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::Value;
    use std::sync::Mutex;

    const TENANT: &str = "acme";

    /// One request the fake API server received: method, path with query, JSON body.
    type Recorded = Arc<Mutex<Vec<(String, String, Value)>>>;

    /// A client whose API server records every request and answers with `respond`.
    fn fake_client(
        respond: impl Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync + 'static,
    ) -> (Client, Recorded) {
        let recorded = Recorded::default();
        let respond = Arc::new(respond);
        let log = recorded.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let (log, respond) = (log.clone(), respond.clone());
            async move {
                let method = request.method().to_string();
                let uri = request.uri().to_string();
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (status, reply) = respond(&method, &uri, &body);
                log.lock().unwrap().push((method, uri, body));
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(reply.to_string())))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        (Client::new(service, "default"), recorded)
    }

    /// Answers like an API server that accepts every write.
    fn accept_all(policy: AccessPolicy) -> impl Fn(&str, &str, &Value) -> (u16, Value) {
        move |method, uri, body| {
            if method == "DELETE" {
                (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
                )
            } else if uri.contains("/accesspolicies/") {
                let mut object = serde_json::to_value(&policy).unwrap();
                object["status"] = body["status"].clone();
                (200, object)
            } else {
                (200, body.clone())
            }
        }
    }

    fn not_found() -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "metadata": {},
            "reason": "NotFound", "code": 404, "message": "namespaces \"data\" not found"
        })
    }

    fn cache<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let mut writer = Writer::default();
        writer.apply_watcher_event(&Event::Init);
        for object in objects {
            writer.apply_watcher_event(&Event::InitApply(object));
        }
        writer.apply_watcher_event(&Event::InitDone);
        writer.as_reader()
    }

    fn policy() -> AccessPolicy {
        let mut policy = AccessPolicy::new(
            "analysts",
            AccessPolicySpec {
                tenant: TENANT.into(),
                groups: vec![GroupSelector {
                    display_name: Some("Analysts".into()),
                    ..Default::default()
                }],
                grants: vec![
                    Grant {
                        cluster_role: Some("view".into()),
                        ..Default::default()
                    },
                    Grant {
                        cluster_role: Some("view".into()),
                        namespaces: vec!["data".into()],
                        ..Default::default()
                    },
                ],
                subjects: SubjectKind::User,
                ..AccessPolicySpec::default()
            },
        );
        policy.metadata.uid = Some("policy-uid".into());
        policy.metadata.generation = Some(2);
        policy
    }

    fn user(id: &str, user_name: &str, active: bool) -> ScimUser {
        let spec = ScimUserSpec {
            id: id.into(),
            user_name: user_name.into(),
            active: Some(active),
            ..Default::default()
        };
        let mut user = ScimUser::new(id, spec);
        user.metadata.namespace = Some(TENANT.into());
        user
    }

    fn analysts() -> ScimGroup {
        let members = ["u1", "u2"].map(|v| GroupMember {
            value: v.into(),
            ..Default::default()
        });
        let spec = ScimGroupSpec {
            id: "g1".into(),
            display_name: "Analysts".into(),
            members: members.to_vec(),
            ..Default::default()
        };
        let mut group = ScimGroup::new("analysts", spec);
        group.metadata.namespace = Some(TENANT.into());
        group
    }

    fn directory_users() -> Vec<ScimUser> {
        vec![
            user("u1", "alice@example.com", true),
            user("u2", "bob@example.com", false),
        ]
    }

    fn data_namespace() -> Namespace {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some("data".into());
        namespace
    }

    fn with_uids<K: Resource + Clone>(objects: &[K]) -> Vec<K> {
        objects
            .iter()
            .cloned()
            .map(|mut object| {
                let name = object.meta().name.clone().unwrap_or_default();
                object.meta_mut().uid = Some(format!("uid-of-{name}"));
                object
            })
            .collect()
    }

    fn context(
        client: Client,
        policy: &AccessPolicy,
        desired_in_cache: Option<&DesiredAccess>,
    ) -> Arc<Context> {
        Arc::new(context_with(
            client,
            policy,
            desired_in_cache,
            directory_users(),
            vec![analysts()],
        ))
    }

    fn context_with(
        client: Client,
        policy: &AccessPolicy,
        desired_in_cache: Option<&DesiredAccess>,
        users: Vec<ScimUser>,
        groups: Vec<ScimGroup>,
    ) -> Context {
        let (crbs, rbs) = match desired_in_cache {
            Some(desired) => (
                with_uids(&desired.cluster_role_bindings),
                with_uids(&desired.role_bindings),
            ),
            None => (vec![], vec![]),
        };
        Context {
            client,
            settings: ControllerSettings::default(),
            caches: Caches {
                policies: cache(vec![policy.clone()]),
                users: cache(users),
                groups: cache(groups),
                member_shards: cache(vec![]),
                namespaces: cache(vec![data_namespace()]),
                cluster_role_bindings: cache(crbs),
                role_bindings: cache(rbs),
            },
            reporter: Reporter {
                controller: EVENT_REPORTER.into(),
                instance: Some("test".into()),
            },
            cache_sync_timeout: Duration::from_millis(50),
        }
    }

    fn desired_for(policy: &AccessPolicy) -> DesiredAccess {
        build_desired(
            policy,
            &directory_users(),
            &[analysts()],
            &ControllerSettings::default(),
        )
    }

    fn calls(recorded: &Recorded) -> Vec<(String, String)> {
        recorded
            .lock()
            .unwrap()
            .iter()
            .map(|(m, u, _)| (m.clone(), u.clone()))
            .collect()
    }

    fn is_event(uri: &str) -> bool {
        uri.starts_with("/apis/events.k8s.io/")
    }

    /// The Events recorded, as (type, reason, note).
    fn events(recorded: &Recorded) -> Vec<(String, String, String)> {
        let recorded = recorded.lock().unwrap();
        recorded
            .iter()
            .filter(|(_, uri, _)| is_event(uri))
            .map(|(_, _, body)| {
                let text = |field: &str| body[field].as_str().unwrap_or_default().to_string();
                (text("type"), text("reason"), text("note"))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_new_policy_gets_its_bindings_applied_its_status_written_and_an_event() {
        let policy = policy();
        let (client, recorded) = fake_client(accept_all(policy.clone()));

        let action = reconcile(Arc::new(policy.clone()), context(client, &policy, None))
            .await
            .unwrap();

        assert_eq!(action, Action::requeue(RESYNC_INTERVAL));
        let apply = "?&force=true&fieldManager=scim-operator";
        assert_eq!(
            calls(&recorded),
            vec![
                (
                    "PATCH".into(),
                    format!(
                        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/scim-analysts-view{apply}"
                    )
                ),
                (
                    "PATCH".into(),
                    format!(
                        "/apis/rbac.authorization.k8s.io/v1/namespaces/data/rolebindings/scim-analysts-c-view{apply}"
                    )
                ),
                (
                    "POST".into(),
                    "/apis/events.k8s.io/v1/namespaces/default/events?".into()
                ),
                (
                    "PATCH".into(),
                    format!(
                        "/apis/scim-operator.dev/v1alpha1/accesspolicies/analysts/status{apply}"
                    )
                ),
            ]
        );
        let desired = desired_for(&policy);
        let bodies: Vec<Value> = recorded
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, b)| b.clone())
            .collect();
        assert_eq!(
            bodies[0],
            serde_json::to_value(&desired.cluster_role_bindings[0]).unwrap()
        );
        assert_eq!(
            bodies[1],
            serde_json::to_value(&desired.role_bindings[0]).unwrap()
        );
        assert_eq!(bodies[2]["regarding"]["kind"], json!("AccessPolicy"));
        assert_eq!(bodies[2]["regarding"]["uid"], json!("policy-uid"));
        assert_eq!(bodies[2]["action"], json!("Grant"));
        assert_eq!(bodies[3]["status"]["subjectCount"], json!(1));
        assert_eq!(bodies[3]["status"]["observedGeneration"], json!(2));
        assert_eq!(
            bodies[3]["status"]["conditions"][0]["reason"],
            json!("Reconciled")
        );
        assert_eq!(
            events(&recorded),
            vec![(
                "Normal".into(),
                "AccessGranted".into(),
                "granted 1 subject in 2 places (ClusterRole view cluster-wide and 1 more): \
                 alice@example.com (granted)"
                    .into()
            )]
        );
    }

    #[tokio::test]
    async fn a_policy_that_matches_its_caches_costs_no_call() {
        let mut policy = policy();
        let desired = desired_for(&policy);
        let now = Time(Timestamp::now());
        policy.status = Some(build_policy_status(&desired, None, Some(2), None, &now));
        let (client, recorded) = fake_client(accept_all(policy.clone()));

        reconcile(
            Arc::new(policy.clone()),
            context(client, &policy, Some(&desired)),
        )
        .await
        .unwrap();

        assert_eq!(calls(&recorded), vec![]);
    }

    #[tokio::test]
    async fn a_binding_no_longer_desired_is_deleted_by_uid() {
        let mut policy = policy();
        let desired = desired_for(&policy);
        let now = Time(Timestamp::now());
        policy.spec.grants.truncate(1);
        let mut after = desired_for(&policy);
        policy.status = Some(build_policy_status(&after, None, Some(2), None, &now));
        after.role_bindings = desired.role_bindings.clone();
        let (client, recorded) = fake_client(accept_all(policy.clone()));

        reconcile(
            Arc::new(policy.clone()),
            context(client, &policy, Some(&after)),
        )
        .await
        .unwrap();

        let writes: Vec<(String, String, Value)> = recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, uri, _)| !is_event(uri))
            .cloned()
            .collect();
        let (method, uri, body) = &writes[0];
        assert_eq!(writes.len(), 1);
        assert_eq!(
            (method.as_str(), uri.as_str()),
            (
                "DELETE",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/data/rolebindings/scim-analysts-c-view?"
            )
        );
        assert_eq!(
            body["preconditions"],
            json!({"uid": "uid-of-scim-analysts-c-view"})
        );
        assert_eq!(
            events(&recorded),
            vec![(
                "Normal".into(),
                "AccessRevoked".into(),
                "revoked 1 subject in 1 place (ClusterRole view in namespace data): \
                 alice@example.com (unbound)"
                    .into()
            )]
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_and_shown_in_status_while_the_rest_still_applies() {
        let policy = policy();
        let accept = accept_all(policy.clone());
        let (client, recorded) = fake_client(move |method, uri, body| {
            if uri.contains("/namespaces/data/") {
                (404, not_found())
            } else {
                accept(method, uri, body)
            }
        });

        let context = context(client, &policy, None);

        let result = reconcile(Arc::new(policy.clone()), context.clone()).await;

        let error = result.unwrap_err();
        assert_eq!(error.category(), "apply");
        assert_eq!(
            error_policy(Arc::new(policy), &error, context),
            Action::requeue(ERROR_BACKOFF)
        );
        let recorded_calls = calls(&recorded);
        assert_eq!(recorded_calls.len(), 5, "{recorded_calls:?}");
        let status = recorded.lock().unwrap()[4].2["status"].clone();
        assert_eq!(status["conditions"][0]["status"], json!("False"));
        assert_eq!(status["conditions"][0]["reason"], json!("ApplyFailed"));
        let kinds: Vec<(String, String)> = events(&recorded)
            .into_iter()
            .map(|(type_, reason, _)| (type_, reason))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("Normal".into(), "AccessGranted".into()),
                ("Warning".into(), "ApplyFailed".into())
            ]
        );
    }

    #[tokio::test]
    async fn nothing_is_pruned_while_a_write_fails() {
        let mut policy = policy();
        let before = desired_for(&policy);
        policy.spec.grants[1].namespaces = vec!["other".into()];
        let (client, recorded) = fake_client(|_, _, _| {
            let failure = json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "metadata": {},
                "reason": "InternalError", "code": 500, "message": "etcdserver: request timed out"
            });
            (500, failure)
        });

        let result = reconcile(
            Arc::new(policy.clone()),
            context(client, &policy, Some(&before)),
        )
        .await;

        assert_eq!(result.unwrap_err().category(), "apply");
        let methods: Vec<String> = calls(&recorded).into_iter().map(|(m, _)| m).collect();
        assert!(!methods.contains(&"DELETE".to_string()), "{methods:?}");
    }

    #[tokio::test]
    async fn a_pass_whose_caches_are_not_filled_changes_nothing_and_says_so() {
        let policy = policy();
        let (client, recorded) = fake_client(accept_all(policy.clone()));
        let mut context = context_with(client, &policy, None, directory_users(), vec![analysts()]);
        let (never_filled, _writer) = reflector::store::<ScimUser>();
        context.caches.users = never_filled;

        let error = reconcile(Arc::new(policy.clone()), Arc::new(context))
            .await
            .unwrap_err();

        assert_eq!(error.category(), "not_synced");
        let recorded = recorded.lock().unwrap();
        assert_eq!(recorded.len(), 1);
        assert!(
            recorded[0].1.ends_with(
                "/accesspolicies/analysts/status?&force=true&fieldManager=scim-operator"
            )
        );
        let conditions = &recorded[0].2["status"]["conditions"];
        assert_eq!(conditions[0]["reason"], json!("NotSynced"));
        assert_eq!(
            conditions[1]["message"],
            json!(
                "failed to read the ScimUser cache: it was not filled within 50ms; nothing was \
                 changed, existing bindings are kept"
            )
        );
    }

    /// A policy whose bindings hold three analysts, after the Analysts group was deleted.
    fn policy_of_a_deleted_group() -> (AccessPolicy, DesiredAccess, Vec<ScimUser>) {
        let mut policy = policy();
        let users = vec![
            user("u1", "alice@example.com", true),
            user("u3", "carol@example.com", true),
            user("u4", "dave@example.com", true),
        ];
        let mut group = analysts();
        group.spec.members = ["u1", "u3", "u4"]
            .map(|v| GroupMember {
                value: v.into(),
                ..Default::default()
            })
            .to_vec();
        let before = build_desired(&policy, &users, &[group], &ControllerSettings::default());
        let now = Time(Timestamp::now());
        policy.status = Some(build_policy_status(&before, None, Some(2), None, &now));
        (policy, before, users)
    }

    #[tokio::test]
    async fn revoking_most_subjects_without_a_reason_is_held_and_reported() {
        let (policy, before, users) = policy_of_a_deleted_group();
        let (client, recorded) = fake_client(accept_all(policy.clone()));
        let context = context_with(client, &policy, Some(&before), users, vec![]);

        reconcile(Arc::new(policy.clone()), Arc::new(context))
            .await
            .unwrap();

        let writes: Vec<(String, String)> = calls(&recorded)
            .into_iter()
            .filter(|(_, uri)| !is_event(uri))
            .collect();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert!(writes[0].1.contains("/accesspolicies/analysts/status"));
        let status = recorded.lock().unwrap().last().unwrap().2["status"].clone();
        assert_eq!(status["heldSubjectCount"], json!(3));
        assert_eq!(status["conditions"][1]["reason"], json!("RevocationHeld"));
        let message = status["conditions"][1]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.starts_with("held revoking 3 of the 3 subjects bound (100%"),
            "{message}"
        );
        assert!(
            message.contains("scim-operator.dev/allow-mass-revocation="),
            "{message}"
        );
        let warnings: Vec<String> = events(&recorded)
            .into_iter()
            .filter(|(type_, _, _)| type_ == "Warning")
            .map(|(_, reason, _)| reason)
            .collect();
        assert_eq!(warnings, vec!["RevocationHeld".to_string()]);
    }

    #[tokio::test]
    async fn the_fingerprint_annotation_releases_a_held_revocation() {
        let (mut policy, before, users) = policy_of_a_deleted_group();
        let (client, _) = fake_client(accept_all(policy.clone()));
        let held = context_with(client, &policy, Some(&before), users.clone(), vec![]);
        reconcile(Arc::new(policy.clone()), Arc::new(held))
            .await
            .unwrap();
        let snapshot_users = users.clone();
        let snapshot = Snapshot::new(&snapshot_users, &[] as &[ScimGroup]);
        let current =
            CurrentAccess::from_bindings(&before.cluster_role_bindings, &before.role_bindings);
        let fingerprint =
            build_policy_access(&policy, &snapshot, &current, &ControllerSettings::default())
                .hold
                .unwrap()
                .fingerprint;
        policy
            .annotations_mut()
            .insert(ALLOW_MASS_REVOCATION_ANNOTATION.into(), fingerprint);
        let (client, recorded) = fake_client(accept_all(policy.clone()));
        let released = context_with(client, &policy, Some(&before), users, vec![]);

        reconcile(Arc::new(policy.clone()), Arc::new(released))
            .await
            .unwrap();

        let bodies: Vec<Value> = recorded
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, uri, _)| m == "PATCH" && uri.contains("bindings/"))
            .map(|(_, _, body)| body["subjects"].clone())
            .collect();
        assert_eq!(bodies, vec![json!([]), json!([])]);
        let revoked: Vec<String> = events(&recorded)
            .into_iter()
            .map(|(_, reason, _)| reason)
            .collect();
        assert!(
            revoked.contains(&"AccessRevoked".to_string()),
            "{revoked:?}"
        );
    }

    #[test]
    fn only_spec_changes_and_new_objects_count_as_changes() {
        let before = user("u1", "alice@example.com", true);
        let mut status_only = before.clone();
        status_only.status = Some(Default::default());
        let mut new_spec = before.clone();
        new_spec.metadata.generation = Some(7);
        let mut recreated = before.clone();
        recreated.metadata.uid = Some("another".into());

        assert!(is_spec_changed(None, &before));
        assert!(!is_spec_changed(Some(&before), &status_only));
        assert!(is_spec_changed(Some(&before), &new_spec));
        assert!(is_spec_changed(Some(&before), &recreated));
    }

    #[test]
    fn labels_and_owners_added_by_others_do_not_make_a_binding_stale() {
        let desired = desired_for(&policy()).role_bindings.remove(0);
        let mut cached = desired.clone();
        cached.labels_mut().insert("team".into(), "data".into());
        cached.owner_references_mut().push(OwnerReference {
            name: "other".into(),
            ..Default::default()
        });
        let mut emptied = desired.clone();
        emptied.subjects = Some(vec![]);
        let mut absent = emptied.clone();
        absent.subjects = None;

        assert!(is_up_to_date(&cached, &desired));
        assert!(is_up_to_date(&absent, &emptied));
        assert!(!is_up_to_date(&emptied, &desired));
    }

    fn triggers() -> (
        Triggers,
        trigger_channel::UnboundedReceiver<ReconcileRequest<AccessPolicy>>,
        tenant_channel::UnboundedReceiver<String>,
    ) {
        let mut elsewhere = policy();
        elsewhere.metadata.name = Some("elsewhere".into());
        elsewhere.spec.tenant = "other".into();
        let (policy_tx, policy_rx) = trigger_channel::unbounded();
        let (tenant_tx, tenant_rx) = tenant_channel::unbounded_channel();
        let policies = cache(vec![policy(), elsewhere]);
        (
            Triggers {
                policies,
                policy_tx,
                tenant_tx,
            },
            policy_rx,
            tenant_rx,
        )
    }

    fn drain(
        policies: &mut trigger_channel::UnboundedReceiver<ReconcileRequest<AccessPolicy>>,
        tenants: &mut tenant_channel::UnboundedReceiver<String>,
    ) -> (Vec<String>, Vec<String>) {
        let mut names = Vec::new();
        while let Ok(request) = policies.try_recv() {
            names.push(request.obj_ref.name);
        }
        let mut dirty = Vec::new();
        while let Ok(tenant) = tenants.try_recv() {
            dirty.push(tenant);
        }
        (names, dirty)
    }

    #[test]
    fn a_directory_change_enqueues_only_the_policies_of_its_tenant() {
        let (triggers, mut policies, mut tenants) = triggers();
        let users = cache(vec![]);
        let before = user("u1", "alice@example.com", true);
        let mut status_only = before.clone();
        status_only.status = Some(Default::default());

        triggers.on_identity_event(&Event::Apply(before.clone()), None, &users);
        let first = drain(&mut policies, &mut tenants);
        triggers.on_identity_event(&Event::Apply(status_only), Some(&before), &users);
        let second = drain(&mut policies, &mut tenants);
        triggers.on_identity_event(&Event::Delete(before), None, &users);
        let third = drain(&mut policies, &mut tenants);

        assert_eq!(
            first,
            (vec!["analysts".to_string()], vec![TENANT.to_string()])
        );
        assert_eq!(second, (vec![], vec![]));
        assert_eq!(third, first);
    }

    #[test]
    fn a_binding_change_enqueues_the_policy_that_owns_it() {
        let (triggers, mut policies, mut tenants) = triggers();
        let mut binding = desired_for(&policy()).role_bindings.remove(0);
        binding.owner_references_mut().push(OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "not-a-policy".into(),
            ..Default::default()
        });

        triggers.on_binding_event(&Event::Delete(binding));

        assert_eq!(
            drain(&mut policies, &mut tenants),
            (vec!["analysts".to_string()], vec![])
        );
    }

    #[test]
    fn a_new_or_relabelled_namespace_enqueues_the_policies_that_select_namespaces() {
        let (triggers, mut policies, mut tenants) = triggers();
        let mut selecting = policy();
        selecting.metadata.name = Some("selecting".into());
        selecting.spec.grants = vec![Grant {
            cluster_role: Some("view".into()),
            namespace_selector: Some(Default::default()),
            ..Default::default()
        }];
        let triggers = Triggers {
            policies: cache(vec![policy(), selecting]),
            ..triggers
        };
        let mut team = Namespace::default();
        team.metadata.name = Some("team".into());
        let mut relabelled = team.clone();
        relabelled.labels_mut().insert("team".into(), "data".into());
        let mut data = Namespace::default();
        data.metadata.name = Some("data".into());

        triggers.on_namespace_event(&Event::Apply(team.clone()), None);
        let created = drain(&mut policies, &mut tenants);
        triggers.on_namespace_event(&Event::Apply(team.clone()), Some(&team));
        let unchanged = drain(&mut policies, &mut tenants);
        triggers.on_namespace_event(&Event::Apply(relabelled), Some(&team));
        let moved = drain(&mut policies, &mut tenants);
        triggers.on_namespace_event(&Event::Delete(data), None);
        let mut listed = drain(&mut policies, &mut tenants);
        listed.0.sort();

        assert_eq!(created, (vec!["selecting".to_string()], vec![]));
        assert_eq!(unchanged, (vec![], vec![]));
        assert_eq!(moved, created);
        assert_eq!(
            listed,
            (
                vec!["analysts".to_string(), "selecting".to_string()],
                vec![]
            )
        );
    }

    #[test]
    fn the_release_annotation_counts_as_a_policy_change() {
        let before = policy();
        let mut annotated = before.clone();
        annotated
            .annotations_mut()
            .insert(ALLOW_MASS_REVOCATION_ANNOTATION.into(), "true".into());

        assert!(is_policy_changed(Some(&before), &annotated));
        assert!(!is_policy_changed(Some(&annotated), &annotated));
    }
}

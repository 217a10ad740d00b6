//! Leader election on a coordination.k8s.io/v1 Lease: every replica serves SCIM, and only the
//! replica holding the Lease runs the controller.
//!
//! The protocol is the one client-go follows, so the Lease reads the same in kubectl:
//!
//! - A replica takes the Lease when it names no holder, or when its record has not changed
//!   for `leaseDurationSeconds` as measured on the replica's own clock since it first saw
//!   that record, so the clocks of different nodes need not agree.
//! - Every write is a create or an update guarded by the resourceVersion that was read, so
//!   of two replicas racing for the Lease exactly one succeeds.
//! - The holder renews every [`RENEW_INTERVAL`] and steps down once it has gone
//!   [`RENEW_DEADLINE`] without a renewal. The deadline is shorter than [`LEASE_DURATION`],
//!   so the holder stops its work before any other replica may consider the Lease expired.
//! - On shutdown the holder stops its work first and then clears the holder, so another
//!   replica takes over within one [`RETRY_PERIOD`] instead of a whole lease duration.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tracing::{info, warn};

use crate::controller::error_chain;
use crate::telemetry;

/// How long a Lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews the Lease.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How long the holder keeps leading without a successful renewal; shorter than
/// [`LEASE_DURATION`] by the time its work needs to notice and stop.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a replica that does not lead looks at the Lease, and how soon a failed attempt
/// is retried.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Longest wait for one read or write of the Lease.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long work stopped by shutdown may take to finish before it is dropped; the Lease is
/// released only after it.
pub const WORK_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Field manager of Lease writes.
const FIELD_MANAGER: &str = "scim-operator";

/// The durations of the election; [`Timings::default`] gives the named constants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// See [`LEASE_DURATION`].
    pub lease_duration: Duration,
    /// See [`RENEW_INTERVAL`].
    pub renew_interval: Duration,
    /// See [`RENEW_DEADLINE`].
    pub renew_deadline: Duration,
    /// See [`RETRY_PERIOD`].
    pub retry_period: Duration,
    /// See [`ATTEMPT_TIMEOUT`].
    pub attempt_timeout: Duration,
    /// See [`WORK_STOP_TIMEOUT`].
    pub work_stop_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: LEASE_DURATION,
            renew_interval: RENEW_INTERVAL,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
            attempt_timeout: ATTEMPT_TIMEOUT,
            work_stop_timeout: WORK_STOP_TIMEOUT,
        }
    }
}

/// Which Lease to hold, and as whom.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's name in `holderIdentity`; unique among the replicas.
    pub identity: String,
    /// The durations of the election.
    pub timings: Timings,
}

/// Failures of [`run_elected`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The work failed while this replica led.
    #[error("failed to run the work of the leader")]
    Work(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The task that keeps the Lease ended, so leadership can no longer be known.
    #[error("failed to take part in leader election: the election task stopped")]
    ElectionStopped,
}

/// This replica's identity: the host name (the pod name in Kubernetes), the process id and a
/// random suffix, so that two processes never share one, even on one host.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "scim-operator".to_string());
    let suffix: u32 = rand::random();
    format!("{host}_{}_{suffix:08x}", std::process::id())
}

/// Runs `work` whenever this replica holds the Lease, until `shutdown` resolves.
///
/// `work` receives a future that resolves when it should stop gracefully (shutdown). When
/// leadership is lost the work is dropped at once, since another replica may start soon. If
/// the work ends on its own, the Lease is released and its result returned. On shutdown the
/// work gets [`Timings::work_stop_timeout`] to finish, and the Lease is released after it.
pub async fn run_elected<W, F, E>(
    client: Client,
    settings: LeaseSettings,
    shutdown: impl Future<Output = ()>,
    mut work: W,
) -> Result<(), Error>
where
    W: FnMut(BoxFuture<'static, ()>) -> F,
    F: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stop_timeout = settings.timings.work_stop_timeout;
    let election = Election::spawn(client, settings);
    let mut leading = election.leading();
    let mut shutdown = pin!(shutdown);
    let outcome = loop {
        // Wait: until this replica holds the Lease or shutdown begins.
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            held = leading.wait_for(|leading| *leading) => if held.is_err() {
                break Err(Error::ElectionStopped);
            },
        }

        // Lead: run the work until leadership is lost, the work ends or shutdown begins.
        info!("leader work started");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut running = pin!(work(
            async move {
                let _ = stop_rx.await;
            }
            .boxed()
        ));
        let event = tokio::select! {
            result = &mut running => LeadEvent::Ended(result),
            _ = leading.wait_for(|leading| !*leading) => LeadEvent::Lost,
            () = &mut shutdown => LeadEvent::Shutdown,
        };
        match event {
            LeadEvent::Ended(result) => {
                warn!("leader work ended on its own; releasing the Lease");
                break result.map_err(|e| Error::Work(e.into()));
            }
            LeadEvent::Lost => {
                info!(reason = "leadership lost", "leader work stopped");
                continue;
            }
            LeadEvent::Shutdown => {}
        }

        // Stop: let the work finish what it runs, but never past losing the Lease.
        let _ = stop_tx.send(());
        let finished = tokio::select! {
            result = &mut running => result.map_err(|e| Error::Work(e.into())),
            _ = leading.wait_for(|leading| !*leading) => Ok(()),
            () = sleep(stop_timeout) => {
                warn!(timeout = ?stop_timeout, "leader work did not stop in time; dropping it");
                Ok(())
            }
        };
        info!(reason = "shutdown", "leader work stopped");
        break finished;
    };
    election.release().await;
    outcome
}

/// Why the work of the leader stopped running.
enum LeadEvent<E> {
    Ended(Result<(), E>),
    Lost,
    Shutdown,
}

/// A running election: a task that takes and renews the Lease and publishes whether this
/// replica holds it.
pub struct Election {
    leading: watch::Receiver<bool>,
    release: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Election {
    /// Starts taking part in the election of `settings`.
    pub fn spawn(client: Client, settings: LeaseSettings) -> Self {
        let (leading_tx, leading) = watch::channel(false);
        let (release, release_rx) = oneshot::channel();
        let elector = Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
            last_holder: None,
        };
        let task = tokio::spawn(elector.run(leading_tx, release_rx));
        Self {
            leading,
            release,
            task,
        }
    }

    /// Whether this replica holds the Lease, updated as that changes.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops renewing and, when this replica holds the Lease, clears its holder. Callers
    /// stop the work of the leader first.
    pub async fn release(self) {
        let _ = self.release.send(());
        if let Err(error) = self.task.await {
            warn!(%error, "the election task failed");
        }
    }
}

/// What one attempt on the Lease found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease: it was just taken or renewed.
    Held,
    /// Another replica holds the Lease, at least until `until`.
    HeldBy { holder: String, until: Instant },
    /// Another replica wrote the Lease between the read and the write.
    Raced,
}

/// What a replica may do with the Lease as last read.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// The Lease names this replica: renew it.
    Renew,
    /// The Lease is free or expired: take it.
    Acquire,
    /// Another replica holds it until at least `until`.
    HeldBy { holder: String, until: Instant },
}

/// Decides what this replica may do with a Lease whose record it first saw at
/// `observed_at`. Expiry is measured from that moment on this replica's clock, never from
/// the record's `renewTime`, which another node's clock wrote.
fn decide_claim(
    spec: Option<&LeaseSpec>,
    identity: &str,
    observed_at: Instant,
    now: Instant,
) -> Claim {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    let Some(holder) = holder else {
        return Claim::Acquire;
    };
    if holder == identity {
        return Claim::Renew;
    }
    let seconds = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or_default();
    let until = observed_at + Duration::from_secs(seconds);
    if now < until {
        Claim::HeldBy {
            holder: holder.to_string(),
            until,
        }
    } else {
        Claim::Acquire
    }
}

/// The Lease record that takes or renews the Lease for `identity`. A renewal keeps the
/// acquisition time and the transition count; a takeover sets the one and counts the other.
fn build_claimed_spec(
    previous: Option<&LeaseSpec>,
    identity: &str,
    duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let previous = previous.cloned().unwrap_or_default();
    let renewing = previous.holder_identity.as_deref() == Some(identity);
    let transitions = previous.lease_transitions.unwrap_or_default();
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: match previous.acquire_time.clone() {
            Some(acquired) if renewing => Some(acquired),
            _ => Some(MicroTime(now)),
        },
        renew_time: Some(MicroTime(now)),
        // A Lease nobody has held yet has seen no transition.
        lease_transitions: Some(if renewing || previous.acquire_time.is_none() {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..previous
    }
}

/// The Lease record that gives the Lease up: no holder, and a one-second duration for
/// readers that ignore an empty holder.
fn build_released_spec(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..previous.clone()
    }
}

/// The task that takes, renews and releases the Lease.
struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The resourceVersion of the record last seen, and when this replica first saw it.
    observed: Option<(String, Instant)>,
    /// The holder last reported in the logs.
    last_holder: Option<String>,
}

impl Elector {
    async fn run(mut self, leading: watch::Sender<bool>, mut release: oneshot::Receiver<()>) {
        let timings = self.settings.timings.clone();
        // When the last successful renewal was sent, while this replica leads.
        let mut renewed_at: Option<Instant> = None;
        loop {
            // Step down: a holder that could not renew in time may already be replaced soon.
            if let Some(sent) = renewed_at
                && Instant::now() >= sent + timings.renew_deadline
            {
                self.step_down(&leading, "the Lease could not be renewed in time");
                renewed_at = None;
            }

            // Attempt: read the Lease, then take or renew it if allowed.
            let started = Instant::now();
            let mut limit = started + timings.attempt_timeout;
            if let Some(sent) = renewed_at {
                limit = limit.min(sent + timings.renew_deadline);
            }
            let attempt = tokio::select! {
                biased;
                _ = &mut release => break,
                attempt = timeout_at(limit, self.try_acquire_or_renew()) => attempt,
            };
            let next = match attempt {
                Ok(Ok(Attempt::Held)) => {
                    if renewed_at.is_none() {
                        info!(
                            lease = %self.settings.name,
                            identity = %self.settings.identity,
                            "leadership acquired"
                        );
                        telemetry::set_leader(true);
                        leading.send_replace(true);
                    }
                    renewed_at = Some(started);
                    self.last_holder = Some(self.settings.identity.clone());
                    started + timings.renew_interval
                }
                Ok(Ok(Attempt::HeldBy { holder, until })) => {
                    if renewed_at.take().is_some() {
                        self.step_down(&leading, "another replica holds the Lease");
                    }
                    if self.last_holder.as_deref() != Some(holder.as_str()) {
                        info!(lease = %self.settings.name, %holder, "another replica leads");
                        self.last_holder = Some(holder);
                    }
                    (Instant::now() + timings.retry_period).min(until)
                }
                Ok(Ok(Attempt::Raced)) => Instant::now() + timings.retry_period,
                Ok(Err(error)) => {
                    warn!(
                        lease = %self.settings.name,
                        error = %error_chain(&error),
                        "failed to read or write the Lease; retrying"
                    );
                    Instant::now() + timings.retry_period
                }
                Err(_) => {
                    warn!(lease = %self.settings.name, "a Lease request timed out; retrying");
                    Instant::now() + timings.retry_period
                }
            };

            // Wait: for the next attempt, waking at the renew deadline to step down on time.
            let wake = match renewed_at {
                Some(sent) => next.min(sent + timings.renew_deadline),
                None => next,
            };
            tokio::select! {
                biased;
                _ = &mut release => break,
                () = sleep_until(wake) => {}
            }
        }

        // Release: the caller has stopped the work of the leader.
        if leading.send_replace(false) {
            telemetry::set_leader(false);
        }
        let deadline = Instant::now() + timings.attempt_timeout;
        match timeout_at(deadline, self.release()).await {
            Ok(Ok(true)) => info!(lease = %self.settings.name, "leadership released"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => warn!(
                lease = %self.settings.name,
                error = %error_chain(&error),
                "failed to release the Lease; another replica takes over once it expires"
            ),
            Err(_) => warn!(
                lease = %self.settings.name,
                "releasing the Lease timed out; another replica takes over once it expires"
            ),
        }
    }

    fn step_down(&mut self, leading: &watch::Sender<bool>, reason: &'static str) {
        info!(
            lease = %self.settings.name,
            identity = %self.settings.identity,
            reason,
            "leadership lost"
        );
        telemetry::set_leader(false);
        leading.send_replace(false);
    }

    /// The moment this replica first saw `lease` as it is now.
    fn observe(&mut self, lease: &Lease) -> Instant {
        let version = lease.resource_version().unwrap_or_default();
        match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((version, now));
                now
            }
        }
    }

    /// One read of the Lease and, when it is free, expired or ours, one guarded write.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let identity = self.settings.identity.clone();
        let duration = self.settings.timings.lease_duration;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };

        // Fetch: the Lease, created when it does not exist yet.
        let Some(current) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(build_claimed_spec(
                    None,
                    &identity,
                    duration,
                    Timestamp::now(),
                )),
            };
            return match self.api.create(&params, &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Held)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Raced),
                Err(error) => Err(error),
            };
        };

        // Decide: only a free, expired or own Lease may be written.
        let observed_at = self.observe(&current);
        match decide_claim(
            current.spec.as_ref(),
            &identity,
            observed_at,
            Instant::now(),
        ) {
            Claim::HeldBy { holder, until } => return Ok(Attempt::HeldBy { holder, until }),
            Claim::Renew | Claim::Acquire => {}
        }

        // Write: guarded by the resourceVersion just read.
        let mut next = current;
        next.metadata.managed_fields = None;
        next.spec = Some(build_claimed_spec(
            next.spec.as_ref(),
            &identity,
            duration,
            Timestamp::now(),
        ));
        match self.api.replace(&self.settings.name, &params, &next).await {
            Ok(written) => {
                self.observe(&written);
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Raced),
            Err(error) => Err(error),
        }
    }

    /// Clears the holder when it is this replica; true when it was.
    async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(false);
        }
        lease.metadata.managed_fields = None;
        lease.spec = Some(build_released_spec(&spec, Timestamp::now()));
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match self.api.replace(&self.settings.name, &params, &lease).await {
            Ok(_) => Ok(true),
            // Written by another replica since the read: no longer ours to release.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use serde_json::{Value, json};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    const NAMESPACE: &str = "operator";
    const NAME: &str = "leader";
    /// Longer than any handover the tests wait for; time is paused, so it costs nothing.
    const PATIENCE: Duration = Duration::from_secs(120);

    /// An API server holding one Lease and checking resourceVersions as the real one does.
    #[derive(Default)]
    struct FakeLeases {
        lease: Mutex<Option<Value>>,
        version: AtomicU64,
    }

    impl FakeLeases {
        fn answer(&self, method: &str, mut body: Value) -> (u16, Value) {
            let mut lease = self.lease.lock().unwrap();
            let stored_version = lease
                .as_ref()
                .map(|l| l["metadata"]["resourceVersion"].clone());
            match (method, lease.as_ref()) {
                ("GET", Some(current)) => (200, current.clone()),
                ("GET", None) | ("PUT", None) => (404, status(404, "NotFound")),
                ("POST", Some(_)) => (409, status(409, "AlreadyExists")),
                ("PUT", Some(_))
                    if stored_version != Some(body["metadata"]["resourceVersion"].clone()) =>
                {
                    (409, status(409, "Conflict"))
                }
                ("POST", None) | ("PUT", Some(_)) => {
                    let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
                    body["metadata"]["resourceVersion"] = json!(version.to_string());
                    body["metadata"]["namespace"] = json!(NAMESPACE);
                    *lease = Some(body.clone());
                    (if method == "POST" { 201 } else { 200 }, body)
                }
                _ => (405, status(405, "MethodNotAllowed")),
            }
        }

        fn spec(&self) -> LeaseSpec {
            let lease = self.lease.lock().unwrap().clone().unwrap();
            serde_json::from_value(lease["spec"].clone()).unwrap()
        }
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "code": code, "message": reason,
        })
    }

    /// A client of `leases` that fails every request while `down` is set.
    fn client(leases: Arc<FakeLeases>, down: Arc<AtomicBool>) -> Client {
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let (leases, down) = (leases.clone(), down.clone());
            async move {
                let method = request.method().to_string();
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (code, reply) = if down.load(Ordering::SeqCst) {
                    (503, status(503, "ServiceUnavailable"))
                } else {
                    leases.answer(&method, body)
                };
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(reply.to_string())))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        });
        Client::new(service, NAMESPACE)
    }

    /// A replica taking part in the election on `leases`, with a switch that cuts it off.
    struct Replica {
        identity: String,
        down: Arc<AtomicBool>,
        election: Election,
    }

    fn replica(leases: &Arc<FakeLeases>, identity: &str) -> Replica {
        let down = Arc::new(AtomicBool::new(false));
        let settings = settings(identity);
        Replica {
            identity: identity.to_string(),
            election: Election::spawn(client(leases.clone(), down.clone()), settings),
            down,
        }
    }

    fn settings(identity: &str) -> LeaseSettings {
        LeaseSettings {
            namespace: NAMESPACE.into(),
            name: NAME.into(),
            identity: identity.into(),
            timings: Timings::default(),
        }
    }

    async fn until(replica: &Replica, leading: bool) -> Instant {
        let mut watch = replica.election.leading();
        tokio::time::timeout(PATIENCE, watch.wait_for(|l| *l == leading))
            .await
            .expect("the replica reaches the state in time")
            .unwrap();
        Instant::now()
    }

    fn spec(holder: Option<&str>, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_free_when_it_names_no_holder_or_its_record_went_unchanged_too_long() {
        let seen = Instant::now();
        let later = seen + Duration::from_secs(20);

        let claims = [
            decide_claim(None, "me", seen, seen),
            decide_claim(Some(&spec(None, 15)), "me", seen, seen),
            decide_claim(Some(&spec(Some(""), 15)), "me", seen, seen),
            decide_claim(Some(&spec(Some("me"), 15)), "me", seen, later),
            decide_claim(Some(&spec(Some("other"), 15)), "me", seen, seen),
            decide_claim(Some(&spec(Some("other"), 15)), "me", seen, later),
        ];

        assert_eq!(
            claims,
            [
                Claim::Acquire,
                Claim::Acquire,
                Claim::Acquire,
                Claim::Renew,
                Claim::HeldBy {
                    holder: "other".into(),
                    until: seen + Duration::from_secs(15)
                },
                Claim::Acquire,
            ]
        );
    }

    #[test]
    fn a_renewal_keeps_the_acquisition_and_a_takeover_counts_a_transition() {
        let then = Timestamp::from_second(1_000).unwrap();
        let now = Timestamp::from_second(2_000).unwrap();
        let held = LeaseSpec {
            holder_identity: Some("me".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(then)),
            renew_time: Some(MicroTime(then)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        };
        let duration = Duration::from_secs(15);

        let renewed = build_claimed_spec(Some(&held), "me", duration, now);
        let taken = build_claimed_spec(Some(&held), "you", duration, now);
        let created = build_claimed_spec(None, "me", duration, now);
        let released = build_released_spec(&held, now);

        assert_eq!(
            renewed,
            LeaseSpec {
                renew_time: Some(MicroTime(now)),
                ..held.clone()
            }
        );
        assert_eq!(
            taken,
            LeaseSpec {
                holder_identity: Some("you".into()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(4),
                ..held.clone()
            }
        );
        assert_eq!(
            created,
            LeaseSpec {
                holder_identity: Some("me".into()),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }
        );
        assert_eq!(
            released,
            LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }
        );
    }

    #[test]
    fn identities_of_two_processes_differ_and_name_the_process() {
        let (a, b) = (default_identity(), default_identity());

        assert_ne!(a, b);
        assert_eq!(
            a.split('_').nth(1),
            Some(std::process::id().to_string().as_str())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_replica_takes_over_within_the_lease_duration_after_the_holder_dies() {
        let leases = Arc::new(FakeLeases::default());
        let a = replica(&leases, "a");
        until(&a, true).await;
        let b = replica(&leases, "b");
        tokio::time::sleep(LEASE_DURATION * 3).await;
        assert!(
            !*b.election.leading().borrow(),
            "b took a Lease that a renews"
        );

        // A crash: no release, no further renewal.
        a.election.task.abort();
        let crashed = Instant::now();
        let gained = until(&b, true).await;

        assert!(
            gained - crashed <= LEASE_DURATION + RETRY_PERIOD,
            "took {:?}",
            gained - crashed
        );
        assert_eq!(leases.spec().holder_identity.as_deref(), Some("b"));
        assert_eq!(leases.spec().lease_transitions, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_cut_off_from_the_api_steps_down_before_another_replica_takes_over() {
        let leases = Arc::new(FakeLeases::default());
        let a = replica(&leases, "a");
        until(&a, true).await;
        let b = replica(&leases, "b");
        tokio::time::sleep(LEASE_DURATION).await;

        a.down.store(true, Ordering::SeqCst);
        let cut = Instant::now();
        let lost = until(&a, false).await;
        let gained = until(&b, true).await;

        assert!(
            lost - cut <= RENEW_DEADLINE,
            "stepped down after {:?}",
            lost - cut
        );
        assert!(lost < gained, "b led while a still believed it led");
        assert_eq!(
            leases.spec().holder_identity.as_deref(),
            Some(b.identity.as_str())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_passes_to_another_replica_within_one_retry_period() {
        let leases = Arc::new(FakeLeases::default());
        let a = replica(&leases, "a");
        until(&a, true).await;
        let b = replica(&leases, "b");
        tokio::time::sleep(LEASE_DURATION).await;

        a.election.release().await;
        let released = Instant::now();
        let gained = until(&b, true).await;

        assert!(
            gained - released <= RETRY_PERIOD,
            "took {:?}",
            gained - released
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_work_runs_while_leading_is_dropped_on_loss_and_stops_before_the_release() {
        let leases = Arc::new(FakeLeases::default());
        let down = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicU64::new(0));
        let starts = Arc::new(AtomicU64::new(0));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();

        /// Counts the work futures alive.
        struct Alive(Arc<AtomicU64>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let work = {
            let (running, starts) = (running.clone(), starts.clone());
            move |stop: BoxFuture<'static, ()>| {
                let (running, starts) = (running.clone(), starts.clone());
                async move {
                    running.fetch_add(1, Ordering::SeqCst);
                    starts.fetch_add(1, Ordering::SeqCst);
                    let _alive = Alive(running);
                    stop.await;
                    Ok::<(), std::io::Error>(())
                }
            }
        };
        let elected = tokio::spawn(run_elected(
            client(leases.clone(), down.clone()),
            settings("a"),
            async move {
                let _ = shutdown_rx.await;
            },
            work,
        ));
        tokio::time::sleep(RETRY_PERIOD).await;
        let first = running.load(Ordering::SeqCst);

        // Cut off: the work is dropped at the renew deadline; back: it starts again.
        down.store(true, Ordering::SeqCst);
        tokio::time::sleep(RENEW_DEADLINE + RETRY_PERIOD).await;
        let while_cut_off = running.load(Ordering::SeqCst);
        down.store(false, Ordering::SeqCst);
        tokio::time::sleep(RETRY_PERIOD * 2).await;
        let after = running.load(Ordering::SeqCst);

        shutdown_tx.send(()).unwrap();
        let result = tokio::time::timeout(PATIENCE, elected)
            .await
            .unwrap()
            .unwrap();

        assert_eq!((first, while_cut_off, after), (1, 0, 1));
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(running.load(Ordering::SeqCst), 0);
        assert_eq!(leases.spec().holder_identity, None);
    }
}

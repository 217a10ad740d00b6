//! Access that follows the directory, on real API servers: namespaces selected by label,
//! deactivation, the allow-list, a 50,000-subject policy, and an API server that stops in
//! the middle of a pass.
//!
//! These tests run on control planes of their own (`scripts/control-plane` with a private
//! `CONTROL_PLANE_DIR`), never on the shared one: one is stopped and started again on
//! purpose, another holds 50,000 users, and each runs a controller with its own settings,
//! which would contend with controllers other tests run against a shared API server. The
//! restart and the 50,000-subject tests each start and stop a control plane; the others share
//! one, with one controller. They need the control plane binaries that `scripts/control-plane
//! start` builds, so they skip, saying so, when KUBECONFIG is unset. A watchdog stops each
//! control plane when the test process ends, however it ends. The 50,000-subject test takes
//! a few minutes on two cores, most of it creating the users.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, oneshot};

use scim_operator::controller::ControllerSettings;
use scim_operator::controller::kube::run;
use scim_operator::resources::{
    AccessPolicy, AccessPolicySpec, Grant, GroupMember, GroupSelector, ScimGroup, ScimGroupSpec,
    ScimUser, ScimUserSpec, SubjectKind, crds_yaml,
};

/// How long a change may take to show in the bindings.
const CONVERGE: Duration = Duration::from_secs(10);
/// How long the controller may take after the API server comes back: watches reconnect
/// with a backoff of up to half a minute.
const RECOVER: Duration = Duration::from_secs(90);
/// How long the 50,000 subjects may take to be bound once their users exist.
const BIG_GRANT: Duration = Duration::from_secs(180);
/// How long one change to that policy may take while the controller also writes the status
/// of 50,000 users to the same API server.
const BIG_CHANGE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const TEST_MANAGER: &str = "scim-operator-policy-safety-test";
/// ClusterRole the shared controller's allow-list permits.
const ALLOWED_ROLE: &str = "scim-safety-view";
/// ClusterRole the shared controller's allow-list refuses.
const REFUSED_ROLE: &str = "scim-safety-admin";
/// Users in the large policy, and the groups they are spread over (a ScimGroup object holds
/// at most a few thousand inline members; larger groups are the store's member shards).
const BIG_USERS: usize = 50_000;
const BIG_GROUPS: usize = 10;
/// Users created at once.
const CREATE_CONCURRENCY: usize = 48;
/// Namespaces the restart test's policy binds in, so that one pass makes many writes.
const RESTART_NAMESPACES: usize = 150;

/// One test at a time: each starts a controller or a control plane and times convergence,
/// which two cores cannot do for several at once.
static SERIAL: Mutex<()> = Mutex::const_new(());
/// The control plane and controller that the tests without a control plane of their own
/// share.
static SHARED: OnceLock<std::result::Result<SharedPlane, String>> = OnceLock::new();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_gets_its_binding_when_created_or_labelled_and_loses_it_when_unlabelled()
-> Result<()> {
    let Some(plane) = shared_plane("namespace selector test").await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let client = plane.client().await?;
    let id = unique_id();
    let tenant = create_namespace(&client, &format!("safety-ns-{id}"), &[]).await?;
    create_directory(
        &client,
        &tenant,
        &["ana", "ben"],
        &[("analysts", "Analysts", &["ana", "ben"])],
    )
    .await?;
    let label = format!("scim-safety-{id}");
    let mut grant = cluster_role_grant(ALLOWED_ROLE);
    grant.namespace_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([(label.clone(), "team".to_string())])),
        match_expressions: None,
    });
    let policy = create_policy(
        &client,
        &format!("safety-ns-{id}"),
        &tenant,
        &["Analysts"],
        vec![grant],
    )
    .await?;
    let selector = format!("scim-operator.dev/policy={policy}");
    let bound_in = |client: Client| {
        let selector = selector.clone();
        async move {
            let bindings = Api::<RoleBinding>::all(client)
                .list(&ListParams::default().labels(&selector))
                .await?;
            let places: BTreeSet<(String, Vec<String>)> = bindings
                .items
                .into_iter()
                .map(|b| (b.namespace().unwrap_or_default(), subject_names(b.subjects)))
                .collect();
            anyhow::Ok(places)
        }
    };
    let both = vec!["ana@example.com".to_string(), "ben@example.com".to_string()];
    eventually("the policy to be reconciled", CONVERGE, || async {
        Ok(condition_reason(&client, &policy, "Ready").await? == Some("Reconciled".into()))
    })
    .await?;
    assert_eq!(bound_in(client.clone()).await?, BTreeSet::new());

    // A namespace created after the policy, with the label, gets its binding within seconds.
    let created = Instant::now();
    let first = create_namespace(&client, &format!("safety-a-{id}"), &[(&label, "team")]).await?;
    eventually("a binding in the new namespace", CONVERGE, || async {
        Ok(bound_in(client.clone()).await? == BTreeSet::from([(first.clone(), both.clone())]))
    })
    .await?;
    eprintln!("binding in a new namespace after {:?}", created.elapsed());

    // Labels move: the namespace that loses the label loses its binding, the one that gains
    // it gets one.
    let second = create_namespace(&client, &format!("safety-b-{id}"), &[]).await?;
    label_namespace(&client, &second, &label, Some("team")).await?;
    label_namespace(&client, &first, &label, None).await?;
    eventually("the binding to move", CONVERGE, || async {
        Ok(bound_in(client.clone()).await? == BTreeSet::from([(second.clone(), both.clone())]))
    })
    .await?;

    // The grant shows as an Event on the policy, and the policy stays Ready: a move is no
    // revocation.
    eventually("an AccessGranted event", CONVERGE, || async {
        Ok(events_of(&client, &policy)
            .await?
            .iter()
            .any(|(reason, note)| {
                reason == "AccessGranted" && note.contains("ana@example.com (granted)")
            }))
    })
    .await?;
    assert_eq!(
        condition_reason(&client, &policy, "Ready").await?,
        Some("Reconciled".into())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_loses_access_and_keeps_the_membership() -> Result<()> {
    let Some(plane) = shared_plane("deactivation test").await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let client = plane.client().await?;
    let id = unique_id();
    let tenant = create_namespace(&client, &format!("safety-deact-{id}"), &[]).await?;
    create_directory(
        &client,
        &tenant,
        &["ana", "ben", "cem"],
        &[("analysts", "Analysts", &["ana", "ben", "cem"])],
    )
    .await?;
    let policy = create_policy(
        &client,
        &format!("safety-deact-{id}"),
        &tenant,
        &["Analysts"],
        vec![cluster_role_grant(ALLOWED_ROLE)],
    )
    .await?;
    let subjects = || cluster_subjects(&client, &policy);
    eventually("the grant", CONVERGE, || async {
        Ok(subjects().await? == names(&["ana", "ben", "cem"]))
    })
    .await?;

    // Deactivating ben, and even deactivating everyone else too, revokes at once: an
    // explicit deactivation is never held.
    let users: Api<ScimUser> = Api::namespaced(client.clone(), &tenant);
    for name in ["ben", "cem"] {
        let deactivate = Patch::Merge(json!({"spec": {"active": false}}));
        users
            .patch(name, &PatchParams::default(), &deactivate)
            .await?;
    }
    eventually("the deactivations", CONVERGE, || async {
        Ok(subjects().await? == names(&["ana"]))
    })
    .await?;

    // The membership stays: the group still lists them and counts them as members.
    let group = Api::<ScimGroup>::namespaced(client.clone(), &tenant)
        .get("analysts")
        .await?;
    let members: Vec<&str> = group
        .spec
        .members
        .iter()
        .map(|m| m.value.as_str())
        .collect();
    assert_eq!(members, ["id-ana", "id-ben", "id-cem"]);
    eventually("the group status", CONVERGE, || async {
        let group = Api::<ScimGroup>::namespaced(client.clone(), &tenant)
            .get("analysts")
            .await?;
        let status = group.status.unwrap_or_default();
        Ok(status.member_count == 3 && status.active_member_count == 1)
    })
    .await?;
    assert_eq!(
        condition_reason(&client, &policy, "Degraded").await?,
        Some("Reconciled".into())
    );
    eventually("an AccessRevoked event", CONVERGE, || async {
        Ok(events_of(&client, &policy)
            .await?
            .iter()
            .any(|(reason, note)| {
                reason == "AccessRevoked" && note.contains("ben@example.com (deactivated)")
            }))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_outside_the_allow_list_grants_nothing_and_the_condition_says_why() -> Result<()> {
    let Some(plane) = shared_plane("allow-list test").await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let client = plane.client().await?;
    let id = unique_id();
    let tenant = create_namespace(&client, &format!("safety-allow-{id}"), &[]).await?;
    create_directory(
        &client,
        &tenant,
        &["ana"],
        &[("analysts", "Analysts", &["ana"])],
    )
    .await?;

    let policy = create_policy(
        &client,
        &format!("safety-allow-{id}"),
        &tenant,
        &["Analysts"],
        vec![
            cluster_role_grant(ALLOWED_ROLE),
            cluster_role_grant(REFUSED_ROLE),
        ],
    )
    .await?;

    let expected = format!(
        "the policy grants nothing: ClusterRole \"{REFUSED_ROLE}\" is not in the allowed roles"
    );
    eventually("the RoleNotAllowed condition", CONVERGE, || async {
        let status = Api::<AccessPolicy>::all(client.clone())
            .get(&policy)
            .await?
            .status
            .unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        Ok(ready.is_some_and(|c| {
            c.status == "False" && c.reason == "RoleNotAllowed" && c.message == expected
        }) && status.binding_count == 0)
    })
    .await?;
    let selector = ListParams::default().labels(&format!("scim-operator.dev/policy={policy}"));
    let cluster = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&selector)
        .await?;
    let namespaced = Api::<RoleBinding>::all(client.clone())
        .list(&selector)
        .await?;
    assert_eq!((cluster.items.len(), namespaced.items.len()), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50000_subject_policy_is_split_and_losing_one_member_rewrites_one_binding() -> Result<()>
{
    let Some(()) = integration_enabled("50,000-subject test") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    // A control plane of its own: the users' statuses keep its API server busy for a while.
    let plane = tokio::task::spawn_blocking(|| ControlPlane::start("big")).await??;
    let _stop_plane = StopOnDrop(plane.clone());
    let client = plane.client().await?;
    install_crds(&client).await?;
    create_cluster_role(&client, ALLOWED_ROLE).await?;
    let id = unique_id();
    let tenant = create_namespace(&client, &format!("safety-big-{id}"), &[]).await?;

    // Directory: 50,000 users over ten groups of 5,000 inline members each.
    let started = Instant::now();
    let users: Api<ScimUser> = Api::namespaced(client.clone(), &tenant);
    futures::stream::iter(0..BIG_USERS)
        .map(|i| {
            let users = users.clone();
            let user = user(&tenant, &format!("u{i:05}"), true);
            async move { users.create(&PostParams::default(), &user).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .context("creating the users")?;
    eprintln!("created {BIG_USERS} users in {:?}", started.elapsed());
    let groups: Api<ScimGroup> = Api::namespaced(client.clone(), &tenant);
    let per_group = BIG_USERS / BIG_GROUPS;
    let mut display_names = Vec::new();
    for g in 0..BIG_GROUPS {
        let members: Vec<String> = (g * per_group..(g + 1) * per_group)
            .map(|i| format!("u{i:05}"))
            .collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        let display = format!("Big {g}");
        groups
            .create(
                &PostParams::default(),
                &group(&tenant, &format!("big-{g}"), &display, &members),
            )
            .await?;
        display_names.push(display);
    }
    let display_names: Vec<&str> = display_names.iter().map(String::as_str).collect();

    // The controller starts on a full directory, as after an operator restart.
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(run(
        client.clone(),
        ControllerSettings::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let policy = create_policy(
        &client,
        &format!("safety-big-{id}"),
        &tenant,
        &display_names,
        vec![cluster_role_grant(ALLOWED_ROLE)],
    )
    .await?;

    // Grant: every subject, in bindings of bounded size.
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    let selector = ListParams::default().labels(&format!("scim-operator.dev/policy={policy}"));
    let granted = Instant::now();
    eventually("50,000 subjects to be bound", BIG_GRANT, || async {
        let listed = bindings.list(&selector).await?;
        let total: usize = listed
            .items
            .iter()
            .map(|b| b.subjects.as_ref().map_or(0, Vec::len))
            .sum();
        Ok(total == BIG_USERS && ready(&client, &policy).await?)
    })
    .await?;
    eprintln!("bound {BIG_USERS} subjects in {:?}", granted.elapsed());
    let before = bindings.list(&selector).await?.items;
    for binding in &before {
        let bytes = serde_json::to_vec(binding)?.len();
        assert!(
            bytes < 1024 * 1024,
            "{} is {bytes} bytes",
            binding.name_any()
        );
    }
    assert!(before.len() > 1, "{} bindings", before.len());
    let versions = |items: &[ClusterRoleBinding]| -> BTreeMap<String, String> {
        items
            .iter()
            .map(|b| (b.name_any(), b.resource_version().unwrap_or_default()))
            .collect()
    };

    // Shrink: one member leaves one group; one binding changes.
    let removed = "u00000@example.com".to_string();
    let remaining: Vec<String> = (1..per_group).map(|i| format!("u{i:05}")).collect();
    let remaining: Vec<&str> = remaining.iter().map(String::as_str).collect();
    let shrunk = Instant::now();
    groups
        .patch(
            "big-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": members_of(&remaining)}})),
        )
        .await?;
    eventually("the member to leave its binding", BIG_CHANGE, || async {
        let listed = bindings.list(&selector).await?;
        let total: usize = listed
            .items
            .iter()
            .map(|b| b.subjects.as_ref().map_or(0, Vec::len))
            .sum();
        Ok(total == BIG_USERS - 1)
    })
    .await?;
    eprintln!("one member left after {:?}", shrunk.elapsed());
    let after = bindings.list(&selector).await?.items;
    let (old, new) = (versions(&before), versions(&after));
    let changed: Vec<&String> = new
        .iter()
        .filter(|(name, v)| old.get(*name) != Some(v))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        old.keys().collect::<Vec<_>>(),
        new.keys().collect::<Vec<_>>()
    );
    assert_eq!(changed.len(), 1, "changed: {changed:?}");
    let holder = before
        .iter()
        .find(|b| b.subjects.iter().flatten().any(|s| s.name == removed))
        .map(|b| b.name_any());
    assert_eq!(holder.as_ref(), Some(changed[0]));

    let _ = stop.send(());
    tokio::time::timeout(CONVERGE, controller)
        .await
        .context("the controller stops")???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_stops_mid_pass_and_returns_revokes_nothing_that_should_stay()
-> Result<()> {
    let Some(_) = integration_enabled("API server restart test") else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let plane = tokio::task::spawn_blocking(|| ControlPlane::start("restart")).await??;
    let _stop_plane = StopOnDrop(plane.clone());
    let proxy = Proxy::start(plane.dir.clone())?;
    let client = plane.client_via(&proxy).await?;
    install_crds(&client).await?;
    create_cluster_role(&client, ALLOWED_ROLE).await?;

    // A policy bound cluster-wide and in many namespaces, so that one change is a pass of
    // many writes that a stopping API server can interrupt.
    let tenant = create_namespace(&client, "safety-restart", &[]).await?;
    let label = "scim-safety-restart";
    futures::stream::iter(0..RESTART_NAMESPACES)
        .map(|i| {
            let client = client.clone();
            async move {
                let name = format!("safety-restart-{i:03}");
                create_namespace(&client, &name, &[(label, "yes")]).await
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let people: Vec<String> = (0..300).map(|i| format!("p{i:03}")).collect();
    let people: Vec<&str> = people.iter().map(String::as_str).collect();
    create_directory(&client, &tenant, &people, &[("staff", "Staff", &people)]).await?;
    let mut everywhere = cluster_role_grant(ALLOWED_ROLE);
    everywhere.namespace_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([(label.to_string(), "yes".to_string())])),
        match_expressions: None,
    });
    let policy = create_policy(
        &client,
        "safety-restart",
        &tenant,
        &["Staff"],
        vec![cluster_role_grant(ALLOWED_ROLE), everywhere],
    )
    .await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(run(
        client.clone(),
        ControllerSettings::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let everyone: Vec<String> = people.iter().map(|p| format!("{p}@example.com")).collect();
    let deactivated = everyone[0].clone();
    let stay: Vec<String> = everyone[1..].to_vec();
    // Subjects of the ClusterRoleBinding, and of each RoleBinding by namespace.
    let observe = |client: Client| {
        let policy = policy.clone();
        async move {
            let cluster = cluster_subjects(&client, &policy).await?;
            let selector =
                ListParams::default().labels(&format!("scim-operator.dev/policy={policy}"));
            let namespaced = Api::<RoleBinding>::all(client).list(&selector).await?;
            let namespaced: BTreeMap<String, Vec<String>> = namespaced
                .items
                .into_iter()
                .map(|b| (b.namespace().unwrap_or_default(), subject_names(b.subjects)))
                .collect();
            anyhow::Ok((cluster, namespaced))
        }
    };
    eventually("the first grant", RECOVER, || async {
        let (cluster, namespaced) = observe(client.clone()).await?;
        Ok(cluster == everyone
            && namespaced.len() == RESTART_NAMESPACES
            && namespaced.values().all(|s| *s == everyone))
    })
    .await?;

    // A deactivation starts a pass of many writes, and the control plane stops under it.
    let port_before = apiserver_port(&plane.dir);
    let users: Api<ScimUser> = Api::namespaced(client.clone(), &tenant);
    let deactivate = Patch::Merge(json!({"spec": {"active": false}}));
    users
        .patch("p000", &PatchParams::default(), &deactivate)
        .await?;
    tokio::task::spawn_blocking({
        let plane = plane.clone();
        move || plane.stop()
    })
    .await??;
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::spawn_blocking({
        let plane = plane.clone();
        move || plane.restart()
    })
    .await??;
    eprintln!(
        "API server restarted on port {:?} (was {port_before:?})",
        apiserver_port(&plane.dir)
    );

    // Back: at no moment does anyone who should stay lose a binding, and the deactivation
    // lands everywhere once the watches are back.
    let back = Instant::now();
    let deadline = back + RECOVER;
    let mut first: Option<usize> = None;
    loop {
        match observe(client.clone()).await {
            Ok((cluster, namespaced)) => {
                let places = std::iter::once(("cluster-wide".to_string(), &cluster))
                    .chain(namespaced.iter().map(|(ns, s)| (ns.clone(), s)));
                let mut pending = 0;
                for (place, subjects) in places {
                    let missing: Vec<&String> =
                        stay.iter().filter(|s| !subjects.contains(s)).collect();
                    assert!(
                        missing.is_empty(),
                        "{place}: {} subjects lost, such as {:?}",
                        missing.len(),
                        missing.first()
                    );
                    pending += usize::from(subjects.contains(&deactivated));
                }
                assert_eq!(namespaced.len(), RESTART_NAMESPACES);
                first.get_or_insert(pending);
                if pending == 0 && ready(&client, &policy).await? {
                    break;
                }
            }
            Err(error) => eprintln!("API server not answering yet: {error:#}"),
        }
        if Instant::now() > deadline {
            bail!("the deactivation did not land within {RECOVER:?} after the restart");
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "when the API server came back, {} of {} bindings still held the deactivated user; \
         all were done {:?} later",
        first.unwrap_or_default(),
        RESTART_NAMESPACES + 1,
        back.elapsed()
    );

    let _ = stop.send(());
    tokio::time::timeout(CONVERGE, controller)
        .await
        .context("the controller stops")???;
    drop(proxy);
    Ok(())
}

// ------------------------------------------------------------------- control planes

/// A control plane of the tests' own, in a private run directory.
#[derive(Clone)]
struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane in a new run directory, with a watchdog that stops it when
    /// this process ends.
    fn start(name: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("scim-policy-safety-{name}-{}", std::process::id()));
        let plane = Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
        };
        plane.script("start")?;
        plane.spawn_watchdog()?;
        Ok(plane)
    }

    /// Starts it again after [`stop`](Self::stop), with its data.
    fn restart(&self) -> Result<()> {
        self.script("start")
    }

    /// Stops every process of this control plane, by the ids the script saved.
    fn stop(&self) -> Result<()> {
        self.script("stop")
    }

    fn script(&self, command: &str) -> Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane");
        let out = Command::new(script)
            .arg(command)
            .env("CONTROL_PLANE_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running scripts/control-plane {command}"))?;
        if !out.status.success() {
            bail!(
                "scripts/control-plane {command} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A detached shell that waits for this process to end, then stops the control plane
    /// and removes its directory: a failing or interrupted test leaves nothing running.
    fn spawn_watchdog(&self) -> Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane");
        let watch = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             CONTROL_PLANE_DIR='{dir}' '{script}' stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display(),
            script = script.display(),
        );
        Command::new("setsid")
            .args(["sh", "-c", &watch])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the control plane watchdog")?;
        Ok(())
    }

    async fn client(&self) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// A client that reaches the API server through `proxy`, so that it keeps working when
    /// a restart moves the API server to another port.
    async fn client_via(&self, proxy: &Proxy) -> Result<Client> {
        let mut kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        for cluster in kubeconfig
            .clusters
            .iter_mut()
            .filter_map(|c| c.cluster.as_mut())
        {
            cluster.server = Some(format!("https://127.0.0.1:{}", proxy.port));
        }
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }
}

/// Stops a control plane when a test ends, passed or not.
struct StopOnDrop(ControlPlane);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Err(error) = self.0.stop() {
            eprintln!("{error:#}");
        }
        let _ = std::fs::remove_dir_all(&self.0.dir);
    }
}

/// A TCP forwarder to whatever port the control plane's API server listens on now: the
/// script picks new ports when the old ones are still held after a stop.
struct Proxy {
    port: u16,
    listener: TcpListener,
}

impl Proxy {
    fn start(dir: PathBuf) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let accepting = listener.try_clone()?;
        std::thread::spawn(move || {
            for client in accepting.incoming() {
                let Ok(client) = client else {
                    return;
                };
                let Some(upstream) = apiserver_port(&dir)
                    .and_then(|port| TcpStream::connect(("127.0.0.1", port)).ok())
                else {
                    // Down: refuse, as the API server itself would.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                pipe(client, upstream);
            }
        });
        Ok(Self { port, listener })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Wakes the accept loop with a last connection that finds the listener gone.
        let _ = self.listener.set_nonblocking(true);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn apiserver_port(dir: &Path) -> Option<u16> {
    let ports = std::fs::read_to_string(dir.join("ports.env")).ok()?;
    ports
        .lines()
        .find_map(|line| line.strip_prefix("APISERVER_PORT="))
        .and_then(|port| port.trim().parse().ok())
}

/// Copies both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    copy(a, b2);
    copy(b, a2);
}

/// The control plane the tests share, with one controller that runs until the process
/// ends, allowing only [`ALLOWED_ROLE`].
struct SharedPlane {
    plane: ControlPlane,
}

impl SharedPlane {
    async fn client(&self) -> Result<Client> {
        self.plane.client().await
    }

    /// Starts the control plane, installs the CRDs and roles, and runs the controller on a
    /// thread of its own until the process ends.
    fn start() -> Result<Self> {
        let plane = ControlPlane::start("shared")?;
        let settings = ControllerSettings {
            allowed_roles: Some(vec![format!("ClusterRole/{ALLOWED_ROLE}")]),
            ..ControllerSettings::default()
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let kubeconfig = plane.clone();
        std::thread::Builder::new()
            .name("policy-safety-controller".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let setup = async {
                        let client = kubeconfig.client().await?;
                        install_crds(&client).await?;
                        create_cluster_role(&client, ALLOWED_ROLE).await?;
                        create_cluster_role(&client, REFUSED_ROLE).await?;
                        anyhow::Ok(client)
                    };
                    match setup.await {
                        Ok(client) => {
                            let _ = ready_tx.send(Ok(()));
                            if let Err(error) = run(client, settings, std::future::pending()).await
                            {
                                eprintln!("the shared controller stopped: {error}");
                            }
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .context("the controller thread ended before it was ready")??;
        Ok(Self { plane })
    }
}

/// Whether integration tests run here; says why not when they do not.
fn integration_enabled(test: &str) -> Option<()> {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(_) => {
            // Warnings only by default: the audit trail of 50,000 grants is 50,000 lines.
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
            Some(())
        }
        None => {
            eprintln!(
                "skipping {test}: KUBECONFIG is not set; these tests start control planes of \
                 their own with scripts/control-plane, and run where one can start"
            );
            None
        }
    }
}

/// The shared control plane, started by the first test that asks.
async fn shared_plane(test: &str) -> Result<Option<&'static SharedPlane>> {
    if integration_enabled(test).is_none() {
        return Ok(None);
    }
    let shared = tokio::task::spawn_blocking(|| {
        SHARED.get_or_init(|| SharedPlane::start().map_err(|e| format!("{e:#}")))
    })
    .await?;
    match shared {
        Ok(plane) => Ok(Some(plane)),
        Err(error) => bail!("the shared control plane did not start: {error}"),
    }
}

// ------------------------------------------------------------------- fixtures

fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

fn user(tenant: &str, name: &str, active: bool) -> ScimUser {
    let spec = ScimUserSpec {
        id: format!("id-{name}"),
        user_name: format!("{name}@example.com"),
        active: Some(active),
        ..Default::default()
    };
    let mut user = ScimUser::new(name, spec);
    user.metadata.namespace = Some(tenant.into());
    user
}

fn group(tenant: &str, name: &str, display_name: &str, members: &[&str]) -> ScimGroup {
    let spec = ScimGroupSpec {
        id: format!("id-{name}"),
        display_name: display_name.into(),
        members: members_of(members),
        ..Default::default()
    };
    let mut group = ScimGroup::new(name, spec);
    group.metadata.namespace = Some(tenant.into());
    group
}

/// Members by object name; the fixtures' SCIM ids are `id-<name>`.
fn members_of(names: &[&str]) -> Vec<GroupMember> {
    names
        .iter()
        .map(|name| GroupMember {
            value: format!("id-{name}"),
            ..Default::default()
        })
        .collect()
}

fn names(users: &[&str]) -> Vec<String> {
    users.iter().map(|u| format!("{u}@example.com")).collect()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn subject_names(subjects: Option<Vec<k8s_openapi::api::rbac::v1::Subject>>) -> Vec<String> {
    sorted(
        subjects
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect(),
    )
}

fn cluster_role_grant(role: &str) -> Grant {
    Grant {
        cluster_role: Some(role.into()),
        ..Default::default()
    }
}

async fn create_directory(
    client: &Client,
    tenant: &str,
    users: &[&str],
    groups: &[(&str, &str, &[&str])],
) -> Result<()> {
    let user_api: Api<ScimUser> = Api::namespaced(client.clone(), tenant);
    futures::stream::iter(users)
        .map(|name| {
            let (api, user) = (user_api.clone(), user(tenant, name, true));
            async move { api.create(&PostParams::default(), &user).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let group_api: Api<ScimGroup> = Api::namespaced(client.clone(), tenant);
    for (name, display, members) in groups {
        group_api
            .create(
                &PostParams::default(),
                &group(tenant, name, display, members),
            )
            .await?;
    }
    Ok(())
}

async fn create_policy(
    client: &Client,
    name: &str,
    tenant: &str,
    groups: &[&str],
    grants: Vec<Grant>,
) -> Result<String> {
    let policy = AccessPolicy::new(
        name,
        AccessPolicySpec {
            tenant: tenant.into(),
            groups: groups
                .iter()
                .map(|g| GroupSelector {
                    display_name: Some(g.to_string()),
                    ..Default::default()
                })
                .collect(),
            grants,
            subjects: SubjectKind::User,
            ..Default::default()
        },
    );
    Api::<AccessPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    Ok(name.to_string())
}

/// The sorted subjects of the policy's ClusterRoleBindings.
async fn cluster_subjects(client: &Client, policy: &str) -> Result<Vec<String>> {
    let selector = ListParams::default().labels(&format!("scim-operator.dev/policy={policy}"));
    let bindings = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&selector)
        .await?;
    Ok(sorted(
        bindings
            .items
            .into_iter()
            .flat_map(|b| subject_names(b.subjects))
            .collect(),
    ))
}

async fn condition_reason(client: &Client, policy: &str, type_: &str) -> Result<Option<String>> {
    let policy = Api::<AccessPolicy>::all(client.clone()).get(policy).await?;
    let conditions = policy.status.unwrap_or_default().conditions;
    Ok(conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason))
}

/// Whether the policy's current generation is reconciled and Ready.
async fn ready(client: &Client, policy: &str) -> Result<bool> {
    let policy = Api::<AccessPolicy>::all(client.clone()).get(policy).await?;
    let generation = policy.metadata.generation;
    let status = policy.status.unwrap_or_default();
    Ok(status.observed_generation == generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// (reason, note) of the Events recorded on the policy.
async fn events_of(client: &Client, policy: &str) -> Result<Vec<(String, String)>> {
    let events = Api::<KubeEvent>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(policy))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let yaml = crds_yaml()?;
    let mut names = Vec::new();
    for document in serde_norway::Deserializer::from_str(&yaml) {
        let crd = CustomResourceDefinition::deserialize(document)?;
        let name = crd.name_any();
        let params = PatchParams::apply(TEST_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying {name}"))?;
        names.push(name);
    }
    for name in names {
        eventually(&format!("{name} to be established"), CONVERGE, || async {
            let crd = api.get(&name).await?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await?;
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) -> Result<String> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(name.to_string())
}

async fn label_namespace(
    client: &Client,
    name: &str,
    key: &str,
    value: Option<&str>,
) -> Result<()> {
    let patch = json!({"metadata": {"labels": {key: value}}});
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn create_cluster_role(client: &Client, name: &str) -> Result<()> {
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&role),
        )
        .await?;
    Ok(())
}

/// Polls `check` until it holds, failing after `timeout` with the last error if any.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = check().await;
        if matches!(outcome, Ok(true)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            match outcome {
                Err(error) => bail!("timed out waiting for {what}: {error:#}"),
                _ => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

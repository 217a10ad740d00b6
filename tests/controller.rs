//! The in-cluster controller against a real API server: policies turn the active members of
//! their groups into bindings, and every way of losing access shows up in the bindings.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use scim_operator::controller::ControllerSettings;
use scim_operator::controller::kube::run;
use scim_operator::resources::{
    AccessPolicy, AccessPolicySpec, Grant, GroupMember, GroupSelector, ScimGroup, ScimGroupSpec,
    ScimUser, ScimUserSpec, SubjectKind, crds_yaml,
};

/// How long a SCIM write may take to show in a binding.
const CONVERGE: Duration = Duration::from_secs(10);
/// How long garbage collection may take to remove a deleted policy's bindings.
const COLLECT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const TEST_MANAGER: &str = "scim-operator-controller-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_grant_active_members_and_revoke_every_way_access_ends() -> Result<()> {
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) else {
        eprintln!("skipping: KUBECONFIG is not set; start one with scripts/control-plane start");
        return Ok(());
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter("scim_operator=debug,info")
        .with_test_writer()
        .try_init();
    let client = Client::try_default()
        .await
        .context("connecting to the API server")?;
    install_crds(&client).await?;

    let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let tenant = format!("scim-ctl-{id}");
    let apps = format!("scim-ctl-{id}-apps");
    let role = format!("scim-ctl-{id}-reader");
    let policy_name = format!("scim-ctl-{id}");
    let _cleanup = Cleanup {
        kubeconfig: kubeconfig.to_string_lossy().into_owned(),
        objects: vec![
            format!("accesspolicy/{policy_name}"),
            format!("clusterrole/{role}"),
            format!("namespace/{tenant}"),
            format!("namespace/{apps}"),
        ],
    };
    create_namespace(&client, &tenant).await?;
    create_namespace(&client, &apps).await?;
    create_cluster_role(&client, &role).await?;

    let users: Api<ScimUser> = Api::namespaced(client.clone(), &tenant);
    let groups: Api<ScimGroup> = Api::namespaced(client.clone(), &tenant);
    for (name, user_name) in [
        ("alice", "alice@example.com"),
        ("bob", "bob@example.com"),
        ("dave", "dave@example.com"),
        ("carol", "carol@example.com"),
        ("root", "system:admin"),
    ] {
        users
            .create(&PostParams::default(), &user(&tenant, name, user_name))
            .await?;
    }
    let analysts = group(
        &tenant,
        "analysts",
        "Analysts",
        &["alice", "bob", "dave", "root"],
    );
    groups.create(&PostParams::default(), &analysts).await?;
    // Nobody names this group in a policy: carol must never be bound.
    let others = group(&tenant, "others", "Others", &["carol", "id-gone"]);
    groups.create(&PostParams::default(), &others).await?;
    let policy = AccessPolicy::new(
        &policy_name,
        AccessPolicySpec {
            tenant: tenant.clone(),
            groups: vec![GroupSelector {
                display_name: Some("ANALYSTS".into()),
                ..Default::default()
            }],
            grants: vec![
                Grant {
                    cluster_role: Some(role.clone()),
                    namespaces: vec![apps.clone()],
                    ..Default::default()
                },
                Grant {
                    cluster_role: Some(role.clone()),
                    ..Default::default()
                },
            ],
            subjects: SubjectKind::User,
            ..Default::default()
        },
    );
    let policies: Api<AccessPolicy> = Api::all(client.clone());
    policies.create(&PostParams::default(), &policy).await?;

    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(run(
        client.clone(),
        ControllerSettings::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let role_bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &apps);
    let cluster_role_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let rb_name = format!("scim-{policy_name}-c-{role}");
    let crb_name = format!("scim-{policy_name}-{role}");
    let subjects = || async {
        let rb = role_bindings
            .get_opt(&rb_name)
            .await?
            .map(|b| subject_names(b.subjects));
        let crb = cluster_role_bindings
            .get_opt(&crb_name)
            .await?
            .map(|b| subject_names(b.subjects));
        anyhow::Ok((rb, crb))
    };
    let both = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        (Some(names.clone()), Some(names))
    };

    // Active members of the selected group are bound; the reserved name never is.
    let granted = both(&["alice@example.com", "bob@example.com", "dave@example.com"]);
    eventually("the first grant", CONVERGE, || async {
        Ok(subjects().await? == granted)
    })
    .await?;
    eventually("the policy status", CONVERGE, || async {
        let status = policies.get(&policy_name).await?.status.unwrap_or_default();
        let reasons: BTreeMap<String, (String, String)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), (c.status.clone(), c.reason.clone())))
            .collect();
        Ok(status.subject_count == 3
            && status.binding_count == 2
            && reasons.get("Ready") == Some(&("True".into(), "Reconciled".into()))
            && reasons.get("Degraded") == Some(&("True".into(), "ReservedSubject".into())))
    })
    .await?;
    let managed = ListParams::default().labels(&format!("scim-operator.dev/policy={policy_name}"));
    assert_eq!(role_bindings.list(&managed).await?.items.len(), 1);

    // Users and groups carry their status.
    eventually("the identity statuses", CONVERGE, || async {
        let alice = users.get("alice").await?.status.unwrap_or_default();
        let others = groups.get("others").await?.status.unwrap_or_default();
        Ok(alice.groups == ["Analysts"]
            && others.member_count == 2
            && others.active_member_count == 1
            && others.unresolved_members == ["id-gone"])
    })
    .await?;

    // A deactivated user leaves the bindings.
    users
        .patch(
            "bob",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"active": false}})),
        )
        .await?;
    let granted = both(&["alice@example.com", "dave@example.com"]);
    eventually("deactivation", CONVERGE, || async {
        Ok(subjects().await? == granted)
    })
    .await?;

    // A user removed from the group leaves the bindings.
    let members = members_of(&["bob", "dave", "root"]);
    groups
        .patch(
            "analysts",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": members}})),
        )
        .await?;
    let granted = both(&["dave@example.com"]);
    eventually("removal from the group", CONVERGE, || async {
        Ok(subjects().await? == granted)
    })
    .await?;

    // A user missing while the group still lists them is an incomplete directory: they keep
    // their access, and the policy says why.
    users.delete("dave", &DeleteParams::default()).await?;
    eventually("the incomplete directory condition", CONVERGE, || async {
        let status = policies.get(&policy_name).await?.status.unwrap_or_default();
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
        Ok(degraded.is_some_and(|c| c.reason == "IncompleteDirectory")
            && status.held_subject_count == 1)
    })
    .await?;
    assert_eq!(subjects().await?, both(&["dave@example.com"]));

    // Once the group no longer lists them (as the SCIM server does on delete), the deleted
    // user leaves the bindings, which stay, empty, while the policy exists.
    groups
        .patch(
            "analysts",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"members": members_of(&["bob", "root"])}})),
        )
        .await?;
    let granted = both(&[]);
    eventually("deletion of the user", CONVERGE, || async {
        Ok(subjects().await? == granted)
    })
    .await?;

    // Deleting the policy removes its bindings through their owner references.
    policies
        .delete(&policy_name, &DeleteParams::background())
        .await?;
    eventually("garbage collection", COLLECT, || async {
        Ok(subjects().await? == (None, None))
    })
    .await?;

    let _ = stop.send(());
    tokio::time::timeout(CONVERGE, controller)
        .await
        .context("the controller stops")???;
    Ok(())
}

fn user(tenant: &str, name: &str, user_name: &str) -> ScimUser {
    let spec = ScimUserSpec {
        id: format!("id-{name}"),
        user_name: user_name.into(),
        active: Some(true),
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
        external_id: None,
        members: members_of(members),
        member_shards: None,
    };
    let mut group = ScimGroup::new(name, spec);
    group.metadata.namespace = Some(tenant.into());
    group
}

/// Members by object name; the fixtures' SCIM ids are `id-<name>`.
fn members_of(names: &[&str]) -> Vec<GroupMember> {
    let value = |name: &str| {
        if name.starts_with("id-") {
            name.into()
        } else {
            format!("id-{name}")
        }
    };
    names
        .iter()
        .map(|name| GroupMember {
            value: value(name),
            ..Default::default()
        })
        .collect()
}

fn subject_names(subjects: Option<Vec<k8s_openapi::api::rbac::v1::Subject>>) -> Vec<String> {
    subjects
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.name)
        .collect()
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

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
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
        .create(&PostParams::default(), &role)
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

/// Deletes the test's objects when the test ends, passed or not.
struct Cleanup {
    kubeconfig: String,
    objects: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for object in &self.objects {
            // Best effort: a leftover in a throwaway control plane is harmless.
            let _ = Command::new("kubectl")
                .args(["--kubeconfig", &self.kubeconfig, "delete", object])
                .args(["--ignore-not-found", "--wait=false"])
                .output();
        }
    }
}

//! The platform sync against a real API server: policies with platform grants become a
//! ConfigMap that follows the directory, hash annotation included.
//!
//! Needs KUBECONFIG (see `scripts/control-plane`); skips with a message otherwise.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use scim_operator::controller::ControllerSettings;
use scim_operator::platform::{
    CONTENT_HASH_ANNOTATION, ObjectKind, PlatformDocument, PlatformFormat, PlatformTarget,
    run_platform_sync,
};
use scim_operator::resources::{
    AccessPolicy, AccessPolicySpec, GroupMember, GroupSelector, PlatformGrant, PlatformPrivilege,
    ScimGroup, ScimGroupSpec, ScimUser, ScimUserSpec,
};
use serde_json::json;
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_secs(30);
const JSON_OBJECT: &str = "platform-access";
const TRINO_OBJECT: &str = "trino-access";

fn user(tenant: &str, id: &str, user_name: &str) -> ScimUser {
    let mut user = ScimUser::new(
        &user_name.replace('@', "-"),
        ScimUserSpec {
            id: id.into(),
            user_name: user_name.into(),
            active: Some(true),
            ..Default::default()
        },
    );
    user.metadata.namespace = Some(tenant.into());
    user
}

/// Polls `fetch` until it yields a value, or panics after [`TIMEOUT`] naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut fetch: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = fetch().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The document and hash of the JSON ConfigMap, once it exists.
async fn fetch_document(api: &Api<ConfigMap>) -> Option<(PlatformDocument, String)> {
    let object = api.get_opt(JSON_OBJECT).await.ok()??;
    let hash = object
        .metadata
        .annotations?
        .get(CONTENT_HASH_ANNOTATION)?
        .clone();
    let text = object.data?.get("platform-access.json")?.clone();
    Some((serde_json::from_str(&text).ok()?, hash))
}

async fn fetch_group_file(api: &Api<ConfigMap>) -> Option<String> {
    let object = api.get_opt(TRINO_OBJECT).await.ok()??;
    object.data?.get("group.txt").cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_grants_reach_the_configmap_and_a_deactivated_user_leaves_them()
-> anyhow::Result<()> {
    let Some(kubeconfig) = common::kubeconfig("platform sync") else {
        return Ok(());
    };
    common::install_crds(&kubeconfig);
    let tenant = common::TestNamespace::create(&kubeconfig, "pf-tenant");
    let platform = common::TestNamespace::create(&kubeconfig, "pf-platform");
    let client = kube::Client::try_default().await?;

    // The directory: ada and bob in Analysts, and a policy granting SELECT.
    let users: Api<ScimUser> = Api::namespaced(client.clone(), &tenant.name);
    for (id, name) in [("u-ada", "ada@example.com"), ("u-bob", "bob@example.com")] {
        users
            .create(&PostParams::default(), &user(&tenant.name, id, name))
            .await?;
    }
    let groups: Api<ScimGroup> = Api::namespaced(client.clone(), &tenant.name);
    let mut analysts = ScimGroup::new(
        "analysts",
        ScimGroupSpec {
            id: "g-analysts".into(),
            display_name: "Analysts".into(),
            members: ["u-ada", "u-bob"]
                .map(|id| GroupMember {
                    value: id.into(),
                    ..Default::default()
                })
                .to_vec(),
            ..Default::default()
        },
    );
    analysts.metadata.namespace = Some(tenant.name.clone());
    groups.create(&PostParams::default(), &analysts).await?;
    let policy_name = format!("{}-analysts", tenant.name);
    let spec = AccessPolicySpec {
        tenant: tenant.name.clone(),
        groups: vec![GroupSelector {
            display_name: Some("Analysts".into()),
            ..Default::default()
        }],
        platform_grants: vec![PlatformGrant {
            resources: vec!["analytics.*.*".into()],
            privileges: vec![PlatformPrivilege::Select],
            targets: vec![],
        }],
        ..Default::default()
    };
    let policies: Api<AccessPolicy> = Api::all(client.clone());
    policies
        .create(
            &PostParams::default(),
            &AccessPolicy::new(&policy_name, spec),
        )
        .await?;

    // The sync, in process, with one target per format.
    let target = |name: &str, format, object: &str| PlatformTarget {
        name: name.into(),
        format,
        kind: ObjectKind::ConfigMap,
        namespace: platform.name.clone(),
        object: object.into(),
        tenant: Some(tenant.name.clone()),
    };
    let targets = vec![
        target("catalog", PlatformFormat::Json, JSON_OBJECT),
        target("trino", PlatformFormat::Trino, TRINO_OBJECT),
    ];
    let (stop, stopped) = oneshot::channel::<()>();
    let sync = tokio::spawn(run_platform_sync(
        client.clone(),
        targets,
        ControllerSettings::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &platform.name);

    // Both users hold the grant.
    let (first, first_hash) = eventually("the document", || async {
        fetch_document(&configmaps)
            .await
            .filter(|(doc, _)| doc.grants.len() == 1 && doc.grants[0].users.len() == 2)
    })
    .await;
    assert_eq!(
        serde_json::to_value(&first.grants)?,
        json!([{
            "policy": policy_name,
            "tenant": tenant.name,
            "groups": ["Analysts"],
            "users": ["ada@example.com", "bob@example.com"],
            "resources": ["analytics.*.*"],
            "privileges": ["SELECT"],
        }])
    );
    assert!(first_hash.starts_with("sha256:") && first_hash.len() == 7 + 64);

    // Deactivate bob: he leaves the grant and the group file, and the hash moves.
    users
        .patch(
            "bob-example.com",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"active": false}})),
        )
        .await?;
    let (second, second_hash) = eventually("bob to leave the grant", || async {
        fetch_document(&configmaps)
            .await
            .filter(|(doc, _)| doc.grants[0].users == ["ada@example.com"])
    })
    .await;
    assert_ne!(second_hash, first_hash);
    let bob = second
        .users
        .iter()
        .find(|u| u.user_name == "bob@example.com");
    assert_eq!(
        bob.map(|u| u.active),
        Some(false),
        "bob is listed, inactive"
    );
    let group_file = eventually("the Trino group file without bob", || async {
        fetch_group_file(&configmaps)
            .await
            .filter(|text| !text.contains("bob@example.com"))
    })
    .await;
    assert!(
        group_file.ends_with("\nAnalysts:ada@example.com\n"),
        "{group_file}"
    );

    let _ = stop.send(());
    sync.await??;
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await?;
    Ok(())
}

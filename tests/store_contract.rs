//! One set of contract tests for the store, run against the embedded backend and, when an
//! API server is available, against the Kubernetes backend.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

mod common;

use std::sync::Arc;

use scim_operator::resources::{ScimUser, ScimUserSpec};
use scim_operator::server::{open_embedded, open_kube};
use scim_operator::store::kind::{ScimKind, new_object};
use scim_operator::store::{Store, StoreError};

fn user(tenant: &str, user_name: &str) -> ScimUser {
    let id = format!("id-{}", common::uuid_like());
    let spec = ScimUserSpec {
        id: id.clone(),
        user_name: user_name.into(),
        active: Some(true),
        ..Default::default()
    };
    new_object(
        tenant,
        spec,
        &id,
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00Z",
    )
}

async fn contract(store: Arc<Store>, tenant: &str) {
    // A create is indexed at once, and found by id and by userName in any case.
    let created = store
        .create(&user(tenant, "Ann@Example.com"))
        .await
        .expect("create");
    {
        let read = store.users.read();
        let index = read.tenant(tenant).expect("tenant indexed");
        assert_eq!(
            index
                .get_by_id(created.scim_id())
                .map(|u| u.spec.user_name.clone()),
            Some("Ann@Example.com".into())
        );
        assert!(index.get_by_unique("ann@example.COM").is_some());
    }

    // The same userName in another case is refused by the backend itself.
    let duplicate = store.create(&user(tenant, "ANN@example.com")).await;
    assert!(
        matches!(duplicate, Err(StoreError::AlreadyExists)),
        "{duplicate:?}"
    );

    // Two creates racing for one userName: exactly one wins.
    let (first_racer, second_racer) = (
        user(tenant, "race@example.com"),
        user(tenant, "RACE@example.com"),
    );
    let (a, b) = tokio::join!(store.create(&first_racer), store.create(&second_racer));
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );

    // A replace with a stale version is refused; a current one succeeds.
    let mut first = created.clone();
    first.spec.active = Some(false);
    let replaced = store
        .replace(&first)
        .await
        .expect("replace with the current version");
    let mut stale = created.clone();
    stale.spec.title = Some("stale".into());
    assert!(matches!(
        store.replace(&stale).await,
        Err(StoreError::Conflict)
    ));
    let live: ScimUser = store
        .get_live(tenant, &replaced.metadata.name.clone().unwrap_or_default())
        .await
        .expect("live read")
        .expect("exists");
    assert!(!live.spec.is_active());

    // A delete frees the userName at once.
    store.delete(&replaced).await.expect("delete");
    assert!(
        store
            .users
            .read()
            .tenant(tenant)
            .and_then(|t| t.get_by_id(created.scim_id()))
            .is_none()
    );
    store
        .create(&user(tenant, "ann@example.com"))
        .await
        .expect("the userName is free again");
}

#[tokio::test]
async fn the_embedded_backend_keeps_the_store_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_embedded(dir.path()).expect("open");
    contract(store, "tenant-a").await;
    // A reopened folder holds what was written.
    let reopened = open_embedded(dir.path()).expect("reopen");
    assert_eq!(
        reopened.users.read().tenant("tenant-a").map(|t| t.len()),
        Some(2)
    );
}

#[tokio::test]
async fn the_kubernetes_backend_keeps_the_store_contract() {
    let Some(kubeconfig) = common::kubeconfig("the Kubernetes store contract") else {
        return;
    };
    common::install_crds(&kubeconfig);
    let ns = common::TestNamespace::create(&kubeconfig, "store");
    let client = kube::Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let store = open_kube(client, Some(&ns.name)).await;
    contract(store, &ns.name).await;
}

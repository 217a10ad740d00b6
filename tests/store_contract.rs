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

#[tokio::test]
async fn a_large_group_is_sharded_and_one_member_change_rewrites_one_shard() {
    use scim_operator::resources::{GroupMember, ScimGroup, ScimGroupMembers, ScimGroupSpec};
    use scim_operator::store::shards::{GROUP_ID_LABEL, compute_shard_of};

    let Some(kubeconfig) = common::kubeconfig("large group shards") else {
        return;
    };
    common::install_crds(&kubeconfig);
    let ns = common::TestNamespace::create(&kubeconfig, "shards");
    let client = kube::Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let store = open_kube(client.clone(), Some(&ns.name)).await;

    // Members need not resolve at this level; the SCIM layer checks them.
    let members: Vec<GroupMember> = (0..3000)
        .map(|i| GroupMember {
            value: format!("m-{i}"),
            ..Default::default()
        })
        .collect();
    let id = format!("g-{}", common::uuid_like());
    let spec = ScimGroupSpec {
        id: id.clone(),
        display_name: "big".into(),
        members,
        ..Default::default()
    };
    let group: ScimGroup = new_object(&ns.name, spec, &id, "c", "m");
    let created = store.create(&group).await.expect("create");
    assert_eq!(created.spec.members.len(), 3000);
    let count = created
        .spec
        .member_shards
        .expect("a large group is sharded");

    let shards: kube::Api<ScimGroupMembers> = kube::Api::namespaced(client.clone(), &ns.name);
    let selector = kube::api::ListParams::default().labels(&format!("{GROUP_ID_LABEL}={id}"));
    let before = shards.list(&selector).await.expect("list shards");
    assert_eq!(before.items.len() as i64, count);
    let base: kube::Api<ScimGroup> = kube::Api::namespaced(client.clone(), &ns.name);
    let raw = base
        .get(&created.metadata.name.clone().unwrap_or_default())
        .await
        .expect("get");
    assert!(
        raw.spec.members.is_empty(),
        "the group object itself holds no member list"
    );

    // One more member: the group object and exactly one shard change.
    let mut next = created.clone();
    next.spec.members.push(GroupMember {
        value: "newcomer".into(),
        ..Default::default()
    });
    let replaced = store.replace(&next).await.expect("replace");
    assert_eq!(replaced.spec.members.len(), 3001);
    let after = shards.list(&selector).await.expect("list shards");
    let version = |list: &kube::core::ObjectList<ScimGroupMembers>, shard: i64| {
        list.items
            .iter()
            .find(|s| s.spec.shard == shard)
            .and_then(|s| s.metadata.resource_version.clone())
    };
    let changed: Vec<i64> = (0..count)
        .filter(|i| version(&before, *i) != version(&after, *i))
        .collect();
    assert_eq!(changed, vec![compute_shard_of("newcomer", count)]);

    // The index merges shards back: a fresh store sees every member.
    let fresh = open_kube(client, Some(&ns.name)).await;
    let seen = fresh
        .groups
        .read()
        .tenant(&ns.name)
        .and_then(|t| t.get_by_id(&id))
        .map(|g| g.spec.members.len());
    assert_eq!(seen, Some(3001));

    // Deleting the group deletes its shards.
    store.delete(&replaced).await.expect("delete");
    assert!(
        shards
            .list(&selector)
            .await
            .expect("list shards")
            .items
            .is_empty()
    );
}

//! Prints figures for the read path at scale: loading 100,000 users and 10,000 groups into
//! the in-memory index, lookups by id and by userName, a filtered list through the SCIM
//! service, the same list through the HTTP router in-process, and resident memory.
//!
//! Run with `cargo run --release --example bench`. Figures vary with the machine; compare
//! ratios measured in one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use scim_operator::resources::{GroupMember, ScimGroup, ScimGroupSpec, ScimUser, ScimUserSpec};
use scim_operator::scim::auth::Authenticator;
use scim_operator::scim::service::{ListQuery, ScimService, ServiceSettings};
use scim_operator::server::{app_state, open_embedded};
use scim_operator::store::kind::new_object;
use tower::ServiceExt;

const USERS: usize = 100_000;
const GROUPS: usize = 10_000;
const TENANT: &str = "bench";

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    let total: Duration = samples.iter().sum();
    let per_second = samples.len() as f64 / total.as_secs_f64();
    println!(
        "{name:<44} p50 {:>9.1?}  p99 {:>9.1?}  {per_second:>10.0}/s",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_embedded(dir.path()).expect("open");
    let before = resident_mib();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let spec = ScimUserSpec {
            id: id.clone(),
            user_name: format!("user{i}@example.com"),
            external_id: Some(format!("ext-{i}")),
            active: Some(true),
            ..Default::default()
        };
        let mut user: ScimUser = new_object(
            TENANT,
            spec,
            &id,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        );
        user.metadata.resource_version = Some("1".into());
        user.metadata.uid = Some(id.clone());
        store.users.upsert(user);
        ids.push(id);
    }
    for g in 0..GROUPS {
        let id = format!("10000000-0000-4000-8000-{g:012}");
        let members = (0..10)
            .map(|k| GroupMember {
                value: ids[(g * 10 + k) % USERS].clone(),
                ..Default::default()
            })
            .collect();
        let spec = ScimGroupSpec {
            id: id.clone(),
            display_name: format!("group-{g}"),
            members,
            ..Default::default()
        };
        let mut group: ScimGroup = new_object(
            TENANT,
            spec,
            &id,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        );
        group.metadata.resource_version = Some("1".into());
        group.metadata.uid = Some(id);
        store.groups.upsert(group);
    }
    println!(
        "indexed {USERS} users and {GROUPS} groups in {:.1?}",
        started.elapsed()
    );
    println!(
        "resident memory: {:.0} MiB (before loading: {before:.0} MiB)",
        resident_mib()
    );

    let service = ScimService {
        store: store.clone(),
        settings: ServiceSettings::default(),
    };
    let base = "http://bench/scim/v2";
    let mut samples = Vec::new();
    for i in 0..20_000 {
        let id = &ids[(i * 7919) % USERS];
        let t = Instant::now();
        let read = store.users.read();
        std::hint::black_box(read.tenant(TENANT).and_then(|t| t.get_by_id(id)));
        samples.push(t.elapsed());
    }
    report("index: user by id", samples);

    // One filtered list per sample, each expected to find exactly one resource.
    let time_lists = |build: &dyn Fn(usize) -> ListQuery, list: &dyn Fn(&ListQuery) -> usize| {
        (0..5_000)
            .map(|i| {
                let query = build((i * 7919) % USERS);
                let t = Instant::now();
                let total = list(&query);
                let elapsed = t.elapsed();
                assert_eq!(total, 1);
                elapsed
            })
            .collect::<Vec<_>>()
    };
    let users = |q: &ListQuery| {
        service
            .list::<ScimUser>(TENANT, q, base)
            .expect("list")
            .total
    };
    let groups = |q: &ListQuery| {
        service
            .list::<ScimGroup>(TENANT, q, base)
            .expect("list")
            .total
    };
    let filter = |text: String| ListQuery {
        filter: Some(text),
        ..Default::default()
    };
    report(
        "service: filter userName eq (any case)",
        time_lists(
            &|n| filter(format!("userName eq \"USER{n}@example.com\"")),
            &users,
        ),
    );
    report(
        "service: filter externalId eq",
        time_lists(&|n| filter(format!("externalId eq \"ext-{n}\"")), &users),
    );
    let no_members = |n: usize| ListQuery {
        excluded_attributes: vec![scim_operator::scim::schema::AttrPath::new("members")],
        ..filter(format!("displayName eq \"group-{}\"", n % GROUPS))
    };
    report(
        "service: filter displayName eq, no members",
        time_lists(&no_members, &groups),
    );

    let auth = Arc::new(Authenticator::single("bench-token", TENANT));
    let router = scim_operator::scim::http::router(app_state(
        store.clone(),
        auth,
        None,
        ServiceSettings::default(),
    ));
    let mut samples = Vec::new();
    for i in 0..5_000 {
        let uri = format!("/scim/v2/Users/{}", ids[(i * 7919) % USERS]);
        let request = Request::get(uri)
            .header("authorization", "Bearer bench-token")
            .body(Body::empty())
            .expect("request");
        let t = Instant::now();
        let response = router.clone().oneshot(request).await.expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        samples.push(t.elapsed());
        std::hint::black_box(body);
    }
    report("router in-process: GET /Users/{id}", samples);

    // The same JSON from a bare handler, the floor any SCIM server can reach.
    let sample = service
        .get::<ScimUser>(TENANT, &ids[0], base, &Default::default())
        .expect("get")
        .body
        .to_string();
    let bare = axum::Router::new().route(
        "/x",
        axum::routing::get(move || {
            let sample = sample.clone();
            async move { sample }
        }),
    );
    let mut samples = Vec::new();
    for _ in 0..5_000 {
        let request = Request::get("/x").body(Body::empty()).expect("request");
        let t = Instant::now();
        let response = bare.clone().oneshot(request).await.expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        samples.push(t.elapsed());
        std::hint::black_box(body);
    }
    report("bare axum handler, same JSON", samples);
    println!("resident memory at the end: {:.0} MiB", resident_mib());
}

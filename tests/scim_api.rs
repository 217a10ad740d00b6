//! The SCIM router in-process (no sockets) over the embedded store: authentication, hostile
//! input, all-or-nothing writes, versions and concurrency.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use scim_operator::scim::auth::Authenticator;
use scim_operator::scim::service::ServiceSettings;
use scim_operator::server::{app_state, open_embedded};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "in-process-token";

struct Api {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_embedded(dir.path()).expect("open");
    let auth = Arc::new(Authenticator::single(TOKEN, "tenant"));
    let state = app_state(store, auth, None, ServiceSettings::default());
    Api {
        app: scim_operator::scim::http::router(state),
        _dir: dir,
    }
}

impl Api {
    async fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("/scim/v2{path}"));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            builder = builder.header("content-type", "application/scim+json");
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = self
            .app
            .clone()
            .oneshot(builder.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, json, headers)
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let auth = format!("Bearer {TOKEN}");
        let (status, json, _) = self
            .send_raw(method, path, bytes, &[("authorization", &auth)])
            .await;
        (status, json)
    }

    async fn user(&self, user_name: &str) -> String {
        let (status, body) = self
            .send("POST", "/Users", Some(json!({"userName": user_name})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_string()
    }
}

fn assert_scim_error(body: &Value, scim_type: Option<&str>) {
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], json!(t), "{body}");
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let api = api();
    let (status, body, headers) = api.send_raw("GET", "/Users", vec![], &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_scim_error(&body, None);
    assert_eq!(
        headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("Bearer")
    );
    let (status, _, _) = api
        .send_raw(
            "GET",
            "/Users",
            vec![],
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hostile_bodies_answer_4xx_and_change_nothing() {
    let api = api();
    let auth = format!("Bearer {TOKEN}");
    let huge = format!("{{\"userName\": \"{}\"}}", "a".repeat(10 * 1024 * 1024));
    let (status, body, _) = api
        .send_raw(
            "POST",
            "/Users",
            huge.into_bytes(),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_scim_error(&body, None);

    let (status, body, _) = api
        .send_raw(
            "POST",
            "/Users",
            vec![b'{', 0xff, 0xfe, b'}'],
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&body, Some("invalidSyntax"));

    let (status, body) = api
        .send(
            "POST",
            "/Users",
            Some(json!({"schemas": ["urn:example:unknown"], "userName": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&body, Some("invalidValue"));

    let deep = format!("{}userName eq \"x\"{}", "(".repeat(5000), ")".repeat(5000));
    let path = format!(
        "/Users?filter={}",
        percent_encoding::utf8_percent_encode(&deep, percent_encoding::NON_ALPHANUMERIC)
    );
    let (status, body) = api.send("GET", &path, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&body, Some("invalidFilter"));

    let (_, list) = api.send("GET", "/Users", None).await;
    assert_eq!(list["totalResults"], json!(0), "nothing was created");
}

#[tokio::test]
async fn a_group_naming_an_unknown_member_is_refused_whole() {
    let api = api();
    let ada = api.user("ada@example.com").await;
    let (status, body) = api
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "g", "members": [{"value": ada}, {"value": "no-such-id"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&body, Some("invalidValue"));
    let (_, list) = api.send("GET", "/Groups", None).await;
    assert_eq!(list["totalResults"], json!(0));
}

#[tokio::test]
async fn a_patch_whose_second_operation_fails_changes_nothing() {
    let api = api();
    let id = api.user("ada@example.com").await;
    let (_, before) = api.send("GET", &format!("/Users/{id}"), None).await;
    let body = json!({"Operations": [
        {"op": "replace", "path": "displayName", "value": "Changed"},
        {"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"},
    ]});
    let (status, error) = api.send("PATCH", &format!("/Users/{id}"), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&error, Some("mutability"));
    let (_, after) = api.send("GET", &format!("/Users/{id}"), None).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn versions_are_etags_and_a_stale_if_match_is_refused() {
    let api = api();
    let id = api.user("ada@example.com").await;
    let auth = format!("Bearer {TOKEN}");
    let (_, user, headers) = api
        .send_raw(
            "GET",
            &format!("/Users/{id}"),
            vec![],
            &[("authorization", &auth)],
        )
        .await;
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_string();
    assert_eq!(user["meta"]["version"], json!(etag));

    let (status, _, _) = api
        .send_raw(
            "GET",
            &format!("/Users/{id}"),
            vec![],
            &[("authorization", &auth), ("if-none-match", &etag)],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let patch =
        json!({"Operations": [{"op": "replace", "path": "title", "value": "First"}]}).to_string();
    let (status, _, _) = api
        .send_raw(
            "PATCH",
            &format!("/Users/{id}"),
            patch.clone().into_bytes(),
            &[("authorization", &auth), ("if-match", &etag)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = api
        .send_raw(
            "PATCH",
            &format!("/Users/{id}"),
            patch.into_bytes(),
            &[("authorization", &auth), ("if-match", &etag)],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_scim_error(&body, None);
}

#[tokio::test]
async fn passwords_are_accepted_and_never_returned() {
    let api = api();
    let (status, body) = api
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": "p@example.com", "password": "hunter2-secret"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let id = body["id"].as_str().expect("id");
    let (_, read) = api
        .send("GET", &format!("/Users/{id}?attributes=password"), None)
        .await;
    assert!(!read.to_string().contains("hunter2"), "{read}");
}

#[tokio::test]
async fn racing_creates_of_one_user_name_yield_one_user() {
    let api = Arc::new(api());
    let tasks: Vec<_> = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.com",
        "race@EXAMPLE.com",
    ]
    .into_iter()
    .map(|name| {
        let api = api.clone();
        tokio::spawn(async move {
            api.send("POST", "/Users", Some(json!({"userName": name})))
                .await
                .0
        })
    })
    .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("task"));
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        3,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn fifty_concurrent_member_additions_lose_none() {
    let api = Arc::new(api());
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(api.user(&format!("m{i}@example.com")).await);
    }
    let (_, group) = api
        .send("POST", "/Groups", Some(json!({"displayName": "crowd"})))
        .await;
    let gid = group["id"].as_str().expect("id").to_string();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (api, gid, id) = (api.clone(), gid.clone(), id.clone());
            tokio::spawn(async move {
                let body = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]});
                api.send("PATCH", &format!("/Groups/{gid}"), Some(body)).await.0
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
    let (_, group) = api.send("GET", &format!("/Groups/{gid}"), None).await;
    assert_eq!(group["members"].as_array().map(Vec::len), Some(50));
}

#[tokio::test]
async fn me_is_not_implemented_and_unknown_paths_are_scim_errors() {
    let api = api();
    let (status, body) = api.send("GET", "/Me", None).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_scim_error(&body, None);
    let (status, body) = api.send("GET", "/Nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_scim_error(&body, None);
}

#[tokio::test]
async fn a_member_whose_user_is_gone_does_not_block_other_changes_to_the_group() {
    let api = api();
    let ada = api.user("ada@example.com").await;
    let bob = api.user("bob@example.com").await;
    let (_, group) = api
        .send(
            "POST",
            "/Groups",
            Some(json!({"displayName": "g", "members": [{"value": ada}]})),
        )
        .await;
    let gid = group["id"].as_str().unwrap().to_string();
    // Deleting the user through SCIM removes the membership too; the point here is that a
    // member the group held before is not re-checked when something else changes.
    let (status, _) = api.send("DELETE", &format!("/Users/{ada}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let dangling =
        json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": ada}]}]});
    let (status, _) = api
        .send("PATCH", &format!("/Groups/{gid}"), Some(dangling))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "adding an unknown member is still refused"
    );
    let add_bob = json!({"Operations": [
        {"op": "add", "path": "members", "value": [{"value": bob}]},
        {"op": "replace", "path": "displayName", "value": "renamed"},
    ]});
    let (status, body) = api
        .send("PATCH", &format!("/Groups/{gid}"), Some(add_bob))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn bulk_keeps_the_order_of_operations_on_one_resource_and_reads_undeclared_ids_literally() {
    let api = api();
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "PATCH", "path": "/Users/bulkId:o1", "data": {"Operations": [{"op": "replace", "path": "title", "value": "x"}]}},
            {"method": "POST", "path": "/Users", "bulkId": "o1", "data": {"userName": "o1@example.com", "title": "bulkId:notes"}},
            {"method": "DELETE", "path": "/Users/bulkId:o1"},
        ],
    });
    let (status, answer) = api.send("POST", "/Bulk", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let statuses: Vec<(String, String)> = answer["Operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["method"].as_str().unwrap().to_string(),
                o["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        // Results come in request order; the PATCH waited for the POST, the DELETE for both.
        vec![
            ("PATCH".into(), "200".into()),
            ("POST".into(), "201".into()),
            ("DELETE".into(), "204".into())
        ]
    );
    let duplicate = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "d", "data": {"userName": "d1@example.com"}},
            {"method": "POST", "path": "/Users", "bulkId": "d", "data": {"userName": "d2@example.com"}},
        ],
    });
    let (status, error) = api.send("POST", "/Bulk", Some(duplicate)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&error, Some("invalidSyntax"));
}

#[tokio::test]
async fn non_json_bodies_control_characters_and_bad_base64_are_refused() {
    let api = api();
    let auth = format!("Bearer {TOKEN}");
    let (status, body, _) = api
        .send_raw(
            "POST",
            "/Users",
            b"userName=x".to_vec(),
            &[("authorization", &auth), ("content-type", "text/plain")],
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_scim_error(&body, None);
    let (status, body) = api
        .send(
            "POST",
            "/Users",
            Some(json!({"userName": "tab\tname@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&body, Some("invalidValue"));
    let (status, body) = api
        .send("POST", "/Users", Some(json!({"userName": "c@example.com", "x509Certificates": [{"value": "not base64!"}]})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&body, Some("invalidValue"));
    let (_, list) = api.send("GET", "/Users", None).await;
    assert_eq!(list["totalResults"], json!(0));
}

#[tokio::test]
async fn a_filter_that_cannot_describe_a_new_element_creates_nothing() {
    let api = api();
    let id = api.user("f@example.com").await;
    let body = json!({"Operations": [
        {"op": "add", "path": "emails[type eq \"home\" or type eq \"other\"].value", "value": "c@home.example"},
    ]});
    let (status, error) = api.send("PATCH", &format!("/Users/{id}"), Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_scim_error(&error, Some("noTarget"));
    let entra = json!({"Operations": [
        {"op": "Add", "path": "emails[type eq \"home\"].value", "value": "c@home.example"},
    ]});
    let (status, user) = api
        .send("PATCH", &format!("/Users/{id}"), Some(entra))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        user["emails"],
        json!([{"type": "home", "value": "c@home.example"}])
    );
}

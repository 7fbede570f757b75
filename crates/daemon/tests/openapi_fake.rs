//! `GET /v1/openapi.json` over the daemon's real router on the fake backend: it answers the
//! committed `api/openapi.json`, as JSON. (The unit tests in `api::openapi` keep that file
//! equal to what the types generate.)

use aegis_testkit::daemon::fixture;
use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_committed_document() {
    let f = fixture().await;
    let req = axum::http::Request::builder()
        .method("GET")
        .uri("/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = aegisd::api::router(f.daemon.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let committed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../api/openapi.json"
    ))
    .expect("read api/openapi.json");
    assert!(
        body == committed,
        "the served document is not api/openapi.json"
    );
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
}

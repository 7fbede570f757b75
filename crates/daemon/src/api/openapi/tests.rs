use std::collections::BTreeSet;
use std::path::PathBuf;

use super::generate;
use crate::api::ROUTES;

/// Set to `1` to rewrite `api/openapi.json` from the types instead of comparing.
const UPDATE_ENV: &str = "AEGIS_UPDATE_OPENAPI";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../api/openapi.json")
}

#[test]
fn committed_document_is_current() {
    let generated = generate().expect("the document serializes");
    let path = committed_path();
    if std::env::var(UPDATE_ENV).as_deref() == Ok("1") {
        std::fs::write(&path, &generated).expect("write api/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "api/openapi.json is stale: the aegis-api types or the paths in \
         crates/daemon/src/api/openapi/ changed. Regenerate it with\n  \
         {UPDATE_ENV}=1 cargo test -p aegisd --lib api::openapi\nand commit the result."
    );
}

/// (METHOD, path) of every operation the document describes.
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(&generate().expect("the document serializes")).expect("valid JSON");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if method != "parameters" {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    // axum's `{*rest}` (a wildcard taking the rest of the path) is `{rest}` in OpenAPI.
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.replace("{*", "{")))
        .collect();
    assert_eq!(routes.len(), ROUTES.len(), "a route is declared twice");
    let documented = documented();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes without a #[utoipa::path] stub in crates/daemon/src/api/openapi/: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented operations the router does not serve: {extra:?}"
    );
}

#[test]
fn errors_and_streams_name_their_schemas() {
    let doc: serde_json::Value =
        serde_json::from_str(&generate().expect("the document serializes")).expect("valid JSON");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            for (status, response) in op["responses"].as_object().expect("responses") {
                let content = &response["content"];
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        content["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ApiError",
                        "{method} {path} {status}"
                    );
                }
                if let Some(ndjson) = content.get("application/x-ndjson") {
                    assert!(
                        ndjson["schema"]["$ref"].is_string(),
                        "{method} {path}: an NDJSON stream names its line's schema"
                    );
                }
            }
        }
    }
}

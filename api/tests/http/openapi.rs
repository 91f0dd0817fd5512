//! The checked-in `api/openapi.json` must match the document the code
//! generates. `RESPAWN_UPDATE_OPENAPI=1 cargo test -p respawn-api` rewrites it.

use axum::http::{Method, StatusCode};

use crate::common::{Backend, TestApp};

fn checked_in_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn openapi_json_matches_the_code() {
    let generated = respawn_api::openapi().to_pretty_json().expect("serialise") + "\n";
    let path = checked_in_path();
    if std::env::var("RESPAWN_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write openapi.json");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "api/openapi.json is out of date: run `RESPAWN_UPDATE_OPENAPI=1 cargo test -p respawn-api openapi` and commit it"
    );
}

#[test]
fn openapi_documents_every_route() {
    let doc: serde_json::Value = serde_json::from_str(&respawn_api::openapi().to_json().expect("json")).expect("parse");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/tenants", &["get", "post"][..]),
        ("/v1/tenants/{id}", &["get"]),
        ("/v1/tenants/{id}/tokens", &["get", "post"]),
        ("/v1/tenants/{id}/tokens/{token_id}", &["delete"]),
        ("/v1/plans", &["get", "post"]),
        ("/v1/plans/{id}", &["get", "patch", "delete"]),
        ("/v1/servers", &["get", "post"]),
        ("/v1/servers/{id}", &["get", "patch", "delete"]),
        ("/v1/servers/{id}/start", &["post"]),
        ("/v1/servers/{id}/stop", &["post"]),
        ("/v1/servers/{id}/logs", &["get"]),
        ("/v1/plugins", &["get", "post"]),
        ("/v1/plugins/{id}", &["get", "delete"]),
        ("/v1/servers/{id}/plugins", &["get", "post"]),
        ("/v1/servers/{id}/plugins/{plugin_id}", &["delete"]),
        ("/v1/servers/{id}/backups", &["get", "post"]),
        ("/v1/servers/{id}/backups/{backup_id}", &["get", "delete"]),
        ("/v1/servers/{id}/backups/{backup_id}/download", &["get"]),
        ("/v1/servers/{id}/backups/{backup_id}/lock", &["post"]),
        ("/v1/servers/{id}/backups/{backup_id}/unlock", &["post"]),
        ("/v1/servers/{id}/backups/{backup_id}/restore", &["post"]),
        ("/v1/servers/{id}/restores/{restore_id}", &["get"]),
        ("/v1/servers/{id}/backup-policy", &["get", "put"]),
    ] {
        for m in methods {
            assert!(paths.get(path).and_then(|p| p.get(*m)).is_some(), "{m} {path} is not documented");
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["NewServer"]["additionalProperties"] == false);
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let app = TestApp::new(Backend::Sqlite).await;
    let r = app.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let generated: serde_json::Value =
        serde_json::from_str(&respawn_api::openapi().to_json().expect("json")).expect("parse");
    assert_eq!(r.body, generated);
}

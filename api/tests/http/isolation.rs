//! The isolation matrix: tenant B tries every server route on tenant A's
//! server and gets exactly the answer for a server that does not exist; A's
//! server is unchanged afterwards.

use axum::http::{Method, StatusCode};
use respawn_api::Phase;
use serde_json::{Value, json};

use crate::both;
use crate::common::{Backend, TestApp};

both!(other_tenants_get_404_everywhere);

fn routes(id: &str, plugin: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/v1/servers/{id}"), None),
        (Method::PATCH, format!("/v1/servers/{id}"), Some(json!({"name": "stolen"}))),
        (Method::PATCH, format!("/v1/servers/{id}"), Some(json!({"hostnames": ["stolen.example.com"]}))),
        (Method::DELETE, format!("/v1/servers/{id}"), None),
        (Method::POST, format!("/v1/servers/{id}/start"), None),
        (Method::POST, format!("/v1/servers/{id}/stop"), None),
        (Method::GET, format!("/v1/servers/{id}/logs"), None),
        (Method::GET, format!("/v1/servers/{id}/logs?tail=5"), None),
        (Method::GET, format!("/v1/servers/{id}/plugins"), None),
        (Method::POST, format!("/v1/servers/{id}/plugins"), Some(json!({"plugin_id": plugin}))),
        (Method::DELETE, format!("/v1/servers/{id}/plugins/{plugin}"), None),
    ]
}

async fn other_tenants_get_404_everywhere(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, alice) = app.tenant("alice").await;
    let (_, bob) = app.tenant("bob").await;
    let plan = app.plan("small").await;
    let server = app.server(&alice, &plan, "secret", "secret.alice.example").await;
    let id = server["id"].as_str().expect("id").to_owned();
    let plugin =
        app.post("/v1/plugins", crate::common::ADMIN, crate::plugins::plugin_body("LuckPerms", "5.4")).await.str("id");
    let installed = app.post(&format!("/v1/servers/{id}/plugins"), &alice, json!({"plugin_id": plugin})).await;
    assert_eq!(installed.status, StatusCode::CREATED);
    app.runtime.set_status(&id, Phase::Running, 4);
    app.runtime.push_log(&id, 1, "alice's private console line");
    let before = app.get(&format!("/v1/servers/{id}"), &alice).await.body;
    let logs_before = app.get(&format!("/v1/servers/{id}/logs"), &alice).await.body;
    let plugins_before = app.get(&format!("/v1/servers/{id}/plugins"), &alice).await.body;

    // A made-up id with the same shape: Bob cannot tell the two apart.
    let ghost = format!("srv_{}", "0".repeat(id.len() - 4));
    for ((method, path, body), (_, ghost_path, _)) in routes(&id, &plugin).into_iter().zip(routes(&ghost, &plugin)) {
        let on_alice = app.call(method.clone(), &path, Some(&bob), body.clone()).await;
        let on_ghost = app.call(method.clone(), &ghost_path, Some(&bob), body).await;
        assert_eq!(on_alice.status, StatusCode::NOT_FOUND, "{method} {path}: {}", on_alice.body);
        assert_eq!(on_alice.body, on_ghost.body, "{method} {path}: same answer as a missing server");
        assert_eq!(on_alice.error().0, "not_found");
        assert!(!on_alice.body.to_string().contains("secret"), "{method} {path} leaks");
    }
    // Bob's list does not show it, with or without a phase filter.
    for q in ["", "?phase=running", "?limit=500"] {
        let list = app.get(&format!("/v1/servers{q}"), &bob).await;
        assert_eq!(list.body["items"], json!([]), "{q}");
    }

    // Alice's server is exactly as it was: not renamed, not stopped, not deleted.
    let after = app.get(&format!("/v1/servers/{id}"), &alice).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body, before);
    assert_eq!(after.body["status"]["phase"], "running");
    assert_eq!(app.get(&format!("/v1/servers/{id}/logs"), &alice).await.body, logs_before);
    assert_eq!(app.get(&format!("/v1/servers/{id}/plugins"), &alice).await.body, plugins_before);
    assert_eq!(app.runtime.spec(&id).map(|s| s.plugins.len()), Some(1));
    assert_eq!(app.runtime.spec(&id).map(|s| s.name), Some("secret".to_owned()));
    let alice_list = app.get("/v1/servers", &alice).await;
    assert_eq!(alice_list.body["items"].as_array().map(Vec::len), Some(1));
}

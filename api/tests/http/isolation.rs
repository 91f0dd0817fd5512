//! The isolation matrix: tenant B tries every server route on tenant A's
//! server (plugins, backups and restores included) and gets exactly the
//! answer for a server that does not exist; A's server and backups are
//! unchanged afterwards.

use axum::http::{Method, StatusCode};
use respawn_api::Phase;
use serde_json::{Value, json};

use crate::both;
use crate::common::{Backend, TestApp};

both!(other_tenants_get_404_everywhere);

fn routes(id: &str, plugin: &str, backup: &str, restore: &str) -> Vec<(Method, String, Option<Value>)> {
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
        (Method::POST, format!("/v1/servers/{id}/backups"), None),
        (Method::POST, format!("/v1/servers/{id}/backups"), Some(json!({"note": "stolen"}))),
        (Method::GET, format!("/v1/servers/{id}/backups"), None),
        (Method::GET, format!("/v1/servers/{id}/backups?limit=1"), None),
        (Method::GET, format!("/v1/servers/{id}/backups/{backup}"), None),
        (Method::GET, format!("/v1/servers/{id}/backups/{backup}/download"), None),
        (Method::POST, format!("/v1/servers/{id}/backups/{backup}/lock"), None),
        (Method::POST, format!("/v1/servers/{id}/backups/{backup}/unlock"), None),
        (Method::POST, format!("/v1/servers/{id}/backups/{backup}/restore"), None),
        (Method::DELETE, format!("/v1/servers/{id}/backups/{backup}"), None),
        (Method::GET, format!("/v1/servers/{id}/restores/{restore}"), None),
        (Method::GET, format!("/v1/servers/{id}/backup-policy"), None),
        (Method::PUT, format!("/v1/servers/{id}/backup-policy"), Some(json!({"keep_last": 1}))),
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
    std::fs::write(crate::backups::data_dir(&app, &id).join("level.dat"), b"alice's world").expect("world");
    let backup = crate::backups::backup(&app, &alice, &id).await;
    assert_eq!(backup["status"], "succeeded", "{backup}");
    let backup_id = backup["id"].as_str().expect("backup id").to_owned();
    let restore = crate::backups::restore(&app, &alice, &id, &backup_id).await;
    assert_eq!(restore["status"], "succeeded", "{restore}");
    let restore_id = restore["id"].as_str().expect("restore id").to_owned();
    app.runtime.set_status(&id, Phase::Running, 4);
    app.runtime.push_log(&id, 1, "alice's private console line");
    let backups_before = app.get(&format!("/v1/servers/{id}/backups"), &alice).await.body;
    let console_before = app.runtime.console_commands(&id);
    let before = app.get(&format!("/v1/servers/{id}"), &alice).await.body;
    let logs_before = app.get(&format!("/v1/servers/{id}/logs"), &alice).await.body;
    let plugins_before = app.get(&format!("/v1/servers/{id}/plugins"), &alice).await.body;

    // A made-up id with the same shape: Bob cannot tell the two apart.
    let ghost = format!("srv_{}", "0".repeat(id.len() - 4));
    let mine = routes(&id, &plugin, &backup_id, &restore_id);
    let ghosts = routes(&ghost, &plugin, &backup_id, &restore_id);
    for ((method, path, body), (_, ghost_path, _)) in mine.into_iter().zip(ghosts) {
        let on_alice = app.call(method.clone(), &path, Some(&bob), body.clone()).await;
        let on_ghost = app.call(method.clone(), &ghost_path, Some(&bob), body).await;
        assert_eq!(on_alice.status, StatusCode::NOT_FOUND, "{method} {path}: {}", on_alice.body);
        assert_eq!(on_alice.body, on_ghost.body, "{method} {path}: same answer as a missing server");
        assert_eq!(on_alice.error().0, "not_found");
        assert!(!on_alice.body.to_string().contains("secret"), "{method} {path} leaks");
    }
    // Alice's backup and restore ids under Bob's own server: not found,
    // exactly like ids that never existed.
    let plan_b = app.plan("bobs").await;
    let bobs = app.server(&bob, &plan_b, "mine", "mine.bob.example").await["id"].as_str().expect("id").to_owned();
    let fake_backup = format!("bkp_{}", "0".repeat(backup_id.len() - 4));
    let fake_restore = format!("rst_{}", "0".repeat(restore_id.len() - 4));
    for ((method, path, body), (_, fake_path, _)) in routes(&bobs, &plugin, &backup_id, &restore_id)
        .into_iter()
        .zip(routes(&bobs, &plugin, &fake_backup, &fake_restore))
        .filter(|((_, path, _), _)| path.contains(&backup_id) || path.contains(&restore_id))
    {
        let on_alice = app.call(method.clone(), &path, Some(&bob), body.clone()).await;
        let on_fake = app.call(method.clone(), &fake_path, Some(&bob), body).await;
        assert_eq!(on_alice.status, StatusCode::NOT_FOUND, "{method} {path}: {}", on_alice.body);
        assert_eq!(on_alice.body, on_fake.body, "{method} {path}");
    }
    assert_eq!(app.get(&format!("/v1/servers/{bobs}/backups"), &bob).await.body["items"], json!([]));

    // Bob's list does not show it, with or without a phase filter.
    for q in ["", "?phase=running", "?limit=500"] {
        let list = app.get(&format!("/v1/servers{q}"), &bob).await;
        assert_eq!(list.body["items"].as_array().map(|a| a.iter().all(|s| s["id"] != id.as_str())), Some(true), "{q}");
        assert!(!list.body.to_string().contains("secret"), "{q}");
    }

    // Alice's server is exactly as it was: not renamed, not stopped, not deleted.
    let after = app.get(&format!("/v1/servers/{id}"), &alice).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body, before);
    assert_eq!(after.body["status"]["phase"], "running");
    assert_eq!(app.get(&format!("/v1/servers/{id}/logs"), &alice).await.body, logs_before);
    assert_eq!(app.get(&format!("/v1/servers/{id}/plugins"), &alice).await.body, plugins_before);
    assert_eq!(
        app.get(&format!("/v1/servers/{id}/backups"), &alice).await.body,
        backups_before,
        "no backup taken, locked or deleted"
    );
    assert_eq!(app.runtime.console_commands(&id), console_before, "no console command reached alice's server");
    let (status, _, bytes) =
        app.raw(Method::GET, &format!("/v1/servers/{id}/backups/{backup_id}/download"), &alice).await;
    assert_eq!((status, bytes.is_empty()), (StatusCode::OK, false));
    assert_eq!(app.runtime.spec(&id).map(|s| s.plugins.len()), Some(1));
    assert_eq!(app.runtime.spec(&id).map(|s| s.name), Some("secret".to_owned()));
    let alice_list = app.get("/v1/servers", &alice).await;
    assert_eq!(alice_list.body["items"].as_array().map(Vec::len), Some(1));
}

//! Plugins: the admin catalogue (validated URLs and checksums) and per-server
//! installs that reach the runtime's spec.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::both;
use crate::common::{ADMIN, Backend, TestApp};

both!(catalogue, catalogue_validation, installs);

pub fn plugin_body(name: &str, version: &str) -> Value {
    json!({
        "name": name,
        "version": version,
        "download_url": format!("https://cdn.example.com/{name}-{version}.jar"),
        "sha256": "AB".repeat(32),
        "minecraft_versions": ["1.21.4", "1.21.5"],
    })
}

async fn catalogue(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let p = app.post("/v1/plugins", ADMIN, plugin_body("EssentialsX", "2.20.1")).await;
    assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
    assert_eq!(p.body["sha256"], "ab".repeat(32), "checksums are stored as lower-case hex");
    assert!(p.body["sha512"].is_null());
    let id = p.str("id");
    let dup = app.post("/v1/plugins", ADMIN, plugin_body("EssentialsX", "2.20.1")).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error(), ("plugin_exists", Some("version")));
    let mut sha512_only = plugin_body("EssentialsX", "2.21.0");
    sha512_only.as_object_mut().map(|o| o.remove("sha256"));
    sha512_only["sha512"] = json!("0f".repeat(64));
    assert_eq!(app.post("/v1/plugins", ADMIN, sha512_only).await.status, StatusCode::CREATED);
    assert_eq!(app.post("/v1/plugins", ADMIN, plugin_body("LuckPerms", "5.4")).await.status, StatusCode::CREATED);

    // Everyone reads; pages and the name filter work.
    let all = app.get("/v1/plugins", &token).await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(3));
    let page = app.get("/v1/plugins?limit=2", &token).await;
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(2));
    let cursor = page.body["next_cursor"].as_str().expect("cursor").to_owned();
    let rest = app.get(&format!("/v1/plugins?limit=2&cursor={cursor}"), &token).await;
    assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(1));
    assert!(rest.body["next_cursor"].is_null());
    let named = app.get("/v1/plugins?name=EssentialsX", &token).await;
    assert_eq!(named.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.get(&format!("/v1/plugins/{id}"), &token).await.body["version"], "2.20.1");
    // Only the admin writes.
    assert_eq!(app.post("/v1/plugins", &token, plugin_body("Evil", "1")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&format!("/v1/plugins/{id}"), &token).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&format!("/v1/plugins/{id}"), ADMIN).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/v1/plugins/{id}"), &token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/v1/plugins/{id}"), ADMIN).await.status, StatusCode::NOT_FOUND);
}

async fn catalogue_validation(b: Backend) {
    let app = TestApp::new(b).await;
    let cases = [
        ("download_url", json!("http://cdn.example.com/x.jar")),
        ("download_url", json!("https://127.0.0.1/x.jar")),
        ("download_url", json!("https://169.254.169.254/latest/meta-data")),
        ("download_url", json!("https://[::1]/x.jar")),
        ("download_url", json!("file:///etc/passwd")),
        ("sha256", json!("abc")),
        ("sha256", json!("zz".repeat(32))),
        ("name", json!("has space")),
        ("version", json!("")),
        ("minecraft_versions[1]", json!(["1.21", "bad version"])),
        ("color", json!("red")),
    ];
    for (field, value) in cases {
        let mut body = plugin_body("P", "1");
        let key = field.split('[').next().unwrap_or(field);
        body[key] = value.clone();
        let r = app.post("/v1/plugins", ADMIN, body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}={value}: {}", r.body);
        assert_eq!(r.error(), ("invalid_field", Some(field)), "{field}={value}");
    }
    let mut none = plugin_body("P", "1");
    none.as_object_mut().map(|o| o.remove("sha256"));
    let r = app.post("/v1/plugins", ADMIN, none).await;
    assert_eq!(r.error(), ("invalid_field", Some("sha256")));
    let mut bad512 = plugin_body("P", "1");
    bad512["sha512"] = json!("ab".repeat(32));
    assert_eq!(app.post("/v1/plugins", ADMIN, bad512).await.error(), ("invalid_field", Some("sha512")));
}

async fn installs(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let plan = app.plan("small").await;
    let server = app.server(&token, &plan, "s", "s.acme.example").await;
    let sid = server["id"].as_str().expect("id").to_owned();
    let v1 = app.post("/v1/plugins", ADMIN, plugin_body("LuckPerms", "5.4")).await.str("id");
    let v2 = app.post("/v1/plugins", ADMIN, plugin_body("LuckPerms", "5.5")).await.str("id");
    let mut old = plugin_body("OldThing", "1.0");
    old["minecraft_versions"] = json!(["1.8.9"]);
    let old = app.post("/v1/plugins", ADMIN, old).await.str("id");
    let path = format!("/v1/servers/{sid}/plugins");

    let r = app.post(&path, &token, json!({"plugin_id": v1})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["plugin"]["version"], "5.4");
    let spec = app.runtime.spec(&sid).expect("spec");
    assert_eq!(spec.plugins.len(), 1);
    assert_eq!(spec.plugins[0].download_url, "https://cdn.example.com/LuckPerms-5.4.jar");
    assert_eq!(spec.plugins[0].sha256.as_deref(), Some("ab".repeat(32).as_str()));

    // Another version replaces it.
    assert_eq!(app.post(&path, &token, json!({"plugin_id": v2})).await.status, StatusCode::CREATED);
    let list = app.get(&path, &token).await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["plugin"]["id"], json!(v2));
    assert_eq!(app.runtime.spec(&sid).map(|s| s.plugins[0].version.clone()), Some("5.5".to_owned()));

    let r = app.post(&path, &token, json!({"plugin_id": old})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.error(), ("invalid_field", Some("plugin_id")));
    assert!(r.body["error"]["message"].as_str().unwrap_or_default().contains("1.21.4"));
    let r = app.post(&path, &token, json!({"plugin_id": "plg_missing"})).await;
    assert_eq!(r.error(), ("invalid_field", Some("plugin_id")));
    let r = app.post(&path, &token, json!({"plugin": v1})).await;
    assert_eq!(r.error(), ("invalid_field", Some("plugin")));

    // Installed entries cannot leave the catalogue.
    let r = app.delete(&format!("/v1/plugins/{v2}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error().0, "plugin_in_use");

    assert_eq!(app.delete(&format!("{path}/{v2}"), &token).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("{path}/{v2}"), &token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&path, &token).await.body["items"], json!([]));
    assert_eq!(app.runtime.spec(&sid).map(|s| s.plugins.len()), Some(0));

    // Deleting the server removes its installs.
    assert_eq!(app.post(&path, &token, json!({"plugin_id": v1})).await.status, StatusCode::CREATED);
    assert_eq!(app.delete(&format!("/v1/servers/{sid}"), &token).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("/v1/plugins/{v1}"), ADMIN).await.status, StatusCode::NO_CONTENT);
}

//! Plans: admin writes, every token reads, validation, in-use protection.

use axum::http::StatusCode;
use serde_json::json;

use crate::both;
use crate::common::{ADMIN, Backend, TestApp};

both!(plan_crud, plan_validation, plan_in_use_cannot_be_deleted);

async fn plan_crud(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let big = app.plan("big").await;
    let small = app.plan("small").await;
    // Everyone reads, sorted by name.
    let list = app.get("/v1/plans", &token).await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<_> = list.body["items"].as_array().expect("items").iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, vec![json!("big"), json!("small")]);
    let one = app.get(&format!("/v1/plans/{small}"), &token).await;
    assert_eq!(one.body["cpu_millicores"], 1000);
    assert_eq!(one.body["memory_mib"], 2048);
    assert_eq!(one.body["storage_gib"], 10);
    assert_eq!(one.body["max_players"], 20);

    let patched = app.patch(&format!("/v1/plans/{small}"), ADMIN, json!({"max_players": 50, "memory_mib": 4096})).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["max_players"], 50);
    assert_eq!(patched.body["memory_mib"], 4096);
    assert_eq!(patched.body["cpu_millicores"], 1000);
    assert_eq!(app.get(&format!("/v1/plans/{small}"), &token).await.body["max_players"], 50);
    let rename = app.patch(&format!("/v1/plans/{small}"), ADMIN, json!({"name": "big"})).await;
    assert_eq!(rename.status, StatusCode::CONFLICT);
    assert_eq!(rename.error(), ("name_taken", Some("name")));

    assert_eq!(app.delete(&format!("/v1/plans/{big}"), ADMIN).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/v1/plans/{big}"), &token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/v1/plans/{big}"), ADMIN).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.patch("/v1/plans/plan_nope", ADMIN, json!({"max_players": 5})).await.status, StatusCode::NOT_FOUND);
}

async fn plan_validation(b: Backend) {
    let app = TestApp::new(b).await;
    let ok = json!({"name": "p", "cpu_millicores": 1000, "memory_mib": 1024, "storage_gib": 5, "max_players": 10});
    let cases = [
        ("cpu_millicores", json!(10)),
        ("memory_mib", json!(1)),
        ("storage_gib", json!(0)),
        ("max_players", json!(0)),
        ("max_players", json!(-1)),
        ("cpu_millicores", json!("lots")),
        ("name", json!("UPPER")),
    ];
    for (field, value) in cases {
        let mut body = ok.clone();
        body[field] = value.clone();
        let r = app.post("/v1/plans", ADMIN, body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}={value}: {}", r.body);
        assert_eq!(r.error().1, Some(field), "{field}={value}");
    }
    let mut missing = ok.clone();
    missing.as_object_mut().map(|o| o.remove("storage_gib"));
    let r = app.post("/v1/plans", ADMIN, missing).await;
    assert_eq!(r.error(), ("invalid_field", Some("storage_gib")));
    let mut extra = ok.clone();
    extra["gpu"] = json!(1);
    let r = app.post("/v1/plans", ADMIN, extra).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.error(), ("invalid_field", Some("gpu")));
    let id = app.plan("fine").await;
    let r = app.patch(&format!("/v1/plans/{id}"), ADMIN, json!({"storage_gib": 0})).await;
    assert_eq!(r.error(), ("invalid_field", Some("storage_gib")));
}

async fn plan_in_use_cannot_be_deleted(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let plan = app.plan("small").await;
    let server = app.server(&token, &plan, "lobby", "lobby.acme.example").await;
    // Resizing the plan re-applies its servers to the runtime.
    let id = server["id"].as_str().expect("id");
    assert_eq!(app.runtime.spec(id).map(|s| s.memory_mib), Some(2048));
    let r = app.patch(&format!("/v1/plans/{plan}"), ADMIN, json!({"memory_mib": 8192})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.runtime.spec(id).map(|s| s.memory_mib), Some(8192));
    let r = app.delete(&format!("/v1/plans/{plan}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error().0, "plan_in_use");
    assert_eq!(app.delete(&format!("/v1/servers/{id}"), &token).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("/v1/plans/{plan}"), ADMIN).await.status, StatusCode::NO_CONTENT);
}

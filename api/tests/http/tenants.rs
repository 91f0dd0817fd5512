//! Tenants and tokens: admin-only, tokens shown once and stored hashed.

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;

use crate::both;
use crate::common::{ADMIN, Backend, TestApp};

both!(create_list_get, tokens_shown_once_stored_hashed, revoked_token_stops_working, admin_routes_refuse_tenants);

async fn create_list_get(b: Backend) {
    let app = TestApp::new(b).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = app.post("/v1/tenants", ADMIN, json!({"name": format!("acme-{i}")})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(r.str("id").starts_with("ten_"));
        ids.push(r.str("id"));
    }
    let dup = app.post("/v1/tenants", ADMIN, json!({"name": "acme-0"})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error(), ("name_taken", Some("name")));
    let bad = app.post("/v1/tenants", ADMIN, json!({"name": "Not Valid"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.error(), ("invalid_field", Some("name")));

    // Pages of 2 walk all five in creation order.
    let mut seen = Vec::new();
    let mut path = "/v1/tenants?limit=2".to_owned();
    loop {
        let page = app.get(&path, ADMIN).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for t in page.body["items"].as_array().expect("items") {
            seen.push(t["id"].as_str().expect("id").to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/tenants?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let one = app.get(&format!("/v1/tenants/{}", ids[2]), ADMIN).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["name"], "acme-2");
    let missing = app.get("/v1/tenants/ten_nope", ADMIN).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error().0, "not_found");
    let no_tenant_token = app.post("/v1/tenants/ten_nope/tokens", ADMIN, json!({"name": "x"})).await;
    assert_eq!(no_tenant_token.status, StatusCode::NOT_FOUND);
}

async fn tokens_shown_once_stored_hashed(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant, token) = app.tenant("acme").await;
    assert!(token.starts_with("rsp_") && token.len() >= 4 + 43, "{token}");
    // The token works.
    assert_eq!(app.get("/v1/servers", &token).await.status, StatusCode::OK);
    // It is never shown again: not in the list, not in a second token.
    let list = app.get(&format!("/v1/tenants/{tenant}/tokens"), ADMIN).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    assert!(!list.body.to_string().contains(&token));
    assert!(list.body["items"][0].get("token").is_none());
    let second = app.post(&format!("/v1/tenants/{tenant}/tokens"), ADMIN, json!({"name": "ci"})).await;
    assert_ne!(second.str("token"), token);

    // The database holds only the SHA-256 of it.
    let rows = sqlx::query("SELECT id, tenant_id, name, token_hash FROM api_tokens")
        .fetch_all(&app.state.db.pool)
        .await
        .expect("select");
    assert_eq!(rows.len(), 2);
    let expected_hash = respawn_api::auth::hash_token(&token);
    let mut found = false;
    for row in &rows {
        for col in ["id", "tenant_id", "name", "token_hash"] {
            let v: String = row.try_get(col).expect("column");
            assert!(!v.contains(&token), "column {col} holds the token");
            assert!(!v.contains(&token["rsp_".len()..]), "column {col} holds the token's secret part");
        }
        let hash: String = row.try_get("token_hash").expect("hash");
        found |= hash == expected_hash;
    }
    assert!(found, "the stored hash is the token's SHA-256");
}

async fn revoked_token_stops_working(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant, token) = app.tenant("acme").await;
    let list = app.get(&format!("/v1/tenants/{tenant}/tokens"), ADMIN).await;
    let token_id = list.body["items"][0]["id"].as_str().expect("id").to_owned();
    let r = app.delete(&format!("/v1/tenants/{tenant}/tokens/{token_id}"), ADMIN).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.get("/v1/servers", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error().0, "unauthorized");
    let again = app.delete(&format!("/v1/tenants/{tenant}/tokens/{token_id}"), ADMIN).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

async fn admin_routes_refuse_tenants(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant, token) = app.tenant("acme").await;
    let plan = app.plan("small").await;
    let tries = [
        (Method::POST, "/v1/tenants".to_owned(), Some(json!({"name": "evil"}))),
        (Method::GET, "/v1/tenants".to_owned(), None),
        (Method::GET, format!("/v1/tenants/{tenant}"), None),
        (Method::POST, format!("/v1/tenants/{tenant}/tokens"), Some(json!({"name": "more"}))),
        (Method::GET, format!("/v1/tenants/{tenant}/tokens"), None),
        (Method::DELETE, format!("/v1/tenants/{tenant}/tokens/tok_x"), None),
        (
            Method::POST,
            "/v1/plans".to_owned(),
            Some(json!({"name": "x", "cpu_millicores": 1000, "memory_mib": 1024, "storage_gib": 1, "max_players": 1})),
        ),
        (Method::PATCH, format!("/v1/plans/{plan}"), Some(json!({"max_players": 99}))),
        (Method::DELETE, format!("/v1/plans/{plan}"), None),
    ];
    for (method, path, body) in tries {
        let r = app.call(method.clone(), &path, Some(&token), body.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}: {}", r.body);
        assert_eq!(r.error().0, "forbidden");
        let r = app.call(method.clone(), &path, None, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
    }
    // Servers are a tenant's: the admin token is not one.
    let r = app.get("/v1/servers", ADMIN).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Nothing changed.
    assert_eq!(app.get(&format!("/v1/plans/{plan}"), ADMIN).await.body["max_players"], 20);
    assert_eq!(app.get("/v1/tenants", ADMIN).await.body["items"].as_array().map(Vec::len), Some(1));
}

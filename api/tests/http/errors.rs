//! The error contract: JSON errors everywhere, right status codes, bodies
//! that name the field, no SQL in 500s, and the failed-token rate limit.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::both;
use crate::common::{ADMIN, Backend, TestApp, server_body};

both!(
    malformed_bodies,
    auth_failures_are_json,
    bad_tokens_are_rate_limited_per_ip,
    database_errors_do_not_leak,
    unknown_routes_and_methods,
);

fn raw(method: Method, path: &str, token: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {token}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(body.into()).expect("request")
}

async fn malformed_bodies(b: Backend) {
    let app = TestApp::with_config(b, |c| c.max_body_bytes = 4096).await;
    let (_, token) = app.tenant("acme").await;
    let r = app.send(raw(Method::POST, "/v1/servers", &token, Some("application/json"), "{\"name\": ")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error().0, "invalid_json");
    let r = app.send(raw(Method::POST, "/v1/servers", &token, Some("application/json"), "[1, 2]")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.send(raw(Method::POST, "/v1/servers", &token, Some("text/plain"), "{}")).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.error().0, "unsupported_media_type");
    let r = app.send(raw(Method::POST, "/v1/servers", &token, None, "{}")).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app.send(raw(Method::POST, "/v1/servers", &token, Some("application/json; charset=utf-8"), "{}")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "charset is fine: {}", r.body);
    let mut big = server_body("plan_x", "big", &["big.acme.example"]);
    big["properties"]["motd"] = json!("x".repeat(8000));
    let r = app.send(raw(Method::POST, "/v1/servers", &token, Some("application/json"), big.to_string())).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error().0, "payload_too_large");
    // Every error has the same shape.
    let e = r.body["error"].as_object().expect("error object");
    assert!(e.contains_key("code") && e.contains_key("message"));
}

async fn auth_failures_are_json(b: Backend) {
    let app = TestApp::new(b).await;
    let r = app.call(Method::GET, "/v1/servers", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error().0, "unauthorized");
    let r = app.get("/v1/plans", "rsp_not-a-real-token").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.get("/v1/plans", "garbage").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let req = Request::builder().uri("/v1/plans").header("authorization", format!("Basic {ADMIN}"));
    let r = app.send(req.body(Body::empty()).expect("request")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "only Bearer");
    // Unauthenticated garbage is refused before the body is looked at.
    let r = app.send(raw(Method::POST, "/v1/servers", "nope", Some("application/json"), "{not json")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

fn from_ip(ip: [u8; 4], token: &str) -> Request<Body> {
    let mut req = Request::builder()
        .uri("/v1/plans")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 5000))));
    req
}

async fn bad_tokens_are_rate_limited_per_ip(b: Backend) {
    let app = TestApp::with_config(b, |c| {
        c.auth_failure_burst = 3;
        c.auth_failures_per_minute = 1;
    })
    .await;
    let (_, token) = app.tenant("acme").await;
    let attacker = [203, 0, 113, 7];
    for i in 0..3 {
        let r = app.send(from_ip(attacker, &format!("rsp_guess{i}"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let r = app.send(from_ip(attacker, "rsp_guess3")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error().0, "rate_limited");
    let retry: u64 =
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(retry >= 1, "Retry-After in seconds");
    // While blocked, even a right guess is refused: the limit must not tell
    // a guesser when it has found a token.
    assert_eq!(app.send(from_ip(attacker, &token)).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.send(from_ip(attacker, ADMIN)).await.status, StatusCode::TOO_MANY_REQUESTS);
    // Other clients are not affected.
    assert_eq!(app.send(from_ip([198, 51, 100, 1], &token)).await.status, StatusCode::OK);
    assert_eq!(app.send(from_ip([198, 51, 100, 1], "rsp_typo")).await.status, StatusCode::UNAUTHORIZED);
    // Requests without a token are not guesses and do not count.
    for _ in 0..5 {
        let mut req = Request::builder().uri("/v1/plans").body(Body::empty()).expect("request");
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([198, 51, 100, 2], 1))));
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.send(from_ip([198, 51, 100, 2], &token)).await.status, StatusCode::OK);
}

async fn database_errors_do_not_leak(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    // Break the schema under the running app.
    sqlx::query("DROP TABLE server_hostnames").execute(&app.state.db.pool).await.expect("drop");
    let r = app.get("/v1/servers", &token).await;
    assert_eq!(r.status, StatusCode::OK, "no server, no hostname query: {}", r.body);
    let plan = app.plan("small").await;
    let r = app.post("/v1/servers", &token, server_body(&plan, "s", &["s.acme.example"])).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(r.body, json!({"error": {"code": "internal", "message": "internal error"}}));
    app.state.db.pool.close().await;
    let r = app.get("/v1/plans", ADMIN).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body, json!({"error": {"code": "internal", "message": "internal error"}}));
    let r = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

async fn unknown_routes_and_methods(b: Backend) {
    let app = TestApp::new(b).await;
    let r = app.get("/v1/nothing", ADMIN).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error().0, "not_found");
    let r = app.call(Method::PUT, "/v1/plans", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error().0, "method_not_allowed");
}

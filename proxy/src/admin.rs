//! The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::server::Proxy;

pub fn router(proxy: Proxy) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(proxy)
}

async fn metrics(State(proxy): State<Proxy>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], proxy.metrics().render())
}

async fn ready(State(proxy): State<Proxy>) -> impl IntoResponse {
    if proxy.is_ready() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

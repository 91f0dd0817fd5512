//! Prometheus metrics for the API: requests by route template and status,
//! and latency; backups and restores by outcome, backup duration and bytes. Route templates (`/v1/servers/{id}`), never raw paths, so ids
//! do not explode the label set.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::AppState;

pub struct ApiMetrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    backups: IntCounterVec,
    backup_duration: Histogram,
    backup_bytes: IntCounter,
    restores: IntCounterVec,
}

impl ApiMetrics {
    pub fn new() -> anyhow::Result<ApiMetrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("respawn_api_requests_total", "API requests by method, route template and status"),
            &["method", "route", "status"],
        )?;
        // Buckets from 1 ms (a cached read) to 10 s (a slow database).
        let duration = HistogramVec::new(
            HistogramOpts::new("respawn_api_request_duration_seconds", "API request latency by method and route")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["method", "route"],
        )?;
        let backups = IntCounterVec::new(
            Opts::new("respawn_api_backups_total", "Finished backups by outcome (succeeded, failed)"),
            &["outcome"],
        )?;
        // From a small world on a fast disk (0.1 s) to a large one (an hour).
        let backup_duration = Histogram::with_opts(
            HistogramOpts::new("respawn_api_backup_duration_seconds", "Time from a backup's start to its end")
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
        )?;
        let backup_bytes =
            IntCounter::new("respawn_api_backup_bytes_total", "Compressed bytes of succeeded backups, stored")?;
        let restores = IntCounterVec::new(
            Opts::new("respawn_api_restores_total", "Finished restores by outcome (succeeded, failed)"),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(backups.clone()))?;
        registry.register(Box::new(backup_duration.clone()))?;
        registry.register(Box::new(backup_bytes.clone()))?;
        registry.register(Box::new(restores.clone()))?;
        // Show both outcomes from the start, so a rate() has a series to work on.
        for outcome in ["succeeded", "failed"] {
            backups.with_label_values(&[outcome]);
            restores.with_label_values(&[outcome]);
        }
        Ok(ApiMetrics { registry, requests, duration, backups, backup_duration, backup_bytes, restores })
    }

    /// A backup ended: `outcome` is `succeeded` or `failed`.
    pub fn backup_finished(&self, outcome: &str, seconds: f64, bytes: u64) {
        self.backups.with_label_values(&[outcome]).inc();
        self.backup_duration.observe(seconds);
        self.backup_bytes.inc_by(bytes);
    }

    /// A restore ended: `outcome` is `succeeded` or `failed`.
    pub fn restore_finished(&self, outcome: &str) {
        self.restores.with_label_values(&[outcome]).inc();
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Middleware: one span per request (method, route) and the two metrics.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let span = tracing::info_span!("request", %method, %route);
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let status = response.status();
    state.metrics.requests.with_label_values(&[method.as_str(), route.as_str(), status.as_str()]).inc();
    state
        .metrics
        .duration
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

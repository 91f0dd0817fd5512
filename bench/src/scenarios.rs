//! The scenarios: what load each one puts through a target and which figures
//! it reports. Every loop stops at a count and at a deadline, whichever
//! comes first, and every network operation has its own timeout.
//!
//! One file for every scenario's load loop, so they share one shape (count
//! and deadline bounds, error tallies); past 500 lines for that reason.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::{
    task::JoinSet,
    time::{Instant, sleep, sleep_until, timeout},
};

use crate::{
    backend::{Backend, Session},
    client::{self, HOST, Requests},
    report::Figure,
    targets::{RespawnOptions, Running, WAKE_HOST, http_get},
};

/// Longest one status ping or login may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// More failed operations than this share fails the scenario for the target.
const MAX_ERROR_SHARE: f64 = 0.01;
/// Sessions opened at once while filling the idle scenario.
const IDLE_OPENERS: usize = 64;
/// Idle sessions opened and closed before the baseline RSS, so one-time
/// allocations (worker threads, first buffers) are not charged per session.
const IDLE_WARM_SESSIONS: usize = 128;
/// Routes in the routes-100k scenario, and how many of them the load spreads over.
pub const MANY_ROUTES: usize = 100_000;
const SPREAD_HOSTS: usize = 1_000;
/// Bytes one bulk run may move in total (a count bound next to the deadline).
const BULK_MAX_BYTES: u64 = 1 << 40;
/// Logins sent at once to the sleeping server: each is held and records its
/// own Login Start → wake signal time.
const WAKE_LOGINS: usize = 32;
/// A held login must get in within the client's own patience (~30 s).
const WAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Status pings/s with Respawn's status cache hit (TTL 1 h).
    StatusCached,
    /// Status pings/s with the cache bypassed (TTL 0): every ping reaches the backend.
    StatusRelayed,
    /// Login connects/s: handshake + Login Start → login success → close.
    Login,
    /// Logins the server refuses: handshake + Login Start → the server's own
    /// Disconnect, then it closes (a full server, a whitelist, a ban). The
    /// client checks that nothing follows the server's packet.
    LoginRefused,
    /// Relay throughput, both directions at once, over a few long sessions
    /// (offline mode: the server → client stream is plain Minecraft frames).
    Bulk,
    /// The same with an online-mode login (an Encryption Request first), the
    /// usual case for a public server: from there on the stream is opaque.
    BulkOnline,
    /// New-connection latency at concurrency 1: connect → first backend byte.
    Latency,
    /// N idle relayed sessions: proxy RSS per session, and latency with them open.
    Idle,
    /// Login connects/s with 100,000 routes in Respawn's table (Respawn only).
    #[value(name = "routes-100k")]
    #[serde(rename = "routes-100k")]
    Routes100k,
    /// Logins to a sleeping server: Login Start → wake signal, and getting in
    /// through the wake (Respawn's `up` with its local runtime only).
    Wake,
    /// MinecraftServers against the fake API server: time to reconcile all,
    /// the controller's memory, wake → scale request (Respawn only; see controller.rs).
    Controller,
}

impl Scenario {
    pub const ALL: [Scenario; 11] = [
        Scenario::StatusCached,
        Scenario::StatusRelayed,
        Scenario::Login,
        Scenario::LoginRefused,
        Scenario::Bulk,
        Scenario::BulkOnline,
        Scenario::Latency,
        Scenario::Idle,
        Scenario::Routes100k,
        Scenario::Wake,
        Scenario::Controller,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::StatusCached => "status-cached",
            Scenario::StatusRelayed => "status-relayed",
            Scenario::Login => "login",
            Scenario::LoginRefused => "login-refused",
            Scenario::Bulk => "bulk",
            Scenario::BulkOnline => "bulk-online",
            Scenario::Latency => "latency",
            Scenario::Idle => "idle",
            Scenario::Routes100k => "routes-100k",
            Scenario::Wake => "wake",
            Scenario::Controller => "controller",
        }
    }

    /// The Respawn config this scenario needs.
    pub fn respawn_options(self) -> RespawnOptions {
        match self {
            Scenario::StatusCached => RespawnOptions { status_cache_ttl_ms: 3_600_000, ..Default::default() },
            Scenario::Routes100k => RespawnOptions { extra_routes: MANY_ROUTES, ..Default::default() },
            Scenario::Wake => RespawnOptions { wake_server: true, ..Default::default() },
            _ => RespawnOptions::default(),
        }
    }

    /// Only Respawn routes by hostname and wakes servers: the others would
    /// measure the plain login again.
    pub fn respawn_only(self) -> bool {
        matches!(self, Scenario::Routes100k | Scenario::Wake | Scenario::Controller)
    }
}

/// How long and how hard each scenario runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub warmup: Duration,
    pub duration: Duration,
    pub concurrency: usize,
    pub bulk_connections: usize,
    pub idle_sessions: usize,
    pub latency_samples: usize,
    /// Operations one rate run may start (a count bound next to the deadline).
    pub max_ops: u64,
}

/// What one scenario measured on one target.
#[derive(Debug, Default)]
pub struct Measured {
    pub figures: Vec<(Figure, f64)>,
    pub details: Map<String, Value>,
}

pub async fn run(scenario: Scenario, target: &mut Running, backend: &Backend, s: &Settings) -> Result<Measured> {
    let addr = target.addr;
    let measured = match scenario {
        Scenario::StatusCached => rate_figure(Figure::StatusCached, Op::Status, addr, s).await?,
        Scenario::StatusRelayed => rate_figure(Figure::StatusRelayed, Op::Status, addr, s).await?,
        Scenario::Login => rate_figure(Figure::LoginRate, Op::Login, addr, s).await?,
        Scenario::LoginRefused => rate_figure(Figure::LoginRefusedRate, Op::LoginRefused, addr, s).await?,
        Scenario::Routes100k => rate_figure(Figure::Routes100k, Op::LoginSpread, addr, s).await?,
        Scenario::Bulk => bulk(addr, backend, s, Session::Bulk, [Figure::BulkMbps, Figure::BulkSlowerMbps]).await?,
        Scenario::BulkOnline => {
            bulk(addr, backend, s, Session::BulkOnline, [Figure::BulkOnlineMbps, Figure::BulkOnlineSlowerMbps]).await?
        }
        Scenario::Latency => {
            let lat = latency(addr, s.latency_samples, s.duration.max(Duration::from_secs(1)) * 2).await?;
            let mut m = Measured::default();
            m.figures.push((Figure::LatencyP50, lat.micros(50.0)));
            m.figures.push((Figure::LatencyP99, lat.micros(99.0)));
            m.figures.push((Figure::LatencyP999, lat.micros(99.9)));
            m.details = lat.details();
            m
        }
        Scenario::Idle => idle(target, s).await?,
        Scenario::Wake => wake(target).await?,
        // Needs no proxy: main.rs runs it through controller::run.
        Scenario::Controller => bail!("the controller scenario runs without a proxy target"),
    };
    target.check_alive()?;
    Ok(measured)
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Status,
    Login,
    /// A login the server refuses with its own Disconnect.
    LoginRefused,
    /// Logins to hostnames spread over the many-routes table.
    LoginSpread,
}

#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn all_done<T: 'static>(tasks: &mut JoinSet<T>) {
    while tasks.join_next().await.is_some() {}
}

/// `concurrency` tasks repeat `op` back to back; the rate is what completed
/// between the end of the warm-up and the end of the window.
async fn rate_figure(figure: Figure, op: Op, addr: SocketAddr, s: &Settings) -> Result<Measured> {
    let tally = Arc::new(Tally::default());
    let requests: Arc<Vec<Requests>> = Arc::new(match op {
        Op::LoginSpread => {
            (0..SPREAD_HOSTS).map(|i| Requests::new(&format!("s{}.{HOST}", i * (MANY_ROUTES / SPREAD_HOSTS)))).collect()
        }
        _ => vec![Requests::new(HOST)],
    });
    let mut tasks = JoinSet::new();
    for worker in 0..s.concurrency {
        let tally = tally.clone();
        let requests = requests.clone();
        let max_ops = s.max_ops;
        tasks.spawn(async move {
            let mut buf = BytesMut::with_capacity(1024);
            let mut n = worker;
            while !tally.stop.load(Ordering::Relaxed) && tally.attempts.fetch_add(1, Ordering::Relaxed) < max_ops {
                n = (n + 7) % requests.len();
                let req = &requests[n];
                let one = async {
                    match op {
                        Op::Status => client::status_ping(addr, req, &mut buf).await,
                        Op::Login | Op::LoginSpread => {
                            client::login(addr, req, Session::Close, &mut buf).await.map(drop)
                        }
                        Op::LoginRefused => client::refused_login(addr, req, &mut buf).await,
                    }
                };
                match timeout(OP_TIMEOUT, one).await {
                    Ok(Ok(())) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => tally.error(format!("{e:#}")),
                    Err(_) => tally.error("timed out"),
                }
            }
        });
    }
    let started = Instant::now();
    tokio::select! {
        _ = sleep(s.warmup) => {}
        _ = all_done(&mut tasks) => {}
    }
    let (ok0, t0) = (tally.ok.load(Ordering::Relaxed), Instant::now());
    tokio::select! {
        _ = sleep_until(t0 + s.duration) => {}
        _ = all_done(&mut tasks) => {}
    }
    let (ok1, t1) = (tally.ok.load(Ordering::Relaxed), Instant::now());
    tally.stop.store(true, Ordering::Relaxed);
    if timeout(OP_TIMEOUT + Duration::from_secs(1), all_done(&mut tasks)).await.is_err() {
        tasks.abort_all();
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let window = ok1 - ok0;
    let seconds = (t1 - t0).as_secs_f64();
    let error_share = errors as f64 / (ok + errors).max(1) as f64;
    if window == 0 {
        bail!(
            "no operation completed in the window ({errors} errors; first: {})",
            tally.first_error().unwrap_or_default()
        );
    }
    if error_share > MAX_ERROR_SHARE {
        bail!("{errors} of {} operations failed (first: {})", ok + errors, tally.first_error().unwrap_or_default());
    }
    let mut m = Measured::default();
    m.figures.push((figure, window as f64 / seconds));
    m.details = json!({
        "completed_in_window": window,
        "window_seconds": seconds,
        "completed_total": ok,
        "errors": errors,
        "first_error": tally.first_error(),
        "concurrency": s.concurrency,
        "elapsed_seconds": started.elapsed().as_secs_f64(),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    Ok(m)
}

/// A few long sessions upload and download at once; MB/s is bytes delivered
/// (upload counted by the backend, download by the clients) per second.
async fn bulk(
    addr: SocketAddr,
    backend: &Backend,
    s: &Settings,
    session: Session,
    figures: [Figure; 2],
) -> Result<Measured> {
    let req = Requests::new(HOST);
    let mut buf = BytesMut::new();
    let mut streams = Vec::with_capacity(s.bulk_connections);
    for _ in 0..s.bulk_connections {
        streams.push(timeout(OP_TIMEOUT, client::login(addr, &req, session, &mut buf)).await??.stream);
    }
    let down = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + s.warmup + s.duration + Duration::from_millis(200);
    let mut tasks = JoinSet::new();
    for stream in streams {
        let down = down.clone();
        tasks.spawn(async move { client::bulk(stream, end, &down, BULK_MAX_BYTES).await });
    }
    let up_counter = &backend.counters.bulk_received;
    sleep(s.warmup).await;
    let (up0, down0, t0) = (up_counter.load(Ordering::Relaxed), down.load(Ordering::Relaxed), Instant::now());
    sleep(s.duration).await;
    let (up1, down1, t1) = (up_counter.load(Ordering::Relaxed), down.load(Ordering::Relaxed), Instant::now());
    if timeout(Duration::from_secs(5), all_done(&mut tasks)).await.is_err() {
        tasks.abort_all();
    }
    let seconds = (t1 - t0).as_secs_f64();
    let up = (up1 - up0) as f64 / seconds / 1e6;
    let dn = (down1 - down0) as f64 / seconds / 1e6;
    if up <= 0.0 || dn <= 0.0 {
        bail!("a direction moved no bytes (up {up:.1} MB/s, down {dn:.1} MB/s)");
    }
    let mut m = Measured::default();
    m.figures.push((figures[0], up + dn));
    // A relay that favours one direction shows here, not in the sum.
    m.figures.push((figures[1], up.min(dn)));
    m.details = json!({
        "upload_mb_per_s": up,
        "download_mb_per_s": dn,
        "connections": s.bulk_connections,
        "window_seconds": seconds,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    Ok(m)
}

/// Latency samples in nanoseconds.
pub struct Latency {
    hist: Histogram<u64>,
    errors: u64,
}

impl Latency {
    pub fn micros(&self, percentile: f64) -> f64 {
        self.hist.value_at_percentile(percentile) as f64 / 1_000.0
    }

    fn details(&self) -> Map<String, Value> {
        json!({
            "samples": self.hist.len(),
            "errors": self.errors,
            "min_us": self.hist.min() as f64 / 1e3,
            "mean_us": self.hist.mean() / 1e3,
            "max_us": self.hist.max() as f64 / 1e3,
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }
}

/// Logins one at a time: connect → first byte of the backend's reply.
async fn latency(addr: SocketAddr, samples: usize, max_time: Duration) -> Result<Latency> {
    // The first logins pay for lazy setup (allocator arenas, caches): not the steady state.
    let warm = (samples / 20).clamp(10, 200);
    let req = Requests::new(HOST);
    let mut buf = BytesMut::with_capacity(1024);
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let mut errors = 0u64;
    let mut first_error = None;
    let deadline = Instant::now() + max_time;
    for i in 0..warm + samples {
        if Instant::now() >= deadline {
            break;
        }
        match timeout(OP_TIMEOUT, client::login(addr, &req, Session::Close, &mut buf)).await {
            Ok(Ok(logged)) => {
                if i >= warm {
                    hist.saturating_record(logged.first_byte.as_nanos() as u64);
                }
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert_with(|| "timed out".to_owned());
            }
        }
    }
    if hist.is_empty() {
        bail!("no latency sample ({errors} errors; first: {})", first_error.unwrap_or_default());
    }
    if errors as f64 > hist.len() as f64 * MAX_ERROR_SHARE {
        bail!("{errors} of {} logins failed (first: {})", hist.len() + errors, first_error.unwrap_or_default());
    }
    Ok(Latency { hist, errors })
}

/// Opens `n` idle relayed sessions, `IDLE_OPENERS` at a time, within `within`.
async fn open_idle(addr: SocketAddr, n: usize, within: Duration) -> Result<Vec<tokio::net::TcpStream>> {
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + within;
    let mut tasks = JoinSet::new();
    for _ in 0..IDLE_OPENERS.min(n) {
        let next = next.clone();
        let tally = tally.clone();
        tasks.spawn(async move {
            let req = Requests::new(HOST);
            let mut buf = BytesMut::with_capacity(256);
            let mut held = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
                match timeout(OP_TIMEOUT, client::login(addr, &req, Session::Idle, &mut buf)).await {
                    Ok(Ok(logged)) => held.push(logged.stream),
                    Ok(Err(e)) => tally.error(format!("{e:#}")),
                    Err(_) => tally.error("timed out"),
                }
            }
            held
        });
    }
    let mut sessions = Vec::with_capacity(n);
    while let Some(held) = tasks.join_next().await {
        sessions.extend(held?);
    }
    if sessions.len() < n {
        bail!(
            "opened {} of {n} idle sessions ({} errors; first: {})",
            sessions.len(),
            tally.errors.load(Ordering::Relaxed),
            tally.first_error().unwrap_or_else(|| "out of time".into())
        );
    }
    Ok(sessions)
}

async fn idle(target: &mut Running, s: &Settings) -> Result<Measured> {
    let addr = target.addr;
    let n = s.idle_sessions;
    let open_time = Duration::from_secs(60);
    drop(open_idle(addr, IDLE_WARM_SESSIONS.min(n), open_time).await?);
    // Let the warm-up sessions' teardown finish before timing anything.
    sleep(Duration::from_millis(300)).await;
    let probe_samples = (s.latency_samples / 4).clamp(200, 2_000);
    let before = latency(addr, probe_samples, Duration::from_secs(3)).await?;
    sleep(Duration::from_millis(100)).await;
    let rss_before = target.rss_kib();
    let opened = Instant::now();
    let sessions = open_idle(addr, n, open_time).await?;
    let open_seconds = opened.elapsed().as_secs_f64();
    // Let the proxy finish the work each accept started (tasks, buffers) before reading RSS.
    sleep(Duration::from_millis(500)).await;
    let rss_after = target.rss_kib();
    target.check_alive()?;
    let lat = latency(addr, probe_samples, Duration::from_secs(3)).await?;
    let mut m = Measured::default();
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        m.figures.push((Figure::IdleKib, after.saturating_sub(before) as f64 / n as f64));
    }
    // "Flat latency" compares these two (see `Figure::IdleP99Growth`).
    m.figures.push((Figure::IdleP99Before, before.micros(99.0)));
    m.figures.push((Figure::IdleP99, lat.micros(99.0)));
    m.details = json!({
        "sessions": n,
        "open_seconds": open_seconds,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "latency_with_sessions_open": lat.details(),
        "p50_us_with_sessions_open": lat.micros(50.0),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    drop(sessions);
    // Give the backend tasks and the target a moment to see the closes.
    sleep(Duration::from_millis(200)).await;
    Ok(m)
}

/// `WAKE_LOGINS` players log in to a sleeping server at once. Every one must
/// get the backend's login success through the wake, without reconnecting;
/// Respawn's `respawn_proxy_wake_signal_seconds` histogram gives Login Start
/// → wake signal for each.
async fn wake(target: &mut Running) -> Result<Measured> {
    let admin = target.admin.context("the wake scenario needs a Respawn the bench spawned (for /metrics)")?;
    let addr = target.addr;
    let req = Requests::new(WAKE_HOST);
    let mut tasks = JoinSet::new();
    for _ in 0..WAKE_LOGINS {
        let req = req.clone();
        tasks.spawn(async move {
            let mut buf = BytesMut::new();
            let started = Instant::now();
            timeout(WAKE_TIMEOUT, client::login(addr, &req, Session::Close, &mut buf))
                .await
                .map_err(|_| anyhow!("held login timed out after {WAKE_TIMEOUT:?}"))?
                .map(|_| started.elapsed())
        });
    }
    let mut joined = Vec::with_capacity(WAKE_LOGINS);
    while let Some(result) = tasks.join_next().await {
        joined.push(result?.context("a player held through the wake did not get in")?);
    }
    joined.sort();
    let metrics = http_get(admin, "/metrics").await?;
    let signal = Buckets::parse(&metrics, "respawn_proxy_wake_signal_seconds")
        .context("no respawn_proxy_wake_signal_seconds histogram in /metrics")?;
    if signal.count == 0 {
        bail!("no wake signal was recorded for {WAKE_LOGINS} logins to a sleeping server");
    }
    let mut m = Measured::default();
    m.figures.push((Figure::WakeSignalP99, signal.percentile_bound(0.99) * 1e6));
    m.figures.push((Figure::WakeSignalMean, signal.sum / signal.count as f64 * 1e6));
    m.figures.push((Figure::WakeJoin, joined[joined.len() / 2].as_secs_f64() * 1e3));
    m.details = json!({
        "logins": WAKE_LOGINS,
        "wake_signals_recorded": signal.count,
        "join_first_ms": joined[0].as_secs_f64() * 1e3,
        "join_last_ms": joined[joined.len() - 1].as_secs_f64() * 1e3,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    Ok(m)
}

/// A Prometheus histogram read from the text format.
#[derive(Debug, PartialEq)]
struct Buckets {
    /// (upper bound in seconds, cumulative count), in order; +Inf last.
    bounds: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Buckets {
    fn parse(text: &str, name: &str) -> Option<Self> {
        let (mut bounds, mut sum, mut count) = (Vec::new(), None, None);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(rest) = line.strip_prefix(name) else { continue };
            let (key, value) = rest.rsplit_once(' ')?;
            if let Some(labels) = key.strip_prefix("_bucket") {
                let le = labels.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                bounds.push((bound, value.parse().ok()?));
            } else if key == "_sum" {
                sum = value.parse().ok();
            } else if key == "_count" {
                count = value.parse().ok();
            }
        }
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Self { bounds, sum: sum?, count: count? })
    }

    /// The smallest bucket bound under which `share` of the samples fall (an
    /// upper bound of that percentile); the largest finite bound if only +Inf holds it.
    fn percentile_bound(&self, share: f64) -> f64 {
        let need = (share * self.count as f64).ceil() as u64;
        let finite = || self.bounds.iter().rev().find(|b| b.0.is_finite()).map_or(0.0, |b| b.0);
        match self.bounds.iter().find(|(_, n)| *n >= need) {
            Some((bound, _)) if bound.is_finite() => *bound,
            _ => finite(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_prometheus_histogram() {
        let text = "# HELP x_seconds From A to B\n# TYPE x_seconds histogram\n\
            x_seconds_bucket{le=\"0.00001\"} 10\nx_seconds_bucket{le=\"0.0001\"} 99\n\
            x_seconds_bucket{le=\"0.001\"} 100\nx_seconds_bucket{le=\"+Inf\"} 100\n\
            x_seconds_sum 0.004\nx_seconds_count 100\nx_seconds_other 1\n";
        let b = Buckets::parse(text, "x_seconds").unwrap();
        assert_eq!(b.count, 100);
        assert_eq!(b.bounds.len(), 4);
        assert_eq!(b.percentile_bound(0.5), 0.0001);
        assert_eq!(b.percentile_bound(0.99), 0.0001);
        assert_eq!(b.percentile_bound(1.0), 0.001);
        assert!(Buckets::parse("y_seconds_count 1\n", "x_seconds").is_none());
    }
}

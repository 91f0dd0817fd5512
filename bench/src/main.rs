//! `respawn-bench`: runs each scenario against direct, Respawn, HAProxy and
//! any other proxy in one run, and reports figures and ratios (see README.md).//!
//! May depend on every crate it measures (the proxy and codec for traffic,
//! the Kubernetes crate and the fake API server for the controller scenario);
//! nothing depends on it.
#![forbid(unsafe_code)]

mod backend;
mod client;
mod controller;
mod report;
mod scenarios;
mod targets;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use tokio::time::Instant;

use crate::{
    report::{Machine, Report, Run},
    scenarios::{Scenario, Settings},
    targets::{Env, Kind, Target},
};

/// Descriptors the bench and each spawned proxy keep for themselves (listeners,
/// epoll, logs, the latency probe) on top of two per relayed session.
const FD_RESERVE: u64 = 200;

#[derive(Parser, Debug)]
#[command(name = "respawn-bench", about = "Benchmarks Respawn against direct, HAProxy and other proxies in one run")]
struct Cli {
    /// Scenarios to run (repeat or comma-separate); all when none is given.
    #[arg(long = "scenario", short, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Built-in targets to run: direct, respawn, haproxy.
    #[arg(long, value_delimiter = ',', default_value = "direct,respawn,haproxy")]
    targets: Vec<String>,
    /// Another proxy already running, by its listen address; it must route
    /// `bench.localhost` (or everything) to the backend given by --backend-port.
    #[arg(long)]
    other: Option<SocketAddr>,
    /// Name of the --other target in the report.
    #[arg(long, default_value = "other")]
    other_name: String,
    /// PID of the --other proxy, to read its RSS in the idle scenario.
    #[arg(long)]
    other_pid: Option<u32>,
    /// Port for the bench's backend on 127.0.0.1 (0 = any free port; fix it
    /// when --other must be configured to reach it).
    #[arg(long, default_value_t = 0)]
    backend_port: u16,
    /// Full run: longer windows, 10,000 idle sessions, more latency samples, 2 rounds.
    #[arg(long, conflicts_with = "smoke")]
    full: bool,
    /// Every scenario very briefly (≤ 15 s); exit non-zero if any target fails one.
    #[arg(long)]
    smoke: bool,
    /// Measured window of each rate and bulk run, in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Unmeasured warm-up before each window, in seconds.
    #[arg(long)]
    warmup: Option<f64>,
    /// Client tasks in the status and login scenarios.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Long connections in the bulk scenario.
    #[arg(long, default_value_t = 4)]
    bulk_connections: usize,
    /// Idle sessions to open (capped by the open-files limit).
    #[arg(long)]
    idle_sessions: Option<usize>,
    /// Logins measured one at a time in the latency scenario.
    #[arg(long)]
    latency_samples: Option<usize>,
    /// MinecraftServers in the controller scenario.
    #[arg(long)]
    mcs: Option<usize>,
    /// Wakes measured one at a time in the controller scenario.
    #[arg(long)]
    wakes: Option<usize>,
    /// Rounds of every scenario × target, interleaved; the best round counts.
    #[arg(long)]
    rounds: Option<usize>,
    /// Write bench/RESULTS.md and bench/results.json.
    #[arg(long)]
    write_results: bool,
    /// Also write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The respawn binary (default: target/release/respawn of this workspace).
    #[arg(long)]
    respawn_bin: Option<PathBuf>,
    #[arg(long, default_value = "haproxy")]
    haproxy_bin: PathBuf,
    /// Respawn's accept/relay threads (`listen.threads`; 0 = one per CPU, as deployed).
    #[arg(long, default_value_t = 0)]
    respawn_threads: usize,
    /// RUST_LOG for the spawned Respawn (its default is info, as deployed).
    #[arg(long, default_value = "info")]
    respawn_log: String,
    /// Internal: serve the bench backend on 127.0.0.1:PORT until stdin says
    /// `stop` or closes (the sleeping server Respawn's runtime wakes).
    #[arg(long, hide = true)]
    serve_backend: Option<u16>,
}

struct Preset {
    warmup: f64,
    duration: f64,
    idle_sessions: usize,
    latency_samples: usize,
    rounds: usize,
    mcs: usize,
    wakes: usize,
}

impl Cli {
    fn preset(&self) -> Preset {
        if self.smoke {
            Preset {
                warmup: 0.05,
                duration: 0.25,
                idle_sessions: 200,
                latency_samples: 200,
                rounds: 1,
                mcs: 200,
                wakes: 5,
            }
        } else if self.full {
            Preset {
                warmup: 0.5,
                duration: 4.0,
                idle_sessions: 10_000,
                latency_samples: 10_000,
                rounds: 2,
                mcs: 10_000,
                wakes: 50,
            }
        } else {
            Preset {
                warmup: 0.3,
                duration: 2.0,
                idle_sessions: 2_000,
                latency_samples: 3_000,
                rounds: 1,
                mcs: 2_000,
                wakes: 20,
            }
        }
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("respawn-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(port) = cli.serve_backend {
        return match runtime.block_on(serve_backend(port)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("respawn-bench --serve-backend: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(cli)) {
        Ok(report) if report.failures.is_empty() => ExitCode::SUCCESS,
        Ok(report) => {
            eprintln!("respawn-bench: {} run(s) failed", report.failures.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("respawn-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Longest a `--serve-backend` child lives if nobody stops it.
const SERVE_BACKEND_MAX: Duration = Duration::from_secs(600);

/// The backend as a process of its own, for Respawn's local runtime to start
/// and stop. It exits on `stop`, when stdin closes (the runtime is gone), or
/// after `SERVE_BACKEND_MAX`.
async fn serve_backend(port: u16) -> Result<()> {
    let _backend = backend::start(port)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "stop" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    tokio::select! {
        _ = rx => {}
        _ = tokio::time::sleep(SERVE_BACKEND_MAX) => {}
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<Report> {
    let started = Instant::now();
    let preset = cli.preset();
    let scenarios = if cli.scenarios.is_empty() { Scenario::ALL.to_vec() } else { cli.scenarios.clone() };
    let mut notes = Vec::new();

    // Each relayed session holds two descriptors in the proxy, and two in this
    // process (client end and backend end); the hard limit caps both.
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    let open_files = rlimit::increase_nofile_limit(hard).context("raising the open-files limit")?;
    let session_cap = (open_files.saturating_sub(FD_RESERVE) / 2) as usize;
    let wanted_idle = cli.idle_sessions.unwrap_or(preset.idle_sessions);
    let idle_sessions = wanted_idle.min(session_cap);
    if idle_sessions < wanted_idle && scenarios.contains(&Scenario::Idle) {
        notes.push(format!(
            "idle: {wanted_idle} sessions requested, {idle_sessions} run: the open-files limit is {open_files} \
             (hard; raising it needs root outside this sandbox) and each relayed session holds 2 descriptors \
             in the proxy and 2 in the bench"
        ));
    }
    let settings = Settings {
        warmup: Duration::from_secs_f64(cli.warmup.unwrap_or(preset.warmup)),
        duration: Duration::from_secs_f64(cli.duration.unwrap_or(preset.duration)),
        concurrency: cli.concurrency.max(1),
        bulk_connections: cli.bulk_connections.max(1),
        idle_sessions: idle_sessions.max(1),
        latency_samples: cli.latency_samples.unwrap_or(preset.latency_samples).max(10),
        max_ops: 10_000_000,
    };
    let rounds = cli.rounds.unwrap_or(preset.rounds).max(1);

    let mut targets = Vec::new();
    for name in &cli.targets {
        let kind = match name.as_str() {
            report::DIRECT => Kind::Direct,
            report::RESPAWN => Kind::Respawn,
            report::HAPROXY => Kind::Haproxy,
            other => bail!("unknown target `{other}` (direct, respawn, haproxy; use --other ADDR for others)"),
        };
        targets.push(Target { name: name.clone(), kind });
    }
    if let Some(addr) = cli.other {
        if !addr.ip().is_loopback() {
            bail!("--other must be a loopback address: the bench only sends traffic to this machine");
        }
        targets.push(Target { name: cli.other_name.clone(), kind: Kind::Other { addr, pid: cli.other_pid } });
    }
    let target_names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();

    let backend = backend::start(cli.backend_port)?;
    eprintln!("respawn-bench: backend on {}", backend.addr);
    let workdir = std::env::temp_dir().join(format!("respawn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    let env = Env {
        backend: backend.addr,
        workdir: workdir.clone(),
        respawn_bin: cli.respawn_bin.clone().unwrap_or_else(|| manifest_dir().join("../target/release/respawn")),
        haproxy_bin: cli.haproxy_bin.clone(),
        respawn_log: cli.respawn_log.clone(),
        max_connections: (open_files.saturating_sub(64) / 2) as usize,
        respawn_threads: cli.respawn_threads,
    };
    let machine = machine_info(&env, open_files, targets.iter().any(|t| t.kind == Kind::Haproxy));
    let controller_settings = controller::ControllerSettings {
        servers: cli.mcs.unwrap_or(preset.mcs).max(1),
        wakes: cli.wakes.unwrap_or(preset.wakes),
        respawn_bin: env.respawn_bin.clone(),
        workdir: workdir.clone(),
        log: cli.respawn_log.clone(),
    };

    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for &scenario in &scenarios {
        for round in 0..rounds {
            for target in &targets {
                if scenario.respawn_only() && target.kind != Kind::Respawn {
                    continue;
                }
                // Minutes at 10,000 servers and no rival target to interleave with: once.
                if scenario == Scenario::Controller && round > 0 {
                    continue;
                }
                let run = if scenario == Scenario::Controller {
                    // No proxy in the path: the controller against the fake API server.
                    let started = Instant::now();
                    let result = controller::run(&controller_settings).await;
                    finish_run(scenario, target, round, started, result)
                } else {
                    run_one(scenario, target, round, &env, &backend, &settings).await
                };
                if let Some(e) = &run.error {
                    failures.push(format!("{} on {} (round {}): {e}", scenario.name(), target.name, round + 1));
                }
                runs.push(run);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&workdir);

    let rows = report::rows(&runs, &target_names);
    let report = Report {
        tool: "respawn-bench",
        started_at: utc_now(),
        total_seconds: started.elapsed().as_secs_f64(),
        command: std::iter::once("respawn-bench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        machine,
        settings: json!({
            "warmup_seconds": settings.warmup.as_secs_f64(),
            "duration_seconds": settings.duration.as_secs_f64(),
            "concurrency": settings.concurrency,
            "bulk_connections": settings.bulk_connections,
            "idle_sessions": settings.idle_sessions,
            "latency_samples": settings.latency_samples,
            "rounds": rounds,
            "respawn_log": cli.respawn_log,
            "respawn_threads": cli.respawn_threads,
            "status_json_bytes": backend::STATUS_JSON.len(),
            "controller_servers": controller_settings.servers,
            "controller_wakes": controller_settings.wakes,
        }),
        notes,
        targets: target_names,
        rows,
        failures,
        runs,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let json = serde_json::to_string_pretty(&report)?;
    if cli.write_results {
        std::fs::write(manifest_dir().join("RESULTS.md"), &markdown)?;
        std::fs::write(manifest_dir().join("results.json"), format!("{json}\n"))?;
        eprintln!("respawn-bench: wrote bench/RESULTS.md and bench/results.json");
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, format!("{json}\n"))?;
    }
    eprintln!("respawn-bench: done in {:.1} s", report.total_seconds);
    Ok(report)
}

/// Starts the target fresh for this scenario, runs it, and stops it.
async fn run_one(
    scenario: Scenario,
    target: &Target,
    round: usize,
    env: &Env,
    backend: &backend::Backend,
    s: &Settings,
) -> Run {
    let started = Instant::now();
    let tag = format!("{}-{round}", scenario.name());
    let result = async {
        let mut running = targets::start(target, env, scenario.respawn_options(), &tag).await?;
        let measured = scenarios::run(scenario, &mut running, backend, s).await;
        match measured {
            Ok(m) => Ok(m),
            Err(e) => {
                let tail = running.log_tail();
                if tail.is_empty() { Err(e) } else { Err(e.context(format!("target log tail:\n{tail}"))) }
            }
        }
    }
    .await;
    finish_run(scenario, target, round, started, result)
}

/// A scenario's outcome as a report row, with a progress line on stderr.
fn finish_run(
    scenario: Scenario,
    target: &Target,
    round: usize,
    started: Instant,
    result: Result<scenarios::Measured>,
) -> Run {
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(m) => {
            let figures = m.figures.into_iter().collect::<std::collections::BTreeMap<_, _>>();
            let shown = figures
                .iter()
                .map(|(f, v)| format!("{}{}", report::thousands(*v, f.def().decimals), f.def().unit))
                .collect::<Vec<_>>()
                .join(", ");
            eprintln!("[{}] {} round {}: {shown} ({seconds:.1} s)", scenario.name(), target.name, round + 1);
            Run {
                scenario,
                target: target.name.clone(),
                round,
                ok: true,
                error: None,
                figures,
                details: m.details,
                seconds,
            }
        }
        Err(e) => {
            eprintln!("[{}] {} round {}: FAILED: {e:#}", scenario.name(), target.name, round + 1);
            Run {
                scenario,
                target: target.name.clone(),
                round,
                ok: false,
                error: Some(format!("{e:#}")),
                figures: Default::default(),
                details: Default::default(),
                seconds,
            }
        }
    }
}

fn machine_info(env: &Env, open_files: u64, with_haproxy: bool) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        cpu_model,
        open_files_limit: open_files,
        loadavg_at_start: read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        haproxy_version: if with_haproxy { targets::haproxy_version(&env.haproxy_bin) } else { None },
        respawn_commit: git_commit(&manifest_dir()),
        respawn_binary_built: file_time(&env.respawn_bin),
    }
}

fn git_commit(dir: &Path) -> Option<String> {
    let out =
        std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    out.status.success().then(|| format!("commit {}", String::from_utf8_lossy(&out.stdout).trim()))
}

/// When `path` was last written, from `date -r` (a binary older than the
/// checkout is worth knowing about).
fn file_time(path: &Path) -> Option<String> {
    let out =
        std::process::Command::new("date").arg("-u").arg("-r").arg(path).arg("+%Y-%m-%d %H:%M UTC").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Current UTC time, from `date` (the report's only clock reading).
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "at an unknown time".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respawn_config_is_valid() {
        let opts = targets::RespawnOptions { extra_routes: 3, wake_server: true, ..Default::default() };
        let text = targets::respawn_config(25565, 9100, "127.0.0.1:25566".parse().unwrap(), 9_000, 3, opts);
        let config = respawn::config::RespawnConfig::parse(&text).expect("bench config parses");
        assert_eq!(config.routes.len(), 4);
        assert_eq!(config.status.cache_ttl_ms, 0);
        assert_eq!(config.servers.len(), 1);
        assert_eq!(config.servers[0].hostnames, [targets::WAKE_HOST]);
        assert_eq!(config.listen.thread_count(), 3);
    }
}

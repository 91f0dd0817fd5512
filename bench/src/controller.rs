//! The controller scenario (issue 6): N MinecraftServers against the fake API
//! server (`respawn-kube-fake`, in this process), reconciled by `respawn
//! controller` running as its own process (so its memory is its own, read
//! from /proc). Measures the time from the controller's start to every server
//! having its StatefulSet, Service and status; the controller's RSS; and, once
//! it has settled, the time from a wake annotation (the proxy's signal) to the
//! StatefulSet's replicas write reaching the API server. A bare kube client
//! doing the same requests against a fresh fake is the baseline: the floor
//! the fake and HTTP set, so the ratio shows the controller's own overhead.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Service},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, CustomResourceExt, Resource,
    api::{Patch, PatchParams, PostParams},
};
use respawn_k8s::{
    controller::{FIELD_MANAGER, RECONCILE_CONCURRENCY},
    crd::{MinecraftServer, MinecraftServerStatus, ServerPhase},
    render,
    signals::{PLAYERS_ANNOTATION, REPORT_LABEL, WAKE_ANNOTATION},
};
use respawn_kube_fake::{Cluster, FakeApiServer};
use serde_json::{Map, Value, json};
use tokio::time::{Instant, sleep};

use crate::{report::Figure, scenarios::Measured};

/// Servers per tenant namespace (a platform has many tenants, each with a few
/// to a few hundred servers).
const SERVERS_PER_NAMESPACE: usize = 100;
/// Every RUNNING_EVERY-th server is a running fleet (replicas.min 1) with
/// players reported by the proxies; the rest sleep at 0 replicas.
const RUNNING_EVERY: usize = 10;
/// Proxy replicas renewing their player report Lease, and how often (the
/// proxy's own `REPORT_EVERY`).
const PROXIES: usize = 2;
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Each renewal moves the counts of one running server in this many (a
/// tenth: at 10,000 servers, 2 proxies × 100 changes every 5 s).
const CHANGING_EVERY: usize = 10;
/// Longest the controller may take to reconcile everything before the run fails.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the fake is polled for progress (a count under its lock).
const PROGRESS_POLL: Duration = Duration::from_millis(50);
/// Quiet time after everything is reconciled, before the wakes: the
/// follow-up reconciles of the cold start drain.
const SETTLE: Duration = Duration::from_secs(2);
/// A wake that has not scaled within this time counts as failed.
const WAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between wakes (so each one meets the steady load, not the last wake).
const WAKE_GAP: Duration = Duration::from_millis(150);
/// How often the fake is polled for the woken StatefulSet (the resolution of
/// the wake figure).
const WAKE_POLL: Duration = Duration::from_millis(1);
/// Longest the idle controller (no servers) may take to open its watches.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the scenario needs from the command line.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    pub servers: usize,
    pub wakes: usize,
    pub respawn_bin: PathBuf,
    pub workdir: PathBuf,
    /// RUST_LOG for the controller process.
    pub log: String,
}

const API_VERSION: &str = "respawn.dev/v1alpha1";
const KIND: &str = "MinecraftServer";

fn namespace_of(i: usize) -> String {
    format!("tenant-{:03}", i / SERVERS_PER_NAMESPACE)
}

fn name_of(i: usize) -> String {
    format!("mc-{i:05}")
}

fn running(i: usize) -> bool {
    i.is_multiple_of(RUNNING_EVERY)
}

/// A fake with the CRD, the namespaces and `n` MinecraftServers.
async fn seeded_fake(n: usize) -> Result<FakeApiServer> {
    let fake = FakeApiServer::start().await;
    let cluster = fake.cluster();
    let namespaces = n.div_ceil(SERVERS_PER_NAMESPACE);
    for ns in (0..namespaces).map(|t| namespace_of(t * SERVERS_PER_NAMESPACE)).chain(["respawn-system".to_owned()]) {
        cluster.set(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }))?;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(fake.client());
    crds.create(&PostParams::default(), &MinecraftServer::crd()).await.context("registering the CRD")?;
    for i in 0..n {
        let (ns, name) = (namespace_of(i), name_of(i));
        let mut spec = json!({ "hostnames": [format!("{name}.{ns}.bench.test")] });
        if running(i) {
            spec["replicas"] = json!({ "min": 1, "max": 3 });
            spec["playersPerReplica"] = json!(20);
        }
        cluster.set(json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": { "name": name, "namespace": ns },
            "spec": spec,
        }))?;
    }
    Ok(fake)
}

/// Servers reconciled so far: status written, StatefulSet and Service applied.
fn progress(cluster: &Cluster) -> (usize, usize, usize) {
    (
        cluster.count_where(API_VERSION, KIND, |o| o.pointer("/status/phase").is_some()),
        cluster.count_where("apps/v1", "StatefulSet", |_| true),
        cluster.count_where("v1", "Service", |_| true),
    )
}

/// Each proxy's report: players on the running servers; on each round, the
/// counts of a tenth of them move.
fn write_reports(cluster: &Cluster, n: usize, round: u64) -> Result<()> {
    for proxy in 0..PROXIES {
        let mut report = Map::new();
        for i in (0..n).filter(|&i| running(i)) {
            let name = name_of(i);
            let k = i / RUNNING_EVERY;
            // Rounds in which this server's count changed so far.
            let moves = (round + (CHANGING_EVERY - k % CHANGING_EVERY) as u64) / CHANGING_EVERY as u64;
            let players = (k as u64 + proxy as u64 + moves) % 5 + 1;
            if players > 0 {
                report.insert(format!("{}/{name}", namespace_of(i)), json!({ format!("{name}-0"): players }));
            }
        }
        cluster.set(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {
                "name": format!("respawn-proxy-bench-{proxy}"), "namespace": "respawn-system",
                "labels": { REPORT_LABEL: "true" },
                "annotations": { PLAYERS_ANNOTATION: Value::Object(report).to_string() },
            },
            "spec": {
                "holderIdentity": format!("bench-{proxy}"),
                "leaseDurationSeconds": 15,
                "renewTime": serde_json::to_value(MicroTime(Timestamp::now()))?,
            },
        }))?;
    }
    Ok(())
}

/// `respawn controller` against the fake, killed (and reaped) on drop.
struct ControllerProcess {
    child: Child,
    log: PathBuf,
}

impl ControllerProcess {
    fn spawn(s: &ControllerSettings, fake: &FakeApiServer, tag: &str) -> Result<Self> {
        let kubeconfig = s.workdir.join(format!("kubeconfig-{tag}"));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\n\
                 users:\n- name: bench\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: bench, namespace: default}}\n\
                 current-context: fake\n",
                fake.url()
            ),
        )?;
        let log = s.workdir.join(format!("controller-{tag}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&s.respawn_bin)
            .arg("controller")
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("POD_NAMESPACE", "respawn-system")
            .env("POD_NAME", format!("bench-{tag}"))
            .env("RUST_LOG", &s.log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| {
                format!("starting {} controller (build it: cargo build --release -p respawn)", s.respawn_bin.display())
            })?;
        Ok(Self { child, log })
    }

    fn proc_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the controller exited ({status}); log tail:\n{}", log_tail(&self.log));
        }
        Ok(())
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat
/// (clock ticks at the usual 100 Hz).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&text[text.len().saturating_sub(1500)..]).into_owned()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The controller's RSS with no servers at all: started, leading, watches open.
async fn idle_rss_kib(s: &ControllerSettings) -> Result<u64> {
    let fake = seeded_fake(0).await?;
    let mut controller = ControllerProcess::spawn(s, &fake, "idle")?;
    let deadline = Instant::now() + IDLE_TIMEOUT;
    loop {
        controller.check_alive()?;
        let watching =
            fake.requests().iter().any(|r| r.path.ends_with("/minecraftservers") && r.query.contains("watch=true"));
        if watching {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the idle controller opened no watch within {IDLE_TIMEOUT:?}; log tail:\n{}",
                log_tail(&controller.log)
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(500)).await;
    controller.proc_kib("VmRSS:").context("reading the controller's RSS")
}

/// The same requests the controller makes per server (read the server and
/// its StatefulSet, apply the StatefulSet and Service, apply status), from a
/// bare client with the controller's concurrency, against a fresh fake.
async fn baseline(n: usize) -> Result<Duration> {
    let fake = seeded_fake(n).await?;
    let client = fake.client();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let started = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let (client, apply) = (client.clone(), apply.clone());
            async move {
                let (ns, name) = (namespace_of(i), name_of(i));
                let mcs_api: Api<MinecraftServer> = Api::namespaced(client.clone(), &ns);
                let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
                let svc_api: Api<Service> = Api::namespaced(client, &ns);
                let mcs = mcs_api.get(&name).await?;
                let _ = sts_api.get_opt(&name).await?;
                let replicas = mcs.spec.replicas.min;
                sts_api.patch(&name, &apply, &Patch::Apply(render::stateful_set(&mcs, replicas))).await?;
                svc_api.patch(&name, &apply, &Patch::Apply(render::service(&mcs))).await?;
                let status = MinecraftServerStatus {
                    phase: Some(if replicas == 0 { ServerPhase::Hibernated } else { ServerPhase::Waking }),
                    replicas,
                    observed_generation: mcs.metadata.generation,
                    ..MinecraftServerStatus::default()
                };
                let patch = json!({
                    "apiVersion": MinecraftServer::api_version(&()),
                    "kind": MinecraftServer::kind(&()),
                    "status": status,
                });
                mcs_api.patch_status(&name, &apply, &Patch::Apply(&patch)).await?;
                Ok(())
            }
        })
        .buffer_unordered(usize::from(RECONCILE_CONCURRENCY).max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        bail!("baseline: {failed} of {n} servers failed, first: {e:#}");
    }
    let (statuses, sts, svc) = progress(fake.cluster());
    if (statuses, sts, svc) != (n, n, n) {
        bail!("baseline: {statuses} statuses, {sts} StatefulSets, {svc} Services of {n}");
    }
    Ok(elapsed)
}

fn count_requests(fake: &FakeApiServer) -> Map<String, Value> {
    let requests = fake.requests();
    let count =
        |f: &dyn Fn(&respawn_kube_fake::RecordedRequest) -> bool| json!(requests.iter().filter(|r| f(r)).count());
    let mut out = Map::new();
    out.insert("requests".into(), json!(requests.len()));
    out.insert("gets".into(), count(&|r| r.method == "GET" && !r.query.contains("watch=true")));
    out.insert("patches".into(), count(&|r| r.method == "PATCH"));
    out.insert(
        "mcs_lists".into(),
        count(&|r| r.method == "GET" && r.path.ends_with("/minecraftservers") && !r.query.contains("watch=true")),
    );
    out.insert("watches".into(), count(&|r| r.method == "GET" && r.query.contains("watch=true")));
    out
}

pub async fn run(s: &ControllerSettings) -> Result<Measured> {
    let n = s.servers.max(1);
    let mut m = Measured::default();
    m.details.insert("servers".into(), json!(n));
    m.details.insert("running_servers".into(), json!((0..n).filter(|&i| running(i)).count()));
    m.details.insert("namespaces".into(), json!(n.div_ceil(SERVERS_PER_NAMESPACE)));
    m.details.insert("concurrency".into(), json!(RECONCILE_CONCURRENCY));

    // The floor: a bare client doing the same requests.
    let floor = baseline(n).await?;
    m.figures.push((Figure::ControllerBaseline, floor.as_secs_f64()));
    eprintln!("[controller] bare client: {n} servers' requests in {:.2} s", floor.as_secs_f64());

    let idle = idle_rss_kib(s).await?;
    m.details.insert("idle_rss_mib".into(), json!(mib(idle)));

    // Cold start with n servers in the cluster.
    let fake = seeded_fake(n).await?;
    write_reports(fake.cluster(), n, 0)?;
    fake.cluster().clear_request_log();
    let bench_cpu_before = cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    let mut controller = ControllerProcess::spawn(s, &fake, "run")?;
    let mut next_report = started + REPORT_EVERY;
    let mut round = 1;
    let last = loop {
        controller.check_alive()?;
        let last = progress(fake.cluster());
        if last == (n, n, n) {
            break last;
        }
        if started.elapsed() > RECONCILE_TIMEOUT {
            bail!(
                "not reconciled within {RECONCILE_TIMEOUT:?}: {} statuses, {} StatefulSets, {} Services of {n}; log tail:\n{}",
                last.0,
                last.1,
                last.2,
                log_tail(&controller.log)
            );
        }
        if Instant::now() >= next_report {
            write_reports(fake.cluster(), n, round)?;
            round += 1;
            next_report += REPORT_EVERY;
        }
        sleep(PROGRESS_POLL).await;
    };
    let reconciled = started.elapsed();
    m.figures.push((Figure::ControllerReconcile, reconciled.as_secs_f64()));
    m.details.insert("reconciles_per_second".into(), json!(n as f64 / reconciled.as_secs_f64()));
    m.details.insert("vs_bare_client".into(), json!(reconciled.as_secs_f64() / floor.as_secs_f64()));
    let rss_reconciled = controller.proc_kib("VmRSS:").unwrap_or(0);
    // Where the CPU went: the controller, and this process (the fake API
    // server, plus the bench's 50 ms progress counts).
    if let Some(cpu) = cpu_seconds(&controller.child.id().to_string()) {
        m.details.insert("cold_start_controller_cpu_s".into(), json!(cpu));
    }
    if let Some(cpu) = cpu_seconds("self") {
        m.details.insert("cold_start_fake_cpu_s".into(), json!(cpu - bench_cpu_before));
    }
    eprintln!("[controller] {n} servers reconciled in {:.2} s ({last:?})", reconciled.as_secs_f64());
    let cold_start = count_requests(&fake);
    m.details.insert("cold_start_requests".into(), json!(cold_start["requests"]));
    m.details.insert("cold_start_mcs_lists".into(), json!(cold_start["mcs_lists"]));

    // Steady state: the proxies keep reporting; wake sleeping servers one at a time.
    let settle_until = Instant::now() + SETTLE;
    while Instant::now() < settle_until {
        sleep(PROGRESS_POLL).await;
    }
    let client = fake.client();
    let sleeping: Vec<usize> = (0..n).filter(|&i| !running(i)).collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut failed = 0usize;
    for k in 0..s.wakes.min(sleeping.len()) {
        controller.check_alive()?;
        if Instant::now() >= next_report {
            write_reports(fake.cluster(), n, round)?;
            round += 1;
            next_report += REPORT_EVERY;
        }
        // Spread over the namespaces and names.
        let i = sleeping[(k * 7919) % sleeping.len()];
        let (ns, name) = (namespace_of(i), name_of(i));
        let api: Api<MinecraftServer> = Api::namespaced(client.clone(), &ns);
        let patch = json!({ "metadata": { "annotations": { WAKE_ANNOTATION: Timestamp::now().to_string() } } });
        let t0 = Instant::now();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("writing the wake annotation")?;
        let scaled = loop {
            let replicas = fake
                .cluster()
                .object("apps/v1", "StatefulSet", &ns, &name)
                .and_then(|sts| sts.pointer("/spec/replicas").and_then(Value::as_i64));
            if replicas.is_some_and(|r| r >= 1) {
                break Some(t0.elapsed());
            }
            if t0.elapsed() > WAKE_TIMEOUT {
                break None;
            }
            sleep(WAKE_POLL).await;
        };
        match scaled {
            Some(d) => histogram.record((d.as_micros() as u64).max(1))?,
            None => failed += 1,
        }
        sleep(WAKE_GAP).await;
    }
    if histogram.is_empty() && s.wakes > 0 {
        bail!("no wake turned into a scale request within {WAKE_TIMEOUT:?}");
    }
    if failed > 0 {
        bail!("{failed} of {} wakes did not scale within {WAKE_TIMEOUT:?}", s.wakes);
    }
    if !histogram.is_empty() {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        m.figures.push((Figure::ControllerWakeP50, ms(0.5)));
        m.figures.push((Figure::ControllerWakeP99, ms(0.99)));
        m.details.insert("wakes".into(), json!(histogram.len()));
        m.details.insert("wake_max_ms".into(), json!(histogram.max() as f64 / 1000.0));
    }

    let peak = controller.proc_kib("VmHWM:").context("reading the controller's peak RSS")?;
    let settled = controller.proc_kib("VmRSS:").unwrap_or(0);
    m.figures.push((Figure::ControllerPeakRss, mib(peak)));
    m.figures.push((Figure::ControllerRssGrowth, mib(peak.saturating_sub(idle))));
    m.details.insert("rss_reconciled_mib".into(), json!(mib(rss_reconciled)));
    m.details.insert("rss_end_mib".into(), json!(mib(settled)));
    m.details.insert("total_requests".into(), json!(fake.requests().len()));
    controller.check_alive()?;
    Ok(m)
}

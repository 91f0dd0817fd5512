//! `respawn up`: the proxy, the local runtime and the management API in one
//! process. The API is the source of the servers it creates: each becomes a
//! local process (from the `[api_servers]` command template) and a route in
//! the proxy (through its `RouteSink`), keyed by the server's id.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use respawn_contract::{
    Lifecycle, RouteSink, RouteSpec,
    runtime::{LogLine, LogQuery, RuntimeError, RuntimeFuture, ServerRuntime, ServerSpec, ServerStatus},
};
use respawn_local::{LocalRuntime, ServerConfig};
use respawn_proxy::Proxy;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::RespawnConfig;

/// `[api_servers]`: how servers created through the API are run.
///
/// `command` and each of `args` may use `{port}`, `{address}`, `{id}`,
/// `{name}`, `{version}` and `{type}` (the process runs in its data
/// directory, `data_dir/servers/<id>`); `env` values too. The
/// default runs the built-in demo server, so `respawn up` does something
/// real with no Java; for Paper, e.g. `command = "java"`,
/// `args = ["-jar", "/opt/paper/{version}.jar", "--nogui", "--port", "{port}"]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTemplate {
    pub command: String,
    pub args: Vec<String>,
    pub env: HashMap<String, String>,
    /// Host the servers listen on.
    pub host: String,
    /// Ports handed out to API-created servers, `[first, last]`.
    pub ports: [u16; 2],
    pub stop_command: String,
    pub stop_timeout_ms: u64,
    pub start_timeout_ms: u64,
    pub min_online_ms: u64,
}

impl Default for ServerTemplate {
    fn default() -> Self {
        ServerTemplate {
            command: "respawn".into(),
            args: vec!["demo-server".into(), "--listen".into(), "{address}".into(), "--motd".into(), "{name}".into()],
            env: HashMap::new(),
            host: "127.0.0.1".into(),
            ports: [30_000, 30_999],
            stop_command: "stop".into(),
            stop_timeout_ms: respawn_local::config::DEFAULT_STOP_TIMEOUT_MS,
            start_timeout_ms: respawn_local::config::DEFAULT_START_TIMEOUT_MS,
            min_online_ms: respawn_contract::policy::DEFAULT_MIN_ONLINE.as_millis() as u64,
        }
    }
}

impl ServerTemplate {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.command.trim().is_empty() {
            anyhow::bail!("api_servers.command: must not be empty");
        }
        if self.ports[0] == 0 || self.ports[0] > self.ports[1] {
            anyhow::bail!("api_servers.ports: must be [first, last] with 0 < first <= last");
        }
        if self.host.parse::<std::net::IpAddr>().is_err() {
            anyhow::bail!("api_servers.host: must be an IP address");
        }
        Ok(())
    }
}

/// The API's [`ServerRuntime`] over the local runtime and the proxy's routes.
pub struct Embedded {
    runtime: Arc<LocalRuntime>,
    template: ServerTemplate,
    /// Names of the `[[servers]]` from the config file: the API cannot
    /// replace them.
    reserved: HashSet<String>,
    inner: Mutex<Inner>,
    routes: OnceLock<Arc<dyn RouteSink>>,
}

#[derive(Default)]
struct Inner {
    /// Server id → its port.
    ports: HashMap<String, u16>,
    routes: BTreeMap<String, RouteSpec>,
}

impl Embedded {
    pub fn new(
        runtime: Arc<LocalRuntime>,
        template: ServerTemplate,
        reserved: HashSet<String>,
    ) -> anyhow::Result<Arc<Self>> {
        template.validate()?;
        Ok(Arc::new(Embedded { runtime, template, reserved, inner: Mutex::default(), routes: OnceLock::new() }))
    }

    /// The proxy is up: give it the routes of every API server so far.
    pub fn attach(&self, routes: Arc<dyn RouteSink>) {
        let _ = self.routes.set(routes);
        self.push_routes();
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_routes(&self) {
        if let Some(sink) = self.routes.get() {
            let routes: Vec<RouteSpec> = self.inner().routes.values().cloned().collect();
            sink.set_routes(routes);
        }
    }

    /// A port for `id`: the one it has, else the first free one in range.
    fn port_for(&self, id: &str) -> Result<u16, RuntimeError> {
        let mut inner = self.inner();
        if let Some(p) = inner.ports.get(id) {
            return Ok(*p);
        }
        let taken: HashSet<u16> = inner.ports.values().copied().collect();
        for port in self.template.ports[0]..=self.template.ports[1] {
            if taken.contains(&port) {
                continue;
            }
            // Skip ports something else on this machine already holds.
            let addr = SocketAddr::new(self.template.host.parse().expect("validated"), port);
            if std::net::TcpListener::bind(addr).is_err() {
                continue;
            }
            inner.ports.insert(id.to_owned(), port);
            return Ok(port);
        }
        Err(RuntimeError::Unavailable(format!(
            "no free port in api_servers.ports {}-{}",
            self.template.ports[0], self.template.ports[1]
        )))
    }

    fn server_config(&self, spec: &ServerSpec, port: u16) -> ServerConfig {
        let address = format!("{}:{port}", self.template.host);
        let dir = self.runtime_dir(&spec.id);
        let fill = |s: &str| {
            s.replace("{port}", &port.to_string())
                .replace("{address}", &address)
                .replace("{id}", &spec.id)
                .replace("{name}", &spec.name)
                .replace("{version}", &spec.minecraft_version)
                .replace("{type}", &spec.minecraft_type)
        };
        ServerConfig {
            name: spec.id.clone(),
            hostnames: spec.hostnames.clone(),
            address: address.clone(),
            command: fill(&self.template.command),
            args: self.template.args.iter().map(|a| fill(a)).collect(),
            dir: Some(dir.clone()),
            env: self.template.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
            stop_command: self.template.stop_command.clone(),
            stop_timeout_ms: self.template.stop_timeout_ms,
            start_timeout_ms: self.template.start_timeout_ms,
            idle_timeout_ms: u64::from(spec.idle_timeout_s) * 1000,
            min_online_ms: self.template.min_online_ms,
            pinned: spec.min_replicas > 0,
            allow_wake: vec![],
            proxy_protocol: false,
            rcon: None,
            plugins: spec.plugins.clone(),
        }
    }

    /// Where an API server's data lives: `data_dir/servers/<id>`.
    fn runtime_dir(&self, id: &str) -> PathBuf {
        PathBuf::from("servers").join(id)
    }

    fn check(&self, id: &str) -> Result<(), RuntimeError> {
        if self.runtime.phase(id).is_none() {
            return Err(RuntimeError::Unavailable(format!("server {id} is not known to the local runtime")));
        }
        Ok(())
    }
}

impl ServerRuntime for Embedded {
    fn status(&self, server_id: &str) -> ServerStatus {
        let Some(phase) = self.runtime.phase(server_id) else { return ServerStatus::unknown() };
        let address = self.inner().ports.get(server_id).map(|p| format!("{}:{p}", self.template.host));
        ServerStatus { phase, players: self.runtime.players(server_id), address, last_activity_ms: None }
    }

    fn apply<'a>(&'a self, spec: &'a ServerSpec) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            if self.reserved.contains(&spec.id) {
                return Err(RuntimeError::Unavailable(format!(
                    "{} is a [[servers]] entry of the config file",
                    spec.id
                )));
            }
            let port = self.port_for(&spec.id)?;
            let config = self.server_config(spec, port);
            let route = config.route();
            self.runtime.upsert(config).map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
            self.inner().routes.insert(spec.id.clone(), route);
            self.push_routes();
            Ok(())
        })
    }

    fn remove<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            if self.reserved.contains(server_id) {
                return Ok(());
            }
            self.runtime.remove(server_id);
            {
                let mut inner = self.inner();
                inner.routes.remove(server_id);
                inner.ports.remove(server_id);
            }
            self.push_routes();
            Ok(())
        })
    }

    fn wake<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.check(server_id)?;
            self.runtime.wake(server_id, "api");
            Ok(())
        })
    }

    fn hibernate<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            self.check(server_id)?;
            self.runtime.hibernate(server_id);
            Ok(())
        })
    }

    fn logs<'a>(&'a self, server_id: &'a str, query: LogQuery) -> RuntimeFuture<'a, Vec<LogLine>> {
        Box::pin(async move {
            let lines = self.runtime.logs(server_id, query.tail, query.since_ms).await;
            Ok(lines.into_iter().map(|(at_ms, line)| LogLine { at_ms, line }).collect())
        })
    }

    fn data_dir(&self, server_id: &str) -> Option<PathBuf> {
        self.runtime.data_dir(server_id)
    }

    fn console<'a>(&'a self, server_id: &'a str, command: &'a str) -> RuntimeFuture<'a, String> {
        Box::pin(async move {
            self.runtime.console(server_id, command).await.map_err(|e| RuntimeError::Unavailable(e.to_string()))
        })
    }

    fn set_backup_running(&self, server_id: &str, running: bool) {
        self.runtime.set_backup_running(server_id, running);
    }
}

/// Runs proxy + local runtime (+ the API when the config has an `[api]`
/// section) until `shutdown`.
pub async fn up(config_path: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = {
        let path = config_path.clone();
        tokio::task::spawn_blocking(move || RespawnConfig::load(&path)).await??
    };
    let runtime = Arc::new(LocalRuntime::new(&config.servers, config.runtime.clone()));
    let runtime_task = tokio::spawn(runtime.clone().run(shutdown.clone()));
    let reserved = config.servers.iter().map(|s| s.name.clone()).collect();
    let embedded = Embedded::new(runtime.clone(), config.api_servers.clone().unwrap_or_default(), reserved)?;
    let api_task = config.api.clone().map(|api| {
        let api = api.with_env();
        let (rt, stop) = (embedded.clone() as Arc<dyn ServerRuntime>, shutdown.clone());
        tokio::spawn(async move {
            api.validate()?;
            let result = respawn_api::run_with_runtime(api, rt, stop.clone()).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "the API stopped");
                stop.cancel();
            }
            result
        })
    });
    let lifecycle: Arc<dyn Lifecycle> = runtime.clone();
    // Off the async threads: building the proxy reads its status cache file.
    let proxy_config = config.proxy();
    let proxy = tokio::task::spawn_blocking(move || Proxy::with_lifecycle(proxy_config, lifecycle)).await??;
    proxy.metrics().add_registry(runtime.registry.clone());
    embedded.attach(Arc::new(proxy.clone()));
    let result = respawn_proxy::run(proxy, Some(RespawnConfig::source(&config_path)), shutdown.clone()).await;
    shutdown.cancel();
    if let Some(t) = api_task {
        t.await??;
    }
    let _ = runtime_task.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_templates_name_the_field() {
        let bad = |t: ServerTemplate| t.validate().unwrap_err().to_string();
        assert!(bad(ServerTemplate { ports: [40, 30], ..Default::default() }).starts_with("api_servers.ports"));
        assert!(bad(ServerTemplate { command: " ".into(), ..Default::default() }).starts_with("api_servers.command"));
        assert!(bad(ServerTemplate { host: "localhost".into(), ..Default::default() }).starts_with("api_servers.host"));
        let unknown: Result<ServerTemplate, _> = toml::from_str("comand = \"x\"");
        assert!(unknown.unwrap_err().to_string().contains("comand"));
    }
}

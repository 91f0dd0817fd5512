//! The management API's runtime on Kubernetes (`respawn api --kubernetes`):
//! each server is a `MinecraftServer` resource the API writes (server-side apply, one field
//! manager), the controller runs and the proxy routes to. Live state comes
//! from a reflector on those resources, logs from the server's pods.

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, reflector::ObjectRef, watcher},
};
use respawn_contract::runtime::{
    LogLine, LogQuery, RuntimeError, RuntimeFuture, ServerRuntime, ServerSpec, ServerStatus,
};

use crate::{
    controller::HIBERNATE_ANNOTATION,
    crd::{
        IDLE_TIMEOUT_MAX_S, IDLE_TIMEOUT_MIN_S, MinecraftServer, MinecraftServerStatus, PLAYERS_PER_REPLICA_MAX,
        REPLICAS_MAX,
    },
    render::{GAME_PORT, SERVER_LABEL},
    signals::WAKE_ANNOTATION,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The field manager of everything the API applies.
pub const FIELD_MANAGER: &str = "respawn-api";
/// Labels on every MinecraftServer the API writes.
pub const TENANT_LABEL: &str = "respawn.dev/tenant";
pub const SERVER_ID_LABEL: &str = "respawn.dev/server-id";
/// The server's name as its tenant typed it (resource names are derived from ids).
pub const DISPLAY_NAME_ANNOTATION: &str = "respawn.dev/display-name";
/// The container whose log is the server console (see `render::stateful_set`).
const SERVER_CONTAINER: &str = "server";
/// The heap the JVM gets, as a share of the memory limit: the rest is left for
/// the JVM's own overhead so the container is not OOM-killed at full heap.
const HEAP_PERCENT_OF_MEMORY: u32 = 75;

/// Writes servers as MinecraftServers in one namespace and reads their state
/// from a reflector cache (fed by [`StatusWatch::run`]).
pub struct KubeRuntime {
    client: Client,
    namespace: String,
    cache: reflector::Store<MinecraftServer>,
}

/// Drives the reflector behind [`KubeRuntime::status`]; spawn its `run`.
pub struct StatusWatch {
    api: Api<MinecraftServer>,
    writer: reflector::store::Writer<MinecraftServer>,
}

impl StatusWatch {
    /// Watches the API's MinecraftServers until `shutdown`, retrying with
    /// backoff when the API server is unreachable.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = watcher::Config::default().labels(SERVER_ID_LABEL);
        let stream = reflector(self.writer, watcher(self.api, config)).default_backoff();
        let drive = stream.for_each(|event| {
            if let Err(error) = event {
                tracing::warn!(%error, "watching MinecraftServers failed; retrying");
            }
            futures::future::ready(())
        });
        tokio::select! {
            _ = drive => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

impl KubeRuntime {
    /// A runtime writing into `namespace`, and the watch that feeds its status cache.
    pub fn new(client: Client, namespace: &str) -> (KubeRuntime, StatusWatch) {
        let (cache, writer) = reflector::store();
        let api = Api::namespaced(client.clone(), namespace);
        (KubeRuntime { client, namespace: namespace.to_owned(), cache }, StatusWatch { api, writer })
    }

    fn servers(&self) -> Api<MinecraftServer> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Merge-patches one annotation with the current time.
    async fn annotate_now(&self, server_id: &str, key: &str) -> Result<(), RuntimeError> {
        let patch = json!({ "metadata": { "annotations": { key: Timestamp::now().to_string() } } });
        self.servers()
            .patch(&resource_name(server_id), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| unavailable(server_id, e))
    }

    async fn read_logs(&self, server_id: &str, query: LogQuery) -> Result<Vec<LogLine>, RuntimeError> {
        let name = resource_name(server_id);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&format!("{SERVER_LABEL}={name}")))
            .await
            .map_err(|e| unavailable(server_id, e))?;
        let params = LogParams {
            container: Some(SERVER_CONTAINER.into()),
            tail_lines: Some(i64::try_from(query.tail).unwrap_or(i64::MAX)),
            since_time: query.since_ms.and_then(|ms| Timestamp::from_millisecond(ms).ok()),
            timestamps: true,
            ..LogParams::default()
        };
        let fleet = list.items.len() > 1;
        let mut lines = Vec::new();
        for pod in &list.items {
            let pod_name = pod.name_any();
            // A pod that is still being created has no log yet: skip it
            // rather than fail the whole request.
            let text = match pods.logs(&pod_name, &params).await {
                Ok(text) => text,
                Err(kube::Error::Api(status)) if status.code == 400 || status.code == 404 => {
                    tracing::debug!(pod = %pod_name, reason = %status.message, "no log yet");
                    continue;
                }
                Err(e) => return Err(unavailable(server_id, e)),
            };
            lines.extend(text.lines().filter_map(parse_log_line).map(|mut line| {
                if fleet {
                    line.line = format!("[{pod_name}] {}", line.line);
                }
                line
            }));
        }
        Ok(select_lines(lines, query))
    }
}

fn unavailable(server_id: &str, error: kube::Error) -> RuntimeError {
    RuntimeError::Unavailable(format!("kubernetes, server {server_id}: {error}"))
}

impl ServerRuntime for KubeRuntime {
    fn status(&self, server_id: &str) -> ServerStatus {
        let key = ObjectRef::new(&resource_name(server_id)).within(&self.namespace);
        match self.cache.get(&key) {
            Some(mcs) => status_of(&mcs, &self.namespace),
            None => ServerStatus::unknown(),
        }
    }

    fn apply<'a>(&'a self, spec: &'a ServerSpec) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            let name = resource_name(&spec.id);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            self.servers()
                .patch(&name, &params, &Patch::Apply(&resource(spec, &self.namespace)))
                .await
                .map(|_| ())
                .map_err(|e| unavailable(&spec.id, e))
        })
    }

    fn remove<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move {
            match self.servers().delete(&resource_name(server_id), &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(e) => Err(unavailable(server_id, e)),
            }
        })
    }

    fn wake<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        // The same signal a proxy writes when a player logs in.
        Box::pin(self.annotate_now(server_id, WAKE_ANNOTATION))
    }

    fn hibernate<'a>(&'a self, server_id: &'a str) -> RuntimeFuture<'a, ()> {
        // Honoured by the controller until a later wake request.
        Box::pin(self.annotate_now(server_id, HIBERNATE_ANNOTATION))
    }

    fn logs<'a>(&'a self, server_id: &'a str, query: LogQuery) -> RuntimeFuture<'a, Vec<LogLine>> {
        Box::pin(self.read_logs(server_id, query))
    }
}

/// The MinecraftServer name for a server id (`srv_0193…` → `srv-0193…`): a
/// DNS-1123 label, so the StatefulSet, Service and pods named after it are valid.
pub fn resource_name(server_id: &str) -> String {
    let mapped: String = server_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() { "srv".to_owned() } else { trimmed.to_owned() }
}

/// The configuration the API applies: only the fields it manages, so
/// operators may set the others (`pinned`, `buffer`, storage class, …) with
/// their own field manager.
pub fn resource(spec: &ServerSpec, namespace: &str) -> Value {
    let memory = format!("{}Mi", spec.memory_mib);
    let heap_mib = u64::from(spec.memory_mib) * u64::from(HEAP_PERCENT_OF_MEMORY) / 100;
    let mut properties = spec.properties.clone();
    properties.entry("max-players".into()).or_insert_with(|| spec.max_players.to_string());
    let plugins: Vec<Value> = spec
        .plugins
        .iter()
        .map(|p| {
            json!({ "name": p.name, "version": p.version, "url": p.download_url, "sha256": p.sha256, "sha512": p.sha512 })
        })
        .map(drop_nulls)
        .collect();
    let max_replicas = spec.max_replicas.clamp(1, REPLICAS_MAX);
    let mut value = json!({
        "apiVersion": "respawn.dev/v1alpha1",
        "kind": "MinecraftServer",
        "metadata": {
            "name": resource_name(&spec.id),
            "namespace": namespace,
            "labels": { TENANT_LABEL: spec.tenant_id, SERVER_ID_LABEL: spec.id },
            "annotations": { DISPLAY_NAME_ANNOTATION: spec.name },
        },
        "spec": {
            "hostnames": spec.hostnames,
            "type": spec.minecraft_type.to_ascii_uppercase(),
            "version": image_version(&spec.minecraft_version),
            "properties": properties,
            "resources": {
                "requests": { "cpu": format!("{}m", spec.cpu_millicores), "memory": memory },
                "limits": { "cpu": format!("{}m", spec.cpu_millicores), "memory": memory },
            },
            "storage": { "size": format!("{}Gi", spec.storage_gib) },
            // The image's JVM heap (`MEMORY`), below the container's limit.
            "env": { "MEMORY": format!("{heap_mib}M") },
            "replicas": { "min": spec.min_replicas.min(max_replicas), "max": max_replicas },
            "playersPerReplica": spec.max_players.clamp(1, PLAYERS_PER_REPLICA_MAX),
            "idleTimeoutSeconds": spec.idle_timeout_s.clamp(IDLE_TIMEOUT_MIN_S, IDLE_TIMEOUT_MAX_S),
        },
    });
    if !plugins.is_empty() {
        value["spec"]["plugins"] = Value::Array(plugins);
    }
    value
}

/// `latest` and `snapshot` are the image's `LATEST` / `SNAPSHOT`; versions pass as they are.
fn image_version(version: &str) -> String {
    if version.eq_ignore_ascii_case("latest") || version.eq_ignore_ascii_case("snapshot") {
        version.to_ascii_uppercase()
    } else {
        version.to_owned()
    }
}

fn drop_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

/// The API's view of a MinecraftServer's status. A wake the controller has
/// not acted on yet shows as `starting`, like the proxy shows it to players
/// (both read [`MinecraftServer::phase`]).
pub fn status_of(mcs: &MinecraftServer, namespace: &str) -> ServerStatus {
    let status = mcs.status.clone().unwrap_or_default();
    ServerStatus {
        phase: mcs.phase(),
        players: status.players,
        address: ready_address(&mcs.name_any(), namespace, &status),
        last_activity_ms: status
            .last_activity
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.as_millisecond()),
    }
}

/// The headless Service's name, once a replica can take players.
fn ready_address(name: &str, namespace: &str, status: &MinecraftServerStatus) -> Option<String> {
    (status.ready_replicas > 0).then(|| format!("{name}.{namespace}.svc:{GAME_PORT}"))
}

/// One line of `kubectl logs --timestamps`: an RFC 3339 time, a space, the text.
fn parse_log_line(raw: &str) -> Option<LogLine> {
    let (at, line) = raw.split_once(' ').unwrap_or((raw, ""));
    let at: Timestamp = at.parse().ok()?;
    Some(LogLine { at_ms: at.as_millisecond(), line: line.to_owned() })
}

/// Oldest first, at or after `since_ms` (the API server rounds `sinceTime` to
/// seconds), the last `tail` of them across all pods.
fn select_lines(mut lines: Vec<LogLine>, query: LogQuery) -> Vec<LogLine> {
    lines.retain(|l| query.since_ms.is_none_or(|since| l.at_ms >= since));
    lines.sort_by_key(|l| l.at_ms); // stable: a pod's lines keep their order
    let skip = lines.len().saturating_sub(query.tail);
    lines.split_off(skip)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use respawn_contract::{Phase, PluginSpec};

    fn spec() -> ServerSpec {
        ServerSpec {
            id: "srv_0193a0b1c2d3e4f5a6b7c8d9".into(),
            tenant_id: "ten_01".into(),
            name: "Survival".into(),
            hostnames: vec!["survival.acme.example".into()],
            minecraft_type: "paper".into(),
            minecraft_version: "1.21.4".into(),
            properties: BTreeMap::from([("difficulty".into(), "hard".into())]),
            cpu_millicores: 1000,
            memory_mib: 2048,
            storage_gib: 10,
            max_players: 20,
            idle_timeout_s: 300,
            min_replicas: 0,
            max_replicas: 2,
            plugins: vec![PluginSpec {
                name: "worldedit".into(),
                version: "7.3".into(),
                download_url: "https://plugins.example/we.jar".into(),
                sha256: Some("ab".repeat(32)),
                sha512: None,
            }],
        }
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(resource_name("srv_0193A0b1"), "srv-0193a0b1");
        assert_eq!(resource_name("__"), "srv");
        assert_eq!(resource_name(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn the_resource_maps_the_spec_and_parses_as_a_minecraft_server() {
        let value = resource(&spec(), "acme");
        let mcs: MinecraftServer = serde_json::from_value(value.clone()).expect("a valid MinecraftServer");
        assert_eq!(mcs.name_any(), "srv-0193a0b1c2d3e4f5a6b7c8d9");
        assert_eq!(mcs.labels()[TENANT_LABEL], "ten_01");
        assert_eq!(mcs.labels()[SERVER_ID_LABEL], "srv_0193a0b1c2d3e4f5a6b7c8d9");
        assert_eq!(mcs.spec.hostnames, ["survival.acme.example"]);
        assert_eq!(mcs.spec.server_type.as_deref(), Some("PAPER"));
        assert_eq!(mcs.spec.version.as_deref(), Some("1.21.4"));
        assert_eq!(mcs.spec.properties["max-players"], "20");
        assert_eq!(mcs.spec.properties["difficulty"], "hard");
        let resources = mcs.spec.resources.clone().unwrap();
        assert_eq!(resources.limits.unwrap()["memory"].0, "2048Mi");
        assert_eq!(resources.requests.unwrap()["cpu"].0, "1000m");
        assert_eq!(mcs.spec.storage.size, "10Gi");
        assert_eq!(mcs.spec.env["MEMORY"], "1536M");
        assert_eq!((mcs.spec.replicas.min, mcs.spec.replicas.max), (0, 2));
        assert_eq!(mcs.spec.idle_timeout_seconds, 300);
        assert_eq!(mcs.spec.players_per_replica, 20);
        assert_eq!(mcs.spec.plugins[0].url, "https://plugins.example/we.jar");
        assert_eq!(mcs.spec.plugins[0].sha512, None);
        assert!(value["spec"]["plugins"][0].get("sha512").is_none(), "no nulls in an applied configuration");
    }

    #[test]
    fn out_of_schema_values_are_clamped() {
        let mut s = spec();
        (s.idle_timeout_s, s.min_replicas, s.max_replicas, s.minecraft_version) = (1, 5, 0, "latest".into());
        s.plugins.clear();
        let mcs: MinecraftServer = serde_json::from_value(resource(&s, "acme")).unwrap();
        assert_eq!(mcs.spec.idle_timeout_seconds, 10);
        assert_eq!((mcs.spec.replicas.min, mcs.spec.replicas.max), (1, 1));
        assert_eq!(mcs.spec.version.as_deref(), Some("LATEST"));
        assert!(mcs.spec.plugins.is_empty());
    }

    fn mcs_with(status: Value, annotations: Value) -> MinecraftServer {
        serde_json::from_value(json!({
            "apiVersion": "respawn.dev/v1alpha1", "kind": "MinecraftServer",
            "metadata": { "name": "srv-1", "annotations": annotations },
            "spec": { "hostnames": ["a.example"] },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn status_maps_phase_players_address_and_activity() {
        let running = mcs_with(
            json!({"phase": "Running", "players": 3, "replicas": 1, "readyReplicas": 1, "lastActivity": "2026-01-01T00:00:01Z"}),
            json!({}),
        );
        let s = status_of(&running, "acme");
        assert_eq!((s.phase, s.players), (Phase::Running, 3));
        assert_eq!(s.address.as_deref(), Some("srv-1.acme.svc:25565"));
        assert_eq!(s.last_activity_ms, Some(1_767_225_601_000));
        let asleep = status_of(&mcs_with(json!({"phase": "Hibernated"}), json!({})), "acme");
        assert_eq!((asleep.phase, asleep.address), (Phase::Sleeping, None));
        let woken = mcs_with(json!({"phase": "Hibernated"}), json!({ WAKE_ANNOTATION: "2026-01-01T00:00:00Z" }));
        assert_eq!(status_of(&woken, "acme").phase, Phase::Starting);
        let handled = mcs_with(
            json!({"phase": "Hibernated", "handledWake": "2026-01-01T00:00:00Z"}),
            json!({ WAKE_ANNOTATION: "2026-01-01T00:00:00Z" }),
        );
        assert_eq!(status_of(&handled, "acme").phase, Phase::Sleeping);
        assert_eq!(
            status_of(&mcs_with(json!({"phase": "Draining", "replicas": 0}), json!({})), "acme").phase,
            Phase::Stopping
        );
        assert_eq!(
            status_of(&mcs_with(json!({"phase": "Draining", "replicas": 2}), json!({})), "acme").phase,
            Phase::Running
        );
        assert_eq!(status_of(&mcs_with(json!({"phase": "Waking"}), json!({})), "acme").phase, Phase::Starting);
    }

    #[test]
    fn log_lines_parse_and_select() {
        let l = parse_log_line("2026-01-01T00:00:00.250000000Z [Server thread/INFO]: Done (3.2s)!").unwrap();
        assert_eq!((l.at_ms, l.line.as_str()), (1_767_225_600_250, "[Server thread/INFO]: Done (3.2s)!"));
        assert_eq!(parse_log_line("no timestamp here"), None);
        let line = |at_ms, line: &str| LogLine { at_ms, line: line.into() };
        let lines = vec![line(3, "c"), line(1, "a"), line(2, "b"), line(4, "d")];
        let picked = select_lines(lines.clone(), LogQuery { tail: 2, since_ms: None });
        assert_eq!(picked, [line(3, "c"), line(4, "d")]);
        let picked = select_lines(lines, LogQuery { tail: 10, since_ms: Some(2) });
        assert_eq!(picked, [line(2, "b"), line(3, "c"), line(4, "d")]);
    }
}

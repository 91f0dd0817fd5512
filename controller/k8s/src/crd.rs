//! The `MinecraftServer` custom resource (group `respawn.dev`, short name
//! `mcs`). The CRD YAML in `deploy/` is printed from these types
//! (`respawn crdgen`); a test fails when the checked-in copy drifts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use respawn_contract::Phase;
use serde::{Deserialize, Serialize};

/// The schema's bounds, named once: the CRD enforces them at admission and
/// the API's runtime clamps what it writes to them.
pub const PLAYERS_PER_REPLICA_MAX: u32 = 10_000;
pub const IDLE_TIMEOUT_MIN_S: u32 = 10;
pub const IDLE_TIMEOUT_MAX_S: u32 = 604_800;
pub const REPLICAS_MAX: u32 = 100;

/// The image the pods run unless a spec names another: its conventions
/// (`/data`, `EULA`, `TYPE`, `VERSION`, RCON) shape the rendered StatefulSet.
pub const DEFAULT_IMAGE: &str = "itzg/minecraft-server";

// Several `printcolumn(...)` arguments are the derive's syntax, not duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "respawn.dev",
    version = "v1alpha1",
    kind = "MinecraftServer",
    plural = "minecraftservers",
    shortname = "mcs",
    namespaced,
    status = "MinecraftServerStatus",
    doc = "A Minecraft server (or fleet) that sleeps at zero replicas and wakes when a player logs in",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Players", type_ = "integer", json_path = ".status.players"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Hostname", type_ = "string", json_path = ".spec.hostnames[0]"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.replicas.min <= self.replicas.max").message("replicas.min must not be greater than replicas.max"))]
pub struct MinecraftServerSpec {
    /// Hostnames players type; `*.example.com` wildcards allowed.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(h, h.matches('^(\\\\*\\\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))").message("each hostname must be a lowercase DNS name, optionally starting with *."))]
    pub hostnames: Vec<String>,
    /// Container image; `itzg/minecraft-server` conventions by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Minecraft version (the image's `VERSION`), e.g. `1.21.4` or `LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Server type (the image's `TYPE`): `VANILLA`, `PAPER`, `FABRIC`, …
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub server_type: Option<String>,
    /// A plan (SKU) name; `resources` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub storage: Storage,
    /// Extra container environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// server.properties entries (passed as the image's environment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginRef>,
    #[serde(default)]
    pub replicas: Replicas,
    /// Players one replica holds before a fleet grows.
    #[serde(default = "default_players_per_replica")]
    #[schemars(range(min = 1, max = PLAYERS_PER_REPLICA_MAX))]
    pub players_per_replica: u32,
    /// Spare replicas a fleet keeps above what its players need.
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub buffer: u32,
    /// Sleep after this many seconds without players.
    #[serde(default = "default_idle")]
    #[schemars(range(min = IDLE_TIMEOUT_MIN_S, max = IDLE_TIMEOUT_MAX_S))]
    pub idle_timeout_seconds: u32,
    /// Stay up at least this long after each wake.
    #[serde(default = "default_min_online")]
    #[schemars(range(max = 86400))]
    pub min_online_seconds: u32,
    /// A fleet scales down only after its target stayed lower this long.
    #[serde(default = "default_stabilization")]
    #[schemars(range(max = 86400))]
    pub stabilization_seconds: u32,
    /// A draining replica is removed after this long even with players on it.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(max = 86400))]
    pub drain_timeout_seconds: u32,
    /// Keep it up whatever the policy says.
    #[serde(default)]
    pub pinned: bool,
}

fn default_players_per_replica() -> u32 {
    100
}
fn default_idle() -> u32 {
    600
}
fn default_min_online() -> u32 {
    120
}
fn default_stabilization() -> u32 {
    300
}
fn default_drain_timeout() -> u32 {
    1800
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of each replica's `/data` volume (it survives replicas 0).
    #[serde(default = "default_storage_size")]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

fn default_storage_size() -> String {
    "5Gi".into()
}

impl Default for Storage {
    fn default() -> Self {
        Self { size: default_storage_size(), class: None }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    /// 0 lets it sleep.
    #[serde(default)]
    #[schemars(range(max = REPLICAS_MAX))]
    pub min: u32,
    /// 1 for a single server, more for a fleet.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = REPLICAS_MAX))]
    pub max: u32,
}

fn one() -> u32 {
    1
}

impl Default for Replicas {
    fn default() -> Self {
        Self { min: 0, max: 1 }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema, Default)]
pub enum ServerPhase {
    #[default]
    Hibernated,
    Waking,
    Running,
    Draining,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinecraftServerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ServerPhase>,
    #[serde(default)]
    pub players: u32,
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    /// RFC 3339 times the policy remembers (so a controller restart loses nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wake: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_since: Option<String>,
    /// The last wake request acted on (see the wake annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_wake: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<ScaleDecision>,
    /// Hostnames an older MinecraftServer already claims (not routed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// Ordinal being drained before a scale-down, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_ordinal: Option<u32>,
    /// When that drain started (the drain timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDecision {
    pub replicas: u32,
    pub reason: String,
    pub at: String,
}

impl PluginRef {
    /// The contract's plugin spec for this entry (an unversioned entry is
    /// `unversioned`).
    pub fn spec(&self) -> respawn_contract::PluginSpec {
        respawn_contract::PluginSpec {
            name: self.name.clone(),
            version: self.version.clone().unwrap_or_else(|| "unversioned".into()),
            download_url: self.url.clone(),
            sha256: self.sha256.clone(),
            sha512: self.sha512.clone(),
        }
    }
}

impl MinecraftServer {
    /// A wake request the controller has not acted on yet.
    pub fn wake_pending(&self) -> bool {
        let handled = self.status.as_ref().and_then(|s| s.handled_wake.as_ref());
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::signals::WAKE_ANNOTATION))
            .is_some_and(|w| Some(w) != handled)
    }

    /// This server's [`Phase`] in the contract's terms — the one place the
    /// resource's status vocabulary (Hibernated, Waking, Running, Draining,
    /// Failed) is mapped, for the proxy's discovery and the API alike. A wake
    /// not acted on yet is already `Starting`; a fleet draining one replica
    /// still serves; draining to zero is stopping.
    pub fn phase(&self) -> Phase {
        let status = self.status.as_ref();
        match status.and_then(|s| s.phase) {
            Some(ServerPhase::Running) => Phase::Running,
            Some(ServerPhase::Waking) => Phase::Starting,
            Some(ServerPhase::Draining) if status.is_some_and(|s| s.replicas > 0) => Phase::Running,
            Some(ServerPhase::Draining) => Phase::Stopping,
            Some(ServerPhase::Failed) => Phase::Failed,
            Some(ServerPhase::Hibernated) | None if self.wake_pending() => Phase::Starting,
            Some(ServerPhase::Hibernated) | None => Phase::Sleeping,
        }
    }
}

/// The CRD as YAML (what `respawn crdgen` prints).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&MinecraftServer::crd()).expect("CRD serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/crd-minecraftserver.yaml");
        let generated = crd_yaml();
        if std::env::var_os("RESPAWN_UPDATE_CRD").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "deploy/base/crd-minecraftserver.yaml drifted from the Rust types: run `cargo run -- crdgen > deploy/base/crd-minecraftserver.yaml` (or RESPAWN_UPDATE_CRD=1 cargo test -p respawn-k8s)"
        );
    }

    #[test]
    fn crd_has_columns_short_name_and_rules() {
        let yaml = crd_yaml();
        for needle in [
            "shortNames",
            "- mcs",
            "name: Phase",
            "name: Players",
            "name: Ready",
            "name: Hostname",
            "name: Age",
            "x-kubernetes-validations",
            "replicas.min must not be greater",
        ] {
            assert!(yaml.contains(needle), "missing {needle} in\n{yaml}");
        }
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: MinecraftServerSpec =
            serde_json::from_value(serde_json::json!({"hostnames": ["survival.acme.example"]})).unwrap();
        assert_eq!(spec.replicas, Replicas { min: 0, max: 1 });
        assert_eq!(spec.idle_timeout_seconds, 600);
        assert_eq!(spec.storage.size, "5Gi");
    }
}

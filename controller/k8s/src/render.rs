//! Renders a `MinecraftServer` into the objects that run it: a StatefulSet
//! (one volume claim per replica, so `/data` survives replicas 0) and a
//! headless Service. Pure functions: the reconciler applies what they return.
//! A server with plugins gets an init container running `respawn plugin-sync`
//! (the code the local runtime runs before a start) on its `/data` volume.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, EnvVar, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
            PodTemplateSpec, Probe, ResourceRequirements, SecurityContext, Service, ServicePort, ServiceSpec,
            VolumeMount, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};

use respawn_contract::PluginSpec;

use crate::crd::{DEFAULT_IMAGE, MinecraftServer, PluginRef};

pub const SERVER_LABEL: &str = "respawn.dev/server";
pub const GAME_PORT: i32 = 25565;
pub const RCON_PORT: i32 = 25575;
/// Respawn's own image (deploy/base runs every component from it), which the
/// plugin-sync init container runs unless [`RenderOptions`] names another.
pub const DEFAULT_RESPAWN_IMAGE: &str = "respawn:latest";
/// Names the Respawn image for the init container (set it to the image the
/// controller itself runs).
pub const RESPAWN_IMAGE_ENV: &str = "RESPAWN_IMAGE";
/// Where the server image keeps its plugins (its data volume is `/data`).
pub const PLUGINS_DIR: &str = "/data/plugins";
/// The itzg image runs the server as 1000:1000; the init container writes the
/// jars as the same user so the server can read and later replace them.
const SERVER_UID: i64 = 1000;

/// What rendering needs beyond the resource itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// The image of the plugin-sync init container.
    pub respawn_image: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { respawn_image: DEFAULT_RESPAWN_IMAGE.into() }
    }
}

impl RenderOptions {
    /// Defaults, with the image from `RESPAWN_IMAGE` when set.
    pub fn from_env() -> Self {
        match std::env::var(RESPAWN_IMAGE_ENV) {
            Ok(image) if !image.trim().is_empty() => Self { respawn_image: image },
            _ => Self::default(),
        }
    }
}

pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "minecraft-server".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), name.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "respawn".to_owned()),
        (SERVER_LABEL.to_owned(), name.to_owned()),
    ])
}

fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SERVER_LABEL.to_owned(), name.to_owned())])
}

fn owned_meta(mcs: &MinecraftServer) -> ObjectMeta {
    ObjectMeta {
        name: Some(mcs.name_any()),
        namespace: mcs.namespace(),
        labels: Some(labels(&mcs.name_any())),
        owner_references: mcs.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// `max-players` → `MAX_PLAYERS`: the image maps environment to server.properties.
fn property_env(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("500m".into())),
            ("memory".to_owned(), Quantity("1536Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("2Gi".into()))])),
        ..ResourceRequirements::default()
    }
}

/// The server's data volume at `/data`, for the server and the plugin-sync container alike.
fn data_mount() -> VolumeMount {
    VolumeMount { name: "data".into(), mount_path: "/data".into(), ..VolumeMount::default() }
}

/// The init container that downloads, verifies and places the plugins in
/// `/data/plugins` before the server starts; `None` without plugins.
fn plugin_sync(plugins: &[PluginRef], options: &RenderOptions) -> Option<Container> {
    if plugins.is_empty() {
        return None;
    }
    // `RESPAWN_PLUGIN_SPECS`: the contract's PluginSpec, as `respawn plugin-sync` reads it.
    let specs: Vec<PluginSpec> = plugins.iter().map(PluginRef::spec).collect();
    let specs = serde_json::to_string(&specs).expect("plugin specs serialise");
    Some(Container {
        name: "plugin-sync".into(),
        image: Some(options.respawn_image.clone()),
        command: Some(vec!["respawn".into()]),
        args: Some(vec!["plugin-sync".into(), "--dir".into(), PLUGINS_DIR.into()]),
        env: Some(vec![env("RESPAWN_PLUGIN_SPECS", specs)]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".into())),
                ("memory".to_owned(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("256Mi".into()))])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![data_mount()]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            run_as_user: Some(SERVER_UID),
            run_as_group: Some(SERVER_UID),
            ..SecurityContext::default()
        }),
        ..Container::default()
    })
}

/// The StatefulSet for `mcs` at `replicas`, with the default [`RenderOptions`].
pub fn stateful_set(mcs: &MinecraftServer, replicas: u32) -> StatefulSet {
    stateful_set_with(mcs, replicas, &RenderOptions::default())
}

/// The StatefulSet for `mcs` at `replicas`.
pub fn stateful_set_with(mcs: &MinecraftServer, replicas: u32, options: &RenderOptions) -> StatefulSet {
    let name = mcs.name_any();
    let spec = &mcs.spec;
    let mut envs = vec![env("EULA", "TRUE"), env("ENABLE_RCON", "true")];
    if let Some(v) = &spec.version {
        envs.push(env("VERSION", v));
    }
    if let Some(t) = &spec.server_type {
        envs.push(env("TYPE", t));
    }
    envs.extend(spec.properties.iter().map(|(k, v)| env(&property_env(k), v)));
    envs.extend(spec.env.iter().map(|(k, v)| env(k, v)));
    let container = Container {
        name: "server".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
        env: Some(envs),
        ports: Some(vec![
            ContainerPort { name: Some("minecraft".into()), container_port: GAME_PORT, ..ContainerPort::default() },
            ContainerPort { name: Some("rcon".into()), container_port: RCON_PORT, ..ContainerPort::default() },
        ]),
        // "Ready" means "can log players in": the image's own status ping.
        readiness_probe: Some(Probe {
            exec: Some(ExecAction { command: Some(vec!["mc-health".into()]) }),
            initial_delay_seconds: Some(15),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(vec![data_mount()]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(spec.storage.size.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: owned_meta(mcs),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas as i32),
            service_name: Some(name.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector { match_labels: Some(selector(&name)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&name)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    init_containers: plugin_sync(&spec.plugins, options).map(|c| vec![c]),
                    containers: vec![container],
                    // Give `stop` time to save the world.
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_scaled: Some("Retain".into()),
                when_deleted: Some("Retain".into()),
            }),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// The headless Service that gives each pod a stable DNS name.
pub fn service(mcs: &MinecraftServer) -> Service {
    let name = mcs.name_any();
    Service {
        metadata: owned_meta(mcs),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some("minecraft".into()),
                port: GAME_PORT,
                target_port: Some(IntOrString::Int(GAME_PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MinecraftServerSpec;

    fn mcs() -> MinecraftServer {
        let spec: MinecraftServerSpec = serde_json::from_value(serde_json::json!({
            "hostnames": ["survival.acme.example"],
            "version": "1.21.4",
            "type": "PAPER",
            "properties": {"max-players": "50", "difficulty": "hard"},
            "storage": {"size": "10Gi", "class": "fast"},
        }))
        .unwrap();
        let mut m = MinecraftServer::new("survival", spec);
        m.metadata.namespace = Some("acme".into());
        m.metadata.uid = Some("uid-1".into());
        m
    }

    #[test]
    fn stateful_set_keeps_data_and_maps_the_spec() {
        let sts = stateful_set(&mcs(), 0);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(0));
        assert_eq!(spec.service_name.as_deref(), Some("survival"));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.spec.as_ref().unwrap().storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.persistent_volume_claim_retention_policy.as_ref().unwrap().when_scaled.as_deref(),
            Some("Retain")
        );
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        let envs: BTreeMap<_, _> =
            c.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e.value.clone().unwrap())).collect();
        assert_eq!(envs["EULA"], "TRUE");
        assert_eq!(envs["TYPE"], "PAPER");
        assert_eq!(envs["VERSION"], "1.21.4");
        assert_eq!(envs["MAX_PLAYERS"], "50");
        assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE));
        assert!(c.readiness_probe.is_some());
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("MinecraftServer", Some(true)));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("acme"));
    }

    #[test]
    fn plugins_get_a_plugin_sync_init_container_on_the_data_volume() {
        assert!(
            stateful_set(&mcs(), 1).spec.unwrap().template.spec.unwrap().init_containers.is_none(),
            "none without plugins"
        );
        let mut m = mcs();
        m.spec.plugins = serde_json::from_value(serde_json::json!([
            {"name": "worldedit", "version": "7.3.0", "url": "https://plugins.example/we.jar", "sha256": "ab"},
            {"name": "luckperms", "url": "https://plugins.example/lp.jar", "sha512": "cd"},
        ]))
        .unwrap();
        let options = RenderOptions { respawn_image: "registry.example/respawn:1.2".into() };
        let pod = stateful_set_with(&m, 1, &options).spec.unwrap().template.spec.unwrap();
        let init = pod.init_containers.as_deref().unwrap();
        assert_eq!(init.len(), 1);
        let c = &init[0];
        assert_eq!(c.image.as_deref(), Some("registry.example/respawn:1.2"));
        let argv: Vec<&str> = c.command.iter().chain(c.args.iter()).flatten().map(String::as_str).collect();
        assert_eq!(argv, ["respawn", "plugin-sync", "--dir", "/data/plugins"]);
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!((mount.name.as_str(), mount.mount_path.as_str()), ("data", "/data"));
        let server_mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.name, server_mount.name, "the server's own volume");
        let specs = c.env.as_ref().unwrap().iter().find(|e| e.name == "RESPAWN_PLUGIN_SPECS").unwrap();
        let specs: serde_json::Value = serde_json::from_str(specs.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            specs,
            serde_json::json!([
                {"name": "worldedit", "version": "7.3.0", "download_url": "https://plugins.example/we.jar", "sha256": "ab"},
                {"name": "luckperms", "version": "unversioned", "download_url": "https://plugins.example/lp.jar", "sha512": "cd"},
            ])
        );
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, Some(SERVER_UID));
    }

    #[test]
    fn the_default_respawn_image_is_the_one_deploy_runs() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/controller.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        let image = format!("image: {}", RenderOptions::default().respawn_image);
        assert!(yaml.contains(&image), "{} runs another image than {image}", path.display());
    }

    #[test]
    fn headless_service() {
        let svc = service(&mcs());
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector.unwrap()[SERVER_LABEL], "survival");
    }
}

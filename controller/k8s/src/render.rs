//! Renders a `MinecraftServer` into the objects that run it: a StatefulSet
//! (one volume claim per replica, so `/data` survives replicas 0) and a
//! headless Service. Pure functions: the reconciler applies what they return.

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
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::{LabelSelector, ObjectMeta}, util::intstr::IntOrString},
};
use kube::{Resource, ResourceExt};

use crate::crd::{DEFAULT_IMAGE, MinecraftServer};

pub const SERVER_LABEL: &str = "respawn.dev/server";
pub const GAME_PORT: i32 = 25565;
pub const RCON_PORT: i32 = 25575;

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

/// The StatefulSet for `mcs` at `replicas`.
pub fn stateful_set(mcs: &MinecraftServer, replicas: u32) -> StatefulSet {
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
        volume_mounts: Some(vec![VolumeMount { name: "data".into(), mount_path: "/data".into(), ..VolumeMount::default() }]),
        security_context: Some(SecurityContext { allow_privilege_escalation: Some(false), ..SecurityContext::default() }),
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
        assert_eq!(spec.persistent_volume_claim_retention_policy.as_ref().unwrap().when_scaled.as_deref(), Some("Retain"));
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        let envs: BTreeMap<_, _> = c.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e.value.clone().unwrap())).collect();
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
    fn headless_service() {
        let svc = service(&mcs());
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector.unwrap()[SERVER_LABEL], "survival");
    }
}

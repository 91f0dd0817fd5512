//! Which resources the fake serves: the built-in kinds, and custom resources that exist
//! only while a CustomResourceDefinition registers them.

use serde_json::Value;

use crate::object::dot_path;

/// Where a kind keeps the replica count its `/scale` subresource exposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// Path of the desired replicas (`spec.replicas`), as map keys.
    pub spec_replicas: Vec<String>,
    /// Path of the observed replicas (`status.replicas`).
    pub status_replicas: Vec<String>,
    /// For custom resources, where the serialized label selector lives
    /// (`labelSelectorPath`); built-in workloads derive it from `spec.selector`.
    pub label_selector: Option<Vec<String>>,
}

/// One served resource at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    /// API version within the group.
    pub version: String,
    /// Kind of the objects (`Pod`).
    pub kind: String,
    /// Kind of list responses (`PodList`).
    pub list_kind: String,
    /// Plural resource name used in paths (`pods`).
    pub plural: String,
    /// Singular name, for discovery.
    pub singular: String,
    /// Short names, for discovery.
    pub short_names: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes keep the stored status, status writes
    /// keep everything else.
    pub status_subresource: bool,
    /// Has a `/scale` subresource.
    pub scale: Option<ScalePaths>,
    /// Bumps `metadata.generation` when anything but metadata (and status, with a status
    /// subresource) changes.
    pub tracks_generation: bool,
    /// Whether a PUT without `metadata.resourceVersion` is accepted (the real server
    /// refuses it for custom resources and CRDs).
    pub unconditional_update: bool,
    /// Fields a field selector may use besides `metadata.name` and `metadata.namespace`.
    pub selectable_fields: Vec<String>,
    /// The CRD that registered this resource, if it is a custom resource.
    pub crd: Option<String>,
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Objects of every version of one group/plural share one storage.
    pub fn storage(&self) -> StorageKey {
        StorageKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// Identifies the storage of one resource across its versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageKey {
    /// API group.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
}

/// Builds one built-in type; the flags are set by the caller.
fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        singular: kind.to_ascii_lowercase(),
        short_names: Vec::new(),
        namespaced,
        status_subresource: false,
        scale: None,
        tracks_generation: false,
        unconditional_update: true,
        selectable_fields: Vec::new(),
        crd: None,
    }
}

fn workload_scale() -> Option<ScalePaths> {
    Some(ScalePaths {
        spec_replicas: vec!["spec".into(), "replicas".into()],
        status_replicas: vec!["status".into(), "replicas".into()],
        label_selector: None,
    })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// The built-in kinds the fake serves, with their real subresources and field selectors.
pub fn builtins() -> Vec<ResourceType> {
    let with_status = |mut rt: ResourceType| {
        rt.status_subresource = true;
        rt
    };
    let workload = |mut rt: ResourceType| {
        rt.status_subresource = true;
        rt.tracks_generation = true;
        rt.scale = workload_scale();
        rt
    };
    let mut pods = with_status(builtin("", "v1", "Pod", "pods", true));
    pods.short_names = strings(&["po"]);
    pods.selectable_fields = strings(&[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ]);
    let mut core_events = builtin("", "v1", "Event", "events", true);
    core_events.short_names = strings(&["ev"]);
    core_events.selectable_fields = strings(&[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ]);
    let mut namespaces = with_status(builtin("", "v1", "Namespace", "namespaces", false));
    namespaces.short_names = strings(&["ns"]);
    namespaces.selectable_fields = strings(&["status.phase"]);
    let mut secrets = builtin("", "v1", "Secret", "secrets", true);
    secrets.selectable_fields = strings(&["type"]);
    let mut nodes = with_status(builtin("", "v1", "Node", "nodes", false));
    nodes.selectable_fields = strings(&["spec.unschedulable"]);
    let mut crds = with_status(builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ));
    crds.tracks_generation = true;
    crds.unconditional_update = false;
    crds.short_names = strings(&["crd", "crds"]);
    let mut events = builtin("events.k8s.io", "v1", "Event", "events", true);
    events.short_names = strings(&["ev"]);

    let short = |mut rt: ResourceType, names: &[&str]| {
        rt.short_names = strings(names);
        rt
    };
    vec![
        namespaces,
        pods,
        short(with_status(builtin("", "v1", "Service", "services", true)), &["svc"]),
        short(builtin("", "v1", "Endpoints", "endpoints", true), &["ep"]),
        core_events,
        short(builtin("", "v1", "ConfigMap", "configmaps", true), &["cm"]),
        secrets,
        short(builtin("", "v1", "ServiceAccount", "serviceaccounts", true), &["sa"]),
        short(
            with_status(builtin(
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
            )),
            &["pvc"],
        ),
        short(nodes, &["no"]),
        short(
            workload(builtin("apps", "v1", "StatefulSet", "statefulsets", true)),
            &["sts"],
        ),
        short(
            workload(builtin("apps", "v1", "Deployment", "deployments", true)),
            &["deploy"],
        ),
        short(
            workload(builtin("apps", "v1", "ReplicaSet", "replicasets", true)),
            &["rs"],
        ),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
        events,
        builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true),
        crds,
    ]
}

/// Why a CRD cannot be accepted (the message of a 422).
pub type CrdProblem = String;

/// Reads the resource types a CustomResourceDefinition registers: one per served version.
pub fn types_from_crd(crd: &Value) -> Result<Vec<ResourceType>, CrdProblem> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let text = |pointer: &str| spec.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    let group = text("/group")
        .filter(|g| !g.is_empty())
        .ok_or("spec.group: Required value")?;
    let plural = text("/names/plural")
        .filter(|p| !p.is_empty())
        .ok_or("spec.names.plural: Required value")?;
    let kind = text("/names/kind")
        .filter(|k| !k.is_empty())
        .ok_or("spec.names.kind: Required value")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match text("/scope").as_deref() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ));
        }
    };
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?;
    if versions.is_empty() {
        return Err("spec.versions: Invalid value: must have at least one version".into());
    }
    let storage_versions = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage_versions != 1 {
        return Err("spec.versions: Invalid value: must have exactly one version marked as storage version".into());
    }
    let list_kind = text("/names/listKind").unwrap_or_else(|| format!("{kind}List"));
    let singular = text("/names/singular").unwrap_or_else(|| kind.to_ascii_lowercase());
    let short_names: Vec<String> = spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();

    let mut types = Vec::new();
    for version in versions {
        let Some(version_name) = version.get("name").and_then(Value::as_str) else {
            return Err("spec.versions[].name: Required value".into());
        };
        if version.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let subresources = version.get("subresources");
        let scale = subresources.and_then(|s| s.get("scale")).map(|scale| ScalePaths {
            spec_replicas: dot_path(
                scale
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas"),
            ),
            status_replicas: dot_path(
                scale
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas"),
            ),
            label_selector: scale.get("labelSelectorPath").and_then(Value::as_str).map(dot_path),
        });
        let selectable_fields = version
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        types.push(ResourceType {
            group: group.clone(),
            version: version_name.to_string(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            short_names: short_names.clone(),
            namespaced,
            status_subresource: subresources.and_then(|s| s.get("status")).is_some(),
            scale,
            tracks_generation: true,
            unconditional_update: false,
            selectable_fields,
            crd: Some(name.to_string()),
        });
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": "widgets.example.com" },
            "spec": {
                "group": "example.com",
                "names": { "kind": "Widget", "plural": "widgets" },
                "scope": "Namespaced",
                "versions": [
                    { "name": "v1", "served": true, "storage": true,
                      "subresources": { "status": {}, "scale": {
                          "specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size" } } },
                    { "name": "v0", "served": false, "storage": false }
                ]
            }
        })
    }

    #[test]
    fn crd_registers_each_served_version_with_its_subresources() {
        let types = types_from_crd(&crd()).unwrap();
        assert_eq!(types.len(), 1);
        let widget = &types[0];
        assert_eq!(widget.api_version(), "example.com/v1");
        assert_eq!(widget.list_kind, "WidgetList");
        assert!(widget.namespaced && widget.status_subresource && !widget.unconditional_update);
        let scale = widget.scale.as_ref().unwrap();
        assert_eq!(scale.spec_replicas, vec!["spec", "size"]);
        assert_eq!(scale.status_replicas, vec!["status", "size"]);
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("widget.example.com");
        assert!(types_from_crd(&bad).unwrap_err().contains("metadata.name"));
    }

    #[test]
    fn builtins_have_unique_paths() {
        let types = builtins();
        let mut keys: Vec<_> = types
            .iter()
            .map(|t| (t.group.clone(), t.version.clone(), t.plural.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), types.len());
    }
}

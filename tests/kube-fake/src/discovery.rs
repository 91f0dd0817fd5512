//! Discovery documents (`/version`, `/api`, `/apis`, `/apis/{group}/{version}`), enough
//! for kube's `Discovery` and `apiserver_version`.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// The Kubernetes version the fake claims, matching the k8s-openapi feature in use.
pub const MINOR_VERSION: &str = "33";

/// `/version`
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR_VERSION,
        "gitVersion": format!("v1.{MINOR_VERSION}.0-respawn-fake"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_entry(name: &str, types: &[ResourceType]) -> Option<Value> {
    let mut versions: Vec<String> = Vec::new();
    for rt in types.iter().filter(|t| t.group == name) {
        if !versions.contains(&rt.version) {
            versions.push(rt.version.clone());
        }
    }
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{name}/{v}"), "version": v }))
        .collect();
    let preferred = entries.first()?.clone();
    Some(json!({ "name": name, "versions": entries, "preferredVersion": preferred }))
}

/// `/apis`
pub fn groups(types: &[ResourceType]) -> Value {
    let mut names: Vec<String> = Vec::new();
    for rt in types.iter().filter(|t| !t.group.is_empty()) {
        if !names.contains(&rt.group) {
            names.push(rt.group.clone());
        }
    }
    let groups: Vec<Value> = names.iter().filter_map(|n| group_entry(n, types)).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}`
pub fn group(types: &[ResourceType], name: &str) -> Option<Value> {
    let mut entry = group_entry(name, types)?;
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// `/api/v1` or `/apis/{group}/{version}`
pub fn resources(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for rt in types.iter().filter(|t| t.group == group && t.version == version) {
        resources.push(json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": rt.short_names,
        }));
        if rt.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced,
                "kind": rt.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if rt.scale.is_some() {
            resources.push(json!({
                "name": format!("{}/scale", rt.plural), "singularName": "", "namespaced": rt.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}

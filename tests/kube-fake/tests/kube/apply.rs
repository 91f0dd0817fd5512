//! Server-side apply: creates, merges, and a simple model of field ownership.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::common::{server, status};

fn config(data: serde_json::Value) -> serde_json::Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "cfg", "labels": { "app": "mc" } }, "data": data })
}

fn data(cm: &ConfigMap) -> Vec<(String, String)> {
    cm.data.clone().unwrap_or_default().into_iter().collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[tokio::test]
async fn apply_creates_then_merges_what_each_manager_applies() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let a = PatchParams::apply("manager-a");
    let created = cms
        .patch("cfg", &a, &Patch::Apply(config(json!({ "x": "1", "y": "1" }))))
        .await
        .unwrap();
    assert_eq!(data(&created), pairs(&[("x", "1"), ("y", "1")]));
    assert!(created.metadata.uid.is_some());
    let created_requests = server.requests();
    assert!(
        created_requests
            .iter()
            .any(|r| r.query.contains("fieldManager=manager-a"))
    );

    let b = PatchParams::apply("manager-b");
    let merged = cms
        .patch("cfg", &b, &Patch::Apply(config(json!({ "z": "2" }))))
        .await
        .unwrap();
    assert_eq!(data(&merged), pairs(&[("x", "1"), ("y", "1"), ("z", "2")]));
    assert_eq!(
        merged.metadata.labels.unwrap().get("app").map(String::as_str),
        Some("mc")
    );

    // manager-a stops applying `y`: it goes; `z` (manager-b's) stays.
    let dropped = cms
        .patch("cfg", &a, &Patch::Apply(config(json!({ "x": "1" }))))
        .await
        .unwrap();
    assert_eq!(data(&dropped), pairs(&[("x", "1"), ("z", "2")]));

    // Re-applying the same configuration changes nothing.
    let again = cms
        .patch("cfg", &a, &Patch::Apply(config(json!({ "x": "1" }))))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, dropped.metadata.resource_version);
}

#[tokio::test]
async fn applying_another_managers_field_conflicts_unless_forced() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.patch(
        "cfg",
        &PatchParams::apply("manager-a"),
        &Patch::Apply(config(json!({ "x": "1" }))),
    )
    .await
    .unwrap();
    let b = PatchParams::apply("manager-b");
    let conflict = status(cms.patch("cfg", &b, &Patch::Apply(config(json!({ "x": "2" })))).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("conflict with \"manager-a\": .data.x"),
        "{}",
        conflict.message
    );
    // Agreeing on the value is no conflict; forcing takes the field.
    cms.patch("cfg", &b, &Patch::Apply(config(json!({ "x": "1" }))))
        .await
        .unwrap();
    let forced = cms
        .patch("cfg", &b.clone().force(), &Patch::Apply(config(json!({ "x": "2" }))))
        .await
        .unwrap();
    assert_eq!(data(&forced), pairs(&[("x", "2")]));

    // Apply without a field manager is refused by the server too (kube checks first).
    let request = http::Request::patch("/api/v1/namespaces/default/configmaps/cfg")
        .header("content-type", "application/apply-patch+yaml")
        .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n".to_vec())
        .unwrap();
    let missing_manager = status(client.request::<ConfigMap>(request).await);
    assert_eq!(
        (missing_manager.code, missing_manager.reason.as_str()),
        (422, "Invalid")
    );
}

//! Optimistic concurrency: stale resourceVersions are refused with 409 Conflict.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{Widget, configmap, install_widget_crd, server, status, widget};

#[tokio::test]
async fn merge_patch_with_a_stale_resource_version_is_a_conflict() {
    let (_server, client) = server().await;
    let leases: Api<Lease> = Api::default_namespaced(client);
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": { "name": "leader" },
        "spec": { "holderIdentity": "a", "leaseDurationSeconds": 15 }
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let stale = created.resource_version().unwrap();

    let take =
        |holder: &str, rv: &str| json!({ "metadata": { "resourceVersion": rv }, "spec": { "holderIdentity": holder } });
    let won = leases
        .patch("leader", &PatchParams::default(), &Patch::Merge(&take("b", &stale)))
        .await
        .unwrap();
    assert_eq!(won.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // A second contender read the same version: it must lose.
    let lost = status(
        leases
            .patch("leader", &PatchParams::default(), &Patch::Merge(&take("c", &stale)))
            .await,
    );
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    assert!(lost.is_conflict());
    assert!(
        lost.message.contains("the object has been modified"),
        "{}",
        lost.message
    );
    assert_eq!(
        leases
            .get("leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn put_with_a_stale_resource_version_is_a_conflict() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let first = cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let mut update = first.clone();
    update.data = Some([("k".to_string(), "2".to_string())].into());
    let updated = cms.replace("a", &PostParams::default(), &update).await.unwrap();
    assert_ne!(updated.resource_version(), first.resource_version());

    let mut stale = first.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let conflict = status(cms.replace("a", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    // Writing the same content again is a no-op: no new resourceVersion.
    let same = cms.replace("a", &PostParams::default(), &updated).await.unwrap();
    assert_eq!(same.resource_version(), updated.resource_version());

    // Built-ins accept a PUT without a resourceVersion (unconditional update)…
    let mut blind = updated.clone();
    blind.metadata.resource_version = None;
    blind.data = Some([("k".to_string(), "4".to_string())].into());
    cms.replace("a", &PostParams::default(), &blind).await.unwrap();
}

#[tokio::test]
async fn custom_resources_refuse_unconditional_put() {
    let (_server, client) = server().await;
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::default_namespaced(client);
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let invalid = status(widgets.replace("w", &PostParams::default(), &widget("w", 2)).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn json_patch_tests_guard_writes() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let send = |patch: serde_json::Value| {
        let client = client.clone();
        async move {
            let request = http::Request::patch("/api/v1/namespaces/default/configmaps/a")
                .header("content-type", "application/json-patch+json")
                .body(serde_json::to_vec(&patch).unwrap())
                .unwrap();
            client.request::<ConfigMap>(request).await
        }
    };
    // kube-runtime's finalizer helper: `test` for null on an absent field, then add.
    let added = send(json!([
        { "op": "test", "path": "/metadata/finalizers", "value": null },
        { "op": "add", "path": "/metadata/finalizers", "value": ["respawn.dev/cleanup"] }
    ]))
    .await
    .unwrap();
    assert_eq!(added.finalizers(), ["respawn.dev/cleanup"]);
    let failed = status(
        send(json!([{ "op": "test", "path": "/data/k", "value": "other" }, { "op": "remove", "path": "/data" }])).await,
    );
    assert_eq!((failed.code, failed.reason.as_str()), (422, "Invalid"));
    let malformed = status(send(json!({ "op": "remove" })).await);
    assert_eq!((malformed.code, malformed.reason.as_str()), (400, "BadRequest"));
    assert!(cms.get("a").await.unwrap().data.is_some());
}

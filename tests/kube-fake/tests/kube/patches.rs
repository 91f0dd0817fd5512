//! Strategic merge patches, dry runs, collection deletes and discovery details.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{Widget, configmap, install_widget_crd, server, status, widget};

#[tokio::test]
async fn strategic_merge_merges_containers_by_name() {
    let (_server, client) = server().await;
    let sts: Api<StatefulSet> = Api::default_namespaced(client);
    let set: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": { "name": "mc" },
        "spec": { "serviceName": "mc", "selector": { "matchLabels": { "app": "mc" } },
                  "template": { "metadata": { "labels": { "app": "mc" } }, "spec": { "containers": [
                      { "name": "mc", "image": "old", "ports": [{ "containerPort": 25565 }] },
                      { "name": "exporter", "image": "e" } ] } } }
    }))
    .unwrap();
    let created = sts.create(&PostParams::default(), &set).await.unwrap();
    assert_eq!(
        created.spec.as_ref().and_then(|s| s.replicas),
        Some(1),
        "replicas default to 1"
    );
    let patch = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "mc", "image": "new" }] } } } });
    let patched = sts
        .patch("mc", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let containers = patched.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("new"));
    assert_eq!(containers[0].ports.as_ref().map(Vec::len), Some(1));
    assert_eq!(patched.metadata.generation, Some(2));
}

#[tokio::test]
async fn strategic_merge_is_unsupported_for_custom_resources() {
    let (_server, client) = server().await;
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::default_namespaced(client);
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let patch = json!({ "spec": { "replicas": 2 } });
    let refused = status(
        widgets
            .patch("w", &PatchParams::default(), &Patch::Strategic(&patch))
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (415, "UnsupportedMediaType"));
}

#[tokio::test]
async fn dry_runs_store_nothing_and_collections_delete_by_selector() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let rv = server.cluster().resource_version();
    let dry = cms
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &configmap("dry", &[]),
        )
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(cms.get_opt("dry").await.unwrap().is_none());
    assert_eq!(server.cluster().resource_version(), rv);

    for (name, app) in [("a", "mc"), ("b", "mc"), ("c", "web")] {
        cms.create(&PostParams::default(), &configmap(name, &[("app", app)]))
            .await
            .unwrap();
    }
    let deleted = cms
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=mc"))
        .await
        .unwrap();
    let names: Vec<String> = deleted
        .left()
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(left, ["c"]);

    let version = client.apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "33"));
}

//! `/status` and `/scale`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{Widget, WidgetStatus, install_widget_crd, server, status, widget};

fn statefulset(name: &str, replicas: i32) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": { "name": name },
        "spec": {
            "replicas": replicas, "serviceName": name,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } },
                          "spec": { "containers": [{ "name": "mc", "image": "itzg/minecraft-server" }] } }
        },
        "status": { "replicas": 7, "readyReplicas": 7 }
    }))
    .unwrap()
}

#[tokio::test]
async fn status_and_spec_are_written_separately_and_generation_follows_spec() {
    let (_server, client) = server().await;
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::default_namespaced(client);
    let mut w = widget("w", 1);
    w.status = Some(WidgetStatus {
        replicas: 9,
        phase: Some("Ignored".into()),
    });
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "status is not written on create");
    assert_eq!(created.metadata.generation, Some(1));

    // A status write changes only status and leaves generation alone.
    let status_patch = json!({ "spec": { "replicas": 5 }, "status": { "replicas": 1, "phase": "Running" } });
    let after_status = widgets
        .patch_status("w", &PatchParams::default(), &Patch::Merge(&status_patch))
        .await
        .unwrap();
    assert_eq!(after_status.spec.replicas, 1);
    assert_eq!(after_status.status.as_ref().map(|s| s.replicas), Some(1));
    assert_eq!(after_status.metadata.generation, Some(1));

    // A spec write ignores status and bumps generation.
    let spec_patch = json!({ "spec": { "replicas": 3 }, "status": { "replicas": 99 } });
    let after_spec = widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(&spec_patch))
        .await
        .unwrap();
    assert_eq!(after_spec.spec.replicas, 3);
    assert_eq!(after_spec.status.as_ref().map(|s| s.replicas), Some(1));
    assert_eq!(after_spec.metadata.generation, Some(2));

    // Metadata-only changes do not bump generation either.
    let label = json!({ "metadata": { "labels": { "a": "b" } } });
    let after_label = widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    assert_eq!(after_label.metadata.generation, Some(2));

    // PUT /status with the current resourceVersion, then with a stale one.
    let mut put = after_label.clone();
    put.status = Some(WidgetStatus {
        replicas: 3,
        phase: None,
    });
    put.spec.replicas = 100;
    let replaced = widgets.replace_status("w", &PostParams::default(), &put).await.unwrap();
    assert_eq!(
        (replaced.spec.replicas, replaced.status.as_ref().map(|s| s.replicas)),
        (3, Some(3))
    );
    let stale = status(widgets.replace_status("w", &PostParams::default(), &put).await);
    assert_eq!(stale.code, 409);

    // Server-side apply to status, as controllers do.
    let applied = json!({ "apiVersion": "test.respawn.dev/v1", "kind": "Widget", "status": { "replicas": 4 } });
    let after_apply = widgets
        .patch_status("w", &PatchParams::apply("ctl").force(), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(after_apply.status.map(|s| s.replicas), Some(4));
    assert_eq!(after_apply.metadata.generation, Some(2));
}

#[tokio::test]
async fn statefulset_scale_subresource() {
    let (server, client) = server().await;
    let sts: Api<StatefulSet> = Api::default_namespaced(client);
    let created = sts.create(&PostParams::default(), &statefulset("mc", 0)).await.unwrap();
    assert_eq!(created.status, None, "status is the StatefulSet controller's");
    // The test plays the StatefulSet controller: it writes status directly.
    let mut observed = serde_json::to_value(&created).unwrap();
    observed["status"] = json!({ "replicas": 0, "readyReplicas": 0 });
    server.set(observed).unwrap();

    let scale = sts.get_scale("mc").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0), 0);
    let scale_status = scale.status.clone().unwrap();
    assert_eq!(
        (scale_status.replicas, scale_status.selector.as_deref()),
        (0, Some("app=mc"))
    );

    let patched = sts
        .patch_scale(
            "mc",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(1));
    let after = sts.get("mc").await.unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(1));
    assert_eq!(after.metadata.generation, Some(2));

    let mut replace = Scale {
        metadata: scale.metadata.clone(),
        spec: Some(ScaleSpec { replicas: Some(2) }),
        status: None,
    };
    let stale = status(sts.replace_scale("mc", &PostParams::default(), &replace).await);
    assert_eq!(stale.code, 409, "the Scale carried the old resourceVersion");
    replace.metadata.resource_version = after.metadata.resource_version.clone();
    sts.replace_scale("mc", &PostParams::default(), &replace).await.unwrap();
    assert_eq!(sts.get("mc").await.unwrap().spec.unwrap().replicas, Some(2));
    assert_eq!(created.name_any(), "mc");
}

#[tokio::test]
async fn custom_resource_scale_follows_the_crd_paths() {
    let (_server, client) = server().await;
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::default_namespaced(client);
    widgets.create(&PostParams::default(), &widget("w", 2)).await.unwrap();
    let scale = widgets.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    widgets
        .patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .unwrap();
    assert_eq!(widgets.get("w").await.unwrap().spec.replicas, 0);
}

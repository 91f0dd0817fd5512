//! kube-runtime's Controller, finalizer helper and owned-object triggers against the fake.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::common::{STEP, Widget, install_widget_crd, server, widget};

const FINALIZER: &str = "test.respawn.dev/cleanup";
const MANAGER: &str = "widget-controller";

struct Context {
    client: kube::Client,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>);

async fn reconcile(obj: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&widgets, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(w) => {
                let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                let owner = w.controller_owner_ref(&()).expect("widgets have uids");
                let cm = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": { "name": w.name_any(), "ownerReferences": [owner] },
                    "data": { "replicas": w.spec.replicas.to_string() },
                });
                cms.patch(&w.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&cm))
                    .await?;
                let status = json!({ "apiVersion": "test.respawn.dev/v1", "kind": "Widget",
                                     "status": { "replicas": w.spec.replicas, "phase": "Ready" } });
                widgets
                    .patch_status(
                        &w.name_any(),
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(&status),
                    )
                    .await?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| ReconcileError(Box::new(e)))
}

fn error_policy(_obj: Arc<Widget>, _error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_controller_reconciles_owns_and_finalizes() {
    let (server, client) = server().await;
    install_widget_crd(&client).await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    widgets.create(&PostParams::default(), &widget("w", 2)).await.unwrap();
    let ready = eventually(|| async {
        let w = widgets.get("w").await.ok()?;
        (w.status.as_ref()?.phase.as_deref() == Some("Ready")).then_some(w)
    })
    .await;
    assert_eq!(ready.finalizers(), [FINALIZER]);
    assert_eq!(cms.get("w").await.unwrap().data.unwrap()["replicas"], "2");

    // Another actor deletes the owned ConfigMap: the owner trigger restores it.
    server.remove("v1", "ConfigMap", "default", "w").unwrap();
    eventually(|| async { cms.get_opt("w").await.ok().flatten() }).await;

    // Deleting the widget runs cleanup, removes the finalizer, and the garbage
    // collector takes the ConfigMap.
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    eventually(|| async { widgets.get_opt("w").await.ok()?.is_none().then_some(()) }).await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    assert!(cms.get_opt("w").await.unwrap().is_none());
    controller.abort();
}

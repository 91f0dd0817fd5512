//! More of kube-runtime: wait conditions and the event recorder.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::wait::{await_condition, conditions};
use kube::{CustomResourceExt, Resource, ResourceExt};

use crate::common::{STEP, Widget, configmap, install_widget_crd, server};

#[tokio::test]
async fn wait_conditions_see_crd_establishment_and_deletion() {
    let (_server, client) = server().await;
    install_widget_crd(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = await_condition(crds, Widget::crd_name(), conditions::is_crd_established());
    tokio::time::timeout(STEP, established).await.unwrap().unwrap();

    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let cm = cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let uid = cm.uid().unwrap();
    let deleted = tokio::spawn({
        let cms = cms.clone();
        async move { await_condition(cms, "a", conditions::is_deleted(&uid)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(STEP, deleted).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn the_recorder_creates_then_patches_an_event_series() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "respawn".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Woke".into(),
        note: Some("a player logged in".into()),
        action: "Scale".into(),
        secondary: None,
    };
    let reference = cm.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::default_namespaced(client);
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1, "the second publish patches the first event");
    assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(listed[0].reason.as_deref(), Some("Woke"));
}

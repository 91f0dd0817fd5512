//! Shared helpers: a server with a client, small objects, error and event plumbing.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, WatchEvent};
use kube::core::Status;
use kube::{Client, CustomResource};
use respawn_kube_fake::FakeApiServer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Long enough for a loaded 2-core machine, short enough that a hang fails fast.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn server() -> (FakeApiServer, Client) {
    let server = FakeApiServer::start().await;
    let client = server.client();
    (server, client)
}

pub fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .filter(|l| !l.is_empty()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    }
}

/// The Status inside an API error; panics on any other error.
pub fn status(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next non-bookmark event of a watch.
pub async fn next_event<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        let event = tokio::time::timeout(STEP, stream.next())
            .await
            .expect("watch event in time")
            .expect("stream open");
        match event.expect("event decodes") {
            WatchEvent::Bookmark(_) => continue,
            other => return other,
        }
    }
}

/// A tiny custom resource with status and scale subresources.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "test.respawn.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas"}"#
)]
pub struct WidgetSpec {
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WidgetStatus {
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

pub fn widget(name: &str, replicas: i32) -> Widget {
    Widget::new(name, WidgetSpec { replicas, color: None })
}

/// Registers the Widget CRD through the API, as a deployment step would.
pub async fn install_widget_crd(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    crds.create(&kube::api::PostParams::default(), &Widget::crd())
        .await
        .expect("CRD created");
}

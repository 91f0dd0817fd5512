//! Injected failures and the request log.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{configmap, server, status};

#[tokio::test]
async fn fail_next_fails_one_matching_request_once() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    server.cluster().clear_request_log();

    server.fail_next("GET", "/api/v1/namespaces/default/configmaps/a", 500);
    server.fail_next("patch", "/api/v1/namespaces/default/configmaps", 409);
    let failed = status(cms.get("a").await);
    assert_eq!((failed.code, failed.reason.as_str()), (500, "InternalError"));
    cms.get("a").await.unwrap();

    let patch = Patch::Merge(json!({ "data": { "k": "2" } }));
    let conflict = status(cms.patch("a", &PatchParams::default(), &patch).await);
    assert!(conflict.is_conflict());
    cms.patch("a", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "2");

    let log = server.request_log();
    let expected: Vec<(String, String)> = [
        ("GET", "/api/v1/namespaces/default/configmaps/a"),
        ("GET", "/api/v1/namespaces/default/configmaps/a"),
        ("PATCH", "/api/v1/namespaces/default/configmaps/a"),
        ("PATCH", "/api/v1/namespaces/default/configmaps/a"),
        ("GET", "/api/v1/namespaces/default/configmaps/a"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
    .collect();
    assert_eq!(log, expected);
    let patch_request = server.requests().into_iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        patch_request.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
}

#[tokio::test]
async fn a_watch_fault_does_not_touch_lists() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    server.fail_next("watch", "/api/v1/namespaces/default/configmaps", 403);
    cms.list(&Default::default()).await.unwrap();
    let forbidden = status(cms.watch(&Default::default(), "0").await.map(|_| ()));
    assert_eq!((forbidden.code, forbidden.reason.as_str()), (403, "Forbidden"));
    let _stream = cms.watch(&Default::default(), "0").await.unwrap();
}

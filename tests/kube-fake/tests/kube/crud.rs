//! Create, get, list and delete through kube's typed Api.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::common::{configmap, server, status};

#[tokio::test]
async fn create_get_and_get_opt_of_a_missing_object() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let created = cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(rv > 0);

    let fetched = cms.get("a").await.unwrap();
    assert_eq!(fetched.metadata.uid, created.metadata.uid);
    assert!(cms.get_opt("missing").await.unwrap().is_none());
    let missing = status(cms.get("missing").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert!(
        missing.message.contains("configmaps \"missing\" not found"),
        "{}",
        missing.message
    );

    let again = status(cms.create(&PostParams::default(), &configmap("a", &[])).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert!(again.is_already_exists());
}

#[tokio::test]
async fn generate_name_and_invalid_names() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let mut generated = configmap("", &[]);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("mc-".into());
    let created = cms.create(&PostParams::default(), &generated).await.unwrap();
    assert!(
        created.name_any().starts_with("mc-") && created.name_any().len() == 8,
        "{}",
        created.name_any()
    );

    let invalid = status(cms.create(&PostParams::default(), &configmap("Not_Valid", &[])).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn objects_need_an_existing_namespace() {
    let (_server, client) = server().await;
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "games");
    let missing_ns = status(elsewhere.create(&PostParams::default(), &configmap("a", &[])).await);
    assert_eq!(missing_ns.code, 404);
    assert!(
        missing_ns.message.contains("namespaces \"games\" not found"),
        "{}",
        missing_ns.message
    );

    let namespaces: Api<Namespace> = Api::all(client);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("games".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = namespaces.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    elsewhere
        .create(&PostParams::default(), &configmap("a", &[]))
        .await
        .unwrap();
}

#[tokio::test]
async fn list_carries_kind_resource_version_and_honours_selectors() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for (name, app, tier) in [("a", "mc", "game"), ("b", "mc", "proxy"), ("c", "web", "game")] {
        cms.create(
            &PostParams::default(),
            &configmap(name, &[("app", app), ("tier", tier)]),
        )
        .await
        .unwrap();
    }
    cms.create(&PostParams::default(), &configmap("d", &[])).await.unwrap();

    let names =
        |list: kube::core::ObjectList<ConfigMap>| list.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>();
    let all = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        all.metadata.resource_version,
        Some(server.cluster().resource_version().to_string())
    );
    assert_eq!(names(all), ["a", "b", "c", "d"]);
    assert_eq!(
        names(cms.list(&ListParams::default().labels("app=mc")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("app=mc,tier!=game"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(cms.list(&ListParams::default().labels("tier")).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(cms.list(&ListParams::default().labels("!tier")).await.unwrap()),
        ["d"]
    );
    assert_eq!(
        names(cms.list(&ListParams::default().labels("app in (web,x)")).await.unwrap()),
        ["c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    // Paging parameters are accepted (everything comes in one page).
    assert_eq!(names(cms.list(&ListParams::default().limit(1)).await.unwrap()).len(), 4);

    let bad_field = status(cms.list(&ListParams::default().fields("spec.nope=1")).await);
    assert_eq!((bad_field.code, bad_field.reason.as_str()), (400, "BadRequest"));

    // Raw list: kind, apiVersion, and kind/apiVersion on each item.
    let raw = client
        .request_text(
            http::Request::get("/api/v1/namespaces/default/configmaps")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (raw["kind"].as_str(), raw["apiVersion"].as_str()),
        (Some("ConfigMapList"), Some("v1"))
    );
    assert!(
        raw["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] == "ConfigMap" && i["apiVersion"] == "v1")
    );

    // All-namespaces list.
    let all_ns: Api<ConfigMap> = Api::all(client);
    assert_eq!(all_ns.list(&ListParams::default()).await.unwrap().items.len(), 4);
}

#[tokio::test]
async fn delete_returns_the_object_and_a_second_delete_is_not_found() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let deleted = cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().map(|cm| cm.name_any()).as_deref(), Some("a"));
    assert!(server.objects("v1", "ConfigMap").is_empty());
    let again = status(cms.delete("a", &DeleteParams::default()).await);
    assert_eq!(again.code, 404);
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owners_take_dependents_with_them() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &configmap("owner", &[]))
        .await
        .unwrap();
    let mut dependent = configmap("dependent", &[]);
    dependent.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    dependent.metadata.finalizers = Some(vec!["test/keep".into()]);
    cms.create(&PostParams::default(), &dependent).await.unwrap();

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    // The dependent is being deleted, held by its finalizer.
    let held = cms.get("dependent").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let patch = serde_json::json!({ "metadata": { "finalizers": null } });
    cms.patch(
        "dependent",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("dependent").await.unwrap().is_none());
    assert!(server.objects("v1", "configmaps").is_empty());

    // Pods start Pending (no kubelet runs here: tests play it with `set`).
    let pods: Api<Pod> = Api::default_namespaced(client);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "i" }] }
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert_eq!(Pod::kind(&()), "Pod");
}

//! Watches: raw `Api::watch`, 410 Gone and relisting, and kube-runtime's watcher in both
//! of its initial-list modes.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::common::{STEP, configmap, next_event, server};

#[tokio::test]
async fn watch_sees_added_modified_deleted_after_the_list() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &configmap("before", &[]))
        .await
        .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();

    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let patch = serde_json::json!({ "data": { "k": "changed" } });
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();

    let WatchEvent::Added(added) = next_event(&mut stream).await else {
        panic!("expected ADDED")
    };
    assert_eq!(added.name_any(), "a");
    let WatchEvent::Modified(modified) = next_event(&mut stream).await else {
        panic!("expected MODIFIED")
    };
    assert_eq!(modified.resource_version(), patched.resource_version());
    let WatchEvent::Deleted(deleted) = next_event(&mut stream).await else {
        panic!("expected DELETED")
    };
    // A deletion is a write: its event carries a newer resourceVersion.
    let rv_of = |cm: &ConfigMap| cm.resource_version().unwrap().parse::<u64>().unwrap();
    assert!(rv_of(&deleted) > rv_of(&modified));
}

#[tokio::test]
async fn watch_from_rv_zero_starts_with_synthetic_adds() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let mut stream = cms.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let WatchEvent::Added(added) = next_event(&mut stream).await else {
        panic!("expected ADDED")
    };
    assert_eq!(added.name_any(), "a");
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let old_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    server.compact();
    let mut stream = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    let WatchEvent::Error(gone) = next_event(&mut stream).await else {
        panic!("expected ERROR")
    };
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));
    // The stream ends after the error.
    let end = tokio::time::timeout(STEP, stream.next()).await.unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn watch_with_a_label_selector_sees_objects_enter_and_leave_it() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().labels("app=mc"), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let label = |value: Option<&str>| serde_json::json!({ "metadata": { "labels": { "app": value } } });
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&label(Some("mc"))))
        .await
        .unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&label(None)))
        .await
        .unwrap();
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Added(_)));
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Deleted(_)));
}

#[tokio::test]
async fn watches_end_at_their_timeout_with_a_bookmark() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let started = Instant::now();
    let events: Vec<_> = cms
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < STEP, "{elapsed:?}");
    assert!(matches!(events.last(), Some(WatchEvent::Bookmark(_))), "{events:?}");
}

/// Pulls runtime watcher events until `want` matches, failing after STEP.
async fn until<S, K>(stream: &mut S, mut want: impl FnMut(&Event<K>) -> bool) -> Vec<Event<K>>
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(STEP, stream.next())
            .await
            .expect("watcher event in time")
        {
            Some(Ok(event)) => {
                let done = want(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Some(Err(error)) => tracing_error(&error),
            None => panic!("watcher ended"),
        }
    }
}

fn tracing_error(error: &watcher::Error) {
    eprintln!("watcher error (it retries): {error}");
}

#[tokio::test]
async fn runtime_watcher_with_the_default_config_lists_then_watches() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    for name in ["a", "b"] {
        cms.create(&PostParams::default(), &configmap(name, &[])).await.unwrap();
    }
    server.cluster().clear_request_log();
    let mut stream = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    let init = until(&mut stream, |e| matches!(e, Event::InitDone)).await;
    let names: Vec<String> = init
        .iter()
        .filter_map(|e| match e {
            Event::InitApply(cm) => Some(cm.name_any()),
            _ => None,
        })
        .collect();
    assert!(matches!(init.first(), Some(Event::Init)));
    assert_eq!(names, ["a", "b"]);

    cms.create(&PostParams::default(), &configmap("c", &[])).await.unwrap();
    let applied = until(&mut stream, |e| matches!(e, Event::Apply(_))).await;
    assert!(matches!(applied.last(), Some(Event::Apply(cm)) if cm.name_any() == "c"));
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let deleted = until(&mut stream, |e| matches!(e, Event::Delete(_))).await;
    assert!(matches!(deleted.last(), Some(Event::Delete(cm)) if cm.name_any() == "a"));

    // kube 5's default: a paged LIST (limit=500, any resourceVersion), then a WATCH from
    // the list's resourceVersion with bookmarks and a 290 s timeout.
    let requests = server.requests();
    let list = requests.iter().find(|r| !r.query.contains("watch=")).unwrap();
    assert!(list.query.contains("limit=500"), "{}", list.query);
    let watch = requests.iter().find(|r| r.query.contains("watch=true")).unwrap();
    assert!(
        watch.query.contains("allowWatchBookmarks=true") && watch.query.contains("timeoutSeconds=290"),
        "{}",
        watch.query
    );
    assert!(!watch.query.contains("sendInitialEvents"), "{}", watch.query);
}

#[tokio::test]
async fn runtime_watcher_with_streaming_lists_gets_initial_events_and_the_end_bookmark() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &configmap("a", &[])).await.unwrap();
    let mut stream = watcher::watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let init = until(&mut stream, |e| matches!(e, Event::InitDone)).await;
    assert!(
        init.iter()
            .any(|e| matches!(e, Event::InitApply(cm) if cm.name_any() == "a"))
    );
    cms.create(&PostParams::default(), &configmap("b", &[])).await.unwrap();
    until(&mut stream, |e| matches!(e, Event::Apply(cm) if cm.name_any() == "b")).await;
    let first = &server.requests()[1];
    assert!(
        first.query.contains("sendInitialEvents=true") && first.query.contains("resourceVersionMatch=NotOlderThan"),
        "{}",
        first.query
    );
}

#[tokio::test]
async fn runtime_watcher_relists_after_410() {
    let (server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    // Short watches without bookmarks, so the watcher resumes from its list's
    // resourceVersion, which the compaction below makes too old.
    let config = watcher::Config::default().timeout(1).disable_bookmarks();
    let mut stream = watcher::watcher(cms.clone(), config).boxed();
    until(&mut stream, |e| matches!(e, Event::InitDone)).await;

    let secrets: Api<Secret> = Api::default_namespaced(client);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: configmap("s", &[]).metadata,
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    server.compact();
    let seen = until(&mut stream, |e| matches!(e, Event::Init)).await;
    assert!(seen.iter().all(|e| !matches!(e, Event::InitDone)));
    until(&mut stream, |e| matches!(e, Event::InitDone)).await;
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/configmaps") && !r.query.contains("watch="))
        .count();
    assert_eq!(lists, 2, "one list at the start, one after the 410");
}

#[tokio::test]
async fn metadata_watcher_gets_partial_objects() {
    let (_server, client) = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &configmap("a", &[("app", "mc")]))
        .await
        .unwrap();
    let metas: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(client);
    let mut stream = watcher::watcher(metas, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(STEP, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "a");
    assert_eq!(first.labels().get("app").map(String::as_str), Some("mc"));
}

//! The cluster's state and every rule a write goes through: the resourceVersion clock,
//! generation, status and scale subresources, finalizers, garbage collection, CRDs, and
//! the bounded event history that watches replay.
//!
//! Sans-IO: plain methods on a struct the HTTP layer keeps behind a mutex, so each
//! request is one atomic step and watch subscriptions never miss or repeat an event.
//!
//! Past 500 lines: the object store, its resourceVersion clock and its watch
//! fan-out are one state machine; its writes and deletes live in siblings.

mod apply;
mod delete;
mod scale;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::{ApiError, Subject};
use crate::object::{get_path, is_valid_name, labels, meta_mut, meta_str, normalize, now_timestamp, set_path};
use crate::patch::{self, FieldPath, JsonPatchError, PatchKind};
use crate::resources::{ResourceType, StorageKey, builtins, types_from_crd};
use crate::selector::{FieldSelector, LabelSelector};

/// Namespaces every cluster starts with.
const INITIAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The alphabet and length the real server uses for `generateName` suffixes.
const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const GENERATE_NAME_SUFFIX_LEN: usize = 5;

/// What happened to an object, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated (including a deletion that waits on finalizers).
    Modified,
    /// Removed from storage.
    Deleted,
}

/// One write, kept in the history and sent to live watches.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the write produced.
    pub rv: u64,
    /// Which resource's storage it touched.
    pub storage: StorageKey,
    /// The object's namespace ("" for cluster-scoped objects).
    pub namespace: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The object after the write (for a deletion, its last state at the deletion's rv).
    pub object: Value,
    /// The object before an update, so selector watches can turn it into ADDED/DELETED.
    pub previous: Option<Value>,
}

/// An object's place in its storage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, "" for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A PATCH request's body and its flavour.
#[derive(Debug, Clone, Copy)]
pub struct PatchBody<'a> {
    /// From the Content-Type.
    pub kind: PatchKind,
    /// The raw body.
    pub body: &'a [u8],
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The main resource: `.status` is kept as stored when the kind has a status subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
    /// A test's direct write: everything, including status.
    Raw,
}

/// Query options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force=true` (server-side apply takes fields other managers own).
    pub force: bool,
}

/// How a deletion treats the object's dependents (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete dependents (Foreground is treated the same way).
    #[default]
    Background,
    /// Strip the owner reference from dependents and keep them.
    Orphan,
}

/// The DeleteOptions that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `propagationPolicy`.
    pub propagation: Propagation,
    /// `dryRun`.
    pub dry_run: bool,
}

/// Owned fields per (manager, subresource) of one object.
type Ownership = BTreeMap<(String, Target), BTreeSet<FieldPath>>;

/// How a watch starts, computed atomically with its subscription.
pub struct WatchStart {
    /// Events to send before live ones (synthetic ADDED, or history replay).
    pub initial: Vec<(&'static str, Value)>,
    /// When set, the watch answers this error event and ends.
    pub expired: Option<ApiError>,
    /// The resourceVersion the initial events bring the watcher to.
    pub start_rv: u64,
    /// Live changes after `start_rv`.
    pub receiver: broadcast::Receiver<Arc<Change>>,
}

/// What a watch wants to see.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    /// The watched resource's storage.
    pub storage: StorageKey,
    /// `None` watches every namespace.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector` (plus the name, for a watch on one object).
    pub fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(labels(obj)) && self.fields.matches(obj)
    }

    /// The event a change becomes for this watch: an update that moves an object into
    /// the selection is ADDED, one that moves it out is DELETED, as the real server does.
    pub fn event_for<'a>(&self, change: &'a Change) -> Option<(&'static str, &'a Value)> {
        if change.storage != self.storage || self.namespace.as_ref().is_some_and(|ns| *ns != change.namespace) {
            return None;
        }
        let now = self.matches(&change.object);
        let kind = match change.kind {
            ChangeKind::Added => now.then_some("ADDED"),
            ChangeKind::Deleted => now.then_some("DELETED"),
            ChangeKind::Modified => match (change.previous.as_ref().is_some_and(|p| self.matches(p)), now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }?;
        Some((kind, &change.object))
    }
}

/// The whole cluster.
pub struct Store {
    rv: u64,
    uid_seed: u64,
    uid_seq: u64,
    rng: u64,
    builtins: Vec<ResourceType>,
    custom: Vec<ResourceType>,
    objects: BTreeMap<StorageKey, BTreeMap<ObjectKey, Value>>,
    ownership: HashMap<(StorageKey, ObjectKey), Ownership>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    compacted_rv: u64,
    events: broadcast::Sender<Arc<Change>>,
}

fn subject<'a>(rt: &'a ResourceType, name: &'a str) -> Subject<'a> {
    Subject {
        group: &rt.group,
        plural: &rt.plural,
        name,
    }
}

fn rv_of(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion")
}

/// The object without metadata (and without status, when status is a subresource): what
/// counts as a spec change for `metadata.generation`.
fn spec_part(rt: &ResourceType, obj: &Value) -> Value {
    let mut part = obj.clone();
    if let Some(map) = part.as_object_mut() {
        map.remove("metadata");
        if rt.status_subresource {
            map.remove("status");
        }
    }
    part
}

/// Equal apart from resourceVersion and managedFields: such a write changes nothing.
fn same_state(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        let meta = meta_mut(&mut v);
        meta.remove("resourceVersion");
        meta.remove("managedFields");
        v
    };
    strip(a) == strip(b)
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid")?.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    /// A cluster with the standard namespaces, keeping `history_limit` events for watches
    /// and buffering `watch_buffer` events per live watch before it is told to relist.
    pub fn new(history_limit: usize, watch_buffer: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        let (events, _) = broadcast::channel(watch_buffer.max(1));
        let mut store = Self {
            rv: 0,
            uid_seed: seed,
            uid_seq: 0,
            rng: seed | 1,
            builtins: builtins(),
            custom: Vec::new(),
            objects: BTreeMap::new(),
            ownership: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            events,
        };
        for ns in INITIAL_NAMESPACES {
            let namespace = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
            // Cannot fail: a fresh store, valid distinct names.
            let _ = store.set(namespace);
        }
        store
    }

    /// The resourceVersion of the latest write.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Every served resource type: built-ins, then those registered by CRDs.
    pub fn types(&self) -> impl Iterator<Item = &ResourceType> {
        self.builtins.iter().chain(&self.custom)
    }

    /// The type served at a group/version/plural, or the 404 a real server gives.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Result<ResourceType, ApiError> {
        self.types()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
            .ok_or_else(ApiError::no_such_resource)
    }

    /// The type for an apiVersion and a kind (or plural).
    pub fn resolve_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.types()
            .find(|t| t.api_version() == api_version && (t.kind == kind || t.plural == kind))
            .cloned()
    }

    fn type_for_storage(&self, storage: &StorageKey) -> Option<ResourceType> {
        self.types().find(|t| t.storage() == *storage).cloned()
    }

    /// Drops the whole event history, like an etcd compaction: watches from any earlier
    /// resourceVersion get 410 Gone and must relist.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    // ---- reads -------------------------------------------------------------------

    fn lookup(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<&Value, ApiError> {
        self.objects
            .get(&rt.storage())
            .and_then(|objs| {
                objs.get(&ObjectKey {
                    namespace: ns.into(),
                    name: name.into(),
                })
            })
            .ok_or_else(|| ApiError::not_found(subject(rt, name)))
    }

    /// The object as served at `rt`'s version.
    pub fn present(rt: &ResourceType, obj: &Value) -> Value {
        let mut out = obj.clone();
        out["apiVersion"] = json!(rt.api_version());
        out["kind"] = json!(rt.kind);
        out
    }

    /// GET of one object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.lookup(rt, ns, name).map(|o| Self::present(rt, o))
    }

    /// LIST: matching objects, sorted by namespace and name, and the list's resourceVersion.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels_sel: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .get(&rt.storage())
            .into_iter()
            .flatten()
            .filter(|(key, _)| ns.is_none_or(|ns| key.namespace == ns))
            .filter(|(_, obj)| labels_sel.matches(labels(obj)) && fields.matches(obj))
            .map(|(_, obj)| Self::present(rt, obj))
            .collect();
        (items, self.rv)
    }

    /// How many stored objects of a type satisfy `predicate`, without copying any.
    pub fn count_where(&self, rt: &ResourceType, predicate: impl Fn(&Value) -> bool) -> usize {
        self.objects
            .get(&rt.storage())
            .map_or(0, |objs| objs.values().filter(|obj| predicate(obj)).count())
    }

    /// Every object of a type across namespaces (a test's snapshot).
    pub fn objects_of(&self, rt: &ResourceType) -> Vec<Value> {
        self.list(rt, None, &LabelSelector::default(), &FieldSelector::default())
            .0
    }

    // ---- the clock and the history -------------------------------------------------

    fn tick(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        storage: StorageKey,
        namespace: String,
        kind: ChangeKind,
        object: Value,
        previous: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            storage,
            namespace,
            kind,
            object,
            previous,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.events.send(change);
    }

    /// Starts a watch: initial events and a live subscription, taken in one step.
    ///
    /// `from` is the requested resourceVersion; `None` (unset or "0") and streaming lists
    /// start with a synthetic ADDED for every current object.
    pub fn watch(&self, filter: &WatchFilter, from: Option<u64>, send_initial_events: bool) -> WatchStart {
        let receiver = self.events.subscribe();
        let mut start = WatchStart {
            initial: Vec::new(),
            expired: None,
            start_rv: self.rv,
            receiver,
        };
        match from {
            Some(rv) if !send_initial_events => {
                if rv < self.compacted_rv {
                    start.expired = Some(ApiError::expired(rv, self.compacted_rv));
                    return start;
                }
                for change in self.history.iter().filter(|c| c.rv > rv) {
                    if let Some((kind, obj)) = filter.event_for(change) {
                        start.initial.push((kind, obj.clone()));
                    }
                }
            }
            _ => {
                let objs = self.objects.get(&filter.storage).into_iter().flatten();
                for (key, obj) in objs {
                    if filter.namespace.as_ref().is_none_or(|ns| *ns == key.namespace) && filter.matches(obj) {
                        start.initial.push(("ADDED", obj.clone()));
                    }
                }
            }
        }
        start
    }

    // ---- direct access for tests -----------------------------------------------------

    /// Writes an object as another actor would (a kubelet, a StatefulSet controller):
    /// creates it or replaces it whole, status included, with no precondition.
    pub fn set(&mut self, mut obj: Value) -> Result<Value, ApiError> {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        let rt = self
            .resolve_kind(&api_version, &kind)
            .ok_or_else(|| ApiError::bad_request(format!("no resource serves {api_version} {kind}")))?;
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let ns = if rt.namespaced {
            meta_str(&obj, "namespace").unwrap_or("default").to_string()
        } else {
            String::new()
        };
        match self.lookup(&rt, &ns, &name).cloned() {
            Ok(old) => {
                Self::check_namespace(&rt, &mut obj, &ns)?;
                let key = ObjectKey { namespace: ns, name };
                self.commit_update(&rt, &key, &old, obj, false)
            }
            Err(_) => {
                meta_mut(&mut obj).remove("resourceVersion");
                self.insert(&rt, &ns, obj, Target::Raw, false)
            }
        }
    }

    /// Deletes an object as another actor would (finalizers are honoured).
    pub fn remove(&mut self, api_version: &str, kind: &str, ns: &str, name: &str) -> Result<Value, ApiError> {
        let rt = self
            .resolve_kind(api_version, kind)
            .ok_or_else(|| ApiError::bad_request(format!("no resource serves {api_version} {kind}")))?;
        let ns = if rt.namespaced { ns } else { "" };
        self.delete(&rt, ns, name, &DeleteOptions::default())
    }
}

/// Namespaced objects are keyed by namespace, cluster-scoped ones by "".
fn ns_key(rt: &ResourceType, ns: &str) -> String {
    if rt.namespaced { ns.to_string() } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(100, 100)
    }

    fn cm(name: &str) -> Value {
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": { "k": "v" } })
    }

    #[test]
    fn create_assigns_identity_and_bumps_the_clock() {
        let mut s = store();
        let rt = s.resolve("", "v1", "configmaps").unwrap();
        let before = s.resource_version();
        let created = s.create(&rt, "default", cm("a"), &WriteOptions::default()).unwrap();
        assert_eq!(rv_of(&created), Some((before + 1).to_string().as_str()));
        assert!(meta_str(&created, "uid").is_some() && meta_str(&created, "creationTimestamp").is_some());
        assert_eq!(meta_str(&created, "namespace"), Some("default"));
        let again = s.create(&rt, "default", cm("a"), &WriteOptions::default()).unwrap_err();
        assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
        let missing_ns = s.create(&rt, "nowhere", cm("a"), &WriteOptions::default()).unwrap_err();
        assert_eq!(missing_ns.code, 404);
    }

    #[test]
    fn count_where_counts_the_matching_objects_of_one_type() {
        let mut s = store();
        let rt = s.resolve("", "v1", "configmaps").unwrap();
        s.create(&rt, "default", cm("a"), &WriteOptions::default()).unwrap();
        let mut other = cm("b");
        other["data"]["k"] = json!("x");
        s.create(&rt, "default", other, &WriteOptions::default()).unwrap();
        assert_eq!(s.count_where(&rt, |_| true), 2);
        assert_eq!(s.count_where(&rt, |o| o["data"]["k"] == "x"), 1);
        let secrets = s.resolve("", "v1", "secrets").unwrap();
        assert_eq!(s.count_where(&secrets, |_| true), 0);
    }

    #[test]
    fn generate_name_appends_a_suffix() {
        let mut s = store();
        let rt = s.resolve("", "v1", "configmaps").unwrap();
        let body = json!({ "metadata": { "generateName": "mc-" } });
        let created = s.create(&rt, "default", body, &WriteOptions::default()).unwrap();
        let name = meta_str(&created, "name").unwrap();
        assert!(
            name.starts_with("mc-") && name.len() == 3 + GENERATE_NAME_SUFFIX_LEN,
            "{name}"
        );
    }

    #[test]
    fn an_update_that_changes_nothing_keeps_the_resource_version() {
        let mut s = store();
        let rt = s.resolve("", "v1", "configmaps").unwrap();
        let created = s.create(&rt, "default", cm("a"), &WriteOptions::default()).unwrap();
        let same = s
            .replace(
                &rt,
                "default",
                "a",
                created.clone(),
                Target::Main,
                &WriteOptions::default(),
            )
            .unwrap();
        assert_eq!(rv_of(&same), rv_of(&created));
    }

    #[test]
    fn finalizers_hold_a_deletion_until_removed() {
        let mut s = store();
        let rt = s.resolve("", "v1", "configmaps").unwrap();
        let mut body = cm("a");
        body["metadata"]["finalizers"] = json!(["x/y"]);
        s.create(&rt, "default", body, &WriteOptions::default()).unwrap();
        let marked = s.delete(&rt, "default", "a", &DeleteOptions::default()).unwrap();
        assert!(meta_str(&marked, "deletionTimestamp").is_some());
        let patch = br#"{"metadata":{"finalizers":null}}"#;
        let patch = PatchBody {
            kind: PatchKind::Merge,
            body: patch,
        };
        s.patch(&rt, "default", "a", patch, Target::Main, &WriteOptions::default())
            .unwrap();
        assert_eq!(s.get(&rt, "default", "a").unwrap_err().code, 404);
    }

    #[test]
    fn garbage_collection_deletes_orphaned_dependents() {
        let mut s = store();
        let rt = s.resolve("", "v1", "configmaps").unwrap();
        let owner = s.create(&rt, "default", cm("owner"), &WriteOptions::default()).unwrap();
        let mut dependent = cm("dependent");
        dependent["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": meta_str(&owner, "uid").unwrap()
        }]);
        s.create(&rt, "default", dependent, &WriteOptions::default()).unwrap();
        s.delete(&rt, "default", "owner", &DeleteOptions::default()).unwrap();
        assert_eq!(s.get(&rt, "default", "dependent").unwrap_err().code, 404);
    }
}

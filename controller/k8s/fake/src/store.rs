//! The cluster's state and every rule a write goes through: the resourceVersion clock,
//! generation, status and scale subresources, finalizers, garbage collection, CRDs, and
//! the bounded event history that watches replay.
//!
//! Sans-IO: plain methods on a struct the HTTP layer keeps behind a mutex, so each
//! request is one atomic step and watch subscriptions never miss or repeat an event.

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

/// `spec.selector` (a LabelSelector) in its query-string form, as `/scale` reports it.
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match expr.get("operator").and_then(Value::as_str) {
            Some("In") => parts.push(format!("{key} in ({})", values.join(","))),
            Some("NotIn") => parts.push(format!("{key} notin ({})", values.join(","))),
            Some("Exists") => parts.push(key.to_string()),
            Some("DoesNotExist") => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
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

    // ---- writes --------------------------------------------------------------------

    fn new_uid(&mut self) -> String {
        self.uid_seq += 1;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (self.uid_seed >> 32) as u32,
            (self.uid_seed >> 16) as u16,
            (self.uid_seed >> 4) as u16 & 0xfff,
            (self.uid_seq >> 48) as u16 & 0xfff,
            self.uid_seq & 0xffff_ffff_ffff
        )
    }

    fn random_suffix(&mut self) -> String {
        (0..GENERATE_NAME_SUFFIX_LEN)
            .map(|_| {
                // xorshift64: names need to look random, not be unpredictable.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                GENERATE_NAME_ALPHABET[(self.rng % GENERATE_NAME_ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }

    /// A body's apiVersion and kind must name the resource of the URL (missing ones are
    /// filled in from it).
    fn check_type_meta(rt: &ResourceType, body: &mut Value) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body of the request must be a JSON object"));
        }
        let api_version = rt.api_version();
        match body.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
            _ => body["apiVersion"] = json!(api_version),
        }
        match body.get("kind").and_then(Value::as_str) {
            Some(k) if k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
            _ => body["kind"] = json!(rt.kind),
        }
        Ok(())
    }

    /// The object's namespace must be the URL's.
    fn check_namespace(rt: &ResourceType, body: &mut Value, ns: &str) -> Result<(), ApiError> {
        let meta = meta_mut(body);
        if !rt.namespaced {
            meta.remove("namespace");
            return Ok(());
        }
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                meta.insert("namespace".into(), json!(ns));
                Ok(())
            }
        }
    }

    /// POST: create an object (201 on success).
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type_meta(rt, &mut body)?;
        if rv_of(&body).is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::new(
                500,
                "InternalError",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        self.insert(rt, ns, body, Target::Main, opts.dry_run)
    }

    /// Everything a create does after the request-level checks.
    fn insert(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        target: Target,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        normalize(&mut body);
        Self::check_namespace(rt, &mut body, ns)?;
        if rt.namespaced {
            let namespaces = self.resolve("", "v1", "namespaces")?;
            if self.lookup(&namespaces, "", ns).is_err() {
                return Err(ApiError::not_found(subject(&namespaces, ns)));
            }
        }
        let storage = rt.storage();
        let name = match meta_str(&body, "name").filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => {
                let Some(prefix) = meta_str(&body, "generateName")
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                else {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        subject(rt, ""),
                        "metadata.name: Required value: name or generateName is required",
                    ));
                };
                loop {
                    let candidate = format!("{prefix}{}", self.random_suffix());
                    let key = ObjectKey {
                        namespace: ns_key(rt, ns),
                        name: candidate.clone(),
                    };
                    if !self.objects.get(&storage).is_some_and(|objs| objs.contains_key(&key)) {
                        break candidate;
                    }
                }
            }
        };
        if !is_valid_name(&name) {
            return Err(ApiError::invalid(
                &rt.kind,
                subject(rt, &name),
                &format!(
                    "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.clone(),
        };
        if self.objects.get(&storage).is_some_and(|objs| objs.contains_key(&key)) {
            return Err(ApiError::already_exists(subject(rt, &name)));
        }

        let uid = self.new_uid();
        let meta = meta_mut(&mut body);
        meta.insert("name".into(), json!(name));
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now_timestamp()));
        for system in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(system);
        }
        if rt.tracks_generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if rt.status_subresource
            && target != Target::Raw
            && let Some(map) = body.as_object_mut()
        {
            map.remove("status");
        }
        apply_defaults(rt, &mut body, target);
        if rt.crd.is_none() && rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            let types = types_from_crd(&body).map_err(|why| ApiError::invalid(&rt.kind, subject(rt, &name), &why))?;
            if target != Target::Raw || body.get("status").is_none() {
                body["status"] = crd_status(&body, &types);
            }
        }
        if dry_run {
            return Ok(Self::present(rt, &body));
        }
        let rv = self.tick();
        meta_mut(&mut body).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects
            .entry(storage.clone())
            .or_default()
            .insert(key.clone(), body.clone());
        self.record(
            storage.clone(),
            key.namespace.clone(),
            ChangeKind::Added,
            body.clone(),
            None,
        );
        self.after_write(&storage);
        Ok(Self::present(rt, &body))
    }

    /// The object as a write to `target` leaves it: main writes keep the stored status
    /// (for kinds with a status subresource), status writes keep everything but status.
    fn merge_target(rt: &ResourceType, old: &Value, mut new: Value, target: Target) -> Value {
        let take_status = |into: &mut Value, from: &Value| {
            if let Some(map) = into.as_object_mut() {
                match from.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
        };
        match target {
            Target::Main if rt.status_subresource => {
                take_status(&mut new, old);
                new
            }
            Target::Status => {
                let mut out = old.clone();
                take_status(&mut out, &new);
                out
            }
            _ => new,
        }
    }

    /// Stores a new state of an existing object: keeps what clients cannot change, skips
    /// writes that change nothing, bumps generation on spec changes, completes deletions
    /// whose last finalizer went away.
    fn commit_update(
        &mut self,
        rt: &ResourceType,
        key: &ObjectKey,
        old: &Value,
        mut new: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        {
            let old_meta = old
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let meta = meta_mut(&mut new);
            for system in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
                "managedFields",
            ] {
                match old_meta.get(system) {
                    Some(v) => meta.insert(system.into(), v.clone()),
                    None => meta.remove(system),
                };
            }
        }
        normalize(&mut new);
        let deleting = meta_str(old, "deletionTimestamp").is_some();
        if deleting {
            let before = finalizers(old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.kind,
                    subject(rt, &key.name),
                    &format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                    ),
                ));
            }
        }
        if rt.crd.is_none() && rt.plural == "customresourcedefinitions" {
            types_from_crd(&new).map_err(|why| ApiError::invalid(&rt.kind, subject(rt, &key.name), &why))?;
        }
        if same_state(old, &new) {
            return Ok(Self::present(rt, old));
        }
        if rt.tracks_generation && spec_part(rt, old) != spec_part(rt, &new) {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(generation));
        }
        if dry_run {
            return Ok(Self::present(rt, &new));
        }
        if deleting && finalizers(&new).is_empty() {
            self.objects.entry(rt.storage()).or_default().insert(key.clone(), new);
            let removed = self.remove_object(&rt.storage(), key, Propagation::Background);
            return Ok(Self::present(rt, &removed));
        }
        let rv = self.tick();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let storage = rt.storage();
        self.objects
            .entry(storage.clone())
            .or_default()
            .insert(key.clone(), new.clone());
        self.record(
            storage.clone(),
            key.namespace.clone(),
            ChangeKind::Modified,
            new.clone(),
            Some(old.clone()),
        );
        self.after_write(&storage);
        Ok(Self::present(rt, &new))
    }

    /// The preconditions a write's body carries: a stale resourceVersion or another uid
    /// is a 409 Conflict.
    fn check_preconditions(rt: &ResourceType, name: &str, current: &Value, wanted: &Value) -> Result<(), ApiError> {
        if let Some(uid) = meta_str(wanted, "uid").filter(|u| !u.is_empty())
            && Some(uid) != meta_str(current, "uid")
        {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(current, "uid").unwrap_or_default()
            );
            return Err(ApiError::conflict(subject(rt, name), &why));
        }
        if let Some(rv) = rv_of(wanted).filter(|rv| !rv.is_empty())
            && Some(rv) != rv_of(current)
        {
            return Err(ApiError::conflict(subject(rt, name), ApiError::MODIFIED));
        }
        Ok(())
    }

    fn check_name(body: &Value, name: &str) -> Result<(), ApiError> {
        match meta_str(body, "name") {
            Some(given) if given != name => Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            ))),
            _ => Ok(()),
        }
    }

    /// PUT of an object or its status.
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut body: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::check_type_meta(rt, &mut body)?;
        Self::check_name(&body, name)?;
        Self::check_namespace(rt, &mut body, ns)?;
        let old = self.lookup(rt, ns, name)?.clone();
        if rv_of(&body).is_none_or(str::is_empty) && !rt.unconditional_update {
            return Err(ApiError::invalid(
                &rt.kind,
                subject(rt, name),
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            ));
        }
        Self::check_preconditions(rt, name, &old, &body)?;
        let new = Self::merge_target(rt, &old, body, target);
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        self.commit_update(rt, &key, &old, new, opts.dry_run)
    }

    /// PATCH of an object or its status. Returns the object and whether it was created
    /// (server-side apply creates missing objects).
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch: PatchBody<'_>,
        target: Target,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let PatchBody { kind, body } = patch;
        if kind == PatchKind::Apply {
            return self.apply(rt, ns, name, body, target, opts);
        }
        let old = self.lookup(rt, ns, name)?.clone();
        let mut doc = Self::present(rt, &old);
        apply_patch(kind, &mut doc, body, rt, name)?;
        if meta_str(&doc, "name") != Some(name) {
            return Err(ApiError::invalid(
                &rt.kind,
                subject(rt, name),
                "metadata.name: Invalid value: field is immutable",
            ));
        }
        // The patch was applied to the current object, so a resourceVersion other than
        // the current one in the result came from the patch: a stale precondition.
        Self::check_preconditions(rt, name, &old, &doc)?;
        Self::check_type_meta(rt, &mut doc)?;
        let new = Self::merge_target(rt, &old, doc, target);
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        Ok((self.commit_update(rt, &key, &old, new, opts.dry_run)?, false))
    }

    /// Server-side apply, with a simple model of field ownership: each applying manager
    /// owns the fields it last applied; fields it stops applying are removed unless
    /// another manager owns them; applying a different value to another manager's field
    /// is a conflict unless forced (then the field changes hands).
    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: &[u8],
        target: Target,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let Some(manager) = opts.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "PatchOptions",
                Subject {
                    group: "meta.k8s.io",
                    plural: "patchoptions",
                    name: "",
                },
                "fieldManager: Required value: is required for apply patch",
            ));
        };
        let mut config: Value =
            serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !config.is_object() {
            return Err(ApiError::bad_request("the applied configuration must be an object"));
        }
        for required in ["apiVersion", "kind"] {
            if config.get(required).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!("{required} must be set")));
            }
        }
        Self::check_type_meta(rt, &mut config)?;
        Self::check_name(&config, name)?;
        normalize(&mut config);
        let part = match target {
            Target::Status => {
                json!({ "status": config.get("status").cloned().unwrap_or(json!({})) })
            }
            _ => {
                let mut part = config.clone();
                if rt.status_subresource
                    && let Some(map) = part.as_object_mut()
                {
                    map.remove("status");
                }
                part
            }
        };
        let fields = patch::applied_fields(&part);
        let storage = rt.storage();
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };

        let Ok(old) = self.lookup(rt, ns, name).cloned() else {
            if target == Target::Status {
                return Err(ApiError::not_found(subject(rt, name)));
            }
            let mut fresh = config;
            meta_mut(&mut fresh).insert("name".into(), json!(name));
            meta_mut(&mut fresh).remove("resourceVersion");
            let created = self.insert(rt, ns, fresh, Target::Main, opts.dry_run)?;
            if !opts.dry_run {
                self.ownership
                    .entry((storage, key))
                    .or_default()
                    .insert((manager, target), fields);
            }
            return Ok((created, true));
        };

        Self::check_preconditions(rt, name, &old, &config)?;
        let mut owners = self
            .ownership
            .get(&(storage.clone(), key.clone()))
            .cloned()
            .unwrap_or_default();
        let mut conflicts = Vec::new();
        for ((other, _), owned) in owners.iter().filter(|((m, _), _)| *m != manager) {
            for field in fields.intersection(owned) {
                if get_path(&old, field) != get_path(&part, field) {
                    conflicts.push((other.clone(), field.clone()));
                }
            }
        }
        if !conflicts.is_empty() {
            if !opts.force {
                return Err(apply_conflict(rt, name, &conflicts));
            }
            for (other, field) in &conflicts {
                for ((m, _), owned) in owners.iter_mut() {
                    if m == other {
                        owned.remove(field);
                    }
                }
            }
        }
        let previous = owners.get(&(manager.clone(), target)).cloned().unwrap_or_default();
        let kept: BTreeSet<FieldPath> = owners
            .iter()
            .filter(|((m, t), _)| !(*m == manager && *t == target))
            .flat_map(|(_, f)| f.iter().cloned())
            .collect();
        let dropped: BTreeSet<FieldPath> = previous.difference(&fields).cloned().collect();

        let mut doc = Self::present(rt, &old);
        patch::remove_fields(&mut doc, &dropped, &kept);
        let mut merged = part;
        meta_mut(&mut merged).remove("resourceVersion");
        patch::apply_merge(&mut doc, &merged);
        let new = Self::merge_target(rt, &old, doc, target);
        let result = self.commit_update(rt, &key, &old, new, opts.dry_run)?;
        if !opts.dry_run && self.lookup(rt, ns, name).is_ok() {
            owners.insert((manager, target), fields);
            self.ownership.insert((storage, key), owners);
        }
        Ok((result, false))
    }

    /// DELETE of one object: removed at once, or marked with deletionTimestamp while
    /// finalizers remain.
    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
        let old = self.lookup(rt, ns, name)?.clone();
        let current_uid = meta_str(&old, "uid").unwrap_or_default();
        if let Some(uid) = &opts.uid
            && uid != current_uid
        {
            let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {current_uid}");
            return Err(ApiError::conflict(subject(rt, name), &why));
        }
        if let Some(rv) = &opts.resource_version
            && Some(rv.as_str()) != rv_of(&old)
        {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                rv_of(&old).unwrap_or_default()
            );
            return Err(ApiError::conflict(subject(rt, name), &why));
        }
        if opts.dry_run {
            return Ok(Self::present(rt, &old));
        }
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        if !finalizers(&old).is_empty() {
            if meta_str(&old, "deletionTimestamp").is_some() {
                return Ok(Self::present(rt, &old));
            }
            let mut marked = old.clone();
            let meta = meta_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(now_timestamp()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            let rv = self.tick();
            meta_mut(&mut marked).insert("resourceVersion".into(), json!(rv.to_string()));
            self.objects
                .entry(rt.storage())
                .or_default()
                .insert(key.clone(), marked.clone());
            self.record(
                rt.storage(),
                key.namespace,
                ChangeKind::Modified,
                marked.clone(),
                Some(old),
            );
            return Ok(Self::present(rt, &marked));
        }
        let removed = self.remove_object(&rt.storage(), &key, opts.propagation);
        Ok(Self::present(rt, &removed))
    }

    /// DELETE of a collection: deletes every matching object, returns them as a list.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels_sel: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let (items, _) = self.list(rt, ns, labels_sel, fields);
        let mut deleted = Vec::new();
        for item in items {
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            let item_ns = meta_str(&item, "namespace").unwrap_or_default().to_string();
            deleted.push(self.delete(rt, &item_ns, &name, opts)?);
        }
        Ok(deleted)
    }

    /// Takes an object out of storage (DELETED event), then cleans up what depended on
    /// it: a CRD's custom resources, a namespace's contents, an owner's dependents.
    fn remove_object(&mut self, storage: &StorageKey, key: &ObjectKey, propagation: Propagation) -> Value {
        let Some(mut obj) = self.objects.get_mut(storage).and_then(|objs| objs.remove(key)) else {
            return Value::Null;
        };
        self.ownership.remove(&(storage.clone(), key.clone()));
        let rv = self.tick();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(
            storage.clone(),
            key.namespace.clone(),
            ChangeKind::Deleted,
            obj.clone(),
            None,
        );
        self.after_write(storage);

        if storage.group.is_empty() && storage.plural == "namespaces" {
            let contained: Vec<(StorageKey, ObjectKey)> = self
                .objects
                .iter()
                .flat_map(|(s, objs)| {
                    objs.keys()
                        .filter(|k| k.namespace == key.name)
                        .map(move |k| (s.clone(), k.clone()))
                })
                .collect();
            for (s, k) in contained {
                self.delete_dependent(&s, &k, Propagation::Background);
            }
        }
        if let Some(uid) = meta_str(&obj, "uid").map(str::to_string) {
            self.collect_garbage(&uid, propagation);
        }
        obj
    }

    /// Deletes (or marks, with finalizers) an object the cluster removes on its own.
    fn delete_dependent(&mut self, storage: &StorageKey, key: &ObjectKey, propagation: Propagation) {
        let Some(rt) = self.type_for_storage(storage) else {
            return;
        };
        let opts = DeleteOptions {
            propagation,
            ..DeleteOptions::default()
        };
        // The object exists (just listed); a failure here would only mean it is gone.
        let _ = self.delete(&rt, &key.namespace, &key.name, &opts);
    }

    /// The garbage collector, run synchronously: dependents whose owners are all gone are
    /// deleted; dependents with a surviving owner, or orphaned ones, lose the reference.
    fn collect_garbage(&mut self, owner_uid: &str, propagation: Propagation) {
        let dependents: Vec<(StorageKey, ObjectKey)> = self
            .objects
            .iter()
            .flat_map(|(s, objs)| {
                objs.iter()
                    .filter(|(_, o)| owner_uids(o).iter().any(|u| u == owner_uid))
                    .map(move |(k, _)| (s.clone(), k.clone()))
            })
            .collect();
        if dependents.is_empty() {
            return;
        }
        let live: BTreeSet<String> = self
            .objects
            .values()
            .flat_map(|objs| objs.values())
            .filter_map(|o| meta_str(o, "uid"))
            .map(str::to_string)
            .collect();
        for (storage, key) in dependents {
            let Some(obj) = self.objects.get(&storage).and_then(|objs| objs.get(&key)).cloned() else {
                continue;
            };
            let orphaned = owner_uids(&obj).iter().all(|u| !live.contains(u));
            if orphaned && propagation == Propagation::Background {
                self.delete_dependent(&storage, &key, Propagation::Background);
                continue;
            }
            let Some(rt) = self.type_for_storage(&storage) else {
                continue;
            };
            let mut updated = obj.clone();
            if let Some(refs) = updated
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            let _ = self.commit_update(&rt, &key, &obj, updated, false);
        }
    }

    /// Keeps the served custom resources in step with the stored CRDs.
    fn after_write(&mut self, storage: &StorageKey) {
        if storage.group != "apiextensions.k8s.io" || storage.plural != "customresourcedefinitions" {
            return;
        }
        let custom: Vec<ResourceType> = self
            .objects
            .get(storage)
            .into_iter()
            .flat_map(|crds| crds.values())
            .filter_map(|crd| types_from_crd(crd).ok())
            .flatten()
            .collect();
        let served: BTreeSet<StorageKey> = custom.iter().map(ResourceType::storage).collect();
        let gone: Vec<StorageKey> = self
            .custom
            .iter()
            .map(ResourceType::storage)
            .filter(|s| !served.contains(s))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for storage in gone {
            // Deleting a CRD deletes its custom resources (finalizers are not waited for).
            let objs = self.objects.remove(&storage).unwrap_or_default();
            for (key, mut obj) in objs {
                self.ownership.remove(&(storage.clone(), key.clone()));
                let rv = self.tick();
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                self.record(storage.clone(), key.namespace, ChangeKind::Deleted, obj, None);
            }
        }
        self.custom = custom;
    }

    // ---- scale ---------------------------------------------------------------------

    fn scale_of(rt: &ResourceType, obj: &Value) -> Value {
        let Some(paths) = &rt.scale else {
            return Value::Null;
        };
        let spec = get_path(obj, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0);
        let status = get_path(obj, &paths.status_replicas)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let selector = match &paths.label_selector {
            Some(path) => get_path(obj, path)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            None => selector_string(obj.pointer("/spec/selector")),
        };
        let meta = obj.get("metadata").cloned().unwrap_or_default();
        let mut scale_meta = serde_json::Map::new();
        for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            if let Some(v) = meta.get(field) {
                scale_meta.insert(field.into(), v.clone());
            }
        }
        let mut scale = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": scale_meta,
            "spec": {},
            "status": { "replicas": status },
        });
        if spec != 0 {
            scale["spec"]["replicas"] = json!(spec);
        }
        if !selector.is_empty() {
            scale["status"]["selector"] = json!(selector);
        }
        scale
    }

    fn scale_type(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
        if rt.scale.is_none() {
            return Err(ApiError::not_found(subject(rt, name)));
        }
        Ok(())
    }

    /// GET of `/scale`.
    pub fn get_scale(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        Self::scale_type(rt, name)?;
        Ok(Self::scale_of(rt, self.lookup(rt, ns, name)?))
    }

    /// PUT of `/scale`: sets the desired replicas.
    pub fn replace_scale(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        scale: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        Self::scale_type(rt, name)?;
        let Some(paths) = rt.scale.clone() else {
            return Err(ApiError::not_found(subject(rt, name)));
        };
        let old = self.lookup(rt, ns, name)?.clone();
        Self::check_name(&scale, name)?;
        Self::check_preconditions(rt, name, &old, &scale)?;
        let replicas = scale
            .pointer("/spec/replicas")
            .map(|r| r.as_i64().ok_or(()))
            .transpose();
        let replicas = match replicas {
            Ok(r) => r.unwrap_or(0),
            Err(()) => return Err(ApiError::bad_request("spec.replicas must be an integer")),
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                "Scale",
                subject(rt, name),
                &format!("spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"),
            ));
        }
        let mut new = old.clone();
        set_path(&mut new, &paths.spec_replicas, json!(replicas));
        let key = ObjectKey {
            namespace: ns_key(rt, ns),
            name: name.into(),
        };
        let updated = self.commit_update(rt, &key, &old, new, opts.dry_run)?;
        Ok(Self::scale_of(rt, &updated))
    }

    /// PATCH of `/scale`: the patch applies to the Scale object, whose replicas are then set.
    pub fn patch_scale(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch: PatchBody<'_>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let PatchBody { kind, body } = patch;
        let mut scale = self.get_scale(rt, ns, name)?;
        let kind = if kind == PatchKind::Apply {
            PatchKind::Merge
        } else {
            kind
        };
        let body = if kind == PatchKind::Merge {
            let yaml: Value =
                serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
            serde_json::to_vec(&yaml).unwrap_or_default()
        } else {
            body.to_vec()
        };
        apply_patch(kind, &mut scale, &body, rt, name)?;
        self.replace_scale(rt, ns, name, scale, opts)
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

/// Applies a merge, strategic (as merge) or JSON patch to a document.
fn apply_patch(kind: PatchKind, doc: &mut Value, body: &[u8], rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(doc, &patch);
            Ok(())
        }
        PatchKind::Json => patch::json_patch(doc, body).map_err(|e| match e {
            JsonPatchError::Malformed(why) => ApiError::bad_request(why),
            JsonPatchError::Failed(why) => ApiError::invalid(&rt.kind, subject(rt, name), &why),
        }),
        PatchKind::Apply => Err(ApiError::unsupported_media_type("application/apply-patch+yaml")),
    }
}

/// The 409 a conflicting apply gets, with one cause per field.
fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[(String, FieldPath)]) -> ApiError {
    let listed: Vec<String> = conflicts
        .iter()
        .map(|(manager, field)| format!("conflict with \"{manager}\": {}", patch::render_path(field)))
        .collect();
    let mut error = ApiError::conflict(subject(rt, name), "");
    error.message = format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        listed.join("\n")
    );
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, field)| {
            json!({ "reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": patch::render_path(field) })
        })
        .collect();
    if let Some(details) = error.details.as_mut() {
        details["causes"] = json!(causes);
    }
    error
}

/// Defaults the real server fills in on create that controllers read back.
fn apply_defaults(rt: &ResourceType, obj: &mut Value, target: Target) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => {
            if target != Target::Raw || obj.get("status").is_none() {
                obj["status"] = json!({ "phase": "Active" });
            }
            if obj.pointer("/spec/finalizers").is_none() {
                set_path(obj, &["spec".into(), "finalizers".into()], json!(["kubernetes"]));
            }
        }
        ("", "Pod") if obj.get("status").is_none() => obj["status"] = json!({ "phase": "Pending" }),
        ("apps", "StatefulSet" | "Deployment" | "ReplicaSet") if obj.pointer("/spec/replicas").is_none() => {
            set_path(obj, &["spec".into(), "replicas".into()], json!(1));
        }
        _ => {}
    }
}

/// The status the apiextensions controller gives an accepted CRD.
fn crd_status(crd: &Value, types: &[ResourceType]) -> Value {
    let now = now_timestamp();
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").cloned())
        .unwrap_or(json!(types.first().map(|t| t.version.clone()).unwrap_or_default()));
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            { "type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
              "message": "no conflicts found", "lastTransitionTime": now },
            { "type": "Established", "status": "True", "reason": "InitialNamesAccepted",
              "message": "the initial names have been accepted", "lastTransitionTime": now },
        ],
        "storedVersions": [storage],
    })
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

    #[test]
    fn selector_string_renders_match_labels_and_expressions() {
        let selector = json!({ "matchLabels": { "app": "mc" },
                               "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["a", "b"] }] });
        assert_eq!(selector_string(Some(&selector)), "app=mc,tier in (a,b)");
    }
}

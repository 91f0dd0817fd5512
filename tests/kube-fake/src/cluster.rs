//! The shared handle on the fake cluster: the store behind its lock, and the controls a
//! test uses (fault injection, the request log, direct reads and writes).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::error::ApiError;
use crate::store::Store;

/// Tunables of the fake; the defaults suit tests.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Events kept for watches that resume from a resourceVersion; older ones answer
    /// 410 Gone. Default 10 000.
    pub history_limit: usize,
    /// Events a live watch may fall behind before it is ended with 410. Default 4096.
    pub watch_buffer: usize,
    /// How often an idle watch that allows bookmarks gets one. Default 5 s (a real
    /// server sends one about every minute).
    pub bookmark_interval: Duration,
    /// Watch length when the request names no `timeoutSeconds`. Default 30 min, like
    /// the real server's minimum request timeout.
    pub default_watch_timeout: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            watch_buffer: 4096,
            bookmark_interval: Duration::from_secs(5),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method (`GET`, `PATCH`, …).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    /// The Content-Type header, if any.
    pub content_type: Option<String>,
}

/// A failure waiting for the first request it matches.
#[derive(Debug, Clone)]
struct Fault {
    verb: String,
    path_prefix: String,
    code: u16,
}

impl Fault {
    /// `verb` is an HTTP method or a Kubernetes verb: `watch` is a GET with `watch=true`,
    /// `list`/`get` a GET without it, `create` a POST, `update`/`replace` a PUT; `*` is any.
    fn matches(&self, method: &str, path: &str, watch: bool) -> bool {
        let verb_matches = match self.verb.as_str() {
            "*" => true,
            "watch" => method == "GET" && watch,
            "list" | "get" => method == "GET" && !watch,
            "create" | "post" => method == "POST",
            "update" | "replace" | "put" => method == "PUT",
            other => other.eq_ignore_ascii_case(method),
        };
        verb_matches && path.starts_with(&self.path_prefix)
    }
}

struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<RecordedRequest>>,
    /// Container output per pod (`namespace/name`), as the kubelet would keep it.
    pod_logs: Mutex<std::collections::HashMap<String, Vec<PodLogLine>>>,
    options: FakeOptions,
}

/// One line a pod's container wrote, and when.
#[derive(Debug, Clone)]
pub(crate) struct PodLogLine {
    pub(crate) at: jiff::Timestamp,
    pub(crate) text: String,
}

/// A cheap, cloneable handle on one fake cluster.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug in a test or in the fake; the data is
    // still the best account of what happened, so keep serving it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// A fresh cluster: the standard namespaces and nothing else.
    pub fn new(options: FakeOptions) -> Self {
        let store = Store::new(options.history_limit, options.watch_buffer);
        Self {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                faults: Mutex::new(Vec::new()),
                log: Mutex::new(Vec::new()),
                pod_logs: Mutex::default(),
                options,
            }),
        }
    }

    /// The options the cluster was made with.
    pub fn options(&self) -> &FakeOptions {
        &self.shared.options
    }

    /// Exclusive access to the state, for one request's worth of work.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.shared.log).push(request);
    }

    /// Takes the first queued failure this request matches.
    pub(crate) fn take_fault(&self, method: &str, path: &str, watch: bool) -> Option<u16> {
        let mut faults = lock(&self.shared.faults);
        let index = faults.iter().position(|f| f.matches(method, path, watch))?;
        Some(faults.remove(index).code)
    }

    /// Makes the next request whose verb and path match fail once with `status` (its
    /// Status carries the reason the real server pairs with that code). Queued failures
    /// are used in order. Note that kube's client retries 429, 503 and 504 by itself.
    pub fn fail_next(&self, verb: &str, path_prefix: &str, status: u16) {
        lock(&self.shared.faults).push(Fault {
            verb: verb.to_ascii_lowercase(),
            path_prefix: path_prefix.into(),
            code: status,
        });
    }

    /// Every request so far, as (method, path).
    pub fn request_log(&self) -> Vec<(String, String)> {
        lock(&self.shared.log)
            .iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect()
    }

    /// Every request so far, with query and content type.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_request_log(&self) {
        lock(&self.shared.log).clear();
    }

    /// A snapshot of every object of a type (by apiVersion and kind or plural), across
    /// namespaces; empty when nothing serves that type.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let store = self.store();
        store
            .resolve_kind(api_version, kind)
            .map(|rt| store.objects_of(&rt))
            .unwrap_or_default()
    }

    /// How many objects of a type (by apiVersion and kind or plural) satisfy
    /// `predicate`, counted under the lock without copying them: a cheap way to poll a
    /// large cluster. The predicate sees objects as stored (no `apiVersion`/`kind`).
    pub fn count_where(&self, api_version: &str, kind: &str, predicate: impl Fn(&Value) -> bool) -> usize {
        let store = self.store();
        store
            .resolve_kind(api_version, kind)
            .map_or(0, |rt| store.count_where(&rt, predicate))
    }

    /// One object, if it exists (`namespace` is ignored for cluster-scoped kinds).
    pub fn object(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.store();
        let rt = store.resolve_kind(api_version, kind)?;
        let ns = if rt.namespaced { namespace } else { "" };
        store.get(&rt, ns, name).ok()
    }

    /// Writes an object directly, as another actor (kubelet, a workload controller)
    /// would: created if missing, otherwise replaced whole — status included — with a new
    /// resourceVersion and a watch event. `metadata.namespace` defaults to "default".
    pub fn set(&self, obj: Value) -> Result<Value, ApiError> {
        self.store().set(obj)
    }

    /// Deletes an object directly (finalizers and garbage collection apply).
    pub fn remove(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.store().remove(api_version, kind, namespace, name)
    }

    /// Forgets the event history (like an etcd compaction): a watch resuming from an
    /// earlier resourceVersion gets 410 Gone and has to relist.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Appends a line to a pod's log (served by `GET …/pods/{name}/log`), as the
    /// kubelet would record the container's output at `at`.
    pub fn append_pod_log(&self, namespace: &str, pod: &str, at: jiff::Timestamp, line: &str) {
        lock(&self.shared.pod_logs)
            .entry(format!("{namespace}/{pod}"))
            .or_default()
            .push(PodLogLine {
                at,
                text: line.to_owned(),
            });
    }

    pub(crate) fn pod_log(&self, namespace: &str, pod: &str) -> Vec<PodLogLine> {
        lock(&self.shared.pod_logs)
            .get(&format!("{namespace}/{pod}"))
            .cloned()
            .unwrap_or_default()
    }

    /// The resourceVersion of the latest write.
    pub fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }
}

//! A faithful, in-process fake of the Kubernetes API server, for testing Respawn's
//! controller (and anything built on kube 5) where no real cluster can run.//!
//! Test infrastructure: used by `tests/` and `bench/` only — no product crate
//! may depend on it (`tests/tests/architecture.rs`). May depend on: kube,
//! k8s-openapi, axum; nothing of Respawn's.
//!
//! It keeps objects as JSON and follows the API server's rules where client code depends
//! on them: a global resourceVersion clock, optimistic concurrency (409 on a stale
//! resourceVersion, for PUT and PATCH alike), `kind: Status` errors, status and scale
//! subresources, custom resources served only once a CRD registers them, watches with
//! history replay, bookmarks, 410 Gone and streaming lists, finalizers and garbage
//! collection. See README.md for exactly what is and is not emulated.
//!
//! ```no_run
//! # async fn demo() {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! let server = respawn_kube_fake::FakeApiServer::start().await;
//! let configmaps: kube::Api<ConfigMap> = kube::Api::default_namespaced(server.client());
//! assert!(configmaps.get_opt("missing").await.unwrap().is_none());
//! server.fail_next("PATCH", "/api/v1/namespaces/default/configmaps", 409);
//! # }
//! ```

#![forbid(unsafe_code)]

mod cluster;
mod discovery;
mod error;
mod http;
mod object;
mod patch;
mod resources;
mod route;
mod selector;
mod store;
mod watch;

use std::net::SocketAddr;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use cluster::{Cluster, FakeOptions, RecordedRequest};
pub use error::{ApiError, FakeError};
pub use http::{router, serve};
pub use resources::{ResourceType, ScalePaths};

/// A fake API server listening on a loopback port, serving in a background task.
///
/// Dropping it stops the server (open watches end); [`FakeApiServer::stop`] also waits
/// for the task to finish.
pub struct FakeApiServer {
    cluster: Cluster,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a server on 127.0.0.1 with an OS-chosen port and default options.
    ///
    /// # Panics
    /// If no loopback port can be bound — a broken test environment, not a test failure.
    pub async fn start() -> FakeApiServer {
        match Self::start_with(FakeOptions::default()).await {
            Ok(server) => server,
            Err(error) => panic!("fake API server: {error}"),
        }
    }

    /// Starts a server on 127.0.0.1 with an OS-chosen port.
    pub async fn start_with(options: FakeOptions) -> Result<FakeApiServer, FakeError> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Starts a server on a given address (port 0 picks one).
    pub async fn bind(addr: SocketAddr, options: FakeOptions) -> Result<FakeApiServer, FakeError> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cluster = Cluster::new(options);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (cluster, shutdown) = (cluster.clone(), shutdown.clone());
            async move {
                if let Err(error) = serve(listener, cluster, shutdown).await {
                    tracing::error!(%error, "fake API server stopped");
                }
            }
        });
        tracing::debug!(%addr, "fake API server listening");
        Ok(FakeApiServer {
            cluster,
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube client for this server: plain HTTP, default namespace "default".
    pub fn try_client(&self) -> Result<kube::Client, FakeError> {
        let url: axum::http::Uri = self
            .url()
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| FakeError::Client(e.to_string()))?;
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        kube::Client::try_from(config).map_err(|e| FakeError::Client(e.to_string()))
    }

    /// A kube client for this server: plain HTTP, default namespace "default".
    ///
    /// # Panics
    /// If kube cannot build a client for a plain loopback URL (a broken TLS setup).
    pub fn client(&self) -> kube::Client {
        match self.try_client() {
            Ok(client) => client,
            Err(error) => panic!("fake API server: {error}"),
        }
    }

    /// The cluster behind the server, for controls shared with other tasks.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Makes the next request whose verb and path prefix match fail once with `status`.
    /// `verb` is an HTTP method, a Kubernetes verb (`watch`, `list`, `create`, `update`)
    /// or `*`. kube's client retries 429, 503 and 504 on its own, so those are only seen
    /// by code that uses a client without its default retry policy.
    pub fn fail_next(&self, verb: &str, path_prefix: &str, status: u16) {
        self.cluster.fail_next(verb, path_prefix, status);
    }

    /// Every request so far, as (method, path without query).
    pub fn request_log(&self) -> Vec<(String, String)> {
        self.cluster.request_log()
    }

    /// Every request so far, with query string and content type.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.cluster.requests()
    }

    /// A snapshot of every object of a type, by apiVersion and kind or plural
    /// (`objects("apps/v1", "StatefulSet")`, `objects("v1", "pods")`).
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.cluster.objects(api_version, kind)
    }

    /// One object, if it exists.
    pub fn object(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.cluster.object(api_version, kind, namespace, name)
    }

    /// Writes an object as another actor would (see [`Cluster::set`]).
    pub fn set(&self, obj: Value) -> Result<Value, ApiError> {
        self.cluster.set(obj)
    }

    /// Deletes an object as another actor would (see [`Cluster::remove`]).
    pub fn remove(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.cluster.remove(api_version, kind, namespace, name)
    }

    /// Forgets the watch event history (see [`Cluster::compact`]).
    pub fn compact(&self) {
        self.cluster.compact();
    }

    /// Stops serving, ends open watches and waits for the server task.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

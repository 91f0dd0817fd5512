//! A small HTTPS file server on 127.0.0.1 for the plugin sync tests: a CA generated per
//! test, a leaf for `localhost`/`127.0.0.1`/`::1`, routes that can be changed between syncs,
//! and counters of connections and requests so tests can prove nothing was fetched.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use respawn_plugins::FetchPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// Generous for a test, and a bound on every read and handshake.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a "hang" route holds the connection without answering.
const HANG: Duration = Duration::from_secs(30);
/// The accept loop stops after this many connections (no test comes close).
const MAX_CONNECTIONS: usize = 500;
const MAX_HEAD: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send Content-Length (otherwise the body ends when the connection closes).
    pub content_length: bool,
    /// Accept the request and never answer.
    pub hang: bool,
}

impl Route {
    pub fn jar(body: &[u8]) -> Self {
        Route { status: 200, headers: vec![], body: body.to_vec(), content_length: true, hang: false }
    }

    pub fn redirect(location: &str) -> Self {
        Route {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            body: vec![],
            content_length: true,
            hang: false,
        }
    }
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<HashMap<String, usize>>,
    connections: AtomicUsize,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "respawn plugin test CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()))
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&state)));
        TestServer { addr, ca_pem: ca.pem(), state, task }
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state.routes.lock().unwrap().insert(path.to_string(), route);
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Trusts the test CA and allows exactly 127.0.0.1 — the operator allowance the tests
    /// need to reach a loopback server at all.
    pub fn policy(&self) -> FetchPolicy {
        FetchPolicy { allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()], ..self.policy_without_allowance() }
    }

    /// Trusts the test CA, with the default (public only) address rules.
    pub fn policy_without_allowance(&self) -> FetchPolicy {
        FetchPolicy {
            extra_root_pem: Some(self.ca_pem.clone().into_bytes()),
            timeout: Duration::from_secs(10),
            ..FetchPolicy::default()
        }
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    for _ in 0..MAX_CONNECTIONS {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HANG + IO_TIMEOUT, serve(tcp, acceptor, state)).await;
        });
    }
}

async fn serve(tcp: tokio::net::TcpStream, acceptor: TlsAcceptor, state: Arc<State>) -> std::io::Result<()> {
    let mut tls = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp)).await??;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(());
        }
        let n = tokio::time::timeout(IO_TIMEOUT, tls.read(&mut buf)).await??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    *state.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let route = state.routes.lock().unwrap().get(&path).cloned();
    let route = route.unwrap_or(Route { status: 404, ..Route::jar(b"not found") });
    if route.hang {
        tokio::time::sleep(HANG).await;
        return Ok(());
    }
    let mut response = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", route.status);
    for (k, v) in &route.headers {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    if route.content_length {
        response.push_str(&format!("Content-Length: {}\r\n", route.body.len()));
    }
    response.push_str("\r\n");
    tls.write_all(response.as_bytes()).await?;
    tls.write_all(&route.body).await?;
    tls.shutdown().await?;
    Ok(())
}

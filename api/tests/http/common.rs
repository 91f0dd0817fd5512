//! The test harness: an app over a fresh SQLite file or a fresh PostgreSQL
//! database, a request helper, and fixtures (tenants, plans, servers).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use respawn_api::{ApiConfig, AppState, Db, InMemoryRuntime, router};
use serde_json::{Value, json};
use sqlx::Connection;
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-token-0123456789abcdef-0123456789";
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` as two tests, `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                if $crate::common::pg_enabled() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        }
    )*};
}

/// `RESPAWN_TEST_PG=off` skips the PostgreSQL half (for machines without
/// one); by default it must be reachable, so CI cannot pass by skipping.
pub fn pg_enabled() -> bool {
    std::env::var("RESPAWN_TEST_PG").map(|v| v != "off").unwrap_or(true)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    respawn_api::db::fill_random(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes the test database when the test ends, even when it panicked.
enum DbGuard {
    Sqlite(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        match self {
            DbGuard::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            DbGuard::Postgres { admin_url, name } => {
                // Drop runs inside the test's runtime, which cannot block on
                // async work: use a thread with its own small runtime.
                let (url, name) = (admin_url.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

async fn fresh_database(backend: Backend) -> (String, DbGuard) {
    match backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!("respawn-api-test-{}.db", random_hex(8)));
            let url = format!("sqlite://{}?mode=rwc", path.display());
            (url, DbGuard::Sqlite(path))
        }
        Backend::Postgres => {
            // Any server URL works, with or without a database in its path
            // (`postgres://u:p@host:5432`): we connect to its `postgres`
            // database (unless one is named) to create ours.
            let raw = std::env::var("RESPAWN_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.to_owned());
            let mut admin = url::Url::parse(&raw).unwrap_or_else(|e| panic!("RESPAWN_TEST_PG `{raw}`: {e}"));
            if admin.path().trim_matches('/').is_empty() {
                admin.set_path("/postgres");
            }
            let admin_url = admin.to_string();
            let name = format!("respawn_test_{}", random_hex(8));
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!("PostgreSQL at {raw} is needed (set RESPAWN_TEST_PG to its URL, or to `off` to skip): {e}")
            });
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("CREATE DATABASE");
            let _ = conn.close().await;
            let mut test_url = admin;
            test_url.set_path(&format!("/{name}"));
            (test_url.to_string(), DbGuard::Postgres { admin_url, name })
        }
    }
}

/// One response, with the body parsed as JSON (`Value::Null` when empty,
/// a string when not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// `error.code` and `error.field` of an error body.
    pub fn error(&self) -> (&str, Option<&str>) {
        let e = &self.body["error"];
        (e["code"].as_str().unwrap_or("<no code>"), e["field"].as_str())
    }

    pub fn str(&self, key: &str) -> String {
        self.body[key].as_str().unwrap_or_else(|| panic!("no string `{key}` in {}", self.body)).to_owned()
    }
}

/// Removes a test's scratch directory (data dirs, local backup store) when
/// the test ends.
pub struct DirGuard(pub std::path::PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub runtime: Arc<InMemoryRuntime>,
    /// Scratch space of this test: `data/<server id>` are the servers' data
    /// directories, `backups/` the local backup store, `work/` its scratch.
    pub files: std::path::PathBuf,
    _guard: DbGuard,
    _files: DirGuard,
}

impl TestApp {
    pub async fn new(backend: Backend) -> TestApp {
        TestApp::with_config(backend, |_| {}).await
    }

    pub async fn with_config(backend: Backend, tweak: impl FnOnce(&mut ApiConfig)) -> TestApp {
        let (url, guard) = fresh_database(backend).await;
        let files = std::env::temp_dir().join(format!("respawn-api-files-{}", random_hex(8)));
        let mut config =
            ApiConfig { database_url: url.clone(), admin_token: Some(ADMIN.to_owned()), ..ApiConfig::default() };
        config.backups.local_dir = files.join("backups");
        config.backups.work_dir = files.join("work");
        tweak(&mut config);
        let db = Db::connect(&url, 4).await.expect("connect");
        db.migrate().await.expect("migrate");
        let runtime = Arc::new(InMemoryRuntime::with_data_root(files.join("data")));
        let state = AppState::new(db, runtime.clone(), &config).expect("state");
        TestApp {
            router: router(state.clone()),
            state,
            runtime,
            files: files.clone(),
            _guard: guard,
            _files: DirGuard(files),
        }
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("request")).await
    }

    /// Sends a prepared request, as if from `127.0.0.1:40000` unless it
    /// already carries a `ConnectInfo`.
    pub async fn send(&self, mut req: Request<Body>) -> Resp {
        if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
            req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        }
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 16 << 20).await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp { status, headers, body }
    }

    /// A request whose answer is returned as raw bytes (downloads).
    pub async fn raw(&self, method: Method, path: &str, token: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = axum::body::to_bytes(res.into_body(), 256 << 20).await.expect("body");
        (status, headers, bytes.to_vec())
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// A tenant and one token for it: `(tenant_id, token)`.
    pub async fn tenant(&self, name: &str) -> (String, String) {
        let t = self.post("/v1/tenants", ADMIN, json!({"name": name})).await;
        assert_eq!(t.status, StatusCode::CREATED, "{}", t.body);
        let id = t.str("id");
        let tok = self.post(&format!("/v1/tenants/{id}/tokens"), ADMIN, json!({"name": "test"})).await;
        assert_eq!(tok.status, StatusCode::CREATED, "{}", tok.body);
        (id, tok.str("token"))
    }

    /// A plan; returns its id.
    pub async fn plan(&self, name: &str) -> String {
        let p = self
            .post(
                "/v1/plans",
                ADMIN,
                json!({"name": name, "cpu_millicores": 1000, "memory_mib": 2048, "storage_gib": 10, "max_players": 20}),
            )
            .await;
        assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
        p.str("id")
    }

    /// A server with one hostname `<name>.<tenant-ish>.example`; returns its body.
    pub async fn server(&self, token: &str, plan: &str, name: &str, hostname: &str) -> Value {
        let s = self.post("/v1/servers", token, server_body(plan, name, &[hostname])).await;
        assert_eq!(s.status, StatusCode::CREATED, "{}", s.body);
        s.body
    }
}

pub fn server_body(plan: &str, name: &str, hostnames: &[&str]) -> Value {
    json!({
        "name": name,
        "hostnames": hostnames,
        "plan_id": plan,
        "minecraft": {"type": "paper", "version": "1.21.4"},
        "properties": {"motd": "hello", "difficulty": "hard"},
        "policy": {"idle_timeout_s": 300, "min_replicas": 0, "max_replicas": 2}
    })
}

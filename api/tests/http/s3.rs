//! The S3 backup store against a real S3 emulator: moto's server (PyPI
//! `moto[server]`, pinned in tests/requirements.txt), started on a free
//! loopback port by the test and killed at its end. Without moto the test
//! fails; `RESPAWN_TEST_S3=off` skips it on machines that cannot have it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use respawn_api::BackupStoreKind;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backups::{backup, data_dir, fill_world, restore, setup, snapshot};
use crate::common::{Backend, TestApp};

/// How long moto may take to start answering (it imports a lot).
const MOTO_START: Duration = Duration::from_secs(60);
const BUCKET: &str = "respawn-backups";

/// A running `python3 -m moto.server`; killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto and waits until it answers; `None` only when the
    /// operator turned the S3 test off.
    async fn start() -> Option<Moto> {
        if std::env::var("RESPAWN_TEST_S3").is_ok_and(|v| v == "off") {
            eprintln!("RESPAWN_TEST_S3=off: skipping the S3 backup test");
            return None;
        }
        let importable = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            importable,
            "moto is needed for the S3 backup test: `python3 -m pip install -r tests/requirements.txt` \
             (or set RESPAWN_TEST_S3=off to skip it)"
        );
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + MOTO_START;
        loop {
            if let Ok((status, _)) = moto.http("GET", "/").await
                && status > 0
            {
                return Some(moto);
            }
            if let Ok(Some(exit)) = moto.child.try_wait() {
                panic!("moto exited before answering: {exit}");
            }
            assert!(Instant::now() < deadline, "moto did not answer within {MOTO_START:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain HTTP/1.1 request to moto, unsigned (moto accepts that by
    /// default): `(status, body)`. Independent of the object_store client
    /// the API uses, so the test sees what is really in the bucket.
    async fn http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let mut stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(("127.0.0.1", self.port)))
                .await
                .map_err(|_| std::io::Error::other("connect timeout"))??;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .map_err(|_| std::io::Error::other("read timeout"))??;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, text))
    }

    async fn keys(&self) -> String {
        let (status, body) = self.http("GET", &format!("/{BUCKET}?list-type=2")).await.expect("list");
        assert_eq!(status, 200, "{body}");
        body
    }
}

#[tokio::test]
async fn s3_store_round_trip() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let (status, body) = moto.http("PUT", &format!("/{BUCKET}")).await.expect("create bucket");
    assert_eq!(status, 200, "{body}");
    let app = TestApp::with_config(Backend::Sqlite, |c| {
        c.backups.store = BackupStoreKind::S3;
        c.backups.s3_endpoint = Some(moto.url());
        c.backups.s3_bucket = Some(BUCKET.into());
        c.backups.s3_access_key_id = Some("testing".into());
        c.backups.s3_secret_access_key = Some("testing".into());
        c.backups.s3_allow_http = true;
        c.backups.s3_prefix = Some("respawn".into());
    })
    .await;
    let (tenant_id, token, server) = setup(&app, "acme").await;
    let dir = data_dir(&app, &server);
    fill_world(&dir);
    let original = snapshot(&dir);

    let taken = backup(&app, &token, &server).await;
    assert_eq!(taken["status"], "succeeded", "{taken}");
    let bid = taken["id"].as_str().expect("id").to_owned();
    let key = format!("respawn/{tenant_id}/{server}/{bid}.tar.zst");
    let listing = moto.keys().await;
    assert!(listing.contains(&format!("<Key>{key}</Key>")), "{key} in {listing}");
    assert!(!app.files.join("backups").exists(), "nothing went to the local store");

    // The download comes back from the bucket byte for byte.
    let (status, _, bytes) =
        app.raw(Method::GET, &format!("/v1/servers/{server}/backups/{bid}/download"), &token).await;
    assert_eq!(status, 200);
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(Some(sha.as_str()), taken["sha256"].as_str());
    let (status, object) = moto.http("HEAD", &format!("/{BUCKET}/{key}")).await.expect("head");
    assert_eq!(status, 200, "{object}");
    assert!(object.to_ascii_lowercase().contains(&format!("content-length: {}", bytes.len())), "{object}");

    // Restore from the bucket on top of changed data.
    std::fs::write(dir.join("server.properties"), b"changed").expect("write");
    std::fs::remove_dir_all(dir.join("world")).expect("rm");
    let done: Value = restore(&app, &token, &server, &bid).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(snapshot(&dir), original);
    let safety = done["safety_backup_id"].as_str().expect("safety").to_owned();
    let safety_key = format!("respawn/{tenant_id}/{server}/{safety}.tar.zst");
    assert!(moto.keys().await.contains(&safety_key), "the safety backup is in the bucket");

    // Delete removes the object from the bucket.
    assert_eq!(app.delete(&format!("/v1/servers/{server}/backups/{safety}"), &token).await.status, 204);
    let listing = moto.keys().await;
    assert!(!listing.contains(&safety_key), "{listing}");
    assert!(listing.contains(&key));
}

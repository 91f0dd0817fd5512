//! Backups over HTTP: every endpoint, a real archive round trip through
//! restore, hostile archives, the save-off / save-all flush / save-on order,
//! retention with locks, and the players-online refusal. The local object
//! store lives in the test's scratch directory; `s3.rs` runs the same round
//! trip against a real S3 emulator.
//!
//! Past 500 lines: backups, restores, retention and their isolation cases
//! share one set of fixtures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use respawn_api::{Phase, ServerRuntime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::both;
use crate::common::{Backend, TestApp};

both!(
    backup_endpoints,
    archive_round_trip_through_restore,
    hostile_archives_are_refused,
    saving_is_paused_around_the_archive,
    retention_keeps_the_newest_and_every_locked_one,
    restore_is_refused_while_players_are_on,
    deleting_a_server_deletes_its_backups,
    jobs_cut_off_by_a_restart_are_marked_failed,
);

/// A tenant with one server: `(tenant id, token, server id)`.
pub async fn setup(app: &TestApp, tenant: &str) -> (String, String, String) {
    let (tenant_id, token) = app.tenant(tenant).await;
    let plan = app.plan(&format!("plan-{tenant}")).await;
    let server = app.server(&token, &plan, "world", &format!("play.{tenant}.example")).await;
    (tenant_id, token, server["id"].as_str().expect("id").to_owned())
}

/// Polls a job until it is `succeeded` or `failed` (at most 20 s).
pub async fn wait_done(app: &TestApp, token: &str, path: &str) -> Value {
    for _ in 0..400 {
        let r = app.get(path, token).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        if matches!(r.body["status"].as_str(), Some("succeeded" | "failed")) {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} did not finish in time");
}

/// Takes a backup and waits for it; returns the finished backup.
pub async fn backup(app: &TestApp, token: &str, server: &str) -> Value {
    let r = app.call(Method::POST, &format!("/v1/servers/{server}/backups"), Some(token), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.str("id");
    wait_done(app, token, &format!("/v1/servers/{server}/backups/{id}")).await
}

pub async fn restore(app: &TestApp, token: &str, server: &str, backup: &str) -> Value {
    let r = app.call(Method::POST, &format!("/v1/servers/{server}/backups/{backup}/restore"), Some(token), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["status"], "queued");
    let id = r.str("id");
    wait_done(app, token, &format!("/v1/servers/{server}/restores/{id}")).await
}

/// Every entry under `root`: files by content, links by target, dirs.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(root).expect("prefix").display().to_string();
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            let value = if meta.file_type().is_symlink() {
                format!("link:{}", std::fs::read_link(&path).expect("link").display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                format!("file:{}", hex(&Sha256::digest(std::fs::read(&path).expect("read"))))
            };
            out.insert(rel, value);
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn data_dir(app: &TestApp, server: &str) -> PathBuf {
    app.files.join("data").join(server)
}

/// A data directory that looks like a server's: nested world files, configs,
/// an empty directory and a link inside it.
pub fn fill_world(dir: &Path) {
    let write = |rel: &str, data: &[u8]| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    };
    let region: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    write("world/region/r.0.0.mca", &region);
    write("world/region/r.0.-1.mca", &region[..1000]);
    write("world/level.dat", b"\x0a\x00\x00level");
    write("world_nether/DIM-1/region/r.0.0.mca", b"nether");
    write("plugins/LuckPerms/config.yml", b"storage-method: h2\n");
    write("server.properties", b"motd=hello\nmax-players=20\n");
    std::fs::create_dir_all(dir.join("logs/empty")).expect("mkdir");
    let _ = std::os::unix::fs::symlink("world/region", dir.join("regions"));
}

async fn backup_endpoints(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token, server) = setup(&app, "acme").await;
    fill_world(&data_dir(&app, &server));
    let base = format!("/v1/servers/{server}/backups");

    // Create: no body, or a note; bad notes and unknown fields are 422.
    let done = backup(&app, &token, &server).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["kind"], "manual");
    assert_eq!(done["locked"], false);
    assert!(done["error"].is_null());
    assert!(done["size_bytes"].as_u64().is_some_and(|n| n > 0), "{done}");
    assert_eq!(done["sha256"].as_str().map(str::len), Some(64));
    assert!(done["started_at_ms"].as_i64() <= done["finished_at_ms"].as_i64());
    let first = done["id"].as_str().expect("id").to_owned();
    let noted = app.post(&base, &token, json!({"note": "before the upgrade"})).await;
    assert_eq!(noted.status, StatusCode::ACCEPTED, "{}", noted.body);
    assert_eq!(noted.body["note"], "before the upgrade");
    assert_eq!(noted.body["status"], "queued");
    let second = noted.str("id");
    wait_done(&app, &token, &format!("{base}/{second}")).await;
    let bad = app.post(&base, &token, json!({"note": "x".repeat(201)})).await;
    assert_eq!((bad.status, bad.error()), (StatusCode::UNPROCESSABLE_ENTITY, ("invalid_field", Some("note"))));
    let bad = app.post(&base, &token, json!({"label": "x"})).await;
    assert_eq!((bad.status, bad.error()), (StatusCode::UNPROCESSABLE_ENTITY, ("invalid_field", Some("label"))));

    // List (pages) and get.
    let list = app.get(&base, &token).await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<&str> =
        list.body["items"].as_array().expect("items").iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(ids, vec![first.as_str(), second.as_str()]);
    let page = app.get(&format!("{base}?limit=1"), &token).await;
    assert_eq!(page.body["items"].as_array().map(Vec::len), Some(1));
    let cursor = page.body["next_cursor"].as_str().expect("cursor").to_owned();
    let rest = app.get(&format!("{base}?limit=1&cursor={cursor}"), &token).await;
    assert_eq!(rest.body["items"][0]["id"], second.as_str());
    assert!(rest.body["next_cursor"].is_null());
    assert_eq!(app.get(&format!("{base}/{first}"), &token).await.body, done);
    let missing = app.get(&format!("{base}/bkp_{}", "0".repeat(32)), &token).await;
    assert_eq!((missing.status, missing.error().0), (StatusCode::NOT_FOUND, "not_found"));

    // Download streams the archive: its hash is the recorded one, and it is
    // a zstd tar of the data directory.
    let (status, headers, bytes) = app.raw(Method::GET, &format!("{base}/{first}/download"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zstd");
    assert_eq!(headers["content-length"].to_str().ok(), Some(bytes.len().to_string().as_str()));
    assert_eq!(Some(bytes.len() as u64), done["size_bytes"].as_u64());
    assert_eq!(hex(&Sha256::digest(&bytes)), done["sha256"].as_str().expect("sha"));
    assert_eq!(headers["x-checksum-sha256"].to_str().ok(), done["sha256"].as_str());
    let tar = zstd::decode_all(&bytes[..]).expect("zstd");
    let mut archive = tar::Archive::new(&tar[..]);
    let names: Vec<String> = archive
        .entries()
        .expect("entries")
        .map(|e| e.expect("entry").path().expect("path").display().to_string())
        .collect();
    for want in ["world/region/r.0.0.mca", "server.properties", "plugins/LuckPerms/config.yml", "regions"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }

    // Lock: delete is refused with a JSON 409 until it is unlocked.
    let locked = app.call(Method::POST, &format!("{base}/{first}/lock"), Some(&token), None).await;
    assert_eq!((locked.status, &locked.body["locked"]), (StatusCode::OK, &json!(true)));
    let refused = app.delete(&format!("{base}/{first}"), &token).await;
    assert_eq!((refused.status, refused.error()), (StatusCode::CONFLICT, ("backup_locked", None)));
    assert!(refused.body["error"]["message"].as_str().is_some_and(|m| m.contains("locked")));
    assert_eq!(app.get(&format!("{base}/{first}"), &token).await.status, StatusCode::OK);
    let unlocked = app.call(Method::POST, &format!("{base}/{first}/unlock"), Some(&token), None).await;
    assert_eq!((unlocked.status, &unlocked.body["locked"]), (StatusCode::OK, &json!(false)));
    assert_eq!(app.delete(&format!("{base}/{first}"), &token).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("{base}/{first}"), &token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.raw(Method::GET, &format!("{base}/{first}/download"), &token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("{base}/{first}"), &token).await.status, StatusCode::NOT_FOUND);
    for action in ["lock", "unlock", "restore"] {
        let r = app.call(Method::POST, &format!("{base}/{first}/{action}"), Some(&token), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}");
    }

    // Retention policy: the default, then the server's own; bounded.
    let policy = format!("/v1/servers/{server}/backup-policy");
    assert_eq!(app.get(&policy, &token).await.body, json!({"keep_last": 7}));
    let put = app.call(Method::PUT, &policy, Some(&token), Some(json!({"keep_last": 3}))).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &json!({"keep_last": 3})));
    assert_eq!(app.get(&policy, &token).await.body, json!({"keep_last": 3}));
    let bad = app.call(Method::PUT, &policy, Some(&token), Some(json!({"keep_last": 5000}))).await;
    assert_eq!((bad.status, bad.error()), (StatusCode::UNPROCESSABLE_ENTITY, ("invalid_field", Some("keep_last"))));
    let unknown = app.get(&format!("/v1/servers/{server}/restores/rst_{}", "0".repeat(32)), &token).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // A failed backup cannot be downloaded or restored.
    std::fs::remove_dir_all(data_dir(&app, &server)).expect("rm");
    let failed = backup(&app, &token, &server).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("archiving")), "{failed}");
    let fid = failed["id"].as_str().expect("id");
    let r = app.raw(Method::GET, &format!("{base}/{fid}/download"), &token).await;
    assert_eq!(r.0, StatusCode::CONFLICT);
    let r = app.call(Method::POST, &format!("{base}/{fid}/restore"), Some(&token), None).await;
    assert_eq!((r.status, r.error().0), (StatusCode::CONFLICT, "backup_not_ready"));
    // …but it can be deleted.
    assert_eq!(app.delete(&format!("{base}/{fid}"), &token).await.status, StatusCode::NO_CONTENT);

    // Metrics count the outcomes and the bytes.
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(text.contains("respawn_api_backups_total{outcome=\"succeeded\"} 2"), "{text}");
    assert!(text.contains("respawn_api_backups_total{outcome=\"failed\"} 1"), "{text}");
    assert!(text.contains("respawn_api_backup_duration_seconds_count 3"), "{text}");
    assert!(!text.contains("respawn_api_backup_bytes_total 0\n"), "{text}");
}

async fn archive_round_trip_through_restore(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token, server) = setup(&app, "acme").await;
    let dir = data_dir(&app, &server);
    fill_world(&dir);
    let original = snapshot(&dir);
    assert!(original.len() >= 12, "{original:?}");
    app.runtime.set_status(&server, Phase::Running, 0);
    let taken = backup(&app, &token, &server).await;
    assert_eq!(taken["status"], "succeeded", "{taken}");
    let bid = taken["id"].as_str().expect("id").to_owned();

    // Change, delete and add files and directories.
    std::fs::write(dir.join("server.properties"), b"motd=changed\n").expect("write");
    std::fs::remove_file(dir.join("world/level.dat")).expect("rm");
    std::fs::remove_dir_all(dir.join("world_nether")).expect("rm");
    std::fs::write(dir.join("world/region/r.9.9.mca"), b"new region").expect("write");
    std::fs::create_dir_all(dir.join("new/deep")).expect("mkdir");
    std::fs::write(dir.join("new/deep/file"), b"new").expect("write");
    let changed = snapshot(&dir);
    assert_ne!(changed, original);
    let before = app.runtime.console_commands(&server).len();

    let done = restore(&app, &token, &server, &bid).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["backup_id"], bid.as_str());
    assert_eq!(snapshot(&dir), original, "exactly the backed-up files are back");
    // Nothing left beside the data directory (staging or replaced copies).
    let siblings: Vec<String> = std::fs::read_dir(app.files.join("data"))
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(siblings, vec![server.clone()]);
    // The server was running: its safety backup paused saving, then it was
    // stopped for the swap and left hibernated.
    assert_eq!(app.runtime.console_commands(&server)[before..], ["save-off", "save-all flush", "save-on"]);
    assert_eq!(app.runtime.status(&server).phase, Phase::Sleeping);

    // The safety backup holds the data as it was before the restore.
    let safety_id = done["safety_backup_id"].as_str().expect("safety backup").to_owned();
    let safety = app.get(&format!("/v1/servers/{server}/backups/{safety_id}"), &token).await;
    assert_eq!(safety.status, StatusCode::OK);
    assert_eq!((&safety.body["kind"], &safety.body["status"]), (&json!("safety"), &json!("succeeded")));
    let back = restore(&app, &token, &server, &safety_id).await;
    assert_eq!(back["status"], "succeeded", "{back}");
    assert_eq!(snapshot(&dir), changed, "the safety backup brings the changed data back");
    let list = app.get(&format!("/v1/servers/{server}/backups"), &token).await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(3), "original, and one safety backup per restore");
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    assert!(metrics.body.as_str().unwrap_or_default().contains("respawn_api_restores_total{outcome=\"succeeded\"} 2"));
}

/// `(path, type, file contents or link target)` of a hand-made entry.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str);

/// A zstd tar written header by header, so it can hold what no honest
/// archiver writes.
fn hostile_archive(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data_or_link) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        let data: &[u8] = if *kind == tar::EntryType::Regular { data_or_link.as_bytes() } else { b"" };
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            header.as_old_mut().linkname[..data_or_link.len()].copy_from_slice(data_or_link.as_bytes());
        }
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    zstd::encode_all(&out[..], 3).expect("zstd")
}

async fn hostile_archives_are_refused(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant_id, token, server) = setup(&app, "acme").await;
    let dir = data_dir(&app, &server);
    fill_world(&dir);
    let original = snapshot(&dir);
    let taken = backup(&app, &token, &server).await;
    let bid = taken["id"].as_str().expect("id").to_owned();
    let object = app.files.join("backups").join(app.state.backups.storage.key(&tenant_id, &server, &bid));
    assert!(object.is_file(), "the local store keeps {}", object.display());
    // Outside the data directory, where an escaping entry would land.
    let outside = app.files.join("data");
    let absolute = app.files.join("abs-target");
    let abs_entry = format!("{}/x", absolute.display());
    use tar::EntryType::{Link, Regular, Symlink};
    let cases: Vec<(&str, Vec<RawEntry>)> = vec![
        ("dotdot", vec![("world/ok", Regular, "fine"), ("../escaped", Regular, "evil")]),
        ("nested dotdot", vec![("world/../../escaped", Regular, "evil")]),
        ("absolute", vec![(abs_entry.as_str(), Regular, "evil")]),
        ("symlink out", vec![("out", Symlink, "../../")]),
        ("absolute symlink", vec![("out", Symlink, "/etc")]),
        ("file through symlink", vec![("in", Symlink, "."), ("in/escaped", Regular, "evil")]),
        ("symlink chain", vec![("a/l", Symlink, ".."), ("b", Symlink, "a/l/..")]),
        ("hardlink out", vec![("h", Link, "../escaped")]),
    ];
    for (name, entries) in cases {
        let bytes = hostile_archive(&entries);
        std::fs::write(&object, &bytes).expect("replace archive");
        // Make the row agree with the new bytes, so the refusal is the
        // extractor's, not the checksum's.
        sqlx::query("UPDATE backups SET sha256 = $1, size_bytes = $2 WHERE id = $3")
            .bind(hex(&Sha256::digest(&bytes)))
            .bind(bytes.len() as i64)
            .bind(&bid)
            .execute(&app.state.db.pool)
            .await
            .expect("update");
        let done = restore(&app, &token, &server, &bid).await;
        assert_eq!(done["status"], "failed", "{name}: {done}");
        let error = done["error"].as_str().unwrap_or_default();
        assert!(error.contains("refused archive entry"), "{name}: {error}");
        assert!(error.contains("nothing was changed"), "{name}: {error}");
        assert_eq!(snapshot(&dir), original, "{name}: the data directory is untouched");
        assert!(!outside.join("escaped").exists() && !app.files.join("escaped").exists(), "{name}");
        assert!(!absolute.exists(), "{name}");
        let siblings = std::fs::read_dir(&outside).expect("ls").count();
        assert_eq!(siblings, 1, "{name}: no staging directory left");
    }
    // A damaged archive (hash no longer matches) is refused too.
    std::fs::write(&object, b"garbage").expect("write");
    let done = restore(&app, &token, &server, &bid).await;
    assert_eq!(done["status"], "failed");
    assert!(done["error"].as_str().unwrap_or_default().contains("SHA-256"), "{done}");
    assert_eq!(snapshot(&dir), original);
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    assert!(metrics.body.as_str().unwrap_or_default().contains("respawn_api_restores_total{outcome=\"failed\"} 9"));
}

async fn saving_is_paused_around_the_archive(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token, server) = setup(&app, "acme").await;
    let dir = data_dir(&app, &server);
    fill_world(&dir);

    // Sleeping: archived as it lies, no console at all.
    let asleep = backup(&app, &token, &server).await;
    assert_eq!(asleep["status"], "succeeded", "{asleep}");
    assert!(app.runtime.console_commands(&server).is_empty());
    assert_eq!(app.runtime.backup_flags(&server), [true, false], "kept up while it ran");

    // Running: save-off, save-all flush, archive, save-on.
    app.runtime.set_status(&server, Phase::Running, 2);
    let up = backup(&app, &token, &server).await;
    assert_eq!(up["status"], "succeeded", "{up}");
    assert_eq!(app.runtime.console_commands(&server), ["save-off", "save-all flush", "save-on"]);
    assert_eq!(app.runtime.backup_flags(&server), [true, false, true, false]);

    // Starting: the backup waits until it is up, then pauses saving.
    app.runtime.set_status(&server, Phase::Starting, 0);
    let runtime = app.runtime.clone();
    let (up_later, server_id) = (tokio::time::sleep(Duration::from_millis(300)), server.clone());
    let waker = tokio::spawn(async move {
        up_later.await;
        runtime.set_status(&server_id, Phase::Running, 1);
    });
    let settled = backup(&app, &token, &server).await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert!(waker.is_finished(), "it did not archive a starting server");
    assert_eq!(app.runtime.console_commands(&server)[3..], ["save-off", "save-all flush", "save-on"]);

    // The flush fails: the backup fails, and saving is turned back on.
    app.runtime.fail_command("save-all flush", true);
    let flush = backup(&app, &token, &server).await;
    assert_eq!(flush["status"], "failed");
    assert!(flush["error"].as_str().unwrap_or_default().contains("save-all flush"), "{flush}");
    assert_eq!(app.runtime.console_commands(&server)[6..], ["save-off", "save-all flush", "save-on"]);
    app.runtime.fail_command("save-all flush", false);

    // The archive fails (the data directory is gone): save-on still follows.
    std::fs::remove_dir_all(&dir).expect("rm");
    let broken = backup(&app, &token, &server).await;
    assert_eq!(broken["status"], "failed");
    assert!(broken["error"].as_str().unwrap_or_default().contains("archiving"), "{broken}");
    assert_eq!(app.runtime.console_commands(&server)[9..], ["save-off", "save-all flush", "save-on"]);
    assert_eq!(app.runtime.backup_flags(&server).last(), Some(&false), "the pin is released after a failure too");
    // No scratch archive is left behind by the failures.
    assert_eq!(std::fs::read_dir(app.files.join("work")).expect("ls").count(), 0);
}

async fn retention_keeps_the_newest_and_every_locked_one(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant_id, token, server) = setup(&app, "acme").await;
    fill_world(&data_dir(&app, &server));
    let policy = format!("/v1/servers/{server}/backup-policy");
    assert_eq!(
        app.call(Method::PUT, &policy, Some(&token), Some(json!({"keep_last": 2}))).await.status,
        StatusCode::OK
    );
    let base = format!("/v1/servers/{server}/backups");
    let object = |id: &str| app.files.join("backups").join(app.state.backups.storage.key(&tenant_id, &server, id));

    let oldest = backup(&app, &token, &server).await["id"].as_str().expect("id").to_owned();
    let r = app.call(Method::POST, &format!("{base}/{oldest}/lock"), Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut ids = vec![oldest.clone()];
    for _ in 0..3 {
        let done = backup(&app, &token, &server).await;
        assert_eq!(done["status"], "succeeded");
        ids.push(done["id"].as_str().expect("id").to_owned());
    }
    // Kept: the locked oldest, and the newest two. Gone: the one between,
    // row and archive.
    let listed: Vec<String> = app.get(&base, &token).await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, vec![ids[0].clone(), ids[2].clone(), ids[3].clone()]);
    assert!(object(&ids[0]).is_file() && object(&ids[2]).is_file() && object(&ids[3]).is_file());
    assert!(!object(&ids[1]).exists(), "retention deleted the archive too");
    assert_eq!(app.get(&format!("{base}/{}", ids[1]), &token).await.status, StatusCode::NOT_FOUND);

    // keep_last 0 keeps everything.
    assert_eq!(
        app.call(Method::PUT, &policy, Some(&token), Some(json!({"keep_last": 0}))).await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        backup(&app, &token, &server).await;
    }
    assert_eq!(app.get(&base, &token).await.body["items"].as_array().map(Vec::len), Some(5));
    // Back to 1: the next backup leaves itself and the locked one.
    assert_eq!(
        app.call(Method::PUT, &policy, Some(&token), Some(json!({"keep_last": 1}))).await.status,
        StatusCode::OK
    );
    let last = backup(&app, &token, &server).await["id"].as_str().expect("id").to_owned();
    let listed: Vec<String> = app.get(&base, &token).await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, vec![oldest.clone(), last.clone()]);

    // Locked backups never count out unlocked ones: with keep_last 2 and a
    // locked backup among the newest, the two newest unlocked ones stay.
    assert_eq!(
        app.call(Method::PUT, &policy, Some(&token), Some(json!({"keep_last": 2}))).await.status,
        StatusCode::OK
    );
    let pinned = backup(&app, &token, &server).await["id"].as_str().expect("id").to_owned();
    let r = app.call(Method::POST, &format!("{base}/{pinned}/lock"), Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let newest = backup(&app, &token, &server).await["id"].as_str().expect("id").to_owned();
    let listed: Vec<String> = app.get(&base, &token).await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, vec![oldest, last, pinned, newest]);
}

async fn restore_is_refused_while_players_are_on(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token, server) = setup(&app, "acme").await;
    let dir = data_dir(&app, &server);
    fill_world(&dir);
    let bid = backup(&app, &token, &server).await["id"].as_str().expect("id").to_owned();
    std::fs::write(dir.join("server.properties"), b"changed").expect("write");
    let changed = snapshot(&dir);
    app.runtime.set_status(&server, Phase::Running, 3);
    let r = app.call(Method::POST, &format!("/v1/servers/{server}/backups/{bid}/restore"), Some(&token), None).await;
    assert_eq!((r.status, r.error()), (StatusCode::CONFLICT, ("players_online", None)), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| m.contains("3 players")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(snapshot(&dir), changed, "nothing restored");
    assert_eq!(
        app.get(&format!("/v1/servers/{server}/backups"), &token).await.body["items"].as_array().map(Vec::len),
        Some(1),
        "no safety backup either"
    );
    assert_eq!(app.runtime.status(&server).phase, Phase::Running, "not stopped");
    // Once they leave, it goes through.
    app.runtime.set_status(&server, Phase::Running, 0);
    assert_eq!(restore(&app, &token, &server, &bid).await["status"], "succeeded");
    assert_ne!(snapshot(&dir), changed);
}

async fn deleting_a_server_deletes_its_backups(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant_id, token, server) = setup(&app, "acme").await;
    fill_world(&data_dir(&app, &server));
    let first = backup(&app, &token, &server).await["id"].as_str().expect("id").to_owned();
    let r = app.call(Method::POST, &format!("/v1/servers/{server}/backups/{first}/lock"), Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let second = backup(&app, &token, &server).await["id"].as_str().expect("id").to_owned();
    let object = |id: &str| app.files.join("backups").join(app.state.backups.storage.key(&tenant_id, &server, id));
    assert!(object(&first).is_file() && object(&second).is_file());
    assert_eq!(app.delete(&format!("/v1/servers/{server}"), &token).await.status, StatusCode::NO_CONTENT);
    assert!(!object(&first).exists() && !object(&second).exists(), "archives deleted, locked ones too");
    let left: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM backups").fetch_one(&app.state.db.pool).await.expect("count"),
        "n",
    );
    assert_eq!(left, 0);

    // keep_backups=true leaves them in the store.
    let plan = app.plan("other").await;
    let kept = app.server(&token, &plan, "kept", "kept.acme.example").await["id"].as_str().expect("id").to_owned();
    fill_world(&data_dir(&app, &kept));
    let bid = backup(&app, &token, &kept).await["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.delete(&format!("/v1/servers/{kept}?keep_backups=true"), &token).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(app.files.join("backups").join(app.state.backups.storage.key(&tenant_id, &kept, &bid)).is_file());
}

async fn jobs_cut_off_by_a_restart_are_marked_failed(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant_id, token, server) = setup(&app, "acme").await;
    fill_world(&data_dir(&app, &server));
    let finished = backup(&app, &token, &server).await;
    let bid = finished["id"].as_str().expect("id").to_owned();
    // Rows as a killed process leaves them: a backup running, a restore queued.
    let (running, queued) = (format!("bkp_{}", "1".repeat(32)), format!("rst_{}", "1".repeat(32)));
    sqlx::query(
        "INSERT INTO backups (id, tenant_id, server_id, kind, status, locked, created_at_ms) \
         VALUES ($1, $2, $3, 'manual', 'running', 0, 1)",
    )
    .bind(&running)
    .bind(&tenant_id)
    .bind(&server)
    .execute(&app.state.db.pool)
    .await
    .expect("insert backup");
    sqlx::query(
        "INSERT INTO restores (id, tenant_id, server_id, backup_id, status, created_at_ms) \
         VALUES ($1, $2, $3, $4, 'queued', 1)",
    )
    .bind(&queued)
    .bind(&tenant_id)
    .bind(&server)
    .bind(&bid)
    .execute(&app.state.db.pool)
    .await
    .expect("insert restore");
    // While they are pending, another restore is refused, and so is a
    // backup beyond the second pending one.
    let r = app.call(Method::POST, &format!("/v1/servers/{server}/backups/{bid}/restore"), Some(&token), None).await;
    assert_eq!((r.status, r.error().0), (StatusCode::CONFLICT, "restore_pending"), "{}", r.body);
    sqlx::query(
        "INSERT INTO backups (id, tenant_id, server_id, kind, status, locked, created_at_ms) \
         VALUES ($1, $2, $3, 'manual', 'queued', 0, 2)",
    )
    .bind(format!("bkp_{}", "2".repeat(32)))
    .bind(&tenant_id)
    .bind(&server)
    .execute(&app.state.db.pool)
    .await
    .expect("insert backup");
    let r = app.call(Method::POST, &format!("/v1/servers/{server}/backups"), Some(&token), None).await;
    assert_eq!((r.status, r.error().0), (StatusCode::CONFLICT, "backup_pending"), "{}", r.body);
    assert_eq!(respawn_api::store::backups::fail_interrupted(&app.state.db).await.expect("recover"), 3);
    for path in [format!("/v1/servers/{server}/backups/{running}"), format!("/v1/servers/{server}/restores/{queued}")] {
        let r = app.get(&path, &token).await;
        assert_eq!(r.body["status"], "failed", "{path}: {}", r.body);
        assert!(r.body["error"].as_str().is_some_and(|e| e.contains("interrupted")), "{}", r.body);
        assert!(r.body["finished_at_ms"].as_i64().is_some());
    }
    // Finished jobs are left alone, and new ones are accepted again.
    assert_eq!(app.get(&format!("/v1/servers/{server}/backups/{bid}"), &token).await.body, finished);
    assert_eq!(backup(&app, &token, &server).await["status"], "succeeded");
}

//! Plugin sync against a real HTTPS server on 127.0.0.1 with a CA made by the test.

mod support;

use std::path::Path;
use std::time::Duration;

use respawn_plugins::{
    AddressClass, FetchError, FetchPolicy, MANIFEST_FILE, Outcome, PluginError, PluginSpec, PluginSyncArgs, SyncReport,
    run_cli, sync,
};
use sha2::{Digest, Sha256, Sha512};
use support::{Route, TestServer};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha512(bytes: &[u8]) -> String {
    hex::encode(Sha512::digest(bytes))
}

fn spec(name: &str, url: String, body: &[u8]) -> PluginSpec {
    PluginSpec { name: name.into(), version: "1.0".into(), download_url: url, sha256: Some(sha256(body)), sha512: None }
}

/// Every file name in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn outcome<'a>(report: &'a SyncReport, name: &str) -> &'a Outcome {
    report.outcome(name).unwrap_or_else(|| panic!("no outcome for {name} in {report:?}"))
}

fn fetch_error<'a>(report: &'a SyncReport, name: &str) -> &'a FetchError {
    match outcome(report, name) {
        Outcome::Failed(PluginError::Fetch(e)) => e,
        other => panic!("{name}: expected a download failure, got {other:?}"),
    }
}

fn refused_class(report: &SyncReport, name: &str) -> AddressClass {
    match fetch_error(report, name) {
        FetchError::Refused { refused, .. } => refused.class,
        other => panic!("{name}: expected an address refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn installs_with_good_sha256_and_sha512() {
    let server = TestServer::start().await;
    let a = b"jar bytes of plugin a".repeat(1000);
    let b = b"plugin b".to_vec();
    server.route("/a.jar", Route::jar(&a));
    server.route("/b.jar", Route::jar(&b));
    let dir = tempfile::tempdir().unwrap();
    let wanted = [
        spec("alpha", server.url("/a.jar"), &a),
        PluginSpec {
            name: "beta".into(),
            version: "2.1".into(),
            download_url: server.url("/b.jar"),
            sha256: None,
            sha512: Some(sha512(&b).to_uppercase()),
        },
    ];
    let report = sync(dir.path(), &wanted, &server.policy()).await.unwrap();
    assert!(!report.has_failures(), "{report:?}");
    assert!(matches!(outcome(&report, "alpha"), Outcome::Installed { sha256, .. } if *sha256 == self::sha256(&a)));
    assert!(matches!(outcome(&report, "beta"), Outcome::Installed { version, .. } if version == "2.1"));
    assert_eq!(std::fs::read(dir.path().join("alpha.jar")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("beta.jar")).unwrap(), b);
    assert_eq!(listing(dir.path()), vec![MANIFEST_FILE, "alpha.jar", "beta.jar"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest["plugins"]["beta"]["sha512"], sha512(&b));
    assert_eq!(manifest["plugins"]["alpha"]["sha256"], sha256(&a));
}

#[tokio::test]
async fn bad_checksum_fails_that_plugin_and_keeps_the_old_jar() {
    let server = TestServer::start().await;
    let v1 = b"version one".to_vec();
    let v2 = b"version two, tampered".to_vec();
    let other = b"other plugin".to_vec();
    server.route("/v1.jar", Route::jar(&v1));
    server.route("/v2.jar", Route::jar(&v2));
    server.route("/other.jar", Route::jar(&other));
    let dir = tempfile::tempdir().unwrap();
    let policy = server.policy();
    sync(dir.path(), &[spec("we", server.url("/v1.jar"), &v1)], &policy).await.unwrap();

    // The upgrade claims a digest the served bytes do not have.
    let claimed = sha256(b"what the catalog says version two is");
    let upgrade =
        PluginSpec { version: "2.0".into(), sha256: Some(claimed.clone()), ..spec("we", server.url("/v2.jar"), &v2) };
    let report = sync(dir.path(), &[upgrade, spec("other", server.url("/other.jar"), &other)], &policy).await.unwrap();
    match outcome(&report, "we") {
        Outcome::Failed(e @ PluginError::Checksum { plugin, expected, actual, .. }) => {
            assert_eq!(plugin, "we");
            assert_eq!(*expected, claimed);
            assert_eq!(*actual, sha256(&v2));
            let text = e.to_string();
            assert!(text.contains("we") && text.contains(&claimed) && text.contains(&sha256(&v2)), "{text}");
        }
        other => panic!("expected a checksum failure, got {other:?}"),
    }
    // The failure is the upgrade's alone.
    assert!(matches!(outcome(&report, "other"), Outcome::Installed { .. }));
    assert_eq!(std::fs::read(dir.path().join("we.jar")).unwrap(), v1);
    assert_eq!(listing(dir.path()), vec![MANIFEST_FILE, "other.jar", "we.jar"]);
    assert_eq!(server.hits("/v2.jar"), 1);

    // The manifest still describes v1, so the next sync with the v1 spec does nothing.
    let again = sync(dir.path(), &[spec("we", server.url("/v1.jar"), &v1)], &policy).await.unwrap();
    assert!(matches!(outcome(&again, "we"), Outcome::Unchanged));
    assert_eq!(server.hits("/v1.jar"), 1);
}

#[tokio::test]
async fn unmanaged_jars_are_left_alone() {
    let server = TestServer::start().await;
    let body = b"managed".to_vec();
    server.route("/m.jar", Route::jar(&body));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.jar"), b"tenant's own").unwrap();
    std::fs::write(dir.path().join("clash.jar"), b"tenant's clash").unwrap();
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::write(dir.path().join("mine/config.yml"), b"a: 1").unwrap();

    let wanted = [spec("managed", server.url("/m.jar"), &body), spec("clash", server.url("/m.jar"), &body)];
    let report = sync(dir.path(), &wanted, &server.policy()).await.unwrap();
    assert!(matches!(outcome(&report, "managed"), Outcome::Installed { .. }));
    assert!(matches!(outcome(&report, "clash"), Outcome::Failed(PluginError::Unmanaged { .. })), "{report:?}");
    assert_eq!(std::fs::read(dir.path().join("clash.jar")).unwrap(), b"tenant's clash");

    // Removing everything managed touches nothing else.
    let report = sync(dir.path(), &[], &server.policy()).await.unwrap();
    assert!(matches!(outcome(&report, "managed"), Outcome::Removed));
    assert!(report.outcome("mine").is_none() && report.outcome("clash").is_none());
    assert_eq!(std::fs::read(dir.path().join("mine.jar")).unwrap(), b"tenant's own");
    assert_eq!(std::fs::read(dir.path().join("clash.jar")).unwrap(), b"tenant's clash");
    assert_eq!(std::fs::read(dir.path().join("mine/config.yml")).unwrap(), b"a: 1");
    assert!(!dir.path().join("managed.jar").exists());
}

#[tokio::test]
async fn removal_deletes_only_the_unwanted_managed_plugin() {
    let server = TestServer::start().await;
    let (a, b) = (b"aaa".to_vec(), b"bbb".to_vec());
    server.route("/a.jar", Route::jar(&a));
    server.route("/b.jar", Route::jar(&b));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.jar"), b"unmanaged").unwrap();
    let policy = server.policy();
    let both = [spec("a", server.url("/a.jar"), &a), spec("b", server.url("/b.jar"), &b)];
    sync(dir.path(), &both, &policy).await.unwrap();

    let report = sync(dir.path(), &both[..1], &policy).await.unwrap();
    assert!(matches!(outcome(&report, "a"), Outcome::Unchanged));
    assert!(matches!(outcome(&report, "b"), Outcome::Removed));
    assert_eq!(report.plugins.len(), 2);
    assert_eq!(listing(dir.path()), vec![MANIFEST_FILE, "a.jar", "c.jar"]);

    // A managed jar changed by hand is released, not deleted.
    std::fs::write(dir.path().join("a.jar"), b"edited by hand").unwrap();
    let report = sync(dir.path(), &[], &policy).await.unwrap();
    assert!(matches!(outcome(&report, "a"), Outcome::Released));
    assert_eq!(std::fs::read(dir.path().join("a.jar")).unwrap(), b"edited by hand");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest["plugins"], serde_json::json!({}));
}

#[tokio::test]
async fn unchanged_digest_is_not_downloaded_again() {
    let server = TestServer::start().await;
    let body = b"same bytes".to_vec();
    server.route("/x.jar", Route::jar(&body));
    server.route("/mirror/x.jar", Route::jar(&body));
    let dir = tempfile::tempdir().unwrap();
    let policy = server.policy();
    let first = sync(dir.path(), &[spec("x", server.url("/x.jar"), &body)], &policy).await.unwrap();
    assert!(matches!(outcome(&first, "x"), Outcome::Installed { .. }));
    for _ in 0..2 {
        let again = sync(dir.path(), &[spec("x", server.url("/x.jar"), &body)], &policy).await.unwrap();
        assert!(matches!(outcome(&again, "x"), Outcome::Unchanged));
    }
    // A new URL (or version label) with the same digest is still the same bytes.
    let moved = sync(dir.path(), &[spec("x", server.url("/mirror/x.jar"), &body)], &policy).await.unwrap();
    assert!(matches!(outcome(&moved, "x"), Outcome::Unchanged));
    assert_eq!(server.hits("/x.jar"), 1);
    assert_eq!(server.hits("/mirror/x.jar"), 0);

    // A jar that went missing on disk is fetched again.
    std::fs::remove_file(dir.path().join("x.jar")).unwrap();
    let refetch = sync(dir.path(), &[spec("x", server.url("/x.jar"), &body)], &policy).await.unwrap();
    assert!(matches!(outcome(&refetch, "x"), Outcome::Installed { .. }));
    assert_eq!(server.hits("/x.jar"), 2);
}

#[tokio::test]
async fn oversize_bodies_are_refused_without_leaving_a_partial_file() {
    let server = TestServer::start().await;
    let big = vec![7u8; 4096];
    server.route("/declared.jar", Route::jar(&big));
    server.route("/undeclared.jar", Route { content_length: false, ..Route::jar(&big) });
    let dir = tempfile::tempdir().unwrap();
    let policy = FetchPolicy { max_bytes: 1000, ..server.policy() };
    let wanted =
        [spec("declared", server.url("/declared.jar"), &big), spec("undeclared", server.url("/undeclared.jar"), &big)];
    let report = sync(dir.path(), &wanted, &policy).await.unwrap();
    for name in ["declared", "undeclared"] {
        assert!(matches!(fetch_error(&report, name), FetchError::TooLarge { limit: 1000, .. }), "{report:?}");
    }
    assert_eq!(server.hits("/undeclared.jar"), 1);
    assert_eq!(listing(dir.path()), Vec::<String>::new());

    // At the limit exactly it is fine.
    let exact = FetchPolicy { max_bytes: 4096, ..server.policy() };
    let report = sync(dir.path(), &wanted[1..], &exact).await.unwrap();
    assert!(matches!(outcome(&report, "undeclared"), Outcome::Installed { .. }));
}

#[tokio::test]
async fn plain_http_is_refused() {
    let server = TestServer::start().await;
    server.route("/x.jar", Route::jar(b"x"));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/x.jar", server.addr.port());
    let report = sync(dir.path(), &[spec("x", url, b"x")], &server.policy()).await.unwrap();
    assert!(matches!(fetch_error(&report, "x"), FetchError::Scheme { scheme, .. } if scheme == "http"), "{report:?}");
    for url in ["ftp://127.0.0.1/x.jar", "file:///etc/passwd"] {
        let report = sync(dir.path(), &[spec("x", url.into(), b"x")], &server.policy()).await.unwrap();
        assert!(matches!(fetch_error(&report, "x"), FetchError::Scheme { .. }), "{url}");
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn ssrf_targets_are_refused_without_the_operator_allowance() {
    let server = TestServer::start().await;
    server.route("/x.jar", Route::jar(b"x"));
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let targets = [
        ("loopback", format!("https://127.0.0.1:{port}/x.jar"), AddressClass::Loopback),
        ("loopback-short", format!("https://127.1:{port}/x.jar"), AddressClass::Loopback),
        ("rfc1918", format!("https://10.0.0.1:{port}/x.jar"), AddressClass::Private),
        ("metadata", format!("https://169.254.169.254:{port}/x.jar"), AddressClass::LinkLocal),
        ("v6-loopback", format!("https://[::1]:{port}/x.jar"), AddressClass::Loopback),
        ("v4-mapped", format!("https://[::ffff:127.0.0.1]:{port}/x.jar"), AddressClass::Loopback),
        ("nat64", format!("https://[64:ff9b::7f00:1]:{port}/x.jar"), AddressClass::Loopback),
        ("name", format!("https://localhost:{port}/x.jar"), AddressClass::Loopback),
        ("unspecified", format!("https://0.0.0.0:{port}/x.jar"), AddressClass::Unspecified),
    ];
    let wanted: Vec<PluginSpec> = targets.iter().map(|(name, url, _)| spec(name, url.clone(), b"x")).collect();
    let report = sync(dir.path(), &wanted, &server.policy_without_allowance()).await.unwrap();
    for (name, _, class) in &targets {
        assert_eq!(refused_class(&report, name), *class, "{name}");
    }
    let text = match outcome(&report, "name") {
        Outcome::Failed(e) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(text.contains("localhost") && text.contains("loopback"), "{text}");
    assert_eq!(server.connections(), 0, "a refused target must not be connected to");
    assert_eq!(listing(dir.path()), Vec::<String>::new());

    // allow_private opens loopback but not the metadata address.
    let private = FetchPolicy { allow_private: true, ..server.policy_without_allowance() };
    let report = sync(dir.path(), &wanted[..1], &private).await.unwrap();
    assert!(matches!(outcome(&report, "loopback"), Outcome::Installed { .. }), "{report:?}");
    let report = sync(dir.path(), &wanted[3..4], &private).await.unwrap();
    assert_eq!(refused_class(&report, "metadata"), AddressClass::LinkLocal);
}

#[tokio::test]
async fn a_host_name_is_resolved_checked_and_connected_to() {
    let server = TestServer::start().await;
    let body = b"via a name".to_vec();
    server.route("/n.jar", Route::jar(&body));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://localhost:{}/n.jar", server.addr.port());
    // `localhost` may also resolve to ::1; a name is allowed only if all its addresses are.
    let policy = FetchPolicy {
        allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
        ..server.policy()
    };
    let report = sync(dir.path(), &[spec("n", url, &body)], &policy).await.unwrap();
    assert!(matches!(outcome(&report, "n"), Outcome::Installed { .. }), "{report:?}");
    assert_eq!(std::fs::read(dir.path().join("n.jar")).unwrap(), body);
}

#[tokio::test]
async fn redirects_are_checked_hop_by_hop() {
    let server = TestServer::start().await;
    let body = b"redirected jar".to_vec();
    let port = server.addr.port();
    server.route("/final.jar", Route::jar(&body));
    server.route("/ok", Route::redirect("/hop"));
    server.route("/hop", Route::redirect(&server.url("/final.jar")));
    server.route("/to-private", Route::redirect(&format!("https://10.0.0.1:{port}/final.jar")));
    server.route("/to-metadata", Route::redirect("https://169.254.169.254/latest/meta-data/"));
    server.route("/to-mapped", Route::redirect(&format!("https://[::ffff:10.1.1.1]:{port}/x")));
    server.route("/to-http", Route::redirect(&format!("http://127.0.0.1:{port}/final.jar")));
    server.route("/loop", Route::redirect("/loop"));
    let dir = tempfile::tempdir().unwrap();
    let wanted = [
        spec("ok", server.url("/ok"), &body),
        spec("private", server.url("/to-private"), &body),
        spec("metadata", server.url("/to-metadata"), &body),
        spec("mapped", server.url("/to-mapped"), &body),
        spec("http", server.url("/to-http"), &body),
        spec("loop", server.url("/loop"), &body),
    ];
    let report = sync(dir.path(), &wanted, &server.policy()).await.unwrap();
    assert!(matches!(outcome(&report, "ok"), Outcome::Installed { .. }), "{report:?}");
    assert_eq!(refused_class(&report, "private"), AddressClass::Private);
    assert_eq!(refused_class(&report, "metadata"), AddressClass::LinkLocal);
    assert_eq!(refused_class(&report, "mapped"), AddressClass::Private);
    assert!(matches!(fetch_error(&report, "http"), FetchError::Scheme { .. }));
    assert!(matches!(
        fetch_error(&report, "loop"),
        FetchError::TooManyRedirects { max: respawn_plugins::DEFAULT_MAX_REDIRECTS }
    ));
    assert_eq!(server.hits("/final.jar"), 1, "only the allowed chain reached the jar");
    assert_eq!(listing(dir.path()), vec![MANIFEST_FILE, "ok.jar"]);
}

#[tokio::test]
async fn a_stalled_server_hits_the_deadline() {
    let server = TestServer::start().await;
    server.route("/slow.jar", Route { hang: true, ..Route::jar(b"never") });
    let dir = tempfile::tempdir().unwrap();
    let policy = FetchPolicy { timeout: Duration::from_millis(300), ..server.policy() };
    let started = std::time::Instant::now();
    let report = sync(dir.path(), &[spec("slow", server.url("/slow.jar"), b"never")], &policy).await.unwrap();
    assert!(matches!(fetch_error(&report, "slow"), FetchError::Timeout(_)), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn the_test_ca_is_needed_for_the_certificate() {
    let server = TestServer::start().await;
    server.route("/x.jar", Route::jar(b"x"));
    let dir = tempfile::tempdir().unwrap();
    let untrusting = FetchPolicy { extra_root_pem: None, ..server.policy() };
    let report = sync(dir.path(), &[spec("x", server.url("/x.jar"), b"x")], &untrusting).await.unwrap();
    assert!(matches!(fetch_error(&report, "x"), FetchError::Transport { .. }), "{report:?}");
    assert_eq!(server.hits("/x.jar"), 0);
}

#[tokio::test]
async fn cli_fails_when_a_plugin_fails() {
    let server = TestServer::start().await;
    let body = b"cli jar".to_vec();
    server.route("/c.jar", Route::jar(&body));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let plugins = dir.path().join("plugins");
    let args = |specs: &[PluginSpec]| PluginSyncArgs {
        dir: plugins.clone(),
        manifest: None,
        spec_json: Some(serde_json::to_string(specs).unwrap()),
        allow_private: false,
        allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        allow_http: false,
        max_bytes: 1 << 20,
        timeout_secs: 10,
        ca_file: Some(ca.clone()),
    };
    let good = spec("c", server.url("/c.jar"), &body);
    run_cli(args(std::slice::from_ref(&good))).await.unwrap();
    assert_eq!(std::fs::read(plugins.join("c.jar")).unwrap(), body);

    let bad = PluginSpec { sha256: Some("0".repeat(64)), ..good };
    let err = run_cli(args(&[bad])).await.unwrap_err();
    assert!(err.to_string().contains("1 of 1 plugins failed"), "{err:#}");
    assert_eq!(std::fs::read(plugins.join("c.jar")).unwrap(), body);

    // Without the allowance the same install is refused.
    let mut refused = args(&[spec("d", server.url("/c.jar"), &body)]);
    refused.allow_cidrs.clear();
    assert!(run_cli(refused).await.is_err());
}

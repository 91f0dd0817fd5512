//! Servers: create/get/update/delete, hostname rules and global uniqueness,
//! pagination, the phase filter, start/stop and logs through the runtime.

use axum::http::StatusCode;
use respawn_api::Phase;
use serde_json::json;

use crate::both;
use crate::common::{ADMIN, Backend, TestApp, server_body};

both!(
    create_get_update_delete,
    hostnames_valid_and_globally_unique,
    server_validation_names_the_field,
    pagination_walks_every_server,
    phase_filter,
    start_stop_and_logs,
);

async fn create_get_update_delete(b: Backend) {
    let app = TestApp::new(b).await;
    let (tenant, token) = app.tenant("acme").await;
    let plan = app.plan("small").await;
    let body = server_body(&plan, "survival", &["Survival.ACME.example.", "play.acme.example"]);
    let created = app.post("/v1/servers", &token, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.str("id");
    assert!(id.starts_with("srv_"));
    // Hostnames are normalised; the rest comes back as sent.
    assert_eq!(created.body["hostnames"], json!(["survival.acme.example", "play.acme.example"]));
    assert_eq!(created.body["minecraft"], json!({"type": "paper", "version": "1.21.4"}));
    assert_eq!(created.body["properties"]["difficulty"], "hard");
    assert_eq!(created.body["policy"], json!({"idle_timeout_s": 300, "min_replicas": 0, "max_replicas": 2}));
    assert_eq!(created.body["status"]["phase"], "sleeping");
    assert_eq!(created.body["status"]["players"], 0);
    assert!(created.body.get("tenant_id").is_none());
    // The runtime got the spec with the plan's resources inlined.
    let spec = app.runtime.spec(&id).expect("applied");
    assert_eq!(spec.tenant_id, tenant);
    assert_eq!(spec.memory_mib, 2048);
    assert_eq!(spec.hostnames, vec!["survival.acme.example", "play.acme.example"]);

    app.runtime.set_status(&id, Phase::Running, 3);
    let got = app.get(&format!("/v1/servers/{id}"), &token).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["status"]["phase"], "running");
    assert_eq!(got.body["status"]["players"], 3);
    assert_eq!(got.body["name"], "survival");

    // Defaults for policy and properties.
    let minimal = json!({"name": "tiny", "hostnames": ["tiny.acme.example"], "plan_id": plan,
                         "minecraft": {"type": "vanilla", "version": "latest"}});
    let tiny = app.post("/v1/servers", &token, minimal).await;
    assert_eq!(tiny.status, StatusCode::CREATED, "{}", tiny.body);
    assert_eq!(tiny.body["policy"], json!({"idle_timeout_s": 600, "min_replicas": 0, "max_replicas": 1}));
    assert_eq!(tiny.body["properties"], json!({}));

    // PATCH changes only what it names; policy merges field by field.
    let patch =
        json!({"hostnames": ["new.acme.example"], "policy": {"max_replicas": 5}, "properties": {"pvp": "false"}});
    let up = app.patch(&format!("/v1/servers/{id}"), &token, patch).await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.body);
    assert_eq!(up.body["hostnames"], json!(["new.acme.example"]));
    assert_eq!(up.body["policy"], json!({"idle_timeout_s": 300, "min_replicas": 0, "max_replicas": 5}));
    assert_eq!(up.body["properties"], json!({"pvp": "false"}));
    assert_eq!(up.body["name"], "survival");
    assert_eq!(app.runtime.spec(&id).expect("spec").hostnames, vec!["new.acme.example"]);
    let again = app.get(&format!("/v1/servers/{id}"), &token).await;
    assert_eq!(again.body["hostnames"], up.body["hostnames"]);
    assert_eq!(again.body["updated_at_ms"], up.body["updated_at_ms"]);
    // The old hostname is free again.
    let reuse = app.post("/v1/servers", &token, server_body(&plan, "other", &["survival.acme.example"])).await;
    assert_eq!(reuse.status, StatusCode::CREATED, "{}", reuse.body);
    // Renaming onto a sibling's name conflicts.
    let clash = app.patch(&format!("/v1/servers/{id}"), &token, json!({"name": "tiny"})).await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert_eq!(clash.error(), ("name_taken", Some("name")));

    assert_eq!(app.delete(&format!("/v1/servers/{id}"), &token).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/v1/servers/{id}"), &token).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&format!("/v1/servers/{id}"), &token).await.status, StatusCode::NOT_FOUND);
    assert!(app.runtime.spec(&id).is_none(), "removed from the runtime");
    // Its hostnames are free.
    let reuse = app.post("/v1/servers", &token, server_body(&plan, "again", &["new.acme.example"])).await;
    assert_eq!(reuse.status, StatusCode::CREATED, "{}", reuse.body);
}

async fn hostnames_valid_and_globally_unique(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, a) = app.tenant("acme").await;
    let (_, other) = app.tenant("globex").await;
    let plan = app.plan("small").await;
    app.server(&a, &plan, "survival", "mc.acme.example").await;

    // Another tenant cannot take it, whatever the case or trailing dot; the
    // error names the hostname and its position.
    for taken in ["mc.acme.example", "MC.Acme.Example", "mc.acme.example."] {
        let r = app.post("/v1/servers", &other, server_body(&plan, "copy", &["free.globex.example", taken])).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{taken}: {}", r.body);
        assert_eq!(r.error(), ("hostname_taken", Some("hostnames[1]")));
        assert!(r.body["error"]["message"].as_str().unwrap_or_default().contains("mc.acme.example"));
    }
    // Nothing half-created: the free hostname of the failed request is free.
    let ok = app.post("/v1/servers", &other, server_body(&plan, "copy", &["free.globex.example"])).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    // Same for the owner, and through PATCH.
    let r = app.post("/v1/servers", &a, server_body(&plan, "second", &["mc.acme.example"])).await;
    assert_eq!(r.error(), ("hostname_taken", Some("hostnames[0]")));
    let id = ok.str("id");
    let r = app.patch(&format!("/v1/servers/{id}"), &other, json!({"hostnames": ["mc.acme.example"]})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), ("hostname_taken", Some("hostnames[0]")));
    assert_eq!(app.get(&format!("/v1/servers/{id}"), &other).await.body["hostnames"], json!(["free.globex.example"]));

    for bad in ["localhost", "-x.example", "a..example", "*.acme.example", "10.0.0.1", "under_score.example", ""] {
        let r = app.post("/v1/servers", &a, server_body(&plan, "bad", &["ok.acme.example", bad])).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
        assert_eq!(r.error(), ("invalid_field", Some("hostnames[1]")), "{bad}");
    }
    let dup = app.post("/v1/servers", &a, server_body(&plan, "dup", &["x.acme.example", "X.acme.example"])).await;
    assert_eq!(dup.error(), ("invalid_field", Some("hostnames[1]")));
    let none = app.post("/v1/servers", &a, server_body(&plan, "none", &[])).await;
    assert_eq!(none.error(), ("invalid_field", Some("hostnames")));
}

async fn server_validation_names_the_field(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let plan = app.plan("small").await;
    let base = server_body(&plan, "s", &["s.acme.example"]);
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Change, u16, &str)> = vec![
        ("bogus", Box::new(|v| v["bogus"] = json!(1)), 422, "invalid_field"),
        ("policy.surprise", Box::new(|v| v["policy"]["surprise"] = json!(1)), 422, "invalid_field"),
        ("policy.max_replicas", Box::new(|v| v["policy"]["max_replicas"] = json!("two")), 422, "invalid_field"),
        ("policy.max_replicas", Box::new(|v| v["policy"]["max_replicas"] = json!(0)), 422, "invalid_field"),
        ("policy.min_replicas", Box::new(|v| v["policy"]["min_replicas"] = json!(3)), 422, "invalid_field"),
        (
            "policy.idle_timeout_s",
            Box::new(|v| v["policy"]["idle_timeout_s"] = json!(99_999_999)),
            422,
            "invalid_field",
        ),
        ("minecraft.type", Box::new(|v| v["minecraft"]["type"] = json!("bukkit2")), 422, "invalid_field"),
        ("minecraft.version", Box::new(|v| v["minecraft"]["version"] = json!("1.21 ; rm")), 422, "invalid_field"),
        ("minecraft", Box::new(|v| v["minecraft"] = json!(null)), 422, "invalid_field"),
        ("name", Box::new(|v| v["name"] = json!("Has Space")), 422, "invalid_field"),
        ("properties.motd", Box::new(|v| v["properties"]["motd"] = json!("a\nop=me")), 422, "invalid_field"),
        ("properties.Bad Key", Box::new(|v| v["properties"]["Bad Key"] = json!("x")), 422, "invalid_field"),
        ("properties.pvp", Box::new(|v| v["properties"]["pvp"] = json!(true)), 422, "invalid_field"),
        ("plan_id", Box::new(|v| v["plan_id"] = json!("plan_missing")), 422, "invalid_field"),
        ("hostnames", Box::new(|v| v["hostnames"] = json!("one.example")), 422, "invalid_field"),
    ];
    for (field, change, status, code) in cases {
        let mut body = base.clone();
        change(&mut body);
        let r = app.post("/v1/servers", &token, body).await;
        assert_eq!(r.status.as_u16(), status, "{field}: {}", r.body);
        assert_eq!(r.error(), (code, Some(field)), "{field}: {}", r.body);
    }
    // Name taken within the tenant.
    app.server(&token, &plan, "s", "s.acme.example").await;
    let r = app.post("/v1/servers", &token, server_body(&plan, "s", &["other.acme.example"])).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), ("name_taken", Some("name")));
    // PATCH refuses unknown fields too, and changes nothing.
    let list = app.get("/v1/servers", &token).await;
    let id = list.body["items"][0]["id"].as_str().expect("id").to_owned();
    let r = app.patch(&format!("/v1/servers/{id}"), &token, json!({"name": "t", "owner": "me"})).await;
    assert_eq!(r.error(), ("invalid_field", Some("owner")));
    assert_eq!(app.get(&format!("/v1/servers/{id}"), &token).await.body["name"], "s");
    let r = app.patch(&format!("/v1/servers/{id}"), &token, json!({"policy": {"min_replicas": 9}})).await;
    assert_eq!(r.error(), ("invalid_field", Some("policy.min_replicas")));
    let _ = ADMIN;
}

async fn pagination_walks_every_server(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let (_, other) = app.tenant("globex").await;
    let plan = app.plan("small").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let s = app.server(&token, &plan, &format!("s{i}"), &format!("s{i}.acme.example")).await;
        ids.push(s["id"].as_str().expect("id").to_owned());
        // Another tenant's servers interleave in the table but never show up.
        app.server(&other, &plan, &format!("g{i}"), &format!("g{i}.globex.example")).await;
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut path = "/v1/servers?limit=3".to_owned();
    loop {
        let page = app.get(&path, &token).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|s| s["id"].as_str().expect("id").to_owned()));
        pages += 1;
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/servers?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every server once, in creation order");
    // An exact multiple of the limit ends without an empty extra page.
    let all = app.get("/v1/servers?limit=7", &token).await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(7));
    assert!(all.body["next_cursor"].is_null());

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("cursor=garbage", "cursor"),
        ("color=red", "color"),
    ] {
        let r = app.get(&format!("/v1/servers?{query}"), &token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert_eq!(r.error(), ("invalid_query", Some(field)), "{query}");
    }
}

async fn phase_filter(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let plan = app.plan("small").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let s = app.server(&token, &plan, &format!("s{i}"), &format!("s{i}.acme.example")).await;
        ids.push(s["id"].as_str().expect("id").to_owned());
    }
    for i in [1, 3, 4] {
        app.runtime.set_status(&ids[i], Phase::Running, 1);
    }
    app.runtime.set_status(&ids[5], Phase::Failed, 0);
    let running = app.get("/v1/servers?phase=running", &token).await;
    assert_eq!(running.status, StatusCode::OK, "{}", running.body);
    let got: Vec<_> = running.body["items"].as_array().expect("items").iter().map(|s| s["id"].clone()).collect();
    assert_eq!(got, vec![json!(ids[1]), json!(ids[3]), json!(ids[4])]);
    assert!(running.body["next_cursor"].is_null());
    // Filtered pages of one.
    let mut seen = Vec::new();
    let mut path = "/v1/servers?phase=running&limit=1".to_owned();
    loop {
        let page = app.get(&path, &token).await;
        seen.extend(page.body["items"].as_array().expect("items").iter().map(|s| s["id"].clone()));
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/servers?phase=running&limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, got);
    let sleeping = app.get("/v1/servers?phase=sleeping", &token).await;
    assert_eq!(sleeping.body["items"].as_array().map(Vec::len), Some(2));
    let failed = app.get("/v1/servers?phase=failed", &token).await;
    assert_eq!(failed.body["items"][0]["id"], json!(ids[5]));
    let stopping = app.get("/v1/servers?phase=stopping", &token).await;
    assert_eq!(stopping.body["items"], json!([]));
    let bad = app.get("/v1/servers?phase=dancing", &token).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error(), ("invalid_query", Some("phase")));
}

async fn start_stop_and_logs(b: Backend) {
    let app = TestApp::new(b).await;
    let (_, token) = app.tenant("acme").await;
    let plan = app.plan("small").await;
    let id = app.server(&token, &plan, "s", "s.acme.example").await["id"].as_str().expect("id").to_owned();
    let start = app.call(axum::http::Method::POST, &format!("/v1/servers/{id}/start"), Some(&token), None).await;
    assert_eq!(start.status, StatusCode::ACCEPTED, "{}", start.body);
    assert_eq!(start.body["status"]["phase"], "running");
    let stop = app.call(axum::http::Method::POST, &format!("/v1/servers/{id}/stop"), Some(&token), None).await;
    assert_eq!(stop.status, StatusCode::ACCEPTED);
    assert_eq!(stop.body["status"]["phase"], "sleeping");

    for (at, line) in [(1000, "one"), (2000, "two"), (3000, "three")] {
        app.runtime.push_log(&id, at, line);
    }
    let logs = app.get(&format!("/v1/servers/{id}/logs"), &token).await;
    assert_eq!(logs.status, StatusCode::OK);
    let lines: Vec<_> = logs.body["lines"].as_array().expect("lines").iter().map(|l| l["line"].clone()).collect();
    assert_eq!(
        lines,
        vec![json!("wake requested"), json!("hibernate requested"), json!("one"), json!("two"), json!("three")]
    );
    let tail = app.get(&format!("/v1/servers/{id}/logs?tail=2"), &token).await;
    assert_eq!(tail.body["lines"], json!([{"at_ms": 2000, "line": "two"}, {"at_ms": 3000, "line": "three"}]));
    // (the runtime's own lines carry the current time, so `since` far in the future leaves none)
    let since = app.get(&format!("/v1/servers/{id}/logs?since_ms=99999999999999"), &token).await;
    assert_eq!(since.body["lines"], json!([]));
    for q in ["tail=0", "tail=5001", "tail=x", "since_ms=soon"] {
        let r = app.get(&format!("/v1/servers/{id}/logs?{q}"), &token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
    }
    for path in ["/v1/servers/srv_missing/start", "/v1/servers/srv_missing/stop"] {
        let r = app.call(axum::http::Method::POST, path, Some(&token), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
}

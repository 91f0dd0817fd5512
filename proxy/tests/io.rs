//! Integration tests over real loopback sockets: the proxy in-process on port
//! 0, backends made from the crate's own codec so every byte can be checked.
//!
//! One file of scenarios sharing one harness (fake backends, `start`,
//! `eventually`); past 500 lines because each scenario is a story end to end.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use respawn_codec::{
    decode_frame, decode_handshake,
    handshake::{Handshake, NextState, encode_handshake},
    login::encode_login_start,
    proxy_protocol,
    status::{
        StatusC2s, decode_pong, decode_status_c2s, decode_status_response, encode_ping, encode_pong,
        encode_status_request, encode_status_response,
    },
};
use respawn_proxy::{Config, Proxy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// What a fake backend saw on one connection.
#[derive(Debug, Clone, Default)]
struct Seen {
    proxy_header: Option<proxy_protocol::Inbound>,
    raw: Vec<u8>,
}

/// A backend that answers status with `motd` and, for logins, echoes every byte
/// after the first packets back to the client. Records what it received.
struct FakeBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_backend(motd: &'static str) -> FakeBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut rec = Seen::default();
                // PROXY header, if any.
                let mut off = 0;
                loop {
                    match proxy_protocol::decode_inbound(&buf[off..]) {
                        Ok(Some(proxy_protocol::Inbound::Absent)) => break,
                        Ok(Some(h @ proxy_protocol::Inbound::Present { len, .. })) => {
                            rec.proxy_header = Some(h);
                            off = len;
                            break;
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    }
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let (hs, used) = loop {
                    if let Ok(Some(done)) = decode_handshake(&buf[off..]) {
                        break done;
                    }
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                let mut at = off + used;
                if hs.next_state == NextState::Status {
                    let json = format!(
                        r#"{{"version":{{"name":"fake 1.21.4","protocol":{}}},"players":{{"max":42,"online":7}},"description":{{"text":"{motd}"}},"favicon":"data:image/png;base64,iVBOR"}}"#,
                        hs.protocol
                    );
                    loop {
                        match decode_status_c2s(&buf[at..]) {
                            Ok(Some((StatusC2s::Request, n))) => {
                                at += n;
                                let _ = s.write_all(&encode_status_response(&json)).await;
                            }
                            Ok(Some((StatusC2s::Ping(p), _))) => {
                                let _ = s.write_all(&encode_pong(p)).await;
                                break;
                            }
                            Ok(None) => {
                                let n = s.read(&mut chunk).await.unwrap_or(0);
                                if n == 0 {
                                    break;
                                }
                                buf.extend_from_slice(&chunk[..n]);
                            }
                            Err(_) => break,
                        }
                    }
                    rec.raw = buf[off..].to_vec();
                    seen.lock().unwrap().push(rec);
                    return;
                }
                // Login: record, then echo everything (already buffered bytes after Login Start too).
                let (_, ls) = loop {
                    if let Ok(Some((f, n))) = decode_frame(&buf[at..], 1 << 16) {
                        break (f.id, n);
                    }
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                at += ls;
                rec.raw = buf[off..at].to_vec();
                seen.lock().unwrap().push(rec);
                let _ = s.write_all(&buf[at..]).await;
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        let _ = s.shutdown().await;
                        return;
                    }
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeBackend { addr, seen, task }
}

struct Running {
    addr: SocketAddr,
    proxy: Proxy,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` until it holds, failing after `within`: tests wait for what
/// they need to see, not for a fixed time.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, within: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Generous rate limits: every test client comes from 127.0.0.1.
const OPEN_LIMITS: &str = "[limits]\nper_ip_per_second = 100000\nper_ip_burst = 100000\nper_prefix_per_second = 100000\nper_prefix_burst = 100000\nshutdown_grace_ms = 500\n";

async fn start(config: &str) -> Running {
    let config = Config::parse(config).unwrap();
    let proxy = Proxy::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let p = proxy.clone();
    let s = shutdown.clone();
    let task = tokio::spawn(async move { p.serve(listener, s).await.unwrap() });
    Running { addr, proxy, shutdown, task: Some(task) }
}

fn two_routes(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        r#"default_route = "alpha"
{extra}
[[routes]]
name = "alpha"
hostnames = ["alpha.test", "*.alpha.test"]
backends = ["{a}"]
[[routes]]
name = "bravo"
hostnames = ["bravo.test"]
backends = ["{b}"]
"#
    )
}

fn hs(host: &str, protocol: i32, state: NextState) -> Vec<u8> {
    encode_handshake(&Handshake { protocol, host: host.into(), port: 25565, next_state: state })
}

async fn read_frame<T>(s: &mut TcpStream, buf: &mut Vec<u8>, decode: impl Fn(&[u8]) -> respawn_codec::Decoded<T>) -> T {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((v, n)) = decode(buf).unwrap() {
            buf.drain(..n);
            return v;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.expect("read timeout").unwrap();
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn status(proxy: SocketAddr, host: &str, protocol: i32) -> serde_json::Value {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut out = hs(host, protocol, NextState::Status);
    out.extend(encode_status_request());
    s.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    let json = read_frame(&mut s, &mut buf, |b| decode_status_response(b, 1 << 20)).await;
    s.write_all(&encode_ping(1234)).await.unwrap();
    assert_eq!(read_frame(&mut s, &mut buf, decode_pong).await, 1234);
    serde_json::from_str(&json).unwrap()
}

/// Sends a login and returns the stream (relaying to an echo backend).
async fn login(proxy: SocketAddr, host: &str, protocol: i32) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut out = hs(host, protocol, NextState::Login);
    out.extend(encode_login_start("Steve", Some(7), protocol));
    s.write_all(&out).await.unwrap();
    s
}

async fn echo_roundtrip(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(payload).await.unwrap();
    let mut got = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await.expect("echo timeout").unwrap();
    assert_eq!(got, payload);
}

fn metric(proxy: &Proxy, needle: &str) -> f64 {
    proxy
        .metrics()
        .render()
        .lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn status_routes_by_host_and_caches() {
    let a = fake_backend("alpha").await;
    let b = fake_backend("bravo").await;
    let p = start(&two_routes(a.addr, b.addr, OPEN_LIMITS)).await;
    assert_eq!(status(p.addr, "alpha.test", 769).await["description"]["text"], "alpha");
    assert_eq!(status(p.addr, "BRAVO.test.", 769).await["description"]["text"], "bravo");
    assert_eq!(status(p.addr, "x.alpha.test\0FML3\0", 769).await["description"]["text"], "alpha");
    // Second ask within the TTL: answered from the cache, backend not contacted.
    let before = a.seen.lock().unwrap().len();
    assert_eq!(status(p.addr, "alpha.test", 769).await["description"]["text"], "alpha");
    assert_eq!(a.seen.lock().unwrap().len(), before);
    // The wildcard host above shared alpha's (route, protocol) entry too.
    assert_eq!(metric(&p.proxy, "respawn_proxy_status_requests_total{result=\"hit\"}"), 2.0);
    assert_eq!(metric(&p.proxy, "respawn_proxy_status_requests_total{result=\"miss\"}"), 2.0);
    // The backend saw the client's exact handshake and request bytes.
    let first = a.seen.lock().unwrap()[0].raw.clone();
    let mut want = hs("alpha.test", 769, NextState::Status);
    want.extend(encode_status_request());
    assert_eq!(first, want);
}

#[tokio::test]
async fn stale_and_fallback_when_backend_is_down() {
    let a = fake_backend("alpha").await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap(); // closed at once
    let cfg = two_routes(
        a.addr,
        dead,
        &format!(
            "{OPEN_LIMITS}[status]\ncache_ttl_ms = 0\nstale_motd = \"STALE {{route}}\"\nunreachable_motd = \"DOWN {{host}}\"\n"
        ),
    );
    let p = start(&cfg).await;
    assert_eq!(status(p.addr, "alpha.test", 765).await["description"]["text"], "alpha");
    let gone = a.addr;
    drop(a); // backend gone
    eventually("alpha's listener closed", Duration::from_secs(5), || async { TcpStream::connect(gone).await.is_err() })
        .await;
    let stale = status(p.addr, "alpha.test", 765).await;
    assert_eq!(stale["description"]["text"], "STALE alpha");
    assert_eq!(stale["version"]["name"], "fake 1.21.4");
    assert_eq!(stale["favicon"], "data:image/png;base64,iVBOR");
    // Never reached, nothing cached: the configured unreachable text.
    assert_eq!(status(p.addr, "bravo.test", 765).await["description"]["text"], "DOWN bravo.test");
    assert_eq!(metric(&p.proxy, "respawn_proxy_status_requests_total{result=\"stale\"}"), 1.0);
    // Failed status probes are no rejected connections; a login that cannot
    // reach its backend is, once.
    let unreachable = "respawn_proxy_rejects_total{reason=\"backend_unreachable\"}";
    assert_eq!(metric(&p.proxy, unreachable), 0.0, "status probes counted as rejects");
    let mut c = login(p.addr, "bravo.test", 765).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.expect("told and closed").unwrap();
    assert!(String::from_utf8_lossy(&got).contains("not reachable"), "{got:?}");
    assert_eq!(metric(&p.proxy, unreachable), 1.0);
}

#[tokio::test]
async fn unknown_host_gets_answers_not_silence() {
    let a = fake_backend("alpha").await;
    let cfg = format!(
        "{OPEN_LIMITS}\n[[routes]]\nname = \"alpha\"\nhostnames = [\"alpha.test\"]\nbackends = [\"{}\"]\n",
        a.addr
    );
    let p = start(&cfg).await;
    let s = status(p.addr, "nobody.test", 769).await;
    assert!(s["description"]["text"].as_str().unwrap().contains("nobody.test"), "{s}");
    let mut c = login(p.addr, "nobody.test", 769).await;
    let mut buf = Vec::new();
    let f = read_frame(&mut c, &mut buf, |b| {
        decode_frame(b, 1 << 16).map(|o| o.map(|(f, n)| ((f.id, f.body.to_vec()), n)))
    })
    .await;
    assert_eq!(f.0, 0x00, "login disconnect");
    let text = String::from_utf8_lossy(&f.1);
    assert!(text.contains("There is no server at nobody.test"), "{text}");
    assert!(a.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn login_relays_exact_bytes_and_counts_players() {
    let a = fake_backend("alpha").await;
    let b = fake_backend("bravo").await;
    let p = start(&two_routes(a.addr, b.addr, OPEN_LIMITS)).await;
    for (host, protocol) in [
        ("Alpha.Test.", 47),
        ("alpha.test\0FML3\0", 765),
        ("bravo.test///1.2.3.4:5///123///sig", 775),
        ("alpha.test\0FORGE", 5),
    ] {
        let mut c = login(p.addr, host, protocol).await;
        echo_roundtrip(&mut c, b"play bytes").await;
        let mut want = hs(host, protocol, NextState::Login);
        want.extend(encode_login_start("Steve", Some(7), protocol));
        let backend = if host.starts_with("bravo") { &b } else { &a };
        let got = backend.seen.lock().unwrap().last().unwrap().raw.clone();
        assert_eq!(got, want, "{host:?}: backend got the client's exact bytes");
        assert_eq!(
            metric(
                &p.proxy,
                &format!(
                    "respawn_proxy_players_online{{route=\"{}\"}}",
                    if host.starts_with("bravo") { "bravo" } else { "alpha" }
                )
            ),
            1.0
        );
        drop(c);
        let route = if host.starts_with("bravo") { "bravo" } else { "alpha" };
        let online = format!("respawn_proxy_players_online{{route=\"{route}\"}}");
        eventually("the player counted out", Duration::from_secs(5), || async { metric(&p.proxy, &online) == 0.0 })
            .await;
    }
    assert_eq!(metric(&p.proxy, "respawn_proxy_players_online{route=\"alpha\"}"), 0.0);
    assert_eq!(metric(&p.proxy, "respawn_proxy_logins_total{route=\"alpha\"}"), 3.0);
}

#[tokio::test]
async fn half_close_is_relayed() {
    let a = fake_backend("alpha").await;
    let p = start(&two_routes(a.addr, a.addr, OPEN_LIMITS)).await;
    let mut c = login(p.addr, "alpha.test", 769).await;
    let payload = vec![7u8; 300_000];
    c.write_all(&payload).await.unwrap();
    c.shutdown().await.unwrap(); // client half-closes; the echo must still come back
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got.len(), payload.len());
}

#[tokio::test]
async fn legacy_pings_are_answered() {
    let a = fake_backend("alpha").await;
    let b = fake_backend("bravo").await;
    let p = start(&two_routes(a.addr, b.addr, OPEN_LIMITS)).await;
    let ask = |bytes: Vec<u8>| async move {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
        assert_eq!(out[0], 0xFF);
        let units: Vec<u16> = out[3..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        String::from_utf16(&units).unwrap()
    };
    assert_eq!(ask(vec![0xFE]).await, "alpha§7§42");
    assert!(ask(vec![0xFE, 0x01]).await.contains("\0alpha\0"));
    assert!(ask(vec![0xFE, 0x01, 0xFA]).await.contains("\0alpha\0"));
    let v16 = respawn_codec::legacy::encode_legacy_v1_6(78, "bravo.test", 25565);
    let text = ask(v16).await;
    assert!(text.starts_with("§1\0") && text.contains("\0bravo\0"), "{text:?}");
}

#[tokio::test]
async fn bad_input_is_closed_within_limits() {
    let a = fake_backend("alpha").await;
    let cfg = two_routes(a.addr, a.addr, &format!("{}first_packet_timeout_ms = 1000\n", OPEN_LIMITS));
    let p = start(&cfg).await;
    let closed_within = |bytes: Vec<u8>, trickle: bool| async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        if trickle {
            for b in bytes {
                if s.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        } else {
            let _ = s.write_all(&bytes).await;
        }
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink))
            .await
            .expect("proxy kept the connection open");
        started.elapsed()
    };
    // A 3 GB declared length: refused on the length bytes alone.
    assert!(closed_within(vec![0x80, 0x80, 0x80, 0x80, 0x0b, 0, 0], false).await < Duration::from_millis(500));
    // Random garbage.
    assert!(closed_within(vec![0x05, 0x07, 0xff, 0xff, 0xff, 0x01], false).await < Duration::from_millis(500));
    // Unknown next state.
    let mut bad = hs("alpha.test", 47, NextState::Status);
    let last = bad.len() - 1;
    bad[last] = 9;
    assert!(closed_within(bad, false).await < Duration::from_millis(500));
    // A handshake trickled a byte at a time: cut at the first-packet timeout.
    let t = closed_within(hs("alpha.test", 47, NextState::Login), true).await;
    assert!(t >= Duration::from_millis(900) && t < Duration::from_millis(2500), "{t:?}");
    assert!(metric(&p.proxy, "respawn_proxy_rejects_total{reason=\"protocol_error\"}") >= 3.0);
    assert!(metric(&p.proxy, "respawn_proxy_rejects_total{reason=\"timeout\"}") >= 1.0);
    assert!(a.seen.lock().unwrap().is_empty(), "nothing bad reached the backend");
}

#[tokio::test]
async fn silent_connections_are_closed_and_players_unaffected() {
    let a = fake_backend("alpha").await;
    let cfg = two_routes(a.addr, a.addr, &format!("{}first_packet_timeout_ms = 1500\n", OPEN_LIMITS));
    let p = start(&cfg).await;
    let mut player = login(p.addr, "alpha.test", 769).await;
    echo_roundtrip(&mut player, b"before").await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    echo_roundtrip(&mut player, b"during").await;
    assert!(metric(&p.proxy, "respawn_proxy_connections_open") >= 1000.0);
    for mut s in idle {
        let mut sink = [0u8; 1];
        let n =
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await.expect("idle connection not closed");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    echo_roundtrip(&mut player, b"after").await;
    assert_eq!(metric(&p.proxy, "respawn_proxy_connections_open"), 1.0);
}

#[tokio::test]
async fn rate_and_connection_limits_close_and_count() {
    let a = fake_backend("alpha").await;
    let cfg = format!(
        "[limits]\nper_ip_per_second = 1\nper_ip_burst = 3\n[[routes]]\nname = \"alpha\"\nhostnames = [\"alpha.test\"]\nbackends = [\"{}\"]\n",
        a.addr
    );
    let p = start(&cfg).await;
    for _ in 0..3 {
        status(p.addr, "alpha.test", 47).await;
    }
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink))
        .await
        .expect("over-limit connection not closed");
    assert!(sink.is_empty());
    assert_eq!(metric(&p.proxy, "respawn_proxy_rejects_total{reason=\"rate_limit_ip\"}"), 1.0);

    let cfg = format!(
        "[limits]\nmax_connections = 2\nper_ip_burst = 1000\nper_ip_per_second = 1000\nper_prefix_burst = 1000\nper_prefix_per_second = 1000\n[[routes]]\nname = \"alpha\"\nhostnames = [\"alpha.test\"]\nbackends = [\"{}\"]\n",
        a.addr
    );
    let p = start(&cfg).await;
    let mut one = login(p.addr, "alpha.test", 769).await;
    let mut two = login(p.addr, "alpha.test", 769).await;
    echo_roundtrip(&mut one, b"1").await;
    echo_roundtrip(&mut two, b"2").await;
    let mut three = TcpStream::connect(p.addr).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), three.read_to_end(&mut sink)).await.expect("third not closed");
    assert_eq!(metric(&p.proxy, "respawn_proxy_rejects_total{reason=\"max_connections\"}"), 1.0);
    echo_roundtrip(&mut one, b"still").await;
}

#[tokio::test]
async fn proxy_protocol_in_and_out() {
    let a = fake_backend("alpha").await;
    let cfg = format!(
        "{OPEN_LIMITS}[proxy_protocol]\ntrusted_cidrs = [\"127.0.0.0/8\"]\n[[routes]]\nname = \"alpha\"\nhostnames = [\"alpha.test\"]\nbackends = [\"{}\"]\nproxy_protocol = true\n",
        a.addr
    );
    let p = start(&cfg).await;
    // A trusted load balancer names the player 203.0.113.7; the backend is told so.
    let player: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut out = proxy_protocol::encode_header(player, p.addr);
    out.extend(hs("alpha.test", 769, NextState::Login));
    out.extend(encode_login_start("Steve", Some(1), 769));
    s.write_all(&out).await.unwrap();
    echo_roundtrip(&mut s, b"x").await;
    let seen = a.seen.lock().unwrap().last().unwrap().clone();
    assert!(
        matches!(seen.proxy_header, Some(proxy_protocol::Inbound::Present { source: Some(src), .. }) if src == player),
        "{seen:?}"
    );
    let mut want = hs("alpha.test", 769, NextState::Login);
    want.extend(encode_login_start("Steve", Some(1), 769));
    assert_eq!(seen.raw, want);

    // The same header from an address outside the trusted CIDRs is refused.
    let cfg = format!(
        "{OPEN_LIMITS}[proxy_protocol]\ntrusted_cidrs = [\"10.0.0.0/8\"]\n[[routes]]\nname = \"alpha\"\nhostnames = [\"alpha.test\"]\nbackends = [\"{}\"]\n",
        a.addr
    );
    let p2 = start(&cfg).await;
    let mut s = TcpStream::connect(p2.addr).await.unwrap();
    s.write_all(&out).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink))
        .await
        .expect("untrusted header not refused");
    assert!(sink.is_empty());
    assert_eq!(metric(&p2.proxy, "respawn_proxy_rejects_total{reason=\"proxy_protocol_untrusted\"}"), 1.0);
}

#[tokio::test]
async fn reload_changes_new_connections_only() {
    let a = fake_backend("alpha").await;
    let b = fake_backend("bravo").await;
    let dir = std::env::temp_dir().join(format!("respawn-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    let route = |backend: SocketAddr| {
        format!("{OPEN_LIMITS}[[routes]]\nname = \"main\"\nhostnames = [\"play.test\"]\nbackends = [\"{backend}\"]\n")
    };
    std::fs::write(&path, route(a.addr)).unwrap();
    let p = start(&route(a.addr)).await;
    let watcher = tokio::spawn(respawn_proxy::reload::watch(
        p.proxy.clone(),
        respawn_proxy::ConfigSource::proxy_file(path.clone()),
        p.shutdown.clone(),
    ));
    let mut old = login(p.addr, "play.test", 769).await;
    echo_roundtrip(&mut old, b"on alpha").await;
    assert_eq!(status(p.addr, "play.test", 1).await["description"]["text"], "alpha");

    // A broken file is rejected and the running table stays. (Written again
    // until the rejection shows: the watcher may not be watching yet.)
    let broken = "[[routes]]\nname = \"main\"\nhostnames = [\"play.test\"]\nbackends = [\"no-port\"]\n";
    eventually("the broken file rejected", Duration::from_secs(10), || {
        std::fs::write(&path, broken).unwrap();
        let p = &p;
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            metric(&p.proxy, "respawn_proxy_config_reloads_total{result=\"error\"}") >= 1.0
        }
    })
    .await;
    assert_eq!(status(p.addr, "play.test", 2).await["description"]["text"], "alpha");

    // A good file moves new connections; the open session keeps relaying.
    std::fs::write(&path, route(b.addr)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 3;
    loop {
        n += 1;
        if status(p.addr, "play.test", n).await["description"]["text"] == "bravo" {
            break;
        }
        assert!(Instant::now() < deadline, "reload not seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    echo_roundtrip(&mut old, b"still on alpha").await;
    watcher.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn graceful_shutdown_drains_then_closes() {
    let a = fake_backend("alpha").await;
    let cfg = two_routes(a.addr, a.addr, &OPEN_LIMITS.replace("shutdown_grace_ms = 500", "shutdown_grace_ms = 1000"));
    let p = start(&cfg).await;
    let mut c = login(p.addr, "alpha.test", 769).await;
    echo_roundtrip(&mut c, b"hello").await;
    let stopped_at = Instant::now();
    p.shutdown.cancel();
    let addr = p.addr;
    eventually("no longer accepting", Duration::from_secs(2), || async { TcpStream::connect(addr).await.is_err() })
        .await;
    assert!(!p.proxy.is_ready());
    echo_roundtrip(&mut c, b"during grace").await;
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut sink)).await.expect("not closed after grace").ok();
    let took = stopped_at.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    let mut p = p;
    let task = p.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(2), task).await.unwrap().unwrap();
}

#[tokio::test]
async fn admin_endpoint_serves_metrics_and_health() {
    let a = fake_backend("alpha").await;
    let p = start(&two_routes(a.addr, a.addr, OPEN_LIMITS)).await;
    status(p.addr, "alpha.test", 769).await;
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(axum::serve(admin, respawn_proxy::admin::router(p.proxy.clone())).into_future());
    let get = |path: &'static str| async move {
        let mut s = TcpStream::connect(admin_addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let m = get("/metrics").await;
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(m.contains("respawn_proxy_connections_total{outcome=\"status\"} 1"), "{m}");
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
}

/// A backend that logs one player in (Set Compression, Login Success, one
/// play packet) and then dies: cleanly, mid-frame, or by reset.
async fn dying_backend(end: &'static str) -> (SocketAddr, JoinHandle<()>) {
    use respawn_codec::frame::put_varint;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await.unwrap();
        // Compressed framing: len, data length 0, id, body.
        let framed = |id: i32, body: &[u8]| {
            let mut packet = vec![0u8];
            put_varint(&mut packet, id);
            packet.extend_from_slice(body);
            let mut out = Vec::new();
            put_varint(&mut out, packet.len() as i32);
            out.extend(packet);
            out
        };
        let mut out = Vec::new();
        if end == "kick-login" {
            // Refused at login (whitelist, ban, full): the server's own Disconnect.
            out.extend(respawn_codec::encode_login_disconnect(KICK));
        } else {
            out.extend(respawn_codec::encode_packet(0x03, &[0x80, 0x02])); // threshold 256
            out.extend(framed(0x02, &[9u8; 22])); // Login Success
            out.extend(framed(0x26, &[1u8; 40])); // some play packet
        }
        if end == "mid-frame" {
            out.extend(&framed(0x26, &[1u8; 100])[..30]);
        }
        if end == "kick-play" {
            // `/kick` in play: 1.12.2's Disconnect (0x1a), JSON text.
            let mut body = Vec::new();
            respawn_codec::frame::put_string(&mut body, &format!("{{\"text\":\"{KICK}\"}}"));
            out.extend(framed(0x1a, &body));
        }
        s.write_all(&out).await.unwrap();
        // The server's end comes a moment after its last write (a reset sent
        // at once could overtake the bytes still in flight).
        tokio::time::sleep(Duration::from_millis(100)).await;
        if end == "reset" {
            #[allow(deprecated)] // a reset is exactly what this backend wants
            s.set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(s);
    });
    (addr, task)
}

/// What the kicking backends tell the player.
const KICK: &str = "You are not white-listed on this server!";

/// What a player read before the proxy closed its connection.
async fn read_all(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await.expect("proxy closes").unwrap();
    got
}

#[tokio::test]
async fn a_dying_backend_leaves_the_player_a_reason() {
    for end in ["clean", "reset"] {
        let (addr, _task) = dying_backend(end).await;
        let p = start(&two_routes(addr, addr, OPEN_LIMITS)).await;
        let mut c = login(p.addr, "alpha.test", 340).await;
        let got = read_all(&mut c).await;
        // Walk the frames: compression header, success, play packet, then
        // the proxy's Disconnect (1.12.2 play id 0x1a, JSON text).
        let mut rest = &got[..];
        let mut frames = Vec::new();
        while let Some((f, n)) = decode_frame(rest, 1 << 21).unwrap() {
            frames.push((f.id, f.body.to_vec()));
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "{end}: trailing bytes {rest:?}");
        let (id, body) = frames.last().unwrap();
        // Compressed framing: the "id" decode_frame sees is the data length 0.
        assert_eq!(*id, 0, "{end}");
        assert_eq!(body[0], 0x1a, "{end}: play Disconnect id");
        let text = String::from_utf8_lossy(&body[2..]);
        assert!(text.contains("alpha stopped unexpectedly"), "{end}: {text}");
        assert_eq!(metric(&p.proxy, "respawn_proxy_backend_lost_total{result=\"told\"}"), 1.0, "{end}");
    }
}

/// A server that ends the session itself — a login refused, a `/kick` in
/// play — is no crash: the player gets the server's words and nothing else,
/// and no backend is counted lost.
#[tokio::test]
async fn a_servers_own_disconnect_ends_the_session_as_it_is() {
    for end in ["kick-login", "kick-play"] {
        let (addr, _task) = dying_backend(end).await;
        let p = start(&two_routes(addr, addr, OPEN_LIMITS)).await;
        let mut c = login(p.addr, "alpha.test", 340).await;
        let got = read_all(&mut c).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains(KICK), "{end}: {text}");
        assert!(!text.contains("stopped unexpectedly"), "{end}: the proxy added its own words: {text}");
        // Its Disconnect is the very last thing the player read.
        assert!(got.ends_with(format!("{KICK}\"}}").as_bytes()), "{end}: {text}");
        for result in ["told", "untold"] {
            let lost = format!("respawn_proxy_backend_lost_total{{result=\"{result}\"}}");
            assert_eq!(metric(&p.proxy, &lost), 0.0, "{end}: counted as lost ({result})");
        }
        drop(c);
        let relayed = "respawn_proxy_connections_total{outcome=\"relayed\"}";
        eventually("the session ended as relayed", Duration::from_secs(5), || async {
            metric(&p.proxy, relayed) == 1.0
        })
        .await;
    }
}

#[tokio::test]
async fn no_words_are_put_inside_a_cut_frame() {
    let (addr, _task) = dying_backend("mid-frame").await;
    let p = start(&two_routes(addr, addr, OPEN_LIMITS)).await;
    let mut c = login(p.addr, "alpha.test", 340).await;
    let got = read_all(&mut c).await;
    // The cut frame is the last thing the player got: nothing was appended.
    assert!(got.ends_with(&[1u8; 20]), "{:?}", &got[got.len().saturating_sub(40)..]);
    assert_eq!(metric(&p.proxy, "respawn_proxy_backend_lost_total{result=\"untold\"}"), 1.0);
}

/// An online-mode backend: Encryption Request, then `down` bytes of a
/// pattern, while it reads `up` bytes from the client and checks them.
/// Returns whether the client's bytes arrived exactly.
async fn online_backend(down: usize, up: usize) -> (SocketAddr, JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        // Handshake + Login Start come in first; what follows them is the
        // client's stream (it waits for the Encryption Request before
        // sending any, so the first read holds exactly the prelude).
        let mut prelude = [0u8; 512];
        let n = r.read(&mut prelude).await.unwrap();
        assert!(n > 0);
        let writer = tokio::spawn(async move {
            let mut body = vec![0u8];
            body.extend_from_slice(&[0xa2, 0x01]);
            body.extend_from_slice(&[0x30; 162]);
            body.extend_from_slice(&[4, 1, 2, 3, 4, 1]);
            w.write_all(&respawn_codec::encode_packet(0x01, &body)).await.unwrap();
            let data = pattern(down, 11);
            for chunk in data.chunks(100_003) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::with_capacity(up);
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        got == pattern(up, 29)
    });
    (addr, task)
}

/// Bytes no two offsets of which repeat with a short period, so a lost,
/// doubled or reordered chunk shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn an_online_mode_session_is_relayed_exactly_both_ways() {
    // After the Encryption Request the proxy stops following the server's
    // packets: with splice on, both directions then go through pipes.
    const DOWN: usize = 6 << 20;
    const UP: usize = 5 << 20;
    for splice in [true, false] {
        let (addr, backend) = online_backend(DOWN, UP).await;
        let limits = format!("{OPEN_LIMITS}splice = {splice}\n");
        let p = start(&two_routes(addr, addr, &limits)).await;
        let mut c = login(p.addr, "alpha.test", 769).await;
        let mut buf = Vec::new();
        let first = read_frame(&mut c, &mut buf, |b| decode_frame(b, 1 << 16).map(|o| o.map(|(f, n)| (f.id, n)))).await;
        assert_eq!(first, 0x01, "splice={splice}: the Encryption Request comes first");
        let (mut r, mut w) = c.into_split();
        let upload = tokio::spawn(async move {
            for chunk in pattern(UP, 29).chunks(65_537) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let mut got = buf;
        tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got))
            .await
            .expect("download in time")
            .unwrap();
        upload.await.unwrap();
        assert!(
            got == pattern(DOWN, 11),
            "splice={splice}: the player got the server's bytes exactly ({} of {DOWN})",
            got.len()
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(10), backend).await.unwrap().unwrap(),
            "splice={splice}: the server got the player's bytes exactly"
        );
        let (up_metric, down_metric) = (
            "respawn_proxy_bytes_total{direction=\"client_to_backend\"}",
            "respawn_proxy_bytes_total{direction=\"backend_to_client\"}",
        );
        eventually("both directions counted", Duration::from_secs(5), || async {
            metric(&p.proxy, up_metric) >= UP as f64 && metric(&p.proxy, down_metric) >= DOWN as f64
        })
        .await;
        let up_counted = metric(&p.proxy, up_metric);
        let down_counted = metric(&p.proxy, down_metric);
        assert!(up_counted >= UP as f64, "splice={splice}: up bytes counted: {up_counted}");
        assert!(down_counted >= DOWN as f64, "splice={splice}: down bytes counted: {down_counted}");
    }
}

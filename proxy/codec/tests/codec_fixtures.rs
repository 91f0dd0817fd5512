//! The codec against bytes real clients sent (minecraft-protocol 1.7.10 … 26.1
//! and mcstatus), captured into `tests/fixtures/` with a manifest of what each
//! capture must decode to. Hand-written encoders can share a misreading of the
//! protocol with the decoders; captured bytes cannot.

use std::path::{Path, PathBuf};

use respawn_codec::handshake::normalize_host;
use respawn_codec::handshake::{Handshake, NextState};
use respawn_codec::legacy::{LegacyForm, LegacyPing};
use respawn_codec::proxy_protocol::{Inbound, decode_inbound};
use respawn_codec::status::{StatusC2s, decode_status_c2s};
use respawn_codec::{Decoded, decode_handshake, decode_legacy, decode_login_start};
use serde::Deserialize;

/// One capture as `tests/fixtures/manifest.json` describes it (fields the
/// tests do not use are ignored).
#[derive(Debug, Deserialize)]
struct Fixture {
    file: String,
    kind: Kind,
    protocol: Option<i32>,
    host: Option<String>,
    port: Option<u16>,
    next_state: Option<i32>,
    username: Option<String>,
    uuid: Option<String>,
    /// Length of the whole capture, checked against the file.
    bytes: usize,
    /// Where the handshake ends and the second packet starts.
    handshake_bytes: Option<usize>,
    login_start: Option<LoginStartFacts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Login,
    Status,
    Legacy,
}

#[derive(Debug, Deserialize)]
struct LoginStartFacts {
    has_uuid: bool,
    has_signature: bool,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest() -> Vec<Fixture> {
    let path = fixtures_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn of_kind(kind: Kind) -> Vec<Fixture> {
    let all: Vec<Fixture> = manifest().into_iter().filter(|f| f.kind == kind).collect();
    assert!(!all.is_empty(), "the manifest lists no {kind:?} fixtures");
    all
}

/// The capture's bytes, checked against the manifest's length.
fn load(f: &Fixture) -> Vec<u8> {
    let path = fixtures_dir().join(&f.file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: cannot read: {e}", f.file));
    assert_eq!(bytes.len(), f.bytes, "{}: file length differs from the manifest", f.file);
    bytes
}

/// The UUID the way the manifest writes it: lowercase 8-4-4-4-12 hex.
fn format_uuid(u: u128) -> String {
    let hex = format!("{u:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

fn next_state_number(s: NextState) -> i32 {
    match s {
        NextState::Status => 1,
        NextState::Login => 2,
        NextState::Transfer => 3,
    }
}

/// `packet` is exactly one complete packet: every strict prefix must ask for
/// more bytes (a slow client is not an error), and the whole must decode using
/// every byte. Returns the decoded value.
fn whole_packet<T: std::fmt::Debug>(file: &str, what: &str, packet: &[u8], decode: impl Fn(&[u8]) -> Decoded<T>) -> T {
    for cut in 0..packet.len() {
        match decode(&packet[..cut]) {
            Ok(None) => {}
            other => {
                panic!("{file}: {what}: the {cut}-byte prefix of {} should need more, got {other:?}", packet.len())
            }
        }
    }
    match decode(packet) {
        Ok(Some((value, used))) => {
            assert_eq!(used, packet.len(), "{file}: {what}: used length");
            value
        }
        other => panic!("{file}: {what}: the complete {}-byte packet gave {other:?}", packet.len()),
    }
}

/// Decodes the handshake at the start of a modern capture and checks it
/// against the manifest; returns it with the bytes that follow it.
fn handshake_of<'a>(f: &Fixture, bytes: &'a [u8]) -> (Handshake, &'a [u8]) {
    let file = f.file.as_str();
    let hs_len = f.handshake_bytes.unwrap_or_else(|| panic!("{file}: no handshake_bytes in the manifest"));
    // With the next packet already buffered the handshake still stops at its own end.
    let (hs, used) = decode_handshake(bytes)
        .unwrap_or_else(|e| panic!("{file}: handshake: {e}"))
        .unwrap_or_else(|| panic!("{file}: handshake: needs more bytes than the whole capture"));
    assert_eq!(used, hs_len, "{file}: handshake length");
    let again = whole_packet(file, "handshake", &bytes[..hs_len], decode_handshake);
    assert_eq!(again, hs, "{file}: handshake decodes differently without the next packet");

    assert_eq!(Some(hs.protocol), f.protocol, "{file}: protocol");
    assert_eq!(Some(hs.host.as_str()), f.host.as_deref(), "{file}: host");
    assert_eq!(Some(hs.port), f.port, "{file}: port");
    assert_eq!(Some(next_state_number(hs.next_state)), f.next_state, "{file}: next state");
    (hs, &bytes[hs_len..])
}

#[test]
fn every_capture_is_in_the_manifest() {
    let listed: Vec<String> = manifest().into_iter().map(|f| f.file).collect();
    let dir = fixtures_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut bins = 0;
    for entry in entries {
        let name = entry.expect("directory entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".bin") {
            bins += 1;
            assert!(listed.contains(&name), "{name} is not described in manifest.json, so no test checks it");
        }
    }
    assert_eq!(bins, listed.len(), "manifest.json lists files that are not in {}", dir.display());
}

#[test]
fn login_captures() {
    for f in of_kind(Kind::Login) {
        let file = f.file.as_str();
        let bytes = load(&f);
        let (hs, rest) = handshake_of(&f, &bytes);
        assert_eq!(hs.next_state, NextState::Login, "{file}: next state");
        assert!(!rest.is_empty(), "{file}: no Login Start after the handshake");

        let ls = whole_packet(file, "login start", rest, |b| decode_login_start(b, hs.protocol));
        assert_eq!(Some(ls.name.as_str()), f.username.as_deref(), "{file}: username");
        assert_eq!(ls.uuid.map(format_uuid), f.uuid, "{file}: uuid");
        let facts = f.login_start.as_ref().unwrap_or_else(|| panic!("{file}: no login_start in the manifest"));
        assert_eq!(ls.uuid.is_some(), facts.has_uuid, "{file}: uuid presence");
        assert_eq!(ls.signature.is_some(), facts.has_signature, "{file}: signature presence");
    }
}

#[test]
fn status_captures() {
    for f in of_kind(Kind::Status) {
        let file = f.file.as_str();
        let bytes = load(&f);
        let (hs, rest) = handshake_of(&f, &bytes);
        assert_eq!(hs.next_state, NextState::Status, "{file}: next state");
        let req = whole_packet(file, "status request", rest, decode_status_c2s);
        assert_eq!(req, StatusC2s::Request, "{file}: status packet");
    }
}

#[test]
fn legacy_captures() {
    for f in of_kind(Kind::Legacy) {
        let file = f.file.as_str();
        let bytes = load(&f);
        // No terminator in these forms: while more may come, every prefix and
        // the whole capture wait.
        for cut in 0..=bytes.len() {
            assert_eq!(decode_legacy(&bytes[..cut], true), Ok(None), "{file}: {cut} bytes with more_may_come");
        }
        // Once the legacy wait is over, the 1.4 form, using every byte.
        let bare = LegacyPing { form: LegacyForm::V1_4, protocol: None, host: None, port: None };
        assert_eq!(decode_legacy(&bytes, false), Ok(Some((bare, bytes.len()))), "{file}: after the wait");
        assert_eq!(f.host, None, "{file}: a bare legacy ping carries no host");
    }
}

#[test]
fn no_capture_looks_like_a_proxy_header() {
    for f in manifest() {
        let bytes = load(&f);
        assert_eq!(decode_inbound(&bytes), Ok(Some(Inbound::Absent)), "{}", f.file);
    }
}

#[test]
fn fml3_host_normalizes_to_the_route_name() {
    let fml3: Vec<Fixture> = manifest().into_iter().filter(|f| f.file.contains("fml3")).collect();
    assert!(!fml3.is_empty(), "no fml3 fixture in the manifest");
    for f in fml3 {
        let bytes = load(&f);
        let (hs, _) = handshake_of(&f, &bytes);
        assert_eq!(normalize_host(&hs.host), "survival.acme.example", "{}", f.file);
    }
}

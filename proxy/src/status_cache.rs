//! `StatusCache`: the last status JSON each backend gave, per (route, client
//! protocol), plus the helpers that derive the proxy's own answers from it.
//!
//! Bounded: at most `MAX_PROTOCOLS_PER_ROUTE` entries per route (clients
//! choose the protocol number, so it must not grow the map without limit).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use respawn_codec::status::encode_status_response;
use valence_protocol::text::Text;

pub const MAX_PROTOCOLS_PER_ROUTE: usize = 16;

#[derive(Clone)]
struct Entry {
    protocol: i32,
    json: Arc<str>,
    /// The status response packet, encoded once: a cache hit is one write.
    frame: bytes::Bytes,
    /// None: loaded from disk, never fresh.
    at: Option<Instant>,
}

#[derive(Default)]
pub struct StatusCache {
    routes: Mutex<HashMap<Arc<str>, Vec<Entry>>>,
    dirty: std::sync::atomic::AtomicBool,
}

/// On-disk form: route → [(protocol, status JSON)].
type Persisted = HashMap<String, Vec<(i32, String)>>;

impl StatusCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Entry>>> {
        // A panic while holding this lock leaves plain data behind: keep going.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer for this route and protocol if younger than `ttl`.
    pub fn fresh(&self, route: &str, protocol: i32, ttl: Duration) -> Option<Arc<str>> {
        let map = self.lock();
        let e = map.get(route)?.iter().find(|e| e.protocol == protocol)?;
        (e.at?.elapsed() < ttl).then(|| e.json.clone())
    }

    /// The encoded status response for this route and protocol if younger than `ttl`.
    pub fn fresh_frame(&self, route: &str, protocol: i32, ttl: Duration) -> Option<bytes::Bytes> {
        let map = self.lock();
        let e = map.get(route)?.iter().find(|e| e.protocol == protocol)?;
        (e.at?.elapsed() < ttl).then(|| e.frame.clone())
    }

    /// Any cached answer for the route, however old: this protocol's first,
    /// else the newest.
    pub fn last_known(&self, route: &str, protocol: i32) -> Option<Arc<str>> {
        let map = self.lock();
        let entries = map.get(route)?;
        entries
            .iter()
            .find(|e| e.protocol == protocol)
            .or_else(|| entries.iter().max_by_key(|e| e.at))
            .map(|e| e.json.clone())
    }

    pub fn put(&self, route: &Arc<str>, protocol: i32, json: Arc<str>) {
        let mut map = self.lock();
        let entries = map.entry(route.clone()).or_default();
        let now = Some(Instant::now());
        if let Some(e) = entries.iter_mut().find(|e| e.protocol == protocol) {
            if e.json != json {
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                e.frame = encode_status_response(&json).into();
                e.json = json;
            }
            e.at = now;
            return;
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        if entries.len() >= MAX_PROTOCOLS_PER_ROUTE
            && let Some(oldest) = entries.iter().enumerate().min_by_key(|(_, e)| e.at).map(|(i, _)| i)
        {
            entries.swap_remove(oldest);
        }
        entries.push(Entry { protocol, frame: encode_status_response(&json).into(), json, at: now });
    }

    /// Loads a cache saved by [`StatusCache::save`]; its entries are stale
    /// until refreshed. A missing or unreadable file gives an empty cache.
    pub fn load(path: &std::path::Path) -> Self {
        let cache = Self::new();
        let Ok(text) = std::fs::read_to_string(path) else { return cache };
        let Ok(saved) = serde_json::from_str::<Persisted>(&text) else {
            tracing::warn!(path = %path.display(), "status cache file is unreadable; starting empty");
            return cache;
        };
        let mut map = cache.lock();
        for (route, entries) in saved {
            let entries = entries
                .into_iter()
                .take(MAX_PROTOCOLS_PER_ROUTE)
                .map(|(protocol, json)| Entry {
                    protocol,
                    frame: encode_status_response(&json).into(),
                    json: json.into(),
                    at: None,
                })
                .collect();
            map.insert(route.into(), entries);
        }
        drop(map);
        cache
    }

    /// The cache as it should be saved, if it changed since the last
    /// snapshot; written by [`write_file`] (off the async threads).
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let saved: Persisted = self
            .lock()
            .iter()
            .map(|(r, es)| (r.to_string(), es.iter().map(|e| (e.protocol, e.json.to_string())).collect()))
            .collect();
        serde_json::to_vec(&saved).ok()
    }

    /// Drops routes that no longer exist after a reload.
    pub fn retain_routes(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

/// Writes a [`StatusCache::snapshot`] atomically (a temporary file renamed
/// over the old one). Blocking: call it from the blocking pool.
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A status JSON with its description replaced (stale / sleeping answers).
/// Version, favicon and max players are kept; nobody is shown online.
pub fn with_motd(json: &str, motd: &str) -> String {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(mut obj)) => {
            obj.insert("description".into(), json!({ "text": motd }));
            if let Some(Value::Object(players)) = obj.get_mut("players") {
                players.insert("online".into(), json!(0));
                players.remove("sample");
            }
            Value::Object(obj).to_string()
        }
        _ => synthesize("Respawn", -1, motd, 0),
    }
}

/// A status the proxy makes up when it knows nothing about the server.
pub fn synthesize(version_name: &str, protocol: i32, motd: &str, max_players: i64) -> String {
    json!({
        "version": { "name": version_name, "protocol": protocol },
        "players": { "max": max_players, "online": 0 },
        "description": { "text": motd },
    })
    .to_string()
}

/// The fields a legacy (pre-1.7) reply shows, read from a modern status JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub protocol: i32,
    pub version: String,
    pub motd: String,
    pub online: i64,
    pub max: i64,
}

pub fn summarize(json: &str) -> Summary {
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let motd = match v.get("description") {
        Some(Value::String(s)) => s.clone(),
        Some(d) => serde_json::from_value::<Text>(d.clone()).map(|t| t.to_legacy_lossy()).unwrap_or_default(),
        None => String::new(),
    };
    Summary {
        protocol: v.pointer("/version/protocol").and_then(Value::as_i64).unwrap_or(-1) as i32,
        version: v.pointer("/version/name").and_then(Value::as_str).unwrap_or("").to_owned(),
        motd,
        online: v.pointer("/players/online").and_then(Value::as_i64).unwrap_or(0),
        max: v.pointer("/players/max").and_then(Value::as_i64).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stale_and_bounded() {
        let c = StatusCache::new();
        let r: Arc<str> = "survival".into();
        assert!(c.fresh("survival", 47, Duration::from_secs(5)).is_none());
        c.put(&r, 47, "{\"a\":1}".into());
        assert_eq!(c.fresh("survival", 47, Duration::from_secs(5)).as_deref(), Some("{\"a\":1}"));
        let frame = c.fresh_frame("survival", 47, Duration::from_secs(5)).unwrap();
        assert_eq!(&frame[..], &encode_status_response("{\"a\":1}")[..]);
        assert!(c.fresh("survival", 47, Duration::ZERO).is_none());
        assert!(c.fresh("survival", 48, Duration::from_secs(5)).is_none());
        assert_eq!(c.last_known("survival", 48).as_deref(), Some("{\"a\":1}"));
        for p in 0..100 {
            c.put(&r, p, "{}".into());
        }
        assert_eq!(c.lock().get("survival").unwrap().len(), MAX_PROTOCOLS_PER_ROUTE);
        c.retain_routes(|_| false);
        assert!(c.last_known("survival", 1).is_none());
    }

    #[test]
    fn persists_as_stale() {
        let path = std::env::temp_dir().join(format!("respawn-cache-{}.json", std::process::id()));
        let c = StatusCache::new();
        c.put(&"s".into(), 765, "{\"x\":1}".into());
        write_file(&path, &c.snapshot().expect("changed")).unwrap();
        assert!(c.snapshot().is_none(), "nothing new to save");
        let back = StatusCache::load(&path);
        assert_eq!(back.last_known("s", 765).as_deref(), Some("{\"x\":1}"));
        assert!(back.fresh("s", 765, Duration::from_secs(3600)).is_none(), "loaded entries are stale");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn motd_swap_keeps_version_and_favicon() {
        let json = r#"{"version":{"name":"1.21.4","protocol":769},"players":{"max":20,"online":3,"sample":[]},"description":"hi","favicon":"data:image/png;base64,AAAA"}"#;
        let out: Value = serde_json::from_str(&with_motd(json, "sleeping")).unwrap();
        assert_eq!(out["description"]["text"], "sleeping");
        assert_eq!(out["version"]["protocol"], 769);
        assert_eq!(out["players"]["online"], 0);
        assert_eq!(out["players"]["max"], 20);
        assert_eq!(out["favicon"], "data:image/png;base64,AAAA");
    }

    #[test]
    fn summary_reads_text_components() {
        let json = r#"{"version":{"name":"1.20.4","protocol":765},"players":{"max":20,"online":3},"description":{"text":"A ","extra":[{"text":"B"}]}}"#;
        let s = summarize(json);
        assert_eq!((s.protocol, s.version.as_str(), s.online, s.max), (765, "1.20.4", 3, 20));
        assert!(s.motd.contains('A') && s.motd.contains('B'), "{}", s.motd);
        assert_eq!(summarize(r#"{"description":"plain"}"#).motd, "plain");
    }
}

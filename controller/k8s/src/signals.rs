//! The signal path between proxies and the controller, through the cluster so
//! it survives either side restarting:
//! - a wake is an annotation (`respawn.dev/wake-requested-at`) the proxy puts
//!   on the MinecraftServer: one PATCH, seen at once by the controller's
//!   watch, and still there when a restarting controller comes back;
//! - player counts are Leases (`coordination.k8s.io/v1`), one per proxy
//!   replica, renewed every few seconds, carrying counts per server and pod.
//!   A proxy that disappears stops renewing; past the lease duration its
//!   counts no longer count.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use k8s_openapi::api::coordination::v1::Lease;
use serde::{Deserialize, Serialize};

pub const WAKE_ANNOTATION: &str = "respawn.dev/wake-requested-at";
pub const REPORT_LABEL: &str = "respawn.dev/proxy-report";
pub const PLAYERS_ANNOTATION: &str = "respawn.dev/players";

/// What one proxy reports: `"namespace/server"` → pod name → players.
pub type Report = BTreeMap<String, BTreeMap<String, u32>>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParsedReport {
    pub holder: String,
    pub players: Report,
}

/// When a lease stops counting (renew time + duration), if it says.
fn expiry(lease: &Lease) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let secs = u64::try_from(spec.lease_duration_seconds?).ok()?;
    let renewed = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(renewed.as_nanosecond()).ok()?);
    Some(renewed + Duration::from_secs(secs))
}

/// One lease's players per server (`"namespace/server"`), by pod ordinal.
fn players_of(lease: &Lease) -> HashMap<String, Vec<u32>> {
    let mut by_server: HashMap<String, Vec<u32>> = HashMap::new();
    let Some(raw) = lease.metadata.annotations.as_ref().and_then(|a| a.get(PLAYERS_ANNOTATION)) else {
        return by_server;
    };
    let Ok(report) = serde_json::from_str::<Report>(raw) else { return by_server };
    for (server, pods) in report {
        let name = server.rsplit('/').next().unwrap_or(&server).to_owned();
        let per = by_server.entry(server).or_default();
        for (pod, players) in pods {
            // StatefulSet pods are `<server>-<ordinal>`.
            let Some(ordinal) = pod.strip_prefix(&format!("{name}-")).and_then(|o| o.parse::<usize>().ok()) else {
                continue;
            };
            if ordinal >= 1000 {
                continue;
            }
            if per.len() <= ordinal {
                per.resize(ordinal + 1, 0);
            }
            per[ordinal] += players;
        }
    }
    by_server.retain(|_, per| per.iter().any(|&p| p > 0));
    by_server
}

fn add_into(sum: &mut Vec<u32>, per: &[u32]) {
    if sum.len() < per.len() {
        sum.resize(per.len(), 0);
    }
    for (s, p) in sum.iter_mut().zip(per) {
        *s += p;
    }
}

/// Players per server, by pod ordinal, summed over the live reports.
pub fn merge_reports<'a>(leases: impl IntoIterator<Item = &'a Lease>, now: SystemTime) -> HashMap<String, Vec<u32>> {
    let mut merged: HashMap<String, Vec<u32>> = HashMap::new();
    for lease in leases {
        if expiry(lease).is_none_or(|t| t <= now) {
            continue;
        }
        for (server, per) in players_of(lease) {
            add_into(merged.entry(server).or_default(), &per);
        }
    }
    merged
}

/// One proxy's report, parsed once when its Lease changes.
#[derive(Debug)]
struct ParsedLease {
    expires: Option<SystemTime>,
    players: HashMap<String, Vec<u32>>,
}

impl ParsedLease {
    fn live(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|t| t > now)
    }
}

/// The proxies' reports, parsed as their Leases change, so a reconcile reads
/// one server's players in O(proxies) instead of parsing every report (each
/// as large as the servers with players on them) — which made a cold start
/// with thousands of busy servers quadratic.
#[derive(Debug, Default)]
pub struct ReportIndex {
    /// Lease `namespace/name` → its report.
    leases: Mutex<HashMap<String, ParsedLease>>,
}

impl ReportIndex {
    /// Records a Lease as it is now and returns the servers whose counts this
    /// changed: those whose entry differs from the previous version, and every
    /// server in it when the previous version was missing or expired (or the
    /// new one is). A deleted Lease is not told apart from its last version
    /// (watch mappers see both alike): its counts end at its expiry, like a
    /// proxy that vanished.
    pub fn update(&self, lease: &Lease, now: SystemTime) -> Vec<String> {
        let key = format!(
            "{}/{}",
            lease.metadata.namespace.as_deref().unwrap_or_default(),
            lease.metadata.name.as_deref().unwrap_or_default()
        );
        let parsed = ParsedLease { expires: expiry(lease), players: players_of(lease) };
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let previous = leases.insert(key.clone(), parsed);
        let current = &leases[&key];
        let mut changed: Vec<String> = match previous {
            Some(old) if old.live(now) && current.live(now) => {
                let mut changed: Vec<String> = current
                    .players
                    .iter()
                    .filter(|(s, per)| old.players.get(*s) != Some(per))
                    .map(|(s, _)| s.clone())
                    .collect();
                changed.extend(old.players.keys().filter(|s| !current.players.contains_key(*s)).cloned());
                changed
            }
            Some(old) => current.players.keys().chain(old.players.keys()).cloned().collect(),
            None => current.players.keys().cloned().collect(),
        };
        changed.sort();
        changed.dedup();
        changed
    }

    /// Players on `server` (`"namespace/name"`) by pod ordinal, summed over the live reports.
    pub fn players(&self, server: &str, now: SystemTime) -> Vec<u32> {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = Vec::new();
        for lease in leases.values().filter(|l| l.live(now)) {
            if let Some(per) = lease.players.get(server) {
                add_into(&mut sum, per);
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec,
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
        jiff::Timestamp,
    };

    use super::*;

    fn lease(players: &str, renewed_secs_ago: i64, duration: i32) -> Lease {
        let renew = Timestamp::now() - std::time::Duration::from_secs(renewed_secs_ago as u64);
        Lease {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(PLAYERS_ANNOTATION.to_owned(), players.to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renew)),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn merges_live_reports_and_drops_expired_ones() {
        let a = lease(r#"{"acme/lobby": {"lobby-0": 3, "lobby-2": 1}}"#, 1, 15);
        let b = lease(r#"{"acme/lobby": {"lobby-0": 2}, "acme/survival": {"survival-0": 5}}"#, 2, 15);
        let gone = lease(r#"{"acme/lobby": {"lobby-1": 50}}"#, 60, 15);
        let merged = merge_reports([&a, &b, &gone], SystemTime::now());
        assert_eq!(merged["acme/lobby"], vec![5, 0, 1]);
        assert_eq!(merged["acme/survival"], vec![5]);
    }

    fn named(mut lease: Lease, name: &str) -> Lease {
        lease.metadata.name = Some(name.into());
        lease.metadata.namespace = Some("respawn-system".into());
        lease
    }

    #[test]
    fn the_index_sums_live_reports_and_names_the_servers_that_changed() {
        let index = ReportIndex::default();
        let now = SystemTime::now();
        let a = named(lease(r#"{"acme/lobby": {"lobby-0": 3}, "acme/arena": {"arena-1": 2}}"#, 1, 15), "a");
        assert_eq!(index.update(&a, now), ["acme/arena", "acme/lobby"], "a new report names all its servers");
        let b = named(lease(r#"{"acme/lobby": {"lobby-0": 1, "lobby-2": 4}}"#, 1, 15), "b");
        assert_eq!(index.update(&b, now), ["acme/lobby"]);
        assert_eq!(index.players("acme/lobby", now), [4, 0, 4]);
        assert_eq!(index.players("acme/arena", now), [0, 2]);
        assert!(index.players("acme/none", now).is_empty());

        // A renewal with the same counts changes nothing; a changed or dropped entry does.
        let renewed = named(lease(r#"{"acme/lobby": {"lobby-0": 3}, "acme/arena": {"arena-1": 2}}"#, 0, 15), "a");
        assert!(index.update(&renewed, now).is_empty());
        let moved = named(lease(r#"{"acme/lobby": {"lobby-0": 2}}"#, 0, 15), "a");
        assert_eq!(index.update(&moved, now), ["acme/arena", "acme/lobby"]);
        assert_eq!(index.players("acme/lobby", now), [3, 0, 4]);
        assert!(index.players("acme/arena", now).is_empty());

        // An expired report stops counting; when it comes back, all its servers changed.
        let later = now + Duration::from_secs(20);
        assert!(index.players("acme/lobby", later).is_empty());
        let back = named(lease(r#"{"acme/lobby": {"lobby-0": 2}}"#, 0, 60), "a");
        assert_eq!(index.update(&back, later), ["acme/lobby"]);
        assert_eq!(index.players("acme/lobby", later), [2]);
    }

    #[test]
    fn ignores_garbage() {
        let bad = lease("not json", 1, 15);
        let odd = lease(r#"{"acme/lobby": {"other-0": 3, "lobby-x": 1}}"#, 1, 15);
        let merged = merge_reports([&bad, &odd], SystemTime::now());
        assert!(merged.get("acme/lobby").is_none_or(|v| v.iter().all(|&p| p == 0)));
    }
}

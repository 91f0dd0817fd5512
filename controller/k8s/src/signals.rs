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

/// Players per server, by pod ordinal, summed over the live reports.
pub fn merge_reports<'a>(leases: impl IntoIterator<Item = &'a Lease>, now: SystemTime) -> HashMap<String, Vec<u32>> {
    let mut merged: HashMap<String, Vec<u32>> = HashMap::new();
    for lease in leases {
        if expiry(lease).is_none_or(|t| t <= now) {
            continue;
        }
        let Some(raw) = lease.metadata.annotations.as_ref().and_then(|a| a.get(PLAYERS_ANNOTATION)) else {
            continue;
        };
        let Ok(report) = serde_json::from_str::<Report>(raw) else { continue };
        for (server, pods) in report {
            let name = server.rsplit('/').next().unwrap_or(&server).to_owned();
            let per = merged.entry(server).or_default();
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
    }
    merged
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

    #[test]
    fn ignores_garbage() {
        let bad = lease("not json", 1, 15);
        let odd = lease(r#"{"acme/lobby": {"other-0": 3, "lobby-x": 1}}"#, 1, 15);
        let merged = merge_reports([&bad, &odd], SystemTime::now());
        assert!(merged.get("acme/lobby").is_none_or(|v| v.iter().all(|&p| p == 0)));
    }
}

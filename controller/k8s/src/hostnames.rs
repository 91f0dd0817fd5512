//! Which MinecraftServer holds each hostname: the oldest claim wins (creation
//! time, then namespace and name). Kept current from a watch, so a reconcile
//! finds its conflicts in O(its hostnames) — scanning every server on every
//! reconcile made a cold start with 10,000 servers quadratic.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::watcher};

use crate::crd::MinecraftServer;

/// Orders claims: older first, then by namespace and name.
type Claim = (Option<Timestamp>, String, String);

fn claim(mcs: &MinecraftServer) -> Claim {
    (mcs.metadata.creation_timestamp.as_ref().map(|t| t.0), mcs.namespace().unwrap_or_default(), mcs.name_any())
}

#[derive(Debug, Default)]
struct Claims {
    /// Lowercase hostname → every server claiming it.
    by_host: HashMap<String, BTreeSet<Claim>>,
    /// (namespace, name) → its claim and the hostnames it claims.
    by_server: HashMap<(String, String), (Claim, Vec<String>)>,
}

impl Claims {
    fn remove(&mut self, namespace: &str, name: &str) {
        let Some((claim, hosts)) = self.by_server.remove(&(namespace.to_owned(), name.to_owned())) else { return };
        for host in hosts {
            if let Some(set) = self.by_host.get_mut(&host) {
                set.remove(&claim);
                if set.is_empty() {
                    self.by_host.remove(&host);
                }
            }
        }
    }

    fn upsert(&mut self, mcs: &MinecraftServer) {
        let claim = claim(mcs);
        self.remove(&claim.1, &claim.2);
        let mut hosts: Vec<String> = mcs.spec.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect();
        hosts.sort();
        hosts.dedup();
        for host in &hosts {
            self.by_host.entry(host.clone()).or_default().insert(claim.clone());
        }
        self.by_server.insert((claim.1.clone(), claim.2.clone()), (claim, hosts));
    }
}

#[derive(Debug, Default)]
pub struct HostnameIndex {
    live: Mutex<Claims>,
    /// Built during a relist, swapped in when it is complete.
    relist: Mutex<Option<Claims>>,
}

impl HostnameIndex {
    /// Follows one event of a MinecraftServer watch.
    pub fn apply(&self, event: &watcher::Event<MinecraftServer>) {
        match event {
            watcher::Event::Apply(mcs) => self.live.lock().unwrap_or_else(|e| e.into_inner()).upsert(mcs),
            watcher::Event::Delete(mcs) => self
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&mcs.namespace().unwrap_or_default(), &mcs.name_any()),
            watcher::Event::Init => *self.relist.lock().unwrap_or_else(|e| e.into_inner()) = Some(Claims::default()),
            watcher::Event::InitApply(mcs) => {
                self.relist.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Claims::default).upsert(mcs);
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.lock().unwrap_or_else(|e| e.into_inner()).take();
                // An InitDone without an Init has nothing to swap in.
                if let Some(fresh) = fresh {
                    *self.live.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
            }
        }
    }

    /// Hostnames of `mcs` that an older MinecraftServer already claims.
    pub fn conflicts(&self, mcs: &MinecraftServer) -> Vec<String> {
        let me = claim(mcs);
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut conflicts: Vec<String> = mcs
            .spec
            .hostnames
            .iter()
            .filter(|h| {
                live.by_host.get(&h.to_ascii_lowercase()).and_then(|set| set.first()).is_some_and(|oldest| *oldest < me)
            })
            .cloned()
            .collect();
        conflicts.sort();
        conflicts
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::MinecraftServerSpec;

    fn server(ns: &str, name: &str, created: &str, hosts: &[&str]) -> MinecraftServer {
        let spec: MinecraftServerSpec = serde_json::from_value(json!({ "hostnames": hosts })).unwrap();
        let mut m = MinecraftServer::new(name, spec);
        m.metadata.namespace = Some(ns.into());
        m.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created.parse().unwrap()));
        m
    }

    #[test]
    fn the_older_resource_keeps_a_hostname() {
        let index = HostnameIndex::default();
        let old = server("acme", "old", "2026-01-01T00:00:00Z", &["play.acme.example", "a.acme.example"]);
        let new = server("acme", "new", "2026-02-01T00:00:00Z", &["PLAY.acme.example", "b.acme.example"]);
        index.apply(&watcher::Event::Apply(new.clone()));
        index.apply(&watcher::Event::Apply(old.clone()));
        assert!(index.conflicts(&old).is_empty());
        assert_eq!(index.conflicts(&new), ["PLAY.acme.example"]);
        // Same age: namespace, then name decide.
        let twin = server("acme", "twin", "2026-01-01T00:00:00Z", &["a.acme.example"]);
        index.apply(&watcher::Event::Apply(twin.clone()));
        assert_eq!(index.conflicts(&twin), ["a.acme.example"]);
        assert!(index.conflicts(&old).is_empty());
    }

    #[test]
    fn changes_deletions_and_relists_are_followed() {
        let index = HostnameIndex::default();
        let old = server("acme", "old", "2026-01-01T00:00:00Z", &["play.acme.example"]);
        let new = server("other", "new", "2026-02-01T00:00:00Z", &["play.acme.example"]);
        index.apply(&watcher::Event::Apply(old.clone()));
        index.apply(&watcher::Event::Apply(new.clone()));
        assert_eq!(index.conflicts(&new), ["play.acme.example"]);

        // The old one lets the hostname go: the new one has it.
        let moved = server("acme", "old", "2026-01-01T00:00:00Z", &["elsewhere.acme.example"]);
        index.apply(&watcher::Event::Apply(moved.clone()));
        assert!(index.conflicts(&new).is_empty());
        index.apply(&watcher::Event::Apply(old.clone()));
        assert_eq!(index.conflicts(&new), ["play.acme.example"]);
        index.apply(&watcher::Event::Delete(old.clone()));
        assert!(index.conflicts(&new).is_empty());

        // A relist replaces everything once it is complete.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(old.clone()));
        assert!(index.conflicts(&new).is_empty(), "a relist in progress is not yet the truth");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.conflicts(&new), ["play.acme.example"]);
    }
}

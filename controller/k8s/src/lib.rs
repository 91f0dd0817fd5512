//! Respawn on Kubernetes: the `MinecraftServer` resource, rendering it into a
//! StatefulSet and Service, the controller that scales them, the proxy's
//! route discovery and the management API's runtime.
//!
//! Owns: the CRD types ([`crd`], printed by `respawn crdgen`), rendering
//! ([`render`]), the controller ([`controller`]: observe → decide through
//! the contract's policy → a pure next status → apply), leader election,
//! hostname conflicts, proxy signals (wake annotations, report Leases), the
//! proxy's discovery ([`discovery`], a `Lifecycle` feeding a `RouteSink`)
//! and the API's [`api_runtime`] (a `ServerRuntime` writing
//! MinecraftServers). May depend on: the contract and kube — never on the
//! proxy, the API, the local runtime or the fake API server.
#![forbid(unsafe_code)]

pub mod api_runtime;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod hostnames;
pub mod leader;
pub mod render;
pub mod signals;

//! Respawn's contracts: what the proxy, the runtimes, the Kubernetes
//! controller and the API agree on, so none of them depends on another.
//!
//! Owns: one [`Phase`] (and [`PhaseState`], a phase with its failure reason),
//! the [`Lifecycle`] contract between the proxy and whatever runs servers, the
//! [`ServerRuntime`](runtime::ServerRuntime) contract between the API and the
//! runtimes, the route and plugin specs ([`RouteSpec`], [`PluginSpec`]), the
//! [`RouteSink`] through which platform routes reach the proxy, and the pure
//! scaling [`policy`], which makes every scaling decision.
//!
//! May depend on: serde, thiserror, tokio's `sync` (a watch channel type; no
//! runtime), and utoipa behind the `openapi` feature. Nothing here does IO.
#![forbid(unsafe_code)]

pub mod lifecycle;
pub mod phase;
pub mod policy;
pub mod route_sink;
pub mod runtime;
pub mod spec;

pub use lifecycle::Lifecycle;
pub use phase::{Phase, PhaseState};
pub use route_sink::RouteSink;
pub use spec::{PluginSpec, RouteSpec};

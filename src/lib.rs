//! The `respawn` command's library part: the `respawn.toml` schema
//! ([`config`]) and what `respawn up` wires together ([`embedded`]), shared
//! with the end-to-end tests.
//!
//! This is the top of the dependency graph: it may depend on every component
//! (proxy, local runtime, Kubernetes, API, plugins); none depends on it.
#![forbid(unsafe_code)]

pub mod config;
pub mod embedded;

//! The `respawn` command's library part: what `respawn up` wires together
//! (shared with the end-to-end tests).
#![forbid(unsafe_code)]

pub mod embedded;
pub mod kube_runtime;

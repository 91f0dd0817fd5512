//! Respawn's controller: the pure scaling policy, the contract with the proxy
//! (wakes, sessions, phases), and the local runtime that runs servers as
//! processes on one machine.
#![forbid(unsafe_code)]

pub mod lifecycle;
pub mod local;
pub mod policy;
pub mod probe;
pub mod rcon;

pub use lifecycle::{Lifecycle, Phase};

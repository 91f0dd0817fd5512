//! Respawn's controller: the pure scaling policy, the signals the proxy sends
//! it, and the local runtime that runs servers as processes on one machine.
#![forbid(unsafe_code)]

pub mod policy;

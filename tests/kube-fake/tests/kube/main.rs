//! The fake against kube 5's own client, runtime watcher and controller: if these pass,
//! code tested against the fake sends the requests a real API server would accept and
//! sees the answers a real one would give.

mod apply;
mod common;
mod concurrency;
mod controller;
mod crd;
mod crud;
mod faults;
mod patches;
mod runtime;
mod server;
mod subresources;
mod watch;

//! The contract between the proxy and whatever runs servers (the local
//! runtime, Kubernetes discovery): the proxy asks for wakes and reports
//! player sessions; the runtime publishes each server's phase.

use std::time::Duration;

use tokio::sync::watch;

use crate::phase::PhaseState;

/// Implemented by runtimes; the proxy holds an `Arc<dyn Lifecycle>`.
pub trait Lifecycle: Send + Sync {
    /// The phase of `server` and its changes; `None` when this runtime does not
    /// manage it (the proxy then treats it as always up).
    fn watch(&self, server: &str) -> Option<watch::Receiver<PhaseState>>;
    /// A player sent Login Start for a server that is not running.
    fn wake(&self, server: &str, player: &str);
    /// May this player wake the server? (allow-list by name or UUID)
    fn may_wake(&self, server: &str, player: &str, uuid: Option<u128>) -> bool;
    /// How long a start usually takes (from previous starts).
    fn start_estimate(&self, server: &str) -> Duration;
    fn session_opened(&self, server: &str, backend: &str);
    fn session_closed(&self, server: &str, backend: &str);
}

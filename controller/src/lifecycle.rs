//! The contract between the proxy and whatever runs servers (the local
//! runtime here, the Kubernetes controller later): the proxy asks for wakes and
//! reports player sessions; the runtime publishes each server's phase.

use std::time::Duration;

use tokio::sync::watch;

/// Where a managed server is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not running; a login wakes it.
    Sleeping,
    /// Process started, not yet answering status pings.
    Starting,
    /// Answers status pings: players are sent straight in.
    Running,
    /// Shutting down (idle); a login during this wakes it again afterwards.
    Stopping,
    /// The last start or run failed; the runtime retries with backoff.
    Failed(String),
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Sleeping => "sleeping",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Failed(_) => "failed",
        }
    }
}

/// Implemented by runtimes; the proxy holds an `Arc<dyn Lifecycle>`.
pub trait Lifecycle: Send + Sync {
    /// The phase of `server` and its changes; `None` when this runtime does not
    /// manage it (the proxy then treats it as always up).
    fn watch(&self, server: &str) -> Option<watch::Receiver<Phase>>;
    /// A player sent Login Start for a server that is not running.
    fn wake(&self, server: &str, player: &str);
    /// May this player wake the server? (allow-list by name or UUID)
    fn may_wake(&self, server: &str, player: &str, uuid: Option<u128>) -> bool;
    /// How long a start usually takes (from previous starts).
    fn start_estimate(&self, server: &str) -> Duration;
    fn session_opened(&self, server: &str, backend: &str);
    fn session_closed(&self, server: &str, backend: &str);
}

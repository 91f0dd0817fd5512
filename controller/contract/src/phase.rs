//! One `Phase` for every component: the local runtime and Kubernetes
//! discovery publish it, the proxy reads it to hold or refuse logins, and the
//! management API returns it. (The `MinecraftServer` resource's own status
//! vocabulary — Hibernated, Waking, … — is mapped onto it in one place, in
//! the Kubernetes crate.)

use serde::{Deserialize, Serialize};

/// Where a server is in its life, as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not running (scaled to zero); a login or `start` wakes it.
    Sleeping,
    /// Starting, not yet answering status pings.
    Starting,
    /// Up and accepting players.
    Running,
    /// Shutting down (idle, `stop`, or draining a replica).
    Stopping,
    /// The last start or run failed; the runtime retries.
    Failed,
    /// The runtime does not know this server (yet).
    Unknown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Sleeping => "sleeping",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Failed => "failed",
            Phase::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase and, when it is [`Phase::Failed`], why (a held player reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseState {
    pub phase: Phase,
    pub reason: Option<String>,
}

impl PhaseState {
    pub const fn new(phase: Phase) -> Self {
        PhaseState { phase, reason: None }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        PhaseState { phase: Phase::Failed, reason: Some(reason.into()) }
    }
}

impl From<Phase> for PhaseState {
    fn from(phase: Phase) -> Self {
        PhaseState::new(phase)
    }
}

//! The local runtime's typed errors.

/// A server definition the runtime refuses; `field` names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

/// Why a console command did not run.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("no server {0}")]
    UnknownServer(String),
    #[error("{0} is not running")]
    NotRunning(String),
    #[error("rcon: {0}")]
    Rcon(#[from] respawn_rcon::RconError),
    #[error("stdin: {0}")]
    Stdin(#[source] std::io::Error),
}

/// Why a start failed (held players read it, via the phase's reason).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("plugins: {0}")]
    Plugins(String),
}

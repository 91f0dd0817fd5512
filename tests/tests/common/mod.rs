//! Shared harness for the end-to-end tests: where the peers live and how to
//! run a one-shot peer (client, bot, probe) for its JSON result.
#![allow(dead_code)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::process::Command;

pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Runs `program peers/script args…` (bounded to 60 s) and returns the last
/// JSON line it printed.
pub async fn run_peer<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(program: &str, script: &str, args: &[S]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(program).arg(peers_dir().join(script)).args(args).stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .expect("peer ran too long")
    .expect("peer starts (run the README's test command to install the peers)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!("{script} {args:?} printed no JSON; stderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    serde_json::from_str(line).unwrap()
}

/// Generous limits: every test client comes from 127.0.0.1.
pub const OPEN_LIMITS: &str = "[limits]\nper_ip_per_second = 100000\nper_ip_burst = 100000\nper_prefix_per_second = 100000\nper_prefix_burst = 100000\n";

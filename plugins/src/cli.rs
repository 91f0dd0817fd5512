//! `respawn plugin-sync`: the command a server's init container (or the local runtime) runs
//! before the server starts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;

use crate::fetch::{DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, FetchPolicy};
use crate::sync::{PluginSpec, sync};

/// Download, verify and place a server's plugins; remove the ones no longer wanted.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginSyncArgs {
    /// The server's plugins directory (created if missing).
    #[arg(long, env = "RESPAWN_PLUGINS_DIR")]
    pub dir: PathBuf,
    /// A JSON file holding the list of wanted plugins
    /// (`[{"name", "version", "download_url", "sha256"?, "sha512"?}]`).
    #[arg(long, value_name = "FILE", conflicts_with = "spec_json", required_unless_present = "spec_json")]
    pub manifest: Option<PathBuf>,
    /// The same JSON list inline. `[]` removes every managed plugin.
    #[arg(long, value_name = "JSON", env = "RESPAWN_PLUGIN_SPECS")]
    pub spec_json: Option<String>,
    /// Allow downloads from private, loopback, CGNAT, ULA and link-local addresses (the
    /// cloud metadata address stays refused unless listed with --allow-cidr).
    #[arg(long)]
    pub allow_private: bool,
    /// Allow downloads from this network whatever its kind (repeatable).
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub allow_cidrs: Vec<IpNet>,
    /// Allow plain http:// download URLs (the address rules still apply).
    #[arg(long)]
    pub allow_http: bool,
    /// Largest accepted plugin jar, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
    /// Deadline for each plugin's download, in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs())]
    pub timeout_secs: u64,
    /// PEM file of extra trusted root CAs (added to the built-in Mozilla roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl PluginSyncArgs {
    /// The fetch policy these flags describe (reads `--ca-file`).
    pub fn policy(&self) -> anyhow::Result<FetchPolicy> {
        let extra_root_pem = match &self.ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("reading --ca-file {}", path.display()))?),
            None => None,
        };
        Ok(FetchPolicy {
            allow_http: self.allow_http,
            allow_private: self.allow_private,
            allowed_cidrs: self.allow_cidrs.clone(),
            max_bytes: self.max_bytes,
            timeout: Duration::from_secs(self.timeout_secs),
            extra_root_pem,
            ..FetchPolicy::default()
        })
    }

    /// The wanted plugins from `--manifest` or `--spec-json`.
    pub fn specs(&self) -> anyhow::Result<Vec<PluginSpec>> {
        match (&self.manifest, &self.spec_json) {
            (Some(path), _) => {
                let bytes = std::fs::read(path).with_context(|| format!("reading --manifest {}", path.display()))?;
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("--manifest {} is not a JSON list of plugins", path.display()))
            }
            (None, Some(json)) => serde_json::from_str(json).context("--spec-json is not a JSON list of plugins"),
            (None, None) => anyhow::bail!("one of --manifest or --spec-json is required"),
        }
    }
}

/// Runs one sync, prints a line per plugin, and fails if any plugin failed.
pub async fn run_cli(args: PluginSyncArgs) -> anyhow::Result<()> {
    let policy = args.policy()?;
    let wanted = args.specs()?;
    let report = sync(&args.dir, &wanted, &policy)
        .await
        .with_context(|| format!("syncing plugins in {}", args.dir.display()))?;
    for plugin in &report.plugins {
        println!("{plugin}");
    }
    let failed = report.failures().count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} plugins failed", report.plugins.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PluginSyncArgs,
    }

    /// The shape `respawn` wires it in: a `PluginSync(PluginSyncArgs)` subcommand.
    #[derive(Parser)]
    struct Respawn {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        PluginSync(PluginSyncArgs),
    }

    #[test]
    fn wires_as_the_plugin_sync_subcommand() {
        let cli = Respawn::try_parse_from([
            "respawn",
            "plugin-sync",
            "--dir",
            "p",
            "--manifest",
            "m.json",
            "--allow-private",
            "--ca-file",
            "ca.pem",
        ])
        .unwrap();
        let Command::PluginSync(args) = cli.command;
        assert_eq!(args.manifest, Some(PathBuf::from("m.json")));
        assert!(args.allow_private);
        assert_eq!(args.ca_file, Some(PathBuf::from("ca.pem")));
        assert!(Respawn::try_parse_from(["respawn", "plugin-sync", "--dir", "p"]).is_err());
    }

    #[test]
    fn parses_flags_and_needs_a_spec_source() {
        let cli = Cli::try_parse_from([
            "x",
            "--dir",
            "/data/plugins",
            "--spec-json",
            "[]",
            "--allow-cidr",
            "10.0.0.0/8",
            "--max-bytes",
            "1000",
        ])
        .unwrap();
        assert_eq!(cli.args.max_bytes, 1000);
        assert_eq!(cli.args.specs().unwrap(), vec![]);
        let policy = cli.args.policy().unwrap();
        assert!(!policy.allow_http && !policy.allow_private);
        assert_eq!(policy.allowed_cidrs, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert!(Cli::try_parse_from(["x", "--dir", "d", "--manifest", "m", "--spec-json", "[]"]).is_err());
    }
}

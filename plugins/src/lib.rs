//! Respawn plugin sync: download, verify and place a server's plugin jars.
//!
//! [`sync`] brings a plugins directory to a wanted list of [`PluginSpec`]s: each jar is
//! downloaded under a [`FetchPolicy`] (https only, public addresses only unless the operator
//! allows more, size-capped, one deadline), checked against its sha256/sha512 while it
//! streams, and renamed into place as `<name>.jar`. Jars the platform did not install are
//! never touched; `.respawn-plugins.json` records the ones it did. [`cli`] is the
//! `respawn plugin-sync` command.
//!
//! May depend on: the contract (`PluginSpec`), reqwest (its HTTP client, with
//! rustls), sha2; never on the proxy, the runtimes or the API. The proxy must
//! never link it (it carries an HTTP client).
#![forbid(unsafe_code)]

pub mod address;
pub mod cli;
pub mod digest;
pub mod fetch;
pub mod manifest;
mod place;
pub mod sync;

pub use address::{AddressAllowance, AddressClass, AddressRefused};
pub use cli::{PluginSyncArgs, run_cli};
pub use fetch::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS, DEFAULT_TIMEOUT, FetchError, FetchPolicy,
};
pub use manifest::MANIFEST_FILE;
pub use sync::{Outcome, PluginError, PluginReport, PluginSpec, SyncError, SyncReport, sync};

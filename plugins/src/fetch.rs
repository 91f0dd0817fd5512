//! Downloads that cannot be pointed at the platform's own network (no SSRF).
//!
//! Every URL (the first and each redirect hop) must be https (or http when the operator
//! allows it). An IP-literal host is checked directly; a host name is resolved once by
//! [`CheckedResolver`], every address it returns is checked, and reqwest connects only to
//! those addresses — so a second DNS answer (rebinding) can never be the one connected to.
//! Redirects are followed by hand so each hop goes through the same checks. The body is
//! hashed and size-capped while it streams, and the whole download has one deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{StatusCode, Url};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::address::{AddressAllowance, AddressRefused};
use crate::digest::{Actual, Hasher};

/// Plugin jars are a few MiB; 64 MiB leaves room for the big ones while bounding the disk
/// and memory a hostile or broken URL can cost.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The whole download of one plugin, redirects included. Generous for 64 MiB on a slow
/// link, short enough that an init container does not hang on a stalled server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// A TCP + TLS connect that takes longer than this is not going to work.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Download hosts (GitHub releases, Modrinth, Hangar) use one or two redirects.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// How plugin downloads may reach the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Allow plain `http://` URLs (the address rules still apply). Default false.
    pub allow_http: bool,
    /// Allow non-public unicast targets (loopback, RFC 1918, CGNAT, ULA, link-local, ...)
    /// except the cloud metadata addresses. Default false.
    pub allow_private: bool,
    /// Networks allowed whatever their class (except unspecified/multicast/broadcast).
    pub allowed_cidrs: Vec<IpNet>,
    /// Largest accepted body, checked against Content-Length and while streaming.
    pub max_bytes: u64,
    /// Deadline for one plugin's whole download.
    pub timeout: Duration,
    /// Deadline for each TCP connect.
    pub connect_timeout: Duration,
    /// Redirect hops followed before giving up.
    pub max_redirects: usize,
    /// PEM certificates trusted in addition to the built-in Mozilla roots (a private CA,
    /// or a test's self-signed one).
    pub extra_root_pem: Option<Vec<u8>>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_http: false,
            allow_private: false,
            allowed_cidrs: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            extra_root_pem: None,
        }
    }
}

impl FetchPolicy {
    fn allowance(&self) -> AddressAllowance {
        AddressAllowance { allow_private: self.allow_private, allowed_cidrs: self.allowed_cidrs.clone() }
    }
}

/// The policy cannot be turned into a client (a bad CA bundle).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("extra root CA: {0}")]
    RootCa(String),
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// Why one download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url:?} is not a valid download URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url}: scheme {scheme:?} is not allowed (https only)")]
    Scheme { url: String, scheme: String },
    #[error("{url}: host {host} refused: {refused}")]
    Refused {
        url: String,
        host: String,
        #[source]
        refused: AddressRefused,
    },
    #[error("{url}: host {host} has no addresses")]
    NoAddress { url: String, host: String },
    #[error("{url}: server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: redirect without a usable Location header")]
    BadRedirect { url: String },
    #[error("more than {max} redirects")]
    TooManyRedirects { max: usize },
    #[error("{url}: body larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("download did not finish within {0:?}")]
    Timeout(Duration),
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("writing the download: {0}")]
    Write(#[from] std::io::Error),
}

/// What the resolver hands back to reqwest when a name resolves to a refused address;
/// found again in the error's source chain to give a precise message.
#[derive(Debug, thiserror::Error)]
#[error("host {host} refused: {refused}")]
struct ResolverRefusal {
    host: String,
    refused: AddressRefused,
}

#[derive(Debug, thiserror::Error)]
#[error("host {host} has no addresses")]
struct ResolverEmpty {
    host: String,
}

/// Resolves each name once and returns its addresses only if every one of them is allowed.
/// A name with one refused address is refused whole: a mix of public and private answers
/// is what a rebinding attacker serves, and the connector would try them all.
struct CheckedResolver {
    allowance: Arc<AddressAllowance>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowance = Arc::clone(&self.allowance);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(ResolverEmpty { host }.into());
            }
            for addr in &addrs {
                if let Err(refused) = allowance.check(addr.ip()) {
                    tracing::warn!(%host, ip = %addr.ip(), "plugin download host resolves to a refused address");
                    return Err(ResolverRefusal { host, refused }.into());
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A client that enforces a [`FetchPolicy`].
pub struct Fetcher {
    client: reqwest::Client,
    allowance: Arc<AddressAllowance>,
    allow_http: bool,
    max_bytes: u64,
    timeout: Duration,
    max_redirects: usize,
}

impl Fetcher {
    pub fn new(policy: &FetchPolicy) -> Result<Self, SetupError> {
        let allowance = Arc::new(policy.allowance());
        let mut builder = reqwest::Client::builder()
            // Never via a proxy from the environment: the proxy would resolve and connect
            // for us, out of reach of the address checks.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(policy.connect_timeout)
            .user_agent(concat!("respawn-plugin-sync/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(CheckedResolver { allowance: Arc::clone(&allowance) }));
        if let Some(pem) = &policy.extra_root_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| SetupError::RootCa(error_chain(&e)))?;
            if certs.is_empty() {
                return Err(SetupError::RootCa("no certificate in the PEM data".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| SetupError::Client(error_chain(&e)))?;
        Ok(Self {
            client,
            allowance,
            allow_http: policy.allow_http,
            max_bytes: policy.max_bytes,
            timeout: policy.timeout,
            max_redirects: policy.max_redirects,
        })
    }

    /// Downloads `url` into `sink`, returning the body's digests and length. On error the
    /// sink may hold a prefix of the body; the caller throws it away.
    pub async fn download<W: AsyncWrite + Unpin>(&self, url: &str, sink: &mut W) -> Result<(Actual, u64), FetchError> {
        match tokio::time::timeout(self.timeout, self.download_inner(url, sink)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn download_inner<W: AsyncWrite + Unpin>(
        &self,
        url: &str,
        sink: &mut W,
    ) -> Result<(Actual, u64), FetchError> {
        let mut url = Url::parse(url).map_err(|e| FetchError::BadUrl { url: url.to_owned(), reason: e.to_string() })?;
        let mut hops = 0;
        loop {
            self.check_url(&url)?;
            let mut response = self.client.get(url.clone()).send().await.map_err(|e| transport_error(&url, &e))?;
            let status = response.status();
            if is_followed_redirect(status) {
                if hops == self.max_redirects {
                    return Err(FetchError::TooManyRedirects { max: self.max_redirects });
                }
                hops += 1;
                let next = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| url.join(location).ok())
                    .ok_or_else(|| FetchError::BadRedirect { url: url.to_string() })?;
                tracing::debug!(from = %url, to = %next, "following plugin download redirect");
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status { url: url.to_string(), status: status.as_u16() });
            }
            let too_large = || FetchError::TooLarge { url: url.to_string(), limit: self.max_bytes };
            if response.content_length().is_some_and(|len| len > self.max_bytes) {
                return Err(too_large());
            }
            let mut hasher = Hasher::default();
            let mut total: u64 = 0;
            while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&url, &e))? {
                total = total.saturating_add(chunk.len() as u64);
                if total > self.max_bytes {
                    return Err(too_large());
                }
                hasher.update(&chunk);
                sink.write_all(&chunk).await?;
            }
            sink.flush().await?;
            return Ok((hasher.finish(), total));
        }
    }

    /// The scheme rule, and the address rule for IP-literal hosts (which reqwest connects
    /// to without asking the resolver).
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            scheme => {
                return Err(FetchError::Scheme { url: url.to_string(), scheme: scheme.to_owned() });
            }
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => {
                return Err(FetchError::BadUrl { url: url.to_string(), reason: "no host".into() });
            }
        };
        self.allowance.check(literal).map_err(|refused| FetchError::Refused {
            url: url.to_string(),
            host: literal.to_string(),
            refused,
        })
    }
}

fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// Turns a reqwest error into ours, recovering a refusal from the resolver if that is what
/// stopped the connection.
fn transport_error(url: &Url, err: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<ResolverRefusal>() {
            return FetchError::Refused { url: url.to_string(), host: r.host.clone(), refused: r.refused.clone() };
        }
        if let Some(r) = e.downcast_ref::<ResolverEmpty>() {
            return FetchError::NoAddress { url: url.to_string(), host: r.host.clone() };
        }
        source = e.source();
    }
    FetchError::Transport { url: url.to_string(), message: error_chain(err) }
}

/// "outer: inner: root cause", since reqwest's own Display stops at the outermost layer.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    let mut depth = 0;
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    out
}

//! Who is calling: the admin (a token from config) or a tenant (a token from
//! the database). Tokens are random, shown once and stored as hashes; failed
//! attempts are rate limited per client IP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// Every tenant token starts with this, so leaked tokens are easy to find by
/// secret scanners and the admin token is never mistaken for one.
pub const TOKEN_PREFIX: &str = "rsp_";
/// 256 bits of randomness: far beyond guessing, even without the rate limit.
const TOKEN_RANDOM_BYTES: usize = 32;
/// Blocked client IPs remembered at most; past this, expired entries are
/// dropped first and new ones are refused by the limiter alone.
const MAX_BLOCKED_IPS: usize = 100_000;

/// A new tenant token: `rsp_` + 43 URL-safe base64 characters.
pub fn generate_token() -> String {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    crate::db::fill_random(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a token: hex SHA-256. A fast, unsalted hash is enough
/// here because tokens are 256-bit random values, not passwords: there is no
/// dictionary to try and brute force over 2^256 is hopeless, so a slow KDF
/// would only cost CPU on every request. Being deterministic, the hash also
/// serves as the lookup key.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant { tenant_id: String },
}

/// Token checks and the failed-attempt limiter, shared by all requests.
pub struct AuthGuard {
    /// SHA-256 of the admin token: comparing fixed-length digests in constant
    /// time leaks neither the token's length nor its prefix.
    admin_digest: Option<[u8; 32]>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// IPs that ran out of failed attempts, until when. While here, even a
    /// correct token is refused: otherwise a throttled guesser would still
    /// learn when a guess is right.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl AuthGuard {
    pub fn new(admin_token: Option<&str>, failures_per_minute: u32, burst: u32) -> AuthGuard {
        let per_minute = NonZeroU32::new(failures_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        AuthGuard {
            admin_digest: admin_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            failures: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn is_admin(&self, token: &str) -> bool {
        let Some(expected) = &self.admin_digest else { return false };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        bool::from(presented.ct_eq(expected))
    }

    fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(&ip)?;
        until.checked_duration_since(Instant::now())
    }

    /// Records a failed attempt; `Some(wait)` when the IP is now blocked.
    fn record_failure(&self, ip: IpAddr) -> Option<Duration> {
        let not_until = self.failures.check_key(&ip).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() >= MAX_BLOCKED_IPS {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        if blocked.len() < MAX_BLOCKED_IPS {
            blocked.insert(ip, Instant::now() + wait);
        }
        Some(wait)
    }

    /// Forgets limiter state and blocks that have run out (call periodically).
    pub fn prune(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        let now = Instant::now();
        self.blocked.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, until| *until > now);
    }
}

fn retry_after(wait: Duration) -> ApiError {
    ApiError::RateLimited { retry_after_s: wait.as_secs_f64().ceil() as u64 }
}

/// Connected peers come from `ConnectInfo` (set by `run`); requests without
/// one (tests calling the router directly) share the unspecified address.
fn client_ip(parts: &Parts) -> IpAddr {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        // No token at all is not a guess: 401 without counting it.
        let Some(token) = bearer(parts) else { return Err(ApiError::Unauthorized) };
        let ip = client_ip(parts);
        let guard = &state.auth;
        if let Some(wait) = guard.blocked_for(ip) {
            return Err(retry_after(wait));
        }
        if guard.is_admin(token) {
            return Ok(Caller::Admin);
        }
        if token.starts_with(TOKEN_PREFIX) && token.len() < 128 {
            // Lookup by hash: the hash of a guess says nothing about how close
            // it is to a real token, so this index lookup leaks no timing.
            if let Some(tenant_id) = crate::store::tokens::tenant_of(&state.db, &hash_token(token)).await? {
                return Ok(Caller::Tenant { tenant_id });
            }
        }
        match guard.record_failure(ip) {
            Some(wait) => {
                tracing::warn!(client = %ip, "too many failed token attempts");
                Err(retry_after(wait))
            }
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// Only the admin token passes; a valid tenant token gets 403.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Tenant { .. } => Err(ApiError::Forbidden("this route needs the admin token")),
        }
    }
}

/// Only tenant tokens pass: servers belong to a tenant, and every query on
/// them is scoped by this id.
pub struct Tenant(pub String);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Tenant, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Tenant { tenant_id } => Ok(Tenant(tenant_id)),
            Caller::Admin => Err(ApiError::Forbidden("this route needs a tenant token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_prefixed_and_distinct() {
        let a = generate_token();
        let b = generate_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn admin_token_compares_exactly() {
        let guard = AuthGuard::new(Some("0123456789abcdef0123456789abcdef"), 10, 2);
        assert!(guard.is_admin("0123456789abcdef0123456789abcdef"));
        assert!(!guard.is_admin("0123456789abcdef0123456789abcde"));
        assert!(!AuthGuard::new(None, 10, 2).is_admin(""));
    }

    #[test]
    fn blocks_after_the_burst() {
        let guard = AuthGuard::new(None, 1, 2);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(guard.record_failure(ip).is_none());
        assert!(guard.record_failure(ip).is_none());
        assert!(guard.record_failure(ip).is_some());
        assert!(guard.blocked_for(ip).is_some());
        assert!(guard.blocked_for(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).is_none());
    }
}

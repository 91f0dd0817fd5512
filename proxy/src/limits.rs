//! Per-IP and per-prefix connection rate limits (governor keyed limiters).
//!
//! IPv4 prefixes are /24s, IPv6 prefixes /64s: one subscriber's allocation.

use std::{net::IpAddr, num::NonZeroU32};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Limits;

pub struct ConnectionRateLimiter {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_prefix: DefaultKeyedRateLimiter<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    Allow,
    IpLimited,
    PrefixLimited,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    // Validated non-zero by Config::validate; fall back to 1 rather than panic.
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// The network an address belongs to for the prefix limit.
pub fn prefix_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => prefix_of(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

impl ConnectionRateLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            per_ip: RateLimiter::keyed(quota(limits.per_ip_per_second, limits.per_ip_burst)),
            per_prefix: RateLimiter::keyed(quota(limits.per_prefix_per_second, limits.per_prefix_burst)),
        }
    }

    pub fn check(&self, ip: IpAddr) -> RateVerdict {
        if self.per_ip.check_key(&ip).is_err() {
            return RateVerdict::IpLimited;
        }
        if self.per_prefix.check_key(&prefix_of(ip)).is_err() {
            return RateVerdict::PrefixLimited;
        }
        RateVerdict::Allow
    }

    /// Forgets keys whose buckets are full again, so the maps stay small.
    pub fn forget_idle(&self) {
        self.per_ip.retain_recent();
        self.per_prefix.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_then_prefix() {
        let limits = Limits {
            per_ip_per_second: 1,
            per_ip_burst: 2,
            per_prefix_per_second: 1,
            per_prefix_burst: 3,
            ..Limits::default()
        };
        let rl = ConnectionRateLimiter::new(&limits);
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.1.2.4".parse().unwrap();
        assert_eq!(rl.check(a), RateVerdict::Allow);
        assert_eq!(rl.check(a), RateVerdict::Allow);
        assert_eq!(rl.check(a), RateVerdict::IpLimited);
        assert_eq!(rl.check(b), RateVerdict::Allow);
        assert_eq!(rl.check(b), RateVerdict::PrefixLimited);
        assert_eq!(rl.check("10.1.3.4".parse().unwrap()), RateVerdict::Allow);
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_of("1.2.3.4".parse().unwrap()), "1.2.3.0".parse::<IpAddr>().unwrap());
        assert_eq!(prefix_of("2001:db8:1:2:3:4:5:6".parse().unwrap()), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(prefix_of("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.0".parse::<IpAddr>().unwrap());
    }
}

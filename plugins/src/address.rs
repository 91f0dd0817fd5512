//! Which IP addresses a plugin download may connect to (the SSRF rules), as pure functions.
//!
//! Hand-written because no well-kept crate fits: `std`'s `is_global` is still unstable and
//! `ipnet` only does prefix arithmetic. The tables follow the IANA IPv4 and IPv6
//! special-purpose address registries (RFC 6890 and later additions).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What kind of address an IP is, as far as outbound fetches care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast: the only class a download may reach by default.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT, RFC 6598).
    SharedAddressSpace,
    /// `fc00::/7` (RFC 4193).
    UniqueLocal,
    /// `169.254.0.0/16`, `fe80::/10` (and the deprecated site-local `fec0::/10`).
    LinkLocal,
    /// `0.0.0.0/8` ("this network"), `::`.
    Unspecified,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// TEST-NET-1/2/3, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// Everything else the registries set aside: benchmarking, protocol assignments,
    /// `240/4`, discard-only, unassigned IPv6 outside `2000::/3`, ...
    Reserved,
}

impl AddressClass {
    /// A short lower-case name for error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private (RFC 1918)",
            AddressClass::SharedAddressSpace => "shared address space (CGNAT)",
            AddressClass::UniqueLocal => "unique local (fc00::/7)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
        }
    }

    /// Classes that can never be the far end of a TCP connection; no allowance lifts them.
    fn never_connectable(self) -> bool {
        matches!(self, AddressClass::Unspecified | AddressClass::Multicast | AddressClass::Broadcast)
    }
}

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip == Ipv4Addr::BROADCAST => AddressClass::Broadcast,
        (0, _, _) => AddressClass::Unspecified,
        (10, _, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedAddressSpace,
        (127, _, _) => AddressClass::Loopback,
        (169, 254, _) => AddressClass::LinkLocal,
        (172, 16..=31, _) => AddressClass::Private,
        (192, 168, _) => AddressClass::Private,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        // 192.0.0.0/24 protocol assignments, 192.88.99.0/24 the retired 6to4 relay anycast,
        // 198.18.0.0/15 benchmarking.
        (192, 0, 0) | (192, 88, 99) | (198, 18..=19, _) => AddressClass::Reserved,
        (224..=239, _, _) => AddressClass::Multicast,
        (240..=255, _, _) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// Classifies an IPv6 address. Forms that carry an IPv4 address a gateway would reach
/// (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) take the class of
/// the embedded IPv4 address, so `::ffff:127.0.0.1` is loopback.
pub fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible `::a.b.c.d` (deprecated, RFC 4291): some stacks still route it as IPv4.
    if s[..6] == [0; 6] {
        return classify_v4(embedded_v4(s[6], s[7]));
    }
    // NAT64 well-known prefix: the translator connects to the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4(s[6], s[7]));
    }
    // 6to4: the relay forwards to the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return classify_v4(embedded_v4(s[1], s[2]));
    }
    match s[0] {
        0xff00..=0xffff => AddressClass::Multicast,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        // Site-local, deprecated by RFC 3879 but still meaning "inside this site".
        0xfec0..=0xfeff => AddressClass::LinkLocal,
        0xfc00..=0xfdff => AddressClass::UniqueLocal,
        0x2001 if s[1] == 0x0db8 => AddressClass::Documentation,
        0x3fff if s[1] < 0x1000 => AddressClass::Documentation,
        // 2001::/23: IETF protocol assignments (Teredo, ORCHID, AMT, ...).
        0x2001 if s[1] < 0x0200 => AddressClass::Reserved,
        // Global unicast is 2000::/3; everything outside it (64:ff9b:1::/48 local NAT64,
        // 100::/64 discard-only, unassigned space) is not a public destination.
        0x2000..=0x3fff => AddressClass::Public,
        _ => AddressClass::Reserved,
    }
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// Classifies any IP address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The cloud instance-metadata endpoints (AWS, GCP, Azure, OpenStack on 169.254.169.254;
/// AWS's IPv6 one). `allow_private` does not open them: an operator who lets plugins come
/// from an internal mirror should not thereby hand out the node's credentials. Listing them
/// in `allowed_cidrs` does.
const METADATA_ADDRESSES: [IpAddr; 2] =
    [IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254))];

/// The operator's exceptions to the default "public addresses only" rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressAllowance {
    /// Allow every non-public unicast class (loopback, private, CGNAT, ULA, link-local,
    /// documentation, reserved) except the cloud metadata addresses.
    pub allow_private: bool,
    /// Networks that are allowed whatever their class (except unspecified, multicast and
    /// broadcast, which no TCP connection can go to).
    pub allowed_cidrs: Vec<IpNet>,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {ip} is {} and not allowed as a download target", class.as_str())]
pub struct AddressRefused {
    pub ip: IpAddr,
    pub class: AddressClass,
}

impl AddressAllowance {
    /// Whether a connection to `ip` is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressRefused> {
        let ip = canonical(ip);
        let class = classify(ip);
        let refused = Err(AddressRefused { ip, class });
        if class.never_connectable() {
            return refused;
        }
        if class == AddressClass::Public {
            return Ok(());
        }
        if self.allowed_cidrs.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        if self.allow_private && !METADATA_ADDRESSES.contains(&ip) {
            return Ok(());
        }
        refused
    }
}

/// IPv4-mapped IPv6 addresses are reported (and matched against CIDRs) as the IPv4 address
/// they are, so `127.0.0.0/8` in `allowed_cidrs` also covers `::ffff:127.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().expect("test address"))
    }

    #[test]
    fn ipv4_table() {
        let cases = [
            ("8.8.8.8", AddressClass::Public),
            ("1.1.1.1", AddressClass::Public),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("10.0.0.1", AddressClass::Private),
            ("10.255.255.255", AddressClass::Private),
            ("100.63.255.255", AddressClass::Public),
            ("100.64.0.1", AddressClass::SharedAddressSpace),
            ("100.127.255.255", AddressClass::SharedAddressSpace),
            ("100.128.0.0", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("172.15.255.255", AddressClass::Public),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("172.32.0.0", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("192.0.0.8", AddressClass::Reserved),
            ("192.0.2.1", AddressClass::Documentation),
            ("198.51.100.7", AddressClass::Documentation),
            ("203.0.113.9", AddressClass::Documentation),
            ("192.88.99.1", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("198.19.255.255", AddressClass::Reserved),
            ("198.20.0.0", AddressClass::Public),
            ("224.0.0.1", AddressClass::Multicast),
            ("239.255.255.250", AddressClass::Multicast),
            ("240.0.0.1", AddressClass::Reserved),
            ("255.255.255.255", AddressClass::Broadcast),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_table() {
        let cases = [
            ("2606:4700::1111", AddressClass::Public),
            ("2a00:1450:4001::1", AddressClass::Public),
            ("::", AddressClass::Unspecified),
            ("::1", AddressClass::Loopback),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::ffff:8.8.8.8", AddressClass::Public),
            ("::127.0.0.1", AddressClass::Loopback),
            ("64:ff9b::7f00:1", AddressClass::Loopback),
            ("64:ff9b::808:808", AddressClass::Public),
            ("64:ff9b:1::1", AddressClass::Reserved),
            ("2002:7f00:1::1", AddressClass::Loopback),
            ("2002:0808:0808::1", AddressClass::Public),
            ("100::1", AddressClass::Reserved),
            ("fc00::1", AddressClass::UniqueLocal),
            ("fd12:3456::1", AddressClass::UniqueLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("fec0::1", AddressClass::LinkLocal),
            ("ff02::1", AddressClass::Multicast),
            ("2001:db8::1", AddressClass::Documentation),
            ("3fff::1", AddressClass::Documentation),
            ("3fff:1000::1", AddressClass::Public),
            ("2001::1", AddressClass::Reserved),
            ("2001:200::1", AddressClass::Public),
            ("4000::1", AddressClass::Reserved),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn default_allowance_refuses_the_usual_ssrf_targets() {
        let none = AddressAllowance::default();
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "::1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
        ] {
            assert!(none.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert!(none.check("93.184.215.14".parse().unwrap()).is_ok());
    }

    #[test]
    fn refusal_names_the_canonical_address_and_class() {
        let err = AddressAllowance::default().check("::ffff:127.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(err.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(err.class, AddressClass::Loopback);
        assert!(err.to_string().contains("127.0.0.1 is loopback"), "{err}");
    }

    #[test]
    fn allow_private_keeps_metadata_and_unconnectable_refused() {
        let private = AddressAllowance { allow_private: true, allowed_cidrs: vec![] };
        for ip in ["127.0.0.1", "10.1.2.3", "fd12::1", "100.64.0.1", "fe80::1"] {
            assert!(private.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        for ip in ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"] {
            assert!(private.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for ip in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert!(private.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
    }

    #[test]
    fn allowed_cidrs_open_exactly_their_networks() {
        let allow = AddressAllowance {
            allow_private: false,
            allowed_cidrs: vec![
                "127.0.0.1/32".parse().unwrap(),
                "169.254.169.254/32".parse().unwrap(),
                "0.0.0.0/0".parse().unwrap(),
            ],
        };
        assert!(allow.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(allow.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(allow.check("169.254.169.254".parse().unwrap()).is_ok());
        // Even 0.0.0.0/0 does not make the unspecified or broadcast address a target.
        assert!(allow.check("0.0.0.0".parse().unwrap()).is_err());
        assert!(allow.check("255.255.255.255".parse().unwrap()).is_err());
        // An IPv4 allowance says nothing about IPv6 loopback.
        assert!(allow.check("::1".parse().unwrap()).is_err());

        let narrow = AddressAllowance { allow_private: false, allowed_cidrs: vec!["10.1.0.0/16".parse().unwrap()] };
        assert!(narrow.check("10.1.200.3".parse().unwrap()).is_ok());
        assert!(narrow.check("10.2.0.1".parse().unwrap()).is_err());
    }

    proptest! {
        /// Every IPv4 address has the same class as its IPv4-mapped IPv6 form, so nothing
        /// can be smuggled past the rules by writing it as `::ffff:a.b.c.d`.
        #[test]
        fn mapped_v6_matches_v4(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            prop_assert_eq!(classify_v6(v4.to_ipv6_mapped()), classify_v4(v4));
            prop_assert_eq!(
                AddressAllowance::default().check(IpAddr::V6(v4.to_ipv6_mapped())),
                AddressAllowance::default().check(IpAddr::V4(v4)),
            );
        }

        /// Whole private/loopback/link-local networks are never public, wherever in them.
        #[test]
        fn special_v4_networks_are_never_public(low in any::<u32>(), pick in 0usize..7) {
            let nets: [(u32, u32); 7] = [
                (0x0a00_0000, 8),  // 10/8
                (0x7f00_0000, 8),  // 127/8
                (0xa9fe_0000, 16), // 169.254/16
                (0xac10_0000, 12), // 172.16/12
                (0xc0a8_0000, 16), // 192.168/16
                (0x6440_0000, 10), // 100.64/10
                (0xe000_0000, 4),  // 224/4
            ];
            let (base, len) = nets[pick];
            let ip = Ipv4Addr::from(base | (low >> len));
            prop_assert_ne!(classify_v4(ip), AddressClass::Public, "{}", ip);
            prop_assert!(AddressAllowance::default().check(IpAddr::V4(ip)).is_err());
        }

        /// ULA and link-local IPv6 are never public, and addresses outside 2000::/3 that do
        /// not embed an IPv4 address are never public either.
        #[test]
        fn special_v6_networks_are_never_public(segs in any::<[u16; 8]>()) {
            let mut ula = segs;
            ula[0] = 0xfc00 | (segs[0] & 0x01ff);
            prop_assert_eq!(classify_v6(Ipv6Addr::from(ula)), AddressClass::UniqueLocal);
            let mut ll = segs;
            ll[0] = 0xfe80 | (segs[0] & 0x003f);
            prop_assert_eq!(classify_v6(Ipv6Addr::from(ll)), AddressClass::LinkLocal);
            let ip = Ipv6Addr::from(segs);
            let embeds_v4 = segs[..6] == [0; 6]
                || segs[..6] == [0, 0, 0, 0, 0, 0xffff]
                || segs[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if !(0x2000..=0x3fff).contains(&segs[0]) && !embeds_v4 {
                prop_assert_ne!(classify_v6(ip), AddressClass::Public, "{}", ip);
            }
        }
    }
}

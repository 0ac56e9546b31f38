//! Address filters: which multiaddrs are worth storing, dialing and handing
//! out to other peers.
//!
//! A node on the public internet must not spread loopback or private LAN
//! addresses (they point at the receiver's own machine or network), so by
//! default they are dropped; local testnets turn `allow_private_addrs` on.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The /24 (IPv4) or /48 (IPv6) network of `ip`: what the per-subnet
/// inbound limit counts.
pub fn subnet_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], 0))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// The network group of an address, for spreading dials and peer-exchange
/// answers: its /16 (IPv4) or /32 (IPv6), or its DNS name; one operator
/// (or one attacker) rarely holds addresses in many of them.
pub fn netgroup(addr: &Multiaddr) -> String {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => {
            let o = ip.octets();
            format!("{}.{}", o[0], o[1])
        }
        Some(Protocol::Ip6(ip)) => {
            let s = ip.segments();
            format!("{:x}:{:x}", s[0], s[1])
        }
        Some(Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n)) => n.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// Whether `addr` points at a publicly routable host.
///
/// Loopback, private (RFC 1918), shared (RFC 6598), link-local, unspecified,
/// documentation, unique-local IPv6 and in-memory addresses are not public;
/// DNS names are, except `localhost`.
pub fn is_public(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => is_public_v4(ip),
        Some(Protocol::Ip6(ip)) => is_public_v6(ip),
        Some(Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name)) => {
            let n = name.trim_end_matches('.').to_ascii_lowercase();
            n != "localhost" && !n.ends_with(".localhost")
        }
        _ => false,
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8))
}

/// Whether `addr` may be stored, dialed or handed out under the given policy:
/// it must be a transport address we can dial (IP or DNS first) and public
/// unless private addresses are allowed.
pub fn is_acceptable(addr: &Multiaddr, allow_private: bool) -> bool {
    let dialable = matches!(
        addr.iter().next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    );
    let unspecified = match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => ip.is_unspecified(),
        _ => false,
    };
    dialable && !unspecified && (allow_private || is_public(addr))
}

/// Splits a trailing `/p2p/<id>` off an address.
pub fn split_peer_id(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut base = addr.clone();
    match base.pop() {
        Some(Protocol::P2p(id)) => (base, Some(id)),
        _ => (addr.clone(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_and_private() {
        assert!(is_public(&a("/ip4/8.8.8.8/tcp/1")));
        assert!(!is_public(&a("/ip4/127.0.0.1/tcp/1")));
        assert!(!is_public(&a("/ip4/10.1.2.3/tcp/1")));
        assert!(!is_public(&a("/ip4/172.20.0.1/tcp/1")));
        assert!(!is_public(&a("/ip4/192.168.1.1/tcp/1")));
        assert!(!is_public(&a("/ip4/100.64.0.1/tcp/1")));
        assert!(is_public(&a("/ip4/100.128.0.1/tcp/1")));
        assert!(!is_public(&a("/ip4/169.254.0.1/tcp/1")));
        assert!(!is_public(&a("/ip6/::1/tcp/1")));
        assert!(!is_public(&a("/ip6/fd00::1/tcp/1")));
        assert!(!is_public(&a("/ip6/fe80::1/tcp/1")));
        assert!(!is_public(&a("/ip6/::ffff:10.0.0.1/tcp/1")));
        assert!(is_public(&a("/ip6/2a00::1/tcp/1")));
        assert!(is_public(&a("/dns4/example.org/tcp/1")));
        assert!(!is_public(&a("/dns/localhost/tcp/1")));
        assert!(!is_public(&a("/memory/5")));
    }

    #[test]
    fn acceptable_policy() {
        assert!(is_acceptable(&a("/ip4/127.0.0.1/tcp/1"), true));
        assert!(!is_acceptable(&a("/ip4/127.0.0.1/tcp/1"), false));
        assert!(!is_acceptable(&a("/ip4/0.0.0.0/tcp/1"), true));
        assert!(!is_acceptable(&a("/memory/5"), true));
        assert!(is_acceptable(&a("/ip4/1.2.3.4/udp/1/quic-v1"), false));
    }

    #[test]
    fn split_p2p() {
        let id = crate::p2p::keys::keypair_from_seed([7; 32])
            .unwrap()
            .public()
            .to_peer_id();
        let full = a(&format!("/ip4/1.2.3.4/tcp/5/p2p/{id}"));
        let (base, got) = split_peer_id(&full);
        assert_eq!(base, a("/ip4/1.2.3.4/tcp/5"));
        assert_eq!(got, Some(id));
        let (base, got) = split_peer_id(&a("/ip4/1.2.3.4/tcp/5"));
        assert_eq!(base, a("/ip4/1.2.3.4/tcp/5"));
        assert_eq!(got, None);
    }
}

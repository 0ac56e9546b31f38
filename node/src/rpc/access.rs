//! Who may call the RPC server: the `Host` allow-list (against DNS
//! rebinding) and the CORS origins (against web pages).
//!
//! **Host.** A web page can make a browser send requests to a node on
//! 127.0.0.1, and with DNS rebinding (its own name re-pointed at
//! 127.0.0.1) even read the answers: such requests carry the page's DNS
//! name in `Host`. The server answers only when `Host` is
//!
//! - `localhost`, `127.0.0.1` or `[::1]`, with any port or none;
//! - the address the server listens on, as `IP:PORT` (just `IP` when the
//!   port is 80); when it listens on `0.0.0.0` or `[::]` (every
//!   interface), any IP literal (`10.0.0.5`, `[fe80::1]`) with any port or
//!   none, but never a DNS name (an IP literal cannot be rebound);
//! - an entry of `rpc.allowed_hosts`: `name` (any port) or `name:port`
//!   (that port), compared without case; `"*"` turns the check off.
//!
//! Anything else, a missing `Host` included, is refused with HTTP 403.
//!
//! **Origin.** Browsers put `Origin` on every cross-site request (and on
//! every POST). A request that carries one is refused with HTTP 403
//! unless the origin is in `rpc.cors_origins` (`scheme://host[:port]`,
//! compared without case; `"*"` allows any page); an allowed one gets
//! `Access-Control-Allow-Origin`, and its preflight (`OPTIONS`) an answer
//! allowing GET and POST with a `Content-Type` header. Requests without
//! `Origin` (curl, the `kite` CLI, other programs) are not concerned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Who may call the server, beyond the built-in rules of this module:
/// `rpc.allowed_hosts` and `rpc.cors_origins`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcAccess {
    /// More accepted `Host` values: `name` (any port), `name:port`, or
    /// `"*"` (no Host check).
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) of the web pages allowed to call
    /// the server, or `"*"` for any.
    pub cors_origins: Vec<String>,
}

/// The host names always accepted (with any port).
pub const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Splits a `Host` value (or an allow-list entry) into its lowercase host
/// and its port. An IPv6 host keeps its brackets and is written in its
/// canonical form. `None` when it is not `host`, `host:port`, `[v6]` or
/// `[v6]:port`.
pub fn parse_host(s: &str) -> Option<(String, Option<u16>)> {
    let port_of = |p: &str| -> Option<u16> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inner.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(port_of(p.strip_prefix(':')?)?),
        };
        return Some((format!("[{ip}]"), port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(port_of(p)?)),
        None => (s, None),
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if host.is_empty() || !host.chars().all(name_char) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Whether `host` (as [`parse_host`] gives it) is an IP address literal.
fn is_ip_literal(host: &str) -> bool {
    host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok()
}

/// The host part of `ip` as it appears in a `Host` header.
fn host_of_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Checks one `rpc.allowed_hosts` entry.
pub fn check_host_entry(entry: &str) -> Result<(), String> {
    if entry == "*" || parse_host(entry).is_some() {
        Ok(())
    } else {
        Err(format!(
            "rpc.allowed_hosts: {entry:?} is not a host name: write a name or IP (node.example, \
             10.0.0.5, [fe80::1]) with or without :PORT, or \"*\" to turn the Host check off"
        ))
    }
}

/// Checks one `rpc.cors_origins` entry.
pub fn check_origin_entry(entry: &str) -> Result<(), String> {
    if entry == "*" || normalize_origin(entry).is_some() {
        Ok(())
    } else {
        Err(format!(
            "rpc.cors_origins: {entry:?} is not an origin: write scheme://host[:port] (e.g. \
             https://wallet.example or http://localhost:3000), or \"*\" for any web page"
        ))
    }
}

/// `scheme://host[:port]` in lowercase, a trailing `/` dropped; `None`
/// when `s` is not of that form.
fn normalize_origin(s: &str) -> Option<String> {
    let s = s.strip_suffix('/').unwrap_or(s);
    let (scheme, authority) = s.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.');
    if !scheme_ok {
        return None;
    }
    let (host, port) = parse_host(authority)?;
    Some(match port {
        Some(p) => format!("{}://{host}:{p}", scheme.to_ascii_lowercase()),
        None => format!("{}://{host}", scheme.to_ascii_lowercase()),
    })
}

/// The `Host` values the server answers to (see the module doc).
#[derive(Debug, Clone)]
pub struct HostAllowList {
    any: bool,
    listen: Option<SocketAddr>,
    extra: Vec<(String, Option<u16>)>,
}

impl HostAllowList {
    /// The built-in rules for a server listening on `listen` (`None`: not
    /// known, as for [`super::router`]), plus `allowed_hosts`. Entries
    /// that are not host names never match (the config refuses them).
    pub fn new(allowed_hosts: &[String], listen: Option<SocketAddr>) -> HostAllowList {
        HostAllowList {
            any: allowed_hosts.iter().any(|h| h == "*"),
            listen,
            extra: allowed_hosts.iter().filter_map(|h| parse_host(h)).collect(),
        }
    }

    /// Whether a request with this `Host` value is answered.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let Some((host, port)) = parse_host(host) else {
            return false;
        };
        if LOCAL_HOSTS.contains(&host.as_str()) {
            return true;
        }
        if let Some(listen) = self.listen {
            if listen.ip().is_unspecified() {
                if is_ip_literal(&host) {
                    return true;
                }
            } else if host == host_of_ip(listen.ip())
                && (port == Some(listen.port()) || (port.is_none() && listen.port() == 80))
            {
                return true;
            }
        }
        self.extra
            .iter()
            .any(|(h, p)| *h == host && (p.is_none() || *p == port))
    }

    /// What the server answers to, for people.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} (any port)", LOCAL_HOSTS.join(", "))];
        match self.listen {
            Some(l) if l.ip().is_unspecified() => {
                parts.push(format!(
                    "any IP address (it listens on {l}), but no DNS name"
                ));
            }
            Some(l) => parts.push(format!("its listen address {l}")),
            None => {}
        }
        for (h, p) in &self.extra {
            parts.push(match p {
                Some(p) => format!("{h}:{p}"),
                None => format!("{h} (any port)"),
            });
        }
        parts.join("; ")
    }
}

/// The web page origins allowed to call the server.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins {
    any: bool,
    list: Vec<String>,
}

impl CorsOrigins {
    /// From `rpc.cors_origins`; entries that are not origins never match.
    pub fn new(origins: &[String]) -> CorsOrigins {
        CorsOrigins {
            any: origins.iter().any(|o| o == "*"),
            list: origins.iter().filter_map(|o| normalize_origin(o)).collect(),
        }
    }

    /// Whether a request carrying this `Origin` is answered.
    pub fn allows(&self, origin: &str) -> bool {
        self.any || normalize_origin(origin).is_some_and(|o| self.list.contains(&o))
    }

    /// Whether every origin is allowed (`"*"`).
    pub fn any(&self) -> bool {
        self.any
    }
}

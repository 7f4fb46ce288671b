//! Which webhook URLs tollgate will call: http(s) only, and (unless the
//! config allows private URLs) only hosts that resolve to public addresses,
//! so an admin token cannot be used to probe the loopback interface, the
//! cloud metadata service or the private network (SSRF).
//!
//! The check runs when an endpoint is added, and the connection itself
//! goes through [`PublicOnly`]: the addresses a name resolves to are checked
//! and are the ones connected to, so a name that rebinds to a private
//! address between a check and the connection (DNS rebinding) is refused
//! too, and so is every hop of a redirect (media downloads follow them).
//! Used for webhooks and for downloading provider outputs (kept media).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// A resolver that answers only public addresses: a name with any other
/// is refused before anything connects.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        match addrs.iter().find(|a| !is_public(a.ip())) {
            Some(a) => Err(ureq::Error::BadUri(format!(
                "{} resolves to {}, a loopback, private or otherwise non-public address",
                uri.host().unwrap_or(""),
                a.ip()
            ))),
            None => Ok(addrs),
        }
    }
}

/// An agent with `config` that connects only to public addresses, unless
/// `allow_private` (an operator's choice for a private network).
pub fn agent(config: ureq::config::Config, allow_private: bool) -> ureq::Agent {
    if allow_private {
        ureq::Agent::new_with_config(config)
    } else {
        ureq::Agent::with_parts(config, DefaultConnector::default(), PublicOnly)
    }
}

/// Longest webhook URL accepted.
pub const URL_BYTES_MAX: usize = 2_048;

/// `Ok(())` when `url` may be called; otherwise why not.
pub fn check(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > URL_BYTES_MAX {
        return Err(format!("the URL is longer than {URL_BYTES_MAX} bytes"));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
    let port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return Err("the URL must start with http:// or https://".into()),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| "the URL has no host".to_owned())?;
    if allow_private {
        return Ok(());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = (host, uri.port_u16().unwrap_or(port))
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    match addrs.iter().find(|ip| !is_public(**ip)) {
        Some(ip) => Err(format!(
            "{host} resolves to {ip}, a loopback, private or otherwise non-public address (set events.allow_private_urls to allow it)"
        )),
        None => Ok(()),
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

/// The IPv4 addresses an IPv6 address carries, by the forms that reach
/// them: a translator or tunnel turns `[64:ff9b::7f00:1]` into 127.0.0.1,
/// so such an address is as public as what it embeds. `None`: it embeds
/// none.
fn embedded_v4(ip: Ipv6Addr) -> Option<Vec<Ipv4Addr>> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(vec![v4(hi, lo)]),
        // IPv4-compatible ::a.b.c.d (deprecated; `::` and `::1` included,
        // which embed 0.0.0.0 and 0.0.0.1: not public either).
        [0, 0, 0, 0, 0, 0, hi, lo] => Some(vec![v4(hi, lo)]),
        // NAT64, the well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(vec![v4(hi, lo)]),
        // 6to4 2002:AABB:CCDD::/48.
        [0x2002, hi, lo, ..] => Some(vec![v4(hi, lo)]),
        // Teredo 2001:0::/32: the server, and the client (stored inverted).
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            Some(vec![v4(server_hi, server_lo), v4(!client_hi, !client_lo)])
        }
        _ => None,
    }
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(embedded) = embedded_v4(ip) {
        return embedded.into_iter().all(is_public_v4);
    }
    let [first, second, ..] = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first == 0x64 && second == 0xff9b) // NAT64 beyond /96, and local-use 64:ff9b:1::/48
        || (first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside sites)
        || (first == 0x2001 && second == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_only_agent_never_connects_to_a_private_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = ureq::Agent::config_builder().build();
        for url in [format!("http://127.0.0.1:{port}/"), format!("http://localhost:{port}/")] {
            let e = agent(config.clone(), false).get(&url).call().unwrap_err();
            assert!(e.to_string().contains("non-public"), "{url}: {e}");
        }
        assert!(listener.accept().is_err(), "nothing connected");
        // Allowed: the same address is reached.
        let quick = ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_millis(200))).build();
        let _ = agent(quick, true).get(&format!("http://127.0.0.1:{port}/")).call();
        listener.set_nonblocking(false).unwrap();
        assert!(listener.accept().is_ok(), "connected when private addresses are allowed");
    }

    #[test]
    fn refuses_private_and_odd_urls_unless_allowed() {
        for bad in [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:192.168.0.1]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(check(bad, false).is_err(), "{bad} must be refused");
            assert!(check(bad, true).is_ok(), "{bad} is allowed when private URLs are");
        }
        assert!(check("ftp://example.com/", true).is_err());
        assert!(check("not a url", true).is_err());
        assert!(check("http:///path", true).is_err());
        assert!(check("http://8.8.8.8/hook", false).is_ok(), "a public address literal needs no DNS");
    }

    /// Every non-public range, with an address inside it (refused) and, where
    /// the range embeds IPv4, the same form around a public address
    /// (allowed): the embedded address decides.
    #[test]
    fn every_range_that_reaches_a_non_public_address_is_refused() {
        let refused = [
            // IPv4
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.1",
            "192.0.0.255",
            "192.0.2.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6 proper
            "[::1]",
            "[::]",
            "[fe80::1]",
            "[fc00::1]",
            "[fd00::1]",
            "[fec0::1]",
            "[feff::1]",
            "[ff02::1]",
            "[2001:db8::1]",
            "[100::1]",
            // IPv4 inside IPv6: mapped, translated, compatible, NAT64 (well-known
            // and local-use), 6to4, Teredo (server, and the inverted client)
            "[::ffff:127.0.0.1]",
            "[::ffff:10.0.0.1]",
            "[::ffff:0:127.0.0.1]",
            "[::127.0.0.1]",
            "[::169.254.169.254]",
            "[64:ff9b::7f00:1]",
            "[64:ff9b::a9fe:a9fe]",
            "[64:ff9b:1::7f00:1]",
            "[64:ff9b:1:abcd::808:808]",
            "[2002:7f00:1::]",
            "[2002:a00:1::1]",
            "[2002:c0a8:101::1]",
            "[2001:0:7f00:1::808:808]",
            "[2001:0:808:808::80ff:fffe]",
        ];
        for host in refused {
            let url = format!("http://{host}/hook");
            assert!(check(&url, false).is_err(), "{url} must be refused");
            assert!(check(&url, true).is_ok(), "{url} is allowed when private URLs are");
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.0.1.1",
            "192.88.98.1",
            "198.20.0.1",
            "[2606:4700::1111]",
            "[::ffff:8.8.8.8]",
            "[::ffff:0:8.8.8.8]",
            "[::8.8.8.8]",
            "[64:ff9b::808:808]",
            "[2002:808:808::1]",
            "[2001:0:808:808::f7f7:f7f7]",
        ];
        for host in allowed {
            let url = format!("http://{host}/hook");
            assert!(check(&url, false).is_ok(), "{url} reaches a public address");
        }
    }
}

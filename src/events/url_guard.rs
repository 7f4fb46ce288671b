//! Which webhook URLs tollgate will call: http(s) only, and (unless the
//! config allows private URLs) only hosts that resolve to public addresses,
//! so an admin token cannot be used to probe the loopback interface, the
//! cloud metadata service or the private network (SSRF).
//!
//! The check runs when an endpoint is added and again before every attempt.
//! A host whose DNS changes between that check and the connection
//! (rebinding) is not caught; redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

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
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

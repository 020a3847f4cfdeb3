//! Who may call the handover API. With a token, every `/v1` call (and `/metrics`, unless
//! configured otherwise) must carry `Authorization: Bearer TOKEN` — the scheme in any case, the
//! token compared in constant time. Without a token the API is reachable from this machine only,
//! and it answers only requests addressed to a loopback name (`localhost`, `127.0.0.1`, `[::1]`):
//! a web page that rebinds its own DNS name to 127.0.0.1 still sends its own name as `Host`, and
//! is refused.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// 401: no token, or the wrong one.
    Token,
    /// 403: no token configured and the `Host` is not a loopback name.
    Host,
}

impl Denied {
    pub fn message(self) -> &'static str {
        match self {
            Denied::Token => "missing or wrong bearer token",
            Denied::Host => {
                "the Host header is not a loopback name (localhost, 127.0.0.1, [::1]): without \
                 an API token barrage answers only requests addressed to this machine"
            }
        }
    }
}

/// Whether `headers` may pass, given the configured token.
pub fn check(token: Option<&str>, headers: &HeaderMap) -> Result<(), Denied> {
    match token {
        Some(token) => bearer_matches(token, headers),
        None => loopback_host(headers),
    }
}

fn bearer_matches(token: &str, headers: &HeaderMap) -> Result<(), Denied> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, value)| value.trim())
        .ok_or(Denied::Token)?;
    // Constant time over the bytes: only the length can leak, never how much of it matched.
    let same: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
    if same { Ok(()) } else { Err(Denied::Token) }
}

fn loopback_host(headers: &HeaderMap) -> Result<(), Denied> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or(Denied::Host)?;
    if is_loopback_name(host) {
        Ok(())
    } else {
        Err(Denied::Host)
    }
}

/// `localhost`, an IPv4 address in 127.0.0.0/8 or `[::1]`, with or without a port.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => inside,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, value.parse().unwrap());
        map
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
        let ok = |v: &str| check(Some("s3cret"), &headers(header::AUTHORIZATION, v));
        assert_eq!(ok("Bearer s3cret"), Ok(()));
        assert_eq!(ok("bearer s3cret"), Ok(()));
        assert_eq!(ok("BEARER  s3cret"), Ok(()));
        assert_eq!(ok("Bearer s3cre"), Err(Denied::Token));
        assert_eq!(ok("Bearer s3cretX"), Err(Denied::Token));
        assert_eq!(ok("Basic s3cret"), Err(Denied::Token));
        assert_eq!(check(Some("s3cret"), &HeaderMap::new()), Err(Denied::Token));
    }

    #[test]
    fn without_a_token_only_loopback_hosts_pass() {
        for host in [
            "localhost",
            "LOCALHOST:8025",
            "127.0.0.1:8025",
            "127.9.0.1",
            "[::1]:80",
        ] {
            assert_eq!(check(None, &headers(header::HOST, host)), Ok(()), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8025",
            "10.0.0.1",
            "[::2]",
            "localhost.evil",
        ] {
            assert_eq!(
                check(None, &headers(header::HOST, host)),
                Err(Denied::Host),
                "{host}"
            );
        }
        assert_eq!(check(None, &HeaderMap::new()), Err(Denied::Host));
    }
}

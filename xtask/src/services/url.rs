//! The parts of a service URL the xtask needs: where to connect and as whom.
//!
//! Only the common shape `scheme://[user[:password]@]host[:port][/path][?query]` is understood;
//! that covers `redis://`, `postgres://`, `mysql://` and single-host `mongodb://` URLs.

use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed service URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    /// The path without its leading `/` (a database name or number), possibly empty.
    pub path: String,
}

impl ServiceUrl {
    /// Parses `url`, using `default_port` when it names none.
    pub fn parse(url: &str, default_port: u16) -> Result<ServiceUrl, String> {
        let bad = |why: &str| format!("cannot use service URL {url:?}: {why}");
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme://"))?;
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hostport.contains(',') {
            return Err(bad("several hosts are not supported here"));
        }
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, pass)) => (Some(percent_decode(name)), Some(percent_decode(pass))),
                None => (Some(percent_decode(u)), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ServiceUrl {
            scheme: scheme.to_owned(),
            user: user.filter(|u| !u.is_empty()),
            password,
            host,
            port,
            path: percent_decode(path),
        })
    }

    /// The socket address to connect to (the first the host name resolves to).
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}:{}: {e}", self.host, self.port))?
            .next()
            .ok_or_else(|| format!("{}:{} resolves to no address", self.host, self.port))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_minimal_urls_parse() {
        let u = ServiceUrl::parse("mysql://root:p%40ss@127.0.0.1:3307/test?x=1", 3306).unwrap();
        assert_eq!(u.user.as_deref(), Some("root"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 3307, "test")
        );

        let u = ServiceUrl::parse("redis://localhost", 6379).unwrap();
        assert_eq!(
            (u.user, u.password, u.port, u.path.as_str()),
            (None, None, 6379, "")
        );

        let u = ServiceUrl::parse("mongodb://[::1]:27018/", 27017).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 27018));
    }

    #[test]
    fn malformed_urls_are_refused_with_the_url_named() {
        for bad in [
            "127.0.0.1:6379",
            "redis://",
            "redis://h:port",
            "mongodb://a,b/",
        ] {
            let err = ServiceUrl::parse(bad, 1).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}

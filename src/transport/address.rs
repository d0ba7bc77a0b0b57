//! Addresses: which transport a [`Listener`](crate::Listener) binds and a
//! [`Client`](crate::Client) connects to.
//!
//! * `tcp://HOST:PORT`: TCP; `HOST` is a name, an IPv4 address, or an IPv6 address in brackets
//!   (`tcp://[::1]:5000`); port 0 binds a port the kernel chooses (`listener.address()` says which).
//! * `unix:/path/to/socket` (or `unix:///path`, `unix:relative/path`): a Unix stream socket.
//! * anything else: a shared-memory listener's name (1 to 200 characters from `[A-Za-z0-9._-]`).

use crate::error::{Error, Result};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A parsed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// A shared-memory listener's name.
    Shm(String),
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP host (brackets removed) and port.
    Tcp { host: String, port: u16 },
}

impl Address {
    /// Parses `s` (see the module docs).
    pub(crate) fn parse(s: &str) -> Result<Address> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            return parse_tcp(s, rest);
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(Error::invalid(format!(
                    "address {s:?} names no socket path; write unix:/path/to/socket"
                )));
            }
            if path.len() >= 108 {
                return Err(Error::invalid(format!(
                    "the socket path of {s:?} is {} bytes, over the 107 a Unix socket takes; use a shorter path",
                    path.len()
                )));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(Error::invalid(format!(
                "address {s:?} has the scheme {scheme:?}, which shmwire does not know; use tcp://HOST:PORT, unix:/PATH or a shared-memory name"
            )));
        }
        Ok(Address::Shm(s.to_owned()))
    }

    /// The socket addresses a TCP address resolves to (the host looked up if it is a name).
    pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let found: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::io(
                    e.kind(),
                    format!("cannot resolve the host {host:?} ({e}); check the name or use an IP address"),
                )
            })?
            .collect();
        if found.is_empty() {
            return Err(Error::io(
                std::io::ErrorKind::NotFound,
                format!("the host {host:?} has no address; check the name or use an IP address"),
            ));
        }
        Ok(found)
    }
}

fn parse_tcp(s: &str, rest: &str) -> Result<Address> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "address {s:?}: {why}; write tcp://HOST:PORT, with an IPv6 host in brackets (tcp://[::1]:5000)"
        ))
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("no closing bracket"))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("no port"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the bracketed host is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 host must be in brackets"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains('/') || port.contains('/') {
        return Err(bad("a TCP address has no path"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    Ok(Address::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// The address string of a bound or connected TCP socket address.
pub(crate) fn tcp_string(sa: &SocketAddr) -> String {
    match sa {
        SocketAddr::V4(a) => format!("tcp://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("tcp://[{}]:{}", a.ip(), a.port()),
    }
}

/// The address string of a Unix socket path.
pub(crate) fn unix_string(path: &std::path::Path) -> String {
    format!("unix:{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            Address::parse("tcp://127.0.0.1:80").unwrap(),
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 80
            }
        );
        assert_eq!(
            Address::parse("tcp://[::1]:0").unwrap(),
            Address::Tcp {
                host: "::1".into(),
                port: 0
            }
        );
        assert_eq!(
            Address::parse("unix:///tmp/s").unwrap(),
            Address::Unix("/tmp/s".into())
        );
        assert_eq!(
            Address::parse("unix:/tmp/s").unwrap(),
            Address::Unix("/tmp/s".into())
        );
        assert_eq!(Address::parse("name").unwrap(), Address::Shm("name".into()));
        for bad in [
            "tcp://::1:5",
            "tcp://host",
            "tcp://:5",
            "tcp://h:99999",
            "tcp://[::1]5",
            "tcp://[zz]:5",
            "udp://x:1",
            "unix:",
            "tcp://h:5/x",
        ] {
            assert!(
                matches!(Address::parse(bad), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
        let sa: SocketAddr = "[::1]:7".parse().unwrap();
        assert_eq!(tcp_string(&sa), "tcp://[::1]:7");
    }
}

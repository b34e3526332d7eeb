//! Reaching a relay through a proxy: SOCKS5 (RFC 1928, with RFC 1929
//! user/password) or HTTP `CONNECT`, as corporate and campus networks
//! require. The proxy only opens the TCP connection; everything after is
//! the relay protocol, end to end encrypted as ever, so the proxy sees what
//! the relay sees and no more. Host names go to the proxy unresolved (a
//! SOCKS5 domain address, like `socks5h`), so the client's DNS is not asked.
//!
//! Chosen by `--proxy URL`, else `ALL_PROXY` (either case; not
//! `HTTPS_PROXY`, which names a proxy for HTTPS and often allows tunnels to
//! port 443 only, while relays listen on 9009); `NO_PROXY` names hosts
//! reached directly. The local network's route never uses a proxy.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::NetError;

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `socks5://` (or `socks5h://`).
    Socks5,
    /// `http://`: HTTP `CONNECT`.
    HttpConnect,
}

/// A proxy to reach relays through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: ProxyKind,
    /// `host:port` of the proxy.
    addr: String,
    /// User and password, if the URL has them.
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Proxy {
    /// Without the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display())
    }
}

/// Longest HTTP response head from a proxy.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

impl Proxy {
    /// Parse `socks5://[user:pass@]host:port`, `socks5h://…` or
    /// `http://[user:pass@]host[:port]` (port 1080 for SOCKS, 8080 for
    /// HTTP if left out). The error says what is wrong, for the user.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} is not a proxy URL (socks5://HOST:PORT or http://HOST:PORT)")
        })?;
        let (kind, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "socks5" | "socks5h" => (ProxyKind::Socks5, 1080),
            "http" => (ProxyKind::HttpConnect, 8080),
            other => {
                return Err(format!(
                    "proxy scheme {other:?} is not supported: use socks5:// or http://"
                ))
            }
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let decode = |s: &str| {
                    percent_decode(s).ok_or_else(|| {
                        "bad %-escape in the proxy URL's user or password".to_owned()
                    })
                };
                (Some((decode(user)?, decode(pass)?)), host)
            }
            None => (None, rest),
        };
        if host_port.is_empty() || host_port.contains('/') {
            return Err(format!("{url:?}: expected HOST:PORT after the scheme"));
        }
        let has_port = match host_port.rsplit_once(':') {
            // "[::1]" alone has a ':' inside the brackets.
            Some((host, port)) if !port.contains(']') => {
                port.parse::<u16>()
                    .map_err(|_| format!("{url:?}: the port {port:?} is not a number"))?;
                !host.is_empty()
            }
            _ => false,
        };
        let addr = if has_port {
            host_port.to_owned()
        } else {
            format!("{host_port}:{default_port}")
        };
        if credentials
            .as_ref()
            .is_some_and(|(u, p)| kind == ProxyKind::Socks5 && (u.len() > 255 || p.len() > 255))
        {
            return Err("a SOCKS5 user or password is at most 255 bytes".to_owned());
        }
        Ok(Proxy {
            kind,
            addr,
            credentials,
        })
    }

    /// The proxy from the usual environment variables, for `relay_host`
    /// (`None` if none is set or `NO_PROXY` names the host).
    pub fn from_env(relay_host: &str) -> Option<Result<Proxy, String>> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let url = var(&["ALL_PROXY", "all_proxy"])?;
        if let Some(no_proxy) = var(&["NO_PROXY", "no_proxy"]) {
            if bypasses(&no_proxy, relay_host) {
                return None;
            }
        }
        Some(Proxy::parse(url.trim()))
    }

    /// Which protocol it speaks.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy as a user would name it, without any password.
    pub fn display(&self) -> String {
        let scheme = match self.kind {
            ProxyKind::Socks5 => "socks5",
            ProxyKind::HttpConnect => "http",
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Open a connection to `target` (`host:port`) through the proxy,
    /// within `deadline`.
    pub async fn connect(&self, target: &str, deadline: Duration) -> Result<TcpStream, NetError> {
        let failed = |reason: String| NetError::Proxy {
            proxy: self.display(),
            target: target.to_owned(),
            reason,
        };
        let work = async {
            let mut stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| failed(format!("cannot reach the proxy ({e})")))?;
            let _ = stream.set_nodelay(true);
            let (host, port) = split_host_port(target)
                .ok_or_else(|| failed("the relay address is not HOST:PORT".to_owned()))?;
            match self.kind {
                ProxyKind::Socks5 => self.socks5(&mut stream, host, port).await,
                ProxyKind::HttpConnect => self.http_connect(&mut stream, target).await,
            }
            .map_err(failed)?;
            Ok(stream)
        };
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| failed(format!("no answer within {} s", deadline.as_secs())))?
    }

    async fn socks5(&self, s: &mut TcpStream, host: &str, port: u16) -> Result<(), String> {
        let io = |e: std::io::Error| format!("the proxy closed the connection ({e})");
        let greeting: &[u8] = match self.credentials {
            Some(_) => &[5, 2, 0, 2],
            None => &[5, 1, 0],
        };
        s.write_all(greeting).await.map_err(io)?;
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).await.map_err(io)?;
        if choice[0] != 5 {
            return Err("it does not speak SOCKS5".to_owned());
        }
        match (choice[1], &self.credentials) {
            (0, _) => {}
            (2, Some((user, pass))) => {
                let mut auth = vec![1, user.len() as u8];
                auth.extend_from_slice(user.as_bytes());
                auth.push(pass.len() as u8);
                auth.extend_from_slice(pass.as_bytes());
                s.write_all(&auth).await.map_err(io)?;
                let mut verdict = [0u8; 2];
                s.read_exact(&mut verdict).await.map_err(io)?;
                if verdict[1] != 0 {
                    return Err("it refused the user and password".to_owned());
                }
            }
            (2, None) => {
                return Err(
                    "it wants a user and password (socks5://USER:PASS@HOST:PORT)".to_owned(),
                )
            }
            _ => return Err("it accepts none of our ways to log in".to_owned()),
        }
        let mut request = vec![5, 1, 0];
        match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => {
                request.push(1);
                request.extend_from_slice(&v4.octets());
            }
            Ok(std::net::IpAddr::V6(v6)) => {
                request.push(4);
                request.extend_from_slice(&v6.octets());
            }
            Err(_) => {
                let name = host.as_bytes();
                if name.len() > 255 {
                    return Err("the relay's host name is too long for SOCKS5".to_owned());
                }
                request.push(3);
                request.push(name.len() as u8);
                request.extend_from_slice(name);
            }
        }
        request.extend_from_slice(&port.to_be_bytes());
        s.write_all(&request).await.map_err(io)?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.map_err(io)?;
        if head[1] != 0 {
            return Err(socks5_reply(head[1]));
        }
        // The bound address, which we do not need, then the stream is ours.
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8; 1];
                s.read_exact(&mut len).await.map_err(io)?;
                usize::from(len[0]) + 2
            }
            _ => return Err("its reply is not SOCKS5".to_owned()),
        };
        let mut bound = [0u8; 258];
        s.read_exact(&mut bound[..rest]).await.map_err(io)?;
        Ok(())
    }

    async fn http_connect(&self, s: &mut TcpStream, target: &str) -> Result<(), String> {
        let io = |e: std::io::Error| format!("the proxy closed the connection ({e})");
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, pass)) = &self.credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        s.write_all(request.as_bytes()).await.map_err(io)?;
        // Byte by byte: nothing past the head may be taken from the relay.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_RESPONSE_HEAD {
                return Err("its answer is not HTTP".to_owned());
            }
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.map_err(io)?;
            head.push(byte[0]);
        }
        let status_line = String::from_utf8_lossy(&head);
        let status_line = status_line.lines().next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or_default();
        let code = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err("its answer is not HTTP".to_owned());
        }
        if !code.starts_with('2') {
            let shown: String = status_line
                .chars()
                .filter(|c| !c.is_control())
                .take(120)
                .collect();
            return Err(match code {
                "407" => {
                    format!("it wants a user and password (http://USER:PASS@HOST:PORT): {shown}")
                }
                _ => format!("it refused the tunnel: {shown}"),
            });
        }
        Ok(())
    }
}

/// Whether `NO_PROXY` (comma-separated hosts, `.domain` or `domain`
/// suffixes, `*` for all) names `host`.
fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            let entry = entry.to_ascii_lowercase();
            // An entry may carry a port; hosts are compared without.
            let entry = match entry.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h.to_owned(),
                _ => entry,
            };
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            entry == "*"
                || host == entry.trim_start_matches('.')
                || host.ends_with(&format!(".{}", entry.trim_start_matches('.')))
        })
}

/// `host` and `port` of `host:port` or `[v6]:port`.
pub(crate) fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

fn socks5_reply(code: u8) -> String {
    let what = match code {
        1 => "general failure",
        2 => "not allowed by its rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused by the relay's host",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    };
    format!("it could not connect to the relay ({what})")
}

/// `%XX` escapes in a URL's user or password.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_bad_ones_say_why() {
        let p = Proxy::parse("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(
            (p.kind(), p.addr.as_str()),
            (ProxyKind::Socks5, "127.0.0.1:1080")
        );
        assert_eq!(Proxy::parse("socks5h://proxy").unwrap().addr, "proxy:1080");
        let h = Proxy::parse("http://user:p%40ss@proxy.example:3128/").unwrap();
        assert_eq!(h.kind(), ProxyKind::HttpConnect);
        assert_eq!(h.addr, "proxy.example:3128");
        assert_eq!(h.credentials, Some(("user".into(), "p@ss".into())));
        assert!(
            !format!("{h:?}").contains("p@ss"),
            "no password in debug output"
        );
        assert_eq!(Proxy::parse("http://[::1]").unwrap().addr, "[::1]:8080");
        assert_eq!(
            Proxy::parse("http://[::1]:3128").unwrap().addr,
            "[::1]:3128"
        );
        for (bad, says) in [
            ("proxy:1080", "not a proxy URL"),
            ("ftp://proxy:21", "not supported"),
            ("socks5://proxy:port", "not a number"),
            ("socks5://", "HOST:PORT"),
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn no_proxy_names_hosts_domains_and_everything() {
        assert!(bypasses("relay.example.org", "relay.example.org"));
        assert!(bypasses("example.org", "relay.example.org"));
        assert!(bypasses(".example.org", "relay.example.org"));
        assert!(bypasses("localhost, 127.0.0.1:9009", "127.0.0.1"));
        assert!(bypasses("*", "anything"));
        assert!(bypasses("::1", "[::1]"));
        assert!(!bypasses("example.org", "relay.example.com"));
        assert!(!bypasses("ample.org", "relay.example.org"));
        assert!(!bypasses("", "relay"));
    }

    #[test]
    fn host_and_port_split_for_names_and_both_address_families() {
        assert_eq!(split_host_port("relay:9009"), Some(("relay", 9009)));
        assert_eq!(split_host_port("[::1]:9009"), Some(("::1", 9009)));
        assert_eq!(split_host_port("127.0.0.1:1"), Some(("127.0.0.1", 1)));
        assert_eq!(split_host_port("relay"), None);
        assert_eq!(split_host_port(":9009"), None);
    }
}

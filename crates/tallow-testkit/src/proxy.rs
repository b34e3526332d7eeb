//! Small SOCKS5 and HTTP CONNECT proxies on 127.0.0.1, for tests of
//! clients that must reach a relay through one. Each records the targets
//! it was asked for, then copies bytes both ways.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Which protocol a [`TestProxy`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Socks5,
    HttpConnect,
}

/// A proxy serving until the test ends.
pub struct TestProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    targets: Arc<Mutex<Vec<String>>>,
}

impl TestProxy {
    pub fn start(protocol: ProxyProtocol) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let seen = seen.clone();
                thread::spawn(move || {
                    let _ = serve(client, protocol, &seen);
                });
            }
        });
        TestProxy { addr, targets }
    }

    /// The `host:port` targets clients asked for, in order.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

fn serve(
    mut client: TcpStream,
    protocol: ProxyProtocol,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let target = match protocol {
        ProxyProtocol::Socks5 => socks5_target(&mut client)?,
        ProxyProtocol::HttpConnect => http_target(&mut client)?,
    };
    if let Ok(mut s) = seen.lock() {
        s.push(target.clone());
    }
    let upstream = TcpStream::connect(&target)?;
    match protocol {
        ProxyProtocol::Socks5 => client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?,
        ProxyProtocol::HttpConnect => {
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?
        }
    }
    let (mut up_read, mut client_write) = (upstream.try_clone()?, client.try_clone()?);
    let down = thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(Shutdown::Write);
    });
    let (mut client_read, mut up_write) = (client, upstream);
    let _ = std::io::copy(&mut client_read, &mut up_write);
    let _ = up_write.shutdown(Shutdown::Write);
    let _ = down.join();
    Ok(())
}

fn socks5_target(client: &mut TcpStream) -> std::io::Result<String> {
    let bad = || std::io::Error::other("not SOCKS5");
    let mut head = [0u8; 2];
    client.read_exact(&mut head)?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods)?;
    if head[0] != 5 || !methods.contains(&0) {
        return Err(bad());
    }
    client.write_all(&[5, 0])?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request)?;
    if request[..3] != [5, 1, 0] {
        return Err(bad());
    }
    let host = match request[3] {
        1 => {
            let mut a = [0u8; 4];
            client.read_exact(&mut a)?;
            Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            client.read_exact(&mut a)?;
            format!("[{}]", Ipv6Addr::from(a))
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name)?;
            String::from_utf8(name).map_err(|_| bad())?
        }
        _ => return Err(bad()),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port)?;
    Ok(format!("{host}:{}", u16::from_be_bytes(port)))
}

fn http_target(client: &mut TcpStream) -> std::io::Result<String> {
    // One byte at a time: nothing after the head may be lost.
    let mut reader = BufReader::with_capacity(1, client.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut parts = first.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("CONNECT"), Some(target)) => Ok(target.to_owned()),
        _ => Err(std::io::Error::other("not CONNECT")),
    }
}

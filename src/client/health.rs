//! `docker-watcher healthcheck`: one `GET /healthz` to the local server, exit status 0 when it
//! answers 200. The runtime image is a minimal Debian without curl or wget, and a health check
//! should not need a second program anyway. Plain HTTP/1.0 over a blocking socket with short
//! timeouts: it runs every few seconds, so it must be cheap and must never hang.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{0}: only http://HOST:PORT/PATH URLs can be checked")]
    BadUrl(String),
    #[error("{url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url} answered: {status_line}")]
    Unhealthy { url: String, status_line: String },
}

/// The URL the health check asks when none is given: `/healthz` on the listen address, with an
/// unspecified address (`0.0.0.0`, `::`) replaced by loopback.
pub fn default_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, listen.port()))
}

/// Asks `url` once; Ok with the status line when it answers 200.
pub fn check(url: &str) -> Result<String, HealthError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HealthError::BadUrl(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let io = |source| HealthError::Io {
        url: url.to_owned(),
        source,
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|_| HealthError::BadUrl(url.to_owned()))?
        .next()
        .ok_or_else(|| HealthError::BadUrl(url.to_owned()))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    // One write: a request split over several segments can be answered (and the connection
    // closed) before its end arrives, and the unread rest then resets the connection.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: docker-watcher-healthcheck\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all we need; /healthz answers a few bytes.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(status_line),
        _ => Err(HealthError::Unhealthy {
            url: url.to_owned(),
            status_line: if status_line.is_empty() {
                "nothing".to_owned()
            } else {
                status_line
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_checked_on_loopback() {
        assert_eq!(
            default_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/healthz"
        );
        assert_eq!(default_url("[::]:81".parse().unwrap()), "http://[::1]:81/healthz");
        assert_eq!(
            default_url("10.1.2.3:9000".parse().unwrap()),
            "http://10.1.2.3:9000/healthz"
        );
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(matches!(check("https://x/healthz"), Err(HealthError::BadUrl(_))));
    }

    #[test]
    fn a_200_is_healthy_and_anything_else_is_not() {
        use std::net::TcpListener;
        let serve = |answer: &'static str| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                // Read the whole request before answering, as a server does: closing with
                // unread bytes resets the connection, and the answer may be lost.
                let (mut request, mut buf) = (Vec::new(), [0u8; 1024]);
                while !request.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                conn.write_all(answer.as_bytes()).unwrap();
            });
            format!("http://{addr}/healthz")
        };
        assert!(check(&serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")).is_ok());
        let err = check(&serve("HTTP/1.1 503 Service Unavailable\r\n\r\n")).unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
    }
}

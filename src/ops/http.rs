//! The operations endpoint: `GET /metrics` (Prometheus text format), `/healthz`
//! (the process is alive and serving) and `/readyz` (200 only when ready, see `health`).
//!
//! A deliberately small HTTP/1.1 server on its own thread: it serves a scrape every few
//! seconds, must keep answering while stage threads are busy restoring or blocked on a
//! broker, and must never take the processor down. One connection at a time, bounded
//! reads, `Connection: close`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

use super::health::health;
use super::metrics::metrics;

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("http address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Largest request head read; anything longer is answered 431 and closed.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Binds `addr` and serves on a background thread. Returns the bound address (so `:0`
/// works in tests).
pub fn serve(addr: &str) -> Result<std::net::SocketAddr, HttpError> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| HttpError::Address {
            addr: addr.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| HttpError::Address {
            addr: addr.into(),
            reason: "resolves to no address".into(),
        })?;
    let listener = TcpListener::bind(sock).map_err(|source| HttpError::Bind {
        addr: addr.into(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: addr.into(),
        source,
    })?;
    std::thread::Builder::new()
        .name("wabill-http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = handle(stream) {
                            tracing::debug!(error = %e, "http connection");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "http accept"),
                }
            }
        })
        .map_err(|source| HttpError::Bind {
            addr: addr.into(),
            source,
        })?;
    tracing::info!(addr = %local, "serving /metrics, /healthz, /readyz");
    Ok(local)
}

fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, 431, "text/plain", "request head too large\n", false);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, 405, "text/plain", "only GET and HEAD\n", head_only);
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let body = metrics().render();
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                head_only,
            )
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n", head_only),
        "/readyz" => {
            let r = health().readiness();
            let body = serde_json::to_string(&r).unwrap_or_default() + "\n";
            respond(
                &mut stream,
                if r.ready { 200 } else { 503 },
                "application/json",
                &body,
                head_only,
            )
        }
        _ => respond(
            &mut stream,
            404,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz\n",
            head_only,
        ),
    }
}

fn respond(stream: &mut TcpStream, code: u16, ctype: &str, body: &str, head_only: bool) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let header = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    }

    #[test]
    fn serves_metrics_health_and_readiness() {
        let addr = serve("127.0.0.1:0").expect("bind");
        let (code, body) = get(addr, "/metrics");
        assert_eq!(code, 200);
        assert!(body.contains("wabill_build_info"), "{body}");
        assert_eq!(get(addr, "/healthz").0, 200);
        // No stage registered in this test process: not ready.
        let (code, body) = get(addr, "/readyz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("\"ready\":false"), "{body}");
        assert_eq!(get(addr, "/nope").0, 404);
    }

    #[test]
    fn rejects_bad_addresses_clearly() {
        let e = serve("not an address").expect_err("must fail");
        assert!(e.to_string().contains("not an address"), "{e}");
    }
}

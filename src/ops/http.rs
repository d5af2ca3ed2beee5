//! The operations endpoint: `GET /metrics` (Prometheus text format), `/healthz`
//! (the process is alive and serving) and `/readyz` (200 only when ready, see `health`).
//!
//! Why hyper on its own thread and runtime: the endpoint must keep answering while stage
//! threads are busy restoring or blocked on a broker, and while other clients misbehave.
//! Kubernetes probes time out after 3 s (deploy/k8s), so one silent or slow client must
//! never hold up another: every connection is its own task, request heads must arrive
//! within [`HttpOptions::header_read_timeout`] and fit in [`MAX_REQUEST_HEAD`] bytes,
//! connections are capped in number and lifetime, and the server drains in-flight
//! requests and stops when its [`HttpServer`] handle is shut down or dropped.

use std::convert::Infallible;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use thiserror::Error;
use tokio::sync::{oneshot, Semaphore};

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

/// Largest request head (request line and headers) accepted; a longer one is answered
/// 431 and the connection closed. hyper's smallest read buffer is 8 KiB.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Limits of the endpoint. The defaults suit a scrape every few seconds plus probes.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// A request head must be complete this long after the server starts waiting for it
    /// (also bounds how long an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Connections served at once; beyond it new connections are closed at once.
    pub max_connections: usize,
    /// Longest a connection lives, whatever it does (a client that never reads its
    /// response cannot pin a task forever).
    pub max_connection_lifetime: Duration,
    /// On shutdown, how long in-flight requests may take before connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 512,
            max_connection_lifetime: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// A running endpoint. Dropping it, or [`HttpServer::shutdown`], stops accepting,
/// lets in-flight requests finish (up to [`HttpOptions::shutdown_grace`]) and joins the
/// server thread.
pub struct HttpServer {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// The bound address (so `:0` works in tests).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Graceful stop; returns when the server thread has ended.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Leaves the server running for the rest of the process.
    pub fn detach(mut self) -> SocketAddr {
        if let Some(stop) = self.stop.take() {
            // Keeping the sender alive forever means the stop signal never fires.
            std::mem::forget(stop);
        }
        self.thread.take();
        self.local
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("http server thread panicked");
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Binds `addr` and serves on a background thread for the rest of the process, with the
/// default [`HttpOptions`]. Returns the bound address. Use [`start`] to be able to stop it.
pub fn serve(addr: &str) -> Result<SocketAddr, HttpError> {
    Ok(start(addr, HttpOptions::default())?.detach())
}

/// Binds `addr` (errors come back here, not from the thread) and serves on a background
/// thread with its own single-threaded tokio runtime until the handle is shut down.
pub fn start(addr: &str, options: HttpOptions) -> Result<HttpServer, HttpError> {
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
    let bind_err = |source| HttpError::Bind {
        addr: addr.into(),
        source,
    };
    let listener = std::net::TcpListener::bind(sock).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(bind_err)?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("wabill-http".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, options, stop_rx).await,
                    Err(e) => tracing::error!(error = %e, "http listener"),
                }
            });
        })
        .map_err(bind_err)?;
    tracing::info!(addr = %local, "serving /metrics, /healthz, /readyz");
    Ok(HttpServer {
        local,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, options: HttpOptions, mut stop: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "http: connection limit reached, closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), service_fn(route));
        let conn = graceful.watch(conn);
        let lifetime = options.max_connection_lifetime;
        tokio::spawn(async move {
            match tokio::time::timeout(lifetime, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http connection"),
                Err(_) => tracing::debug!(%peer, "http connection lifetime reached"),
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("http: connections still open after the shutdown grace; dropping them");
    }
}

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // hyper sends the headers of a HEAD response without the body.
    if *req.method() != Method::GET && *req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".into(),
        );
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics().render(),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let r = health().readiness();
            let body = serde_json::to_string(&r).unwrap_or_default() + "\n";
            let code = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(code, "application/json", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz\n".into(),
        ),
    })
}

fn respond(code: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
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
        let server = start("127.0.0.1:0", HttpOptions::default()).expect("bind");
        let addr = server.local_addr();
        let (code, body) = get(addr, "GET", "/metrics");
        assert_eq!(code, 200);
        assert!(body.contains("wabill_build_info"), "{body}");
        assert_eq!(get(addr, "GET", "/healthz"), (200, "ok\n".into()));
        // No stage registered in this test process: not ready.
        let (code, body) = get(addr, "GET", "/readyz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("\"ready\":false"), "{body}");
        assert_eq!(get(addr, "GET", "/nope").0, 404);
        assert_eq!(get(addr, "POST", "/healthz").0, 405);
        assert_eq!(get(addr, "HEAD", "/healthz"), (200, String::new()));
        server.shutdown();
        assert!(TcpStream::connect(addr).is_err(), "stopped server still accepts");
    }

    #[test]
    fn rejects_bad_addresses_clearly() {
        let e = serve("not an address").expect_err("must fail");
        assert!(e.to_string().contains("not an address"), "{e}");
    }
}

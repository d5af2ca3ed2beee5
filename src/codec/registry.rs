//! A minimal Confluent Schema Registry client: registers a schema and returns its id, for
//! the Confluent wire format (`00` + 4-byte big-endian id + Avro body).
//!
//! Blocking, plain HTTP/1.1 over `std::net::TcpStream`, no extra crates: it runs once per
//! topic at start-up, not on the hot path. Only `http://host[:port][/base]` URLs are
//! supported; put a TLS-terminating proxy (e.g. a sidecar) in front of an HTTPS registry.
//! Subjects follow the TopicNameStrategy: `{topic}-value`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thiserror::Error;

/// Connect, read and write timeout of every request.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (a registry answer is a few hundred bytes).
const MAX_BODY: usize = 1 << 20;
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("schema registry URL {url:?}: https is not supported by the built-in client; point it at a TLS-terminating proxy with an http:// URL")]
    Https { url: String },
    #[error("schema registry URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("schema registry {addr}: {what}: {source}")]
    Io {
        addr: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("schema registry answered HTTP {status} to POST {path}: {message}")]
    Http {
        status: u16,
        path: String,
        /// The `message` of a Confluent error body, or the whole body.
        message: String,
        body: String,
    },
    #[error("schema registry at {addr} sent an unreadable response: {reason}")]
    BadResponse { addr: String, reason: String },
}

/// The subject of a topic's record values under the TopicNameStrategy.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Registers `schema_json` (an Avro schema as JSON text) under `subject` and returns its
/// registry id. Registering a schema the subject already has returns the existing id; an
/// incompatible schema is refused by the registry (HTTP 409), which comes back as
/// [`RegistryError::Http`] with the registry's message.
pub fn register(url: &str, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
    let target = Target::parse(url)?;
    let path = format!(
        "{}/subjects/{}/versions",
        target.base_path,
        encode_path_segment(subject)
    );
    let body = serde_json::json!({ "schema": schema_json }).to_string();
    let (status, resp) = target.post(&path, &body)?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<serde_json::Value>(&resp)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| resp.clone());
        return Err(RegistryError::Http {
            status,
            path,
            message,
            body: resp,
        });
    }
    let bad = |reason: String| RegistryError::BadResponse {
        addr: target.host_header.clone(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(&resp).map_err(|e| bad(format!("body is not JSON ({e}): {resp:?}")))?;
    v.get("id")
        .and_then(serde_json::Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| bad(format!("no numeric \"id\" in {resp:?}")))
}

struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// Value of the `Host` header.
    host_header: String,
    /// Path prefix without a trailing `/` (empty for the root).
    base_path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, RegistryError> {
        let bad = |reason: &str| RegistryError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(RegistryError::Https { url: url.to_string() });
        }
        if !lower.starts_with("http://") {
            return Err(bad("expected http://host:port"));
        }
        let rest = &url["http://".len()..];
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(bad("a query or fragment is not supported"));
        }
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        // host, [v6]:port, host:port
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("unclosed '[' in host"))?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after ']'")),
            };
            (&authority[..end + 2], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port: u16 = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => 80,
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        Ok(Target {
            addr: format!("{host}:{port}"),
            host_header: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> RegistryError + '_ {
        move |source| RegistryError::Io {
            addr: self.addr.clone(),
            what,
            source,
        }
    }

    fn connect(&self) -> Result<TcpStream, RegistryError> {
        let addrs = self.addr.to_socket_addrs().map_err(self.io("resolve"))?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, TIMEOUT) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err((self.io("connect"))(last))
    }

    /// One `POST` with `Connection: close`; returns (status, body).
    fn post(&self, path: &str, body: &str) -> Result<(u16, String), RegistryError> {
        let stream = self.connect()?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(self.io("set timeout"))?;
        stream
            .set_write_timeout(Some(TIMEOUT))
            .map_err(self.io("set timeout"))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\nAccept: {CONTENT_TYPE}, application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: wabill/{}\r\n\r\n",
            self.host_header,
            body.len(),
            env!("CARGO_PKG_VERSION"),
        );
        let mut w = &stream;
        w.write_all(request.as_bytes())
            .and_then(|()| w.write_all(body.as_bytes()))
            .and_then(|()| w.flush())
            .map_err(self.io("send request"))?;
        let mut r = BufReader::new(&stream);
        self.read_response(&mut r)
    }

    fn read_response(&self, r: &mut impl BufRead) -> Result<(u16, String), RegistryError> {
        let bad = |reason: String| RegistryError::BadResponse {
            addr: self.addr.clone(),
            reason,
        };
        // Skip any 1xx interim responses.
        let (status, headers) = loop {
            let status_line = read_line(r).map_err(self.io("read response"))?;
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default();
            if !version.starts_with("HTTP/1.") {
                return Err(bad(format!("not an HTTP/1.x status line: {status_line:?}")));
            }
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
            let mut headers = Vec::new();
            loop {
                let line = read_line(r).map_err(self.io("read response headers"))?;
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                if headers.len() > 200 {
                    return Err(bad("too many headers".into()));
                }
            }
            if !(100..200).contains(&status) {
                break (status, headers);
            }
        };
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let mut body = Vec::new();
        if chunked {
            loop {
                let size_line = read_line(r).map_err(self.io("read chunk"))?;
                let hex = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(hex, 16).map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    break;
                }
                if body.len() + size > MAX_BODY {
                    return Err(bad("response body too large".into()));
                }
                let start = body.len();
                body.resize(start + size, 0);
                r.read_exact(&mut body[start..]).map_err(self.io("read chunk"))?;
                read_line(r).map_err(self.io("read chunk"))?;
            }
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
            if len > MAX_BODY {
                return Err(bad("response body too large".into()));
            }
            body.resize(len, 0);
            r.read_exact(&mut body).map_err(self.io("read body"))?;
        } else {
            r.take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body)
                .map_err(self.io("read body"))?;
            if body.len() > MAX_BODY {
                return Err(bad("response body too large".into()));
            }
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One CRLF- (or LF-) terminated line, at most 8 KiB, without its terminator.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = r.take(8192).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the end of the response",
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "response line too long or cut short",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://localhost:8081").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.host_header.as_str(), t.base_path.as_str()),
            ("localhost:8081", "localhost:8081", "")
        );
        let t = Target::parse("HTTP://registry/api/v1/").unwrap();
        assert_eq!((t.addr.as_str(), t.base_path.as_str()), ("registry:80", "/api/v1"));
        let t = Target::parse("http://[::1]:8081").unwrap();
        assert_eq!(t.addr, "[::1]:8081");
        let e = Target::parse("https://registry:8081").err().unwrap();
        assert!(e.to_string().contains("TLS-terminating proxy"), "{e}");
        for bad in [
            "registry:8081",
            "http://",
            "http://:8081",
            "http://h:port",
            "http://u:p@h:1",
            "http://h:1/?x",
            "http://[::1",
        ] {
            assert!(matches!(Target::parse(bad), Err(RegistryError::BadUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(value_subject("wabill.billing"), "wabill.billing-value");
        assert_eq!(encode_path_segment("a.b-c_d~e/f g"), "a.b-c_d~e%2Ff%20g");
    }

    #[test]
    fn parses_responses() {
        let t = Target::parse("http://h:1").unwrap();
        let mut r: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"id\":3}";
        assert_eq!(t.read_response(&mut r).unwrap(), (200, "{\"id\":3}".into()));
        let mut r: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"id\r\n4;x=y\r\n\":9}\r\n0\r\n\r\n";
        assert_eq!(t.read_response(&mut r).unwrap(), (200, "{\"id\":9}".into()));
        let mut r: &[u8] = b"HTTP/1.0 409 Conflict\n\n{\"message\":\"no\"}";
        assert_eq!(t.read_response(&mut r).unwrap(), (409, "{\"message\":\"no\"}".into()));
        let mut r: &[u8] = b"SSH-2.0\r\n";
        assert!(t.read_response(&mut r).is_err());
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}";
        assert!(t.read_response(&mut r).is_err());
    }
}

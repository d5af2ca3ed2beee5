//! A Confluent Schema Registry client: registers (or looks up) a schema and returns its
//! id, for the Confluent wire format (`00` + 4-byte big-endian id + Avro body).
//!
//! Blocking (`ureq`): it runs once per topic at start-up, not on the hot path. Managed
//! registries need HTTPS and credentials, so: `http://` and `https://` URLs (rustls with
//! ring and the bundled Mozilla roots, or only the CAs of `ca_file` when one is given),
//! HTTP basic auth from Confluent's `key:secret` user info, proxies from the usual
//! `HTTPS_PROXY`/`NO_PROXY` environment. Every error names the operation, the subject
//! and, for an answer, the HTTP status. Subjects follow the TopicNameStrategy:
//! `{topic}-value`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use thiserror::Error;
use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// Timeout of every request (connect, TLS, send, answer).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (a registry answer is a few hundred bytes).
const MAX_BODY: u64 = 1 << 20;
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const ACCEPT: &str = "application/vnd.schemaregistry.v1+json, application/json";

/// What the client was doing, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /subjects/{subject}/versions`
    Register,
    /// `POST /subjects/{subject}`
    Lookup,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Register => "registering the schema of subject",
            Operation::Lookup => "looking up the schema of subject",
        })
    }
}

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("schema registry URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("schema registry ca_file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    #[error("schema registry basic_auth_user_info: {reason}")]
    Credentials { reason: String },
    #[error("schema registry {url}: {operation} {subject:?}: {source}")]
    Transport {
        url: String,
        operation: Operation,
        subject: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("schema registry {url} answered HTTP {status} when {operation} {subject:?}: {message}{hint}")]
    Http {
        url: String,
        operation: Operation,
        subject: String,
        status: u16,
        /// The `message` of a Confluent error body, or the whole body.
        message: String,
        body: String,
        /// A pointer to the setting to check (credentials for 401/403), or empty.
        hint: &'static str,
    },
    #[error("schema registry {url} sent an unreadable answer when {operation} {subject:?}: {reason}")]
    BadResponse {
        url: String,
        operation: Operation,
        subject: String,
        reason: String,
    },
}

impl RegistryError {
    /// The HTTP status of a registry answer, when the error is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The subject of a topic's record values under the TopicNameStrategy.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Registers `schema_json` under `subject` at `url` with no credentials and the default
/// roots. See [`RegistryClient::register`].
pub fn register(url: &str, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
    RegistryClient::new(url, &RegistryAuth::default())?.register(subject, schema_json)
}

/// Credentials and trust for a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    /// `key:secret` (Confluent's `basic.auth.user.info`), sent as HTTP basic auth.
    pub basic_auth_user_info: Option<crate::config::Secret>,
    /// PEM file with the CA certificate(s) to trust instead of the bundled roots.
    pub ca_file: Option<PathBuf>,
}

impl RegistryAuth {
    pub fn from_config(c: &crate::config::SchemaRegistryConfig) -> RegistryAuth {
        RegistryAuth {
            basic_auth_user_info: c.basic_auth_user_info.clone(),
            ca_file: c.ca_file.clone(),
        }
    }
}

/// A client for one registry (connections are pooled across calls).
pub struct RegistryClient {
    /// `scheme://authority[/base]`, without a trailing `/`.
    base: String,
    agent: ureq::Agent,
    /// `Basic …` header value.
    authorization: Option<String>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RegistryClient {
    pub fn new(url: &str, auth: &RegistryAuth) -> Result<RegistryClient, RegistryError> {
        let base = base_url(url)?;
        let authorization = match &auth.basic_auth_user_info {
            None => None,
            Some(info) => {
                let info = info.expose();
                if info.is_empty() {
                    None
                } else if !info.contains(':') {
                    return Err(RegistryError::Credentials {
                        reason: "expected key:secret".into(),
                    });
                } else {
                    Some(format!("Basic {}", STANDARD.encode(info)))
                }
            }
        };
        let mut tls = TlsConfig::builder();
        if let Some(path) = &auth.ca_file {
            tls = tls.root_certs(load_ca_file(path)?);
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(TIMEOUT))
            // 4xx/5xx answers are read here, for their status and message.
            .http_status_as_error(false)
            .build();
        Ok(RegistryClient {
            base,
            agent: config.into(),
            authorization,
        })
    }

    /// The registry's base URL as used for requests.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Registers `schema_json` (an Avro schema as JSON text) under `subject` and returns
    /// its registry id. Registering a schema the subject already has returns the
    /// existing id; an incompatible schema is refused by the registry (HTTP 409), which
    /// comes back as [`RegistryError::Http`] with the registry's message.
    pub fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let path = format!("/subjects/{}/versions", encode_path_segment(subject));
        self.post_for_id(Operation::Register, subject, &path, schema_json)
    }

    /// The id of `schema_json` if `subject` already has it (no write permission needed);
    /// a subject or schema the registry does not know is HTTP 404.
    pub fn lookup(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let path = format!("/subjects/{}", encode_path_segment(subject));
        self.post_for_id(Operation::Lookup, subject, &path, schema_json)
    }

    fn post_for_id(
        &self,
        operation: Operation,
        subject: &str,
        path: &str,
        schema_json: &str,
    ) -> Result<u32, RegistryError> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::json!({ "schema": schema_json }).to_string();
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", CONTENT_TYPE)
            .header("Accept", ACCEPT)
            .header("User-Agent", concat!("wabill/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = &self.authorization {
            request = request.header("Authorization", a);
        }
        let transport = |source: ureq::Error| RegistryError::Transport {
            url: self.base.clone(),
            operation,
            subject: subject.to_string(),
            source: Box::new(source),
        };
        let mut response = request.send(body.as_str()).map_err(transport)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(transport)?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| text.clone());
            let hint = match status {
                401 | 403 => " (check schema_registry.basic_auth_user_info or WABILL_SCHEMA_REGISTRY_BASIC_AUTH)",
                _ => "",
            };
            return Err(RegistryError::Http {
                url: self.base.clone(),
                operation,
                subject: subject.to_string(),
                status,
                message,
                body: text,
                hint,
            });
        }
        let bad = |reason: String| RegistryError::BadResponse {
            url: self.base.clone(),
            operation,
            subject: subject.to_string(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("body is not JSON ({e}): {text:?}")))?;
        v.get("id")
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| bad(format!("no numeric \"id\" in {text:?}")))
    }
}

/// Checks `url` and returns `scheme://authority[/base]` without a trailing `/`.
fn base_url(url: &str) -> Result<String, RegistryError> {
    let bad = |reason: &str| RegistryError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: ureq::http::Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(bad("expected http://host:port or https://host:port")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "credentials in the URL are not supported; use schema_registry.basic_auth_user_info",
        ));
    }
    if authority.host().is_empty() || authority.host() == "[]" {
        return Err(bad("no host"));
    }
    // The URI parser accepts any port text; the connector would not.
    let after_host = authority
        .as_str()
        .rsplit_once(']')
        .map_or(authority.as_str(), |(_, rest)| rest);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        if port.parse::<u16>().is_err() {
            return Err(bad("bad port"));
        }
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("a query or fragment is not supported"));
    }
    Ok(format!(
        "{scheme}://{}{}",
        authority.as_str(),
        uri.path().trim_end_matches('/')
    ))
}

fn load_ca_file(path: &Path) -> Result<RootCerts, RegistryError> {
    let bad = |reason: String| RegistryError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(format!("not PEM: {e}")))? {
            PemItem::Certificate(c) => certs.push(c),
            _ => return Err(bad("holds something other than certificates".into())),
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(RootCerts::new_with_certs(&certs))
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
    use crate::config::Secret;

    #[test]
    fn urls() {
        assert_eq!(base_url("http://localhost:8081").unwrap(), "http://localhost:8081");
        assert_eq!(base_url("HTTP://registry/api/v1/").unwrap(), "http://registry/api/v1");
        assert_eq!(base_url("https://[::1]:8081").unwrap(), "https://[::1]:8081");
        assert_eq!(
            base_url("https://psrc-xyz.eu-west-1.aws.confluent.cloud").unwrap(),
            "https://psrc-xyz.eu-west-1.aws.confluent.cloud"
        );
        for bad in [
            "registry:8081",
            "ftp://h:1",
            "http://",
            "http://h:port",
            "http://u:p@h:1",
            "http://h:1/?x",
            "http://h:1/#x",
            "http://[::1",
        ] {
            assert!(matches!(base_url(bad), Err(RegistryError::BadUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(value_subject("wabill.billing"), "wabill.billing-value");
        assert_eq!(encode_path_segment("a.b-c_d~e/f g"), "a.b-c_d~e%2Ff%20g");
    }

    #[test]
    fn credentials_and_ca_files_are_checked_up_front() {
        let auth = |s: &str| RegistryAuth {
            basic_auth_user_info: Some(Secret::new(s)),
            ca_file: None,
        };
        let c = RegistryClient::new("https://r", &auth("key:se:cret")).unwrap();
        // RFC 7617: base64 of the whole user info, split at the first ':' by the server.
        assert_eq!(c.authorization.as_deref(), Some("Basic a2V5OnNlOmNyZXQ="));
        assert!(!format!("{c:?}").contains("a2V5"), "Debug shows no credentials");
        let e = RegistryClient::new("https://r", &auth("no-colon")).unwrap_err();
        assert!(matches!(e, RegistryError::Credentials { .. }), "{e:?}");

        let dir = tempfile::tempdir().unwrap();
        let missing = RegistryAuth {
            basic_auth_user_info: None,
            ca_file: Some(dir.path().join("nope.pem")),
        };
        let e = RegistryClient::new("https://r", &missing).unwrap_err();
        assert!(
            matches!(e, RegistryError::CaFile { .. }) && e.to_string().contains("nope.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = RegistryClient::new(
            "https://r",
            &RegistryAuth {
                basic_auth_user_info: None,
                ca_file: Some(empty),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}

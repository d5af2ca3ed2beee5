//! The schema registry client (src/codec/registry.rs) against an HTTPS registry stand-in:
//! managed registries need TLS and basic-auth credentials, which the plain-HTTP client
//! this replaced could not speak. The stand-in's CA is generated here (rcgen), served by
//! hyper over tokio-rustls, and checks credentials like Confluent's registry (401 with a
//! JSON error body when they are wrong or missing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use wabill::codec::avro::{schema_text, RecordKind};
use wabill::codec::registry::{Operation, RegistryAuth, RegistryClient, RegistryError};
use wabill::config::Secret;

const USER_INFO: &str = "SR-KEY:s3cr3t/with:colon";

/// What the stand-in saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    schema: Option<String>,
}

struct Registry {
    url: String,
    ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

/// A CA, a server certificate for 127.0.0.1/localhost signed by it, the CA in a PEM file.
fn pki(dir: &std::path::Path) -> (PathBuf, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "wabill test registry CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("ca key")).expect("ca cert");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");

    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, "registry");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf.signed_by(&leaf_key, &*ca).expect("leaf cert");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (ca_file, leaf.der().clone(), key)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.schemaregistry.v1+json"),
    );
    r
}

/// The registry's behaviour: credentials first (401), then register (id 41 for any
/// subject) and lookup (id 41 for `known-value`, 404 for any other subject).
async fn answer(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let schema = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("schema").and_then(|s| s.as_str()).map(str::to_string));
    if let Ok(mut s) = seen.lock() {
        s.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
            schema: schema.clone(),
        });
    }
    let expected = format!("Basic {}", STANDARD.encode(USER_INFO));
    if authorization.as_deref() != Some(expected.as_str()) {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error_code": 401, "message": "Unauthorized"}),
        ));
    }
    if schema.is_none() || method != "POST" {
        return Ok(json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"error_code": 42201, "message": "Invalid schema"}),
        ));
    }
    Ok(match path.as_str() {
        "/sr/subjects/known-value" => json(StatusCode::OK, serde_json::json!({"id": 41})),
        p if p.starts_with("/sr/subjects/") && p.ends_with("/versions") => {
            json(StatusCode::OK, serde_json::json!({"id": 41}))
        }
        p if p.starts_with("/sr/subjects/") && !p.ends_with("/versions") => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error_code": 40401, "message": "Subject 'x' not found."}),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
        ),
    })
}

fn start_registry() -> Registry {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_file, cert, key) = pki(dir.path());
    let tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server tls config");
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                // A client that rejects our certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req| answer(req, seen.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Registry {
        url: format!("https://{addr}/sr/"),
        ca_file,
        seen,
        _dir: dir,
        _runtime: runtime,
    }
}

fn auth(user_info: Option<&str>, ca_file: Option<PathBuf>) -> RegistryAuth {
    RegistryAuth {
        basic_auth_user_info: user_info.map(Secret::new),
        ca_file,
    }
}

#[test]
fn registers_over_tls_with_credentials() {
    let reg = start_registry();
    let client = RegistryClient::new(&reg.url, &auth(Some(USER_INFO), Some(reg.ca_file.clone()))).expect("client");
    let text = schema_text(RecordKind::ConversationBilled);
    let id = client.register("wabill.billing-value", text).expect("register");
    assert_eq!(id, 41);
    let seen = reg.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/sr/subjects/wabill.billing-value/versions");
    assert_eq!(seen[0].schema.as_deref(), Some(text));
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Basic {}", STANDARD.encode(USER_INFO)).as_str())
    );

    // Lookup: the id of a schema the subject has; 404 (named) for one it does not.
    assert_eq!(client.lookup("known-value", text).expect("lookup"), 41);
    let e = client.lookup("unknown-value", text).unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Http {
                status: 404,
                operation: Operation::Lookup,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("HTTP 404") && msg.contains("\"unknown-value\""), "{msg}");
}

#[test]
fn wrong_or_missing_credentials_are_a_named_401() {
    let reg = start_registry();
    let text = schema_text(RecordKind::MessageEvent);
    for user_info in [None, Some("SR-KEY:wrong")] {
        let client = RegistryClient::new(&reg.url, &auth(user_info, Some(reg.ca_file.clone()))).expect("client");
        let e = client.register("wabill.billing-value", text).unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::Http {
                    status: 401,
                    operation: Operation::Register,
                    ..
                }
            ),
            "{user_info:?}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("HTTP 401"), "{msg}");
        assert!(msg.contains("\"wabill.billing-value\""), "names the subject: {msg}");
        assert!(msg.contains("basic_auth_user_info"), "points at the setting: {msg}");
        assert!(!msg.contains("wrong"), "never prints credentials: {msg}");
    }
    let seen = reg.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].authorization, None);
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let reg = start_registry();
    // Without ca_file: the bundled public roots, which do not include the test CA.
    let client = RegistryClient::new(&reg.url, &auth(Some(USER_INFO), None)).expect("client");
    let e = client
        .register("wabill.billing-value", schema_text(RecordKind::DeadLetter))
        .unwrap_err();
    assert!(matches!(e, RegistryError::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains("\"wabill.billing-value\""), "{e}");
    assert!(
        reg.seen.lock().unwrap().is_empty(),
        "a request went out over an unverified connection"
    );

    // Another CA's file: refused as well.
    let other = tempfile::tempdir().expect("tempdir");
    let (other_ca, _, _) = pki(other.path());
    let client = RegistryClient::new(&reg.url, &auth(Some(USER_INFO), Some(other_ca))).expect("client");
    assert!(matches!(
        client.register("wabill.billing-value", "\"string\""),
        Err(RegistryError::Transport { .. })
    ));
}

#[test]
fn the_run_config_reaches_the_client() {
    // `[schema_registry]` as `wabill run` reads it, credentials from the environment.
    let reg = start_registry();
    let mut cfg: wabill::config::Config = toml::from_str(&format!(
        "[schema_registry]\nurl = {:?}\nca_file = {:?}\n",
        reg.url,
        reg.ca_file.display().to_string()
    ))
    .expect("config");
    cfg.apply_env(|k| (k == "WABILL_SCHEMA_REGISTRY_BASIC_AUTH").then(|| USER_INFO.to_string()))
        .expect("env");
    let framings = wabill::runtime::kafka::Framings::resolve(&cfg).expect("framings");
    assert!(
        matches!(
            framings.billing,
            wabill::codec::avro::Framing::Confluent { schema_id: 41 }
        ),
        "{framings:?}"
    );
}

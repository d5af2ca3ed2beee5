//! The operations endpoint (src/ops/http.rs) under misbehaving clients: Kubernetes probes
//! time out after 3 s (deploy/k8s), so silent connections and a client that trickles its
//! request byte by byte must not delay /healthz, /readyz or /metrics — the single-threaded
//! server this replaced stalled every probe for 5 s per silent client.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use wabill::ops::health::health;
use wabill::ops::http::{start, HttpOptions, MAX_REQUEST_HEAD};

/// What a probe may take here: far below the 3 s probe timeout, far above a loaded
/// machine's scheduling noise.
const PROMPT: Duration = Duration::from_millis(1500);

struct Answer {
    status: u16,
    body: String,
    took: Duration,
}

/// One request on a fresh connection, read to the end (`Connection: close`).
fn get(addr: SocketAddr, path: &str) -> Answer {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the answer");
    parse(&out, t0.elapsed())
}

fn parse(raw: &[u8], took: Duration) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Answer {
        status,
        body: body.to_string(),
        took,
    }
}

fn assert_prompt(a: &Answer, what: &str) {
    assert!(a.took < PROMPT, "{what} took {:?} (limit {PROMPT:?})", a.took);
}

/// True when the peer has closed the connection (read returns 0 or a reset).
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // e.g. a 408 before the close
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn probes_answer_while_fifty_clients_are_silent_and_one_trickles() {
    let server = start("127.0.0.1:0", HttpOptions::default()).expect("bind");
    let addr = server.local_addr();

    // 50 connections, opened and then silent for the whole test.
    let silent: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).expect("connect")).collect();

    // One client sending its request one byte every 40 ms (~2.6 s for the request, within
    // the 5 s header timeout, so it is served too, after the probes).
    let trickler = thread::spawn(move || {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        for b in b"GET /healthz HTTP/1.1\r\nHost: slow\r\nConnection: close\r\n\r\n" {
            s.write_all(&[*b]).expect("write a byte");
            thread::sleep(Duration::from_millis(40));
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read");
        parse(&out, t0.elapsed())
    });
    thread::sleep(Duration::from_millis(300)); // the trickle is under way

    // Not ready: no stage has registered in this process.
    for round in 0..3 {
        let h = get(addr, "/healthz");
        assert_eq!((h.status, h.body.as_str()), (200, "ok\n"), "round {round}");
        assert_prompt(&h, "/healthz");
        let r = get(addr, "/readyz");
        assert_eq!(r.status, 503, "round {round}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("readiness is JSON");
        assert_eq!(v["ready"], false, "{}", r.body);
        assert_prompt(&r, "/readyz");
        let m = get(addr, "/metrics");
        assert_eq!(m.status, 200);
        assert!(m.body.contains("# TYPE wabill_build_info gauge"), "{}", m.body);
        assert!(m.body.contains("wabill_ready 0"), "{}", m.body);
        assert_prompt(&m, "/metrics");
        thread::sleep(Duration::from_millis(200));
    }

    // Readiness flips while the bad clients are still there, and the endpoints follow.
    health().register("windows");
    health().joined("windows");
    let r = get(addr, "/readyz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_prompt(&r, "/readyz when ready");
    let m = get(addr, "/metrics");
    assert!(m.body.contains("wabill_ready 1"), "{}", m.body);
    assert_prompt(&m, "/metrics when ready");

    let slow = trickler.join().expect("trickling client");
    assert_eq!(
        (slow.status, slow.body.as_str()),
        (200, "ok\n"),
        "the slow client is served too"
    );
    assert!(
        slow.took >= Duration::from_secs(2),
        "the request really trickled: {:?}",
        slow.took
    );

    // Shutdown is prompt even with the silent connections still open.
    let t0 = Instant::now();
    server.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert!(TcpStream::connect(addr).is_err(), "a stopped server still accepts");
    drop(silent);
}

#[test]
fn silent_connections_are_closed_after_the_header_timeout() {
    let options = HttpOptions {
        header_read_timeout: Duration::from_millis(500),
        ..HttpOptions::default()
    };
    let server = start("127.0.0.1:0", options).expect("bind");
    let mut silent = TcpStream::connect(server.local_addr()).expect("connect");
    let t0 = Instant::now();
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(5)),
        "a silent client is never dropped"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "dropped only after {:?}",
        t0.elapsed()
    );

    // Half a request head, then silence: dropped as well.
    let mut half = TcpStream::connect(server.local_addr()).expect("connect");
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").expect("write");
    assert!(
        closed_by_server(&mut half, Duration::from_secs(5)),
        "a stalled head is never dropped"
    );
}

#[test]
fn oversized_request_heads_are_refused() {
    let server = start("127.0.0.1:0", HttpOptions::default()).expect("bind");
    let mut s = TcpStream::connect(server.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let filler = "a".repeat(MAX_REQUEST_HEAD * 2);
    // The server may close while we are still writing; what it answered is what counts.
    let _ = write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");

    // The server still answers others.
    assert_eq!(get(server.local_addr(), "/healthz").status, 200);
}

#[test]
fn connections_beyond_the_limit_are_closed_not_queued() {
    let options = HttpOptions {
        max_connections: 4,
        ..HttpOptions::default()
    };
    let server = start("127.0.0.1:0", options).expect("bind");
    let addr = server.local_addr();
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    thread::sleep(Duration::from_millis(200)); // all four accepted
    let mut extra = TcpStream::connect(addr).expect("connect");
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(2)),
        "the fifth connection waits"
    );
    drop(held);
    // Slots are released when connections end.
    let t0 = Instant::now();
    loop {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if out.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "slots never came back");
        thread::sleep(Duration::from_millis(50));
    }
}

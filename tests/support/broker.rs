//! A real Kafka-compatible broker for tests: Tansu 0.6.0 on loopback.
//!
//! `Broker::start()` runs Tansu with SQLite storage in a temporary directory (use it for crash
//! and restore tests: it survives `kill9()` + `restart()`); `Broker::start_memory()` runs the
//! memory engine (benchmarks only: it loses records when a fetch starts mid-batch and reports a
//! wrong end offset; README.md "Decisions and limits" and BENCHMARKS.md).
//!
//! The binary comes from `$WABILL_TANSU`, else `$WABILL_CACHE/tools/bin/tansu` (default cache
//! `~/.cache/wabill`); `scripts/install-tansu.sh` installs it there, with the `sqlite3` CLI.
//!
//! Tansu quirks handled here:
//! - SQLite storage has no index on `header(topition, offset_id)`: once records carry headers,
//!   every fetch scans that table and group heartbeats time out. The harness adds the index with
//!   the `sqlite3` CLI as soon as the broker answers (`ensure_header_index`).
//! - Each fetch sleeps about half of `fetch.wait.max.ms` even when data is there, and the first
//!   group join waits about half of `session.timeout.ms`: `consumer_config` sets 10 ms and 3 s.
//! - Tansu describes only the topic configs given at creation: pass every config you will read
//!   to `create_topic_with`.
//! - No transactions, no `create_partitions`.
//! - A member that leaves a consumer group (LeaveGroup: a graceful stop) while the group is
//!   forming, as its leader, is removed but stays the leader: the other members wait for its
//!   SyncGroup forever and get no partitions. (Groups were also seen stuck that way after a
//!   storm of rebalances with two instances on 6 s sessions, one of them killed.) Tests that
//!   stop one of several instances gracefully first wait until the groups are formed
//!   (`group_formed`), and kill nothing while two instances share the groups.
//! - Under load a member of a group that has just rebalanced is sometimes expelled when its
//!   session timeout has passed since it got its partitions (seen with 6 s, two instances and
//!   cooperative-sticky), which starts another rebalance, and so on: where instances share
//!   groups, tests use a session timeout of tens of seconds (and kill nothing there).
//! - A member that expires while the group forms is dropped without a new generation: when the
//!   leader's assignment withheld the partitions that member owned (cooperative-sticky does,
//!   until their owner gives them up), nobody gets them and nothing starts another rebalance.
//!   A killed instance's member lives until its session times out, so a test that starts an
//!   instance after a SIGKILL waits out the session first (the joining member's JoinGroup
//!   then finds the dead one expired and drops it before anything is assigned).
//!
//! Environment: `WABILL_TANSU_LOG` sets Tansu's `RUST_LOG` (default `warn`; the test's own
//! `RUST_LOG` is not passed on). When a test panics while a broker is alive, the tail of the
//! broker's log is printed; `WABILL_KEEP_BROKER_DIR=1` keeps its directory (DB + log).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tempfile::TempDir;

/// The index Tansu's SQLite schema lacks (see the module docs).
const HEADER_INDEX_SQL: &str = "create index if not exists header_topition_offset on header (topition, offset_id)";
/// How long `start`/`restart` wait for the broker to answer a metadata request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for admin and metadata requests made by the helpers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Directory of cached tools and builds: `$WABILL_CACHE`, default `~/.cache/wabill`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WABILL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("wabill")
}

/// The Tansu binary: `$WABILL_TANSU`, else `$WABILL_CACHE/tools/bin/tansu`. Panics with the
/// install instructions when it is missing.
pub fn tansu_binary() -> PathBuf {
    let path = match std::env::var_os("WABILL_TANSU").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("tools").join("bin").join("tansu"),
    };
    if !path.is_file() {
        panic!(
            "Tansu broker binary not found at {}.\n\
             Run `scripts/install-tansu.sh` (installs Tansu 0.6.0 into $WABILL_CACHE/tools, \
             default ~/.cache/wabill; ~11 min cold) or point WABILL_TANSU at a tansu 0.6.0 binary.",
            path.display()
        );
    }
    path
}

fn sqlite3_binary() -> PathBuf {
    let name = std::env::var_os("WABILL_SQLITE3")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "sqlite3".into());
    let path = PathBuf::from(&name);
    if path.components().count() > 1 {
        return path;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(&name))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the sqlite3 CLI is not installed; the harness needs it to add an index to Tansu's \
             database. Run `scripts/install-tansu.sh` (installs it with apt-get) or \
             `apt-get install sqlite3`."
        )
    })
}

#[derive(Clone, Debug)]
enum Storage {
    Sqlite(PathBuf),
    Memory,
}

/// A Tansu broker process on `127.0.0.1:port`, killed when dropped.
pub struct Broker {
    bin: PathBuf,
    dir: Option<TempDir>,
    dir_path: PathBuf,
    port: u16,
    storage: Storage,
    child: Option<Child>,
    header_index: AtomicBool,
    last_start: Duration,
}

impl Broker {
    /// Starts Tansu with SQLite storage in a fresh temporary directory, waits until it answers
    /// metadata requests and adds the header index. Panics (with the broker log) on failure.
    pub fn start() -> Broker {
        Broker::launch(true)
    }

    /// Starts Tansu with the memory engine (`memory://tansu/`): fast, for benchmarks that read
    /// from offset 0. Not for crash tests (see module docs); `restart` loses all data.
    pub fn start_memory() -> Broker {
        Broker::launch(false)
    }

    fn launch(sqlite: bool) -> Broker {
        let bin = tansu_binary();
        if sqlite {
            // Fail early and clearly, before spending time on the broker.
            sqlite3_binary();
        }
        let dir = tempfile::Builder::new()
            .prefix("wabill-tansu-")
            .tempdir()
            .expect("create a temporary directory for the broker");
        let dir_path = dir.path().to_path_buf();
        let storage = if sqlite {
            Storage::Sqlite(dir_path.join("tansu.db"))
        } else {
            Storage::Memory
        };
        let mut broker = Broker {
            bin,
            dir: Some(dir),
            dir_path,
            port: 0,
            storage,
            child: None,
            header_index: AtomicBool::new(false),
            last_start: Duration::ZERO,
        };
        // A port picked by binding to :0 can be taken by someone else before Tansu binds it:
        // try a few ports before giving up.
        let mut last_error = String::new();
        for _ in 0..3 {
            broker.port = free_port();
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(e) => last_error = e,
            }
        }
        panic!("Tansu did not start: {last_error}");
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's directory (SQLite file `tansu.db`, log `tansu.log`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The SQLite database file, `None` for the memory engine.
    pub fn db_path(&self) -> Option<&Path> {
        match &self.storage {
            Storage::Sqlite(path) => Some(path),
            Storage::Memory => None,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("tansu.log")
    }

    /// The last `max_bytes` of the broker log (stdout and stderr of every run).
    pub fn log_tail(&self, max_bytes: u64) -> String {
        let Ok(mut file) = File::open(self.log_path()) else {
            return String::from("(no broker log)");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// How long the last `start`/`restart` took until the broker answered metadata requests
    /// (and, for SQLite, had its header index).
    pub fn last_start_duration(&self) -> Duration {
        self.last_start
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the broker and reap it. No-op when it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL. No-op when it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the broker again on the same port and the same storage (stopping it first if it
    /// runs). With SQLite every acknowledged record, topic and committed offset is back; with
    /// the memory engine everything is gone.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("Tansu did not restart on port {}: {e}", self.port);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        // Tansu 0.6.0 resolves a sqlite URL as working directory + host + path, even when the
        // path is absolute (`sqlite:///tmp/x.db` opens `$PWD/tmp/x.db`). So run it in the broker
        // directory and name the file relative to it.
        let storage_url = match &self.storage {
            Storage::Sqlite(path) => format!(
                "sqlite://./{}",
                path.file_name().unwrap().to_str().expect("utf-8 file name")
            ),
            Storage::Memory => "memory://tansu/".to_string(),
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open broker log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(&listener)
            .arg("--advertised-listener-url")
            .arg(&listener)
            .arg("--storage-engine")
            .arg(&storage_url)
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env(
                "RUST_LOG",
                std::env::var("WABILL_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("NO_COLOR", "1");
        // Tansu reads these (clap `env`, plus a `.env` file); keep the test's environment out.
        for var in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "DATA_LAKE",
            "ICEBERG_CATALOG",
            "ICEBERG_NAMESPACE",
            "ICEBERG_WAREHOUSE",
            "DELTA_DATABASE",
        ] {
            cmd.env_remove(var);
        }
        let child = spawn_tied_to_process(cmd)
            .map_err(|e| format!("spawn {} (run scripts/install-tansu.sh?): {e}", self.bin.display()))?;
        self.child = Some(child);

        if let Err(e) = self.wait_ready(started + READY_TIMEOUT) {
            self.kill9();
            return Err(format!(
                "{e}\n--- {} (tail) ---\n{}",
                self.log_path().display(),
                self.log_tail(4000)
            ));
        }
        if let Storage::Sqlite(db) = self.storage.clone() {
            if !db.is_file() {
                self.kill9();
                return Err(format!(
                    "Tansu answers but its database is not at {} (sqlite URL resolution changed?)",
                    db.display()
                ));
            }
            // Tansu creates its tables at start-up; retry briefly in case it has not yet.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.ensure_header_index() {
                if Instant::now() > deadline {
                    self.kill9();
                    return Err("table `header` did not appear in Tansu's database".into());
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        self.last_start = started.elapsed();
        Ok(())
    }

    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let addr: SocketAddr = self.bootstrap().parse().unwrap();
        let mut consumer: Option<BaseConsumer> = None;
        let mut last = String::from("port not open yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("tansu exited early ({status}); last: {last}"));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "tansu not ready on {addr} within {READY_TIMEOUT:?}; last: {last}"
                ));
            }
            if consumer.is_none() {
                match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Ok(_) => {
                        consumer = Some(
                            self.client_config()
                                .create()
                                .map_err(|e| format!("create metadata client: {e}"))?,
                        )
                    }
                    Err(e) => {
                        last = format!("connect: {e}");
                        thread::sleep(Duration::from_millis(25));
                        continue;
                    }
                }
            }
            match consumer
                .as_ref()
                .unwrap()
                .fetch_metadata(None, Duration::from_millis(1000))
            {
                Ok(md) if !md.brokers().is_empty() => return Ok(()),
                Ok(_) => last = "metadata without brokers".into(),
                Err(e) => last = format!("metadata: {e}"),
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Adds the `header(topition, offset_id)` index to Tansu's SQLite database (see module
    /// docs). Returns `true` once the index exists (then further calls are free), `false` when
    /// the `header` table does not exist yet. Always `true` for the memory engine.
    pub fn ensure_header_index(&self) -> bool {
        let Storage::Sqlite(db) = &self.storage else {
            return true;
        };
        if self.header_index.load(Ordering::Acquire) {
            return true;
        }
        let out = Command::new(sqlite3_binary())
            .arg("-batch")
            .arg("-cmd")
            .arg(".timeout 10000")
            .arg(db)
            .arg(HEADER_INDEX_SQL)
            .stdin(Stdio::null())
            .output()
            .expect("run sqlite3");
        if out.status.success() {
            self.header_index.store(true, Ordering::Release);
            return true;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("no such table") {
            return false;
        }
        panic!("sqlite3 {}: {HEADER_INDEX_SQL}: {} {stderr}", db.display(), out.status);
    }

    /// `bootstrap.servers` and nothing else Tansu-specific.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("broker.address.family", "v4");
        config
    }

    /// Producer settings that work with Tansu (acks=all, short linger).
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        config
    }

    /// Consumer-group settings tuned for Tansu: `fetch.wait.max.ms` 10 (each fetch sleeps about
    /// half of it), `session.timeout.ms` 3000 (the first join waits about half of it), manual
    /// commits, start from the earliest offset.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("session.timeout.ms", "3000")
            .set("heartbeat.interval.ms", "500")
            .set("fetch.wait.max.ms", "10")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        config
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().expect("create admin client")
    }

    fn metadata_client(&self) -> BaseConsumer {
        self.client_config().create().expect("create metadata client")
    }

    /// Creates a topic with one replica; `compact` sets `cleanup.policy=compact`.
    pub fn create_topic(&self, name: &str, partitions: i32, compact: bool) {
        let configs: &[(&str, &str)] = if compact { &[("cleanup.policy", "compact")] } else { &[] };
        self.create_topic_with(name, partitions, configs);
    }

    /// Creates a topic with the given configs (Tansu describes only the configs given at
    /// creation, so pass every one you will read) and waits until its metadata shows all
    /// partitions.
    pub fn create_topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let opts = AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT));
        let admin = self.admin();
        let results =
            block_on(admin.create_topics([&topic], &opts)).unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("create topic {topic}: {code}");
            }
        }
        let client = self.metadata_client();
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            if let Ok(md) = client.fetch_metadata(Some(name), Duration::from_secs(1)) {
                if let Some(t) = md.topics().iter().find(|t| t.name() == name) {
                    if t.error().is_none() && t.partitions().len() == partitions as usize {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("topic {name} not visible with {partitions} partitions in metadata");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Topic configs as the broker describes them (`DescribeConfigs`).
    pub fn topic_config(&self, name: &str) -> HashMap<String, Option<String>> {
        let opts = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let admin = self.admin();
        let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic(name)], &opts))
            .unwrap_or_else(|e| panic!("describe configs of {name}: {e}"));
        let mut out = HashMap::new();
        for result in results {
            let resource = result.unwrap_or_else(|e| panic!("describe configs of {name}: {e}"));
            for entry in resource.entries {
                out.insert(entry.name, entry.value);
            }
        }
        out
    }

    /// Partition ids of a topic, sorted.
    pub fn partitions(&self, topic: &str) -> Vec<i32> {
        let md = self
            .metadata_client()
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        let mut ids: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// `(partition, low, high)` watermarks of every partition of `topic`. (The memory engine
    /// reports a wrong high watermark: the start of the last batch.)
    pub fn watermarks(&self, topic: &str) -> Vec<(i32, i64, i64)> {
        let client = self.metadata_client();
        self.partitions(topic)
            .into_iter()
            .map(|p| {
                let (low, high) = client
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
                (p, low, high)
            })
            .collect()
    }

    /// Whether consumer group `group` is formed (joined and synced, no rebalance under
    /// way), read from Tansu's own record of the group in its database: its ListGroups and
    /// DescribeGroups answers do not reach librdkafka. `false` while it forms, when it does
    /// not exist, and with the memory engine. See the module docs for why tests ask.
    pub fn group_formed(&self, group: &str) -> bool {
        let Storage::Sqlite(db) = &self.storage else {
            return false;
        };
        let sql = format!(
            "select d.detail from consumer_group_detail d join consumer_group g on g.id = d.consumer_group \
             where g.name = '{}'",
            group.replace('\'', "''")
        );
        let out = Command::new(sqlite3_binary())
            .arg("-batch")
            .arg("-cmd")
            .arg(".timeout 10000")
            .arg(db)
            .arg(&sql)
            .stdin(Stdio::null())
            .output()
            .expect("run sqlite3");
        assert!(
            out.status.success(),
            "sqlite3 {}: {sql}: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|detail| detail["state"].get("Formed").is_some())
    }

    /// The committed offset of `group` for every partition of `topic` (`None`: nothing
    /// committed).
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Vec<(i32, Option<i64>)> {
        let consumer: BaseConsumer = self.consumer_config(group).create().expect("create consumer");
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions(topic) {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("committed offsets of {group} on {topic}: {e}"));
        committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.partition(), offset)
            })
            .collect()
    }

    /// Produces one record and waits for the broker's acknowledgement. Returns
    /// `(partition, offset)`.
    pub fn produce(&self, topic: &str, key: &[u8], value: &[u8]) -> (i32, i64) {
        let record = Record::new(key, value);
        self.produce_records(topic, std::slice::from_ref(&record))[0]
    }

    /// Produces `records` (in order, pipelined) and waits until all are acknowledged. Returns
    /// `(partition, offset)` of each record, in input order. Panics on any delivery error.
    pub fn produce_records(&self, topic: &str, records: &[Record]) -> Vec<(i32, i64)> {
        let context = DeliveryCollector::default();
        let producer: BaseProducer<DeliveryCollector> = self
            .producer_config()
            .create_with_context(context)
            .expect("create producer");
        for (i, r) in records.iter().enumerate() {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header { key: k, value: Some(v) });
            }
            let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, i);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            if !r.headers.is_empty() {
                record = record.headers(headers);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => panic!("produce to {topic}: {e}"),
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("flush producer for {topic}: {e}"));
        let results = std::mem::take(&mut *producer.context().results.lock().unwrap());
        let mut out = vec![None; records.len()];
        for (i, result) in results {
            match result {
                Ok(pos) => out[i] = Some(pos),
                Err(e) => panic!("delivery of record {i} to {topic} failed: {e}"),
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, pos)| pos.unwrap_or_else(|| panic!("no delivery report for record {i}")))
            .collect()
    }

    /// Consumes `topic` in consumer group `group` (from the group's committed offsets, else the
    /// earliest) until `expected` records have arrived or `timeout` has passed, then commits the
    /// consumed positions synchronously and leaves the group. Returns what it got, in arrival
    /// order; the caller asserts on the count.
    pub fn consume_all(&self, topic: &str, group: &str, expected: usize, timeout: Duration) -> Vec<Consumed> {
        let consumer: BaseConsumer = self.consumer_config(group).create().expect("create consumer");
        consumer
            .subscribe(&[topic])
            .unwrap_or_else(|e| panic!("subscribe to {topic}: {e}"));
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(expected.min(1 << 20));
        let mut errors = 0usize;
        while out.len() < expected && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => out.push(Consumed {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    partition: m.partition(),
                    offset: m.offset(),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(e)) => {
                    errors += 1;
                    if errors <= 5 {
                        eprintln!("consume {topic} as {group}: {e}");
                    }
                }
            }
        }
        if !out.is_empty() {
            consumer
                .commit_consumer_state(CommitMode::Sync)
                .unwrap_or_else(|e| panic!("commit offsets of {group} on {topic}: {e}"));
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- Tansu broker log {} (tail) ---\n{}",
                self.log_path().display(),
                self.log_tail(8000)
            );
        }
        self.kill9();
        if std::env::var_os("WABILL_KEEP_BROKER_DIR").is_some_and(|v| v == "1") {
            if let Some(dir) = self.dir.take() {
                eprintln!("keeping broker directory {}", dir.keep().display());
            }
        }
    }
}

/// A record to produce. `partition: None` lets the client partition by key.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: Option<i32>,
}

impl Record {
    pub fn new(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Record {
        Record {
            key: Some(key.as_ref().to_vec()),
            value: Some(value.as_ref().to_vec()),
            ..Record::default()
        }
    }

    pub fn header(mut self, key: &str, value: impl AsRef<[u8]>) -> Record {
        self.headers.push((key.to_string(), value.as_ref().to_vec()));
        self
    }
}

/// A consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

type DeliveryReport = (usize, Result<(i32, i64), KafkaError>);

#[derive(Default)]
struct DeliveryCollector {
    results: Mutex<Vec<DeliveryReport>>,
}

impl ClientContext for DeliveryCollector {}

impl ProducerContext for DeliveryCollector {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let report = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        self.results.lock().unwrap().push((index, report));
    }
}

/// A free loopback port (bind to :0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Spawns `cmd` from one long-lived thread with `PR_SET_PDEATHSIG = SIGKILL`, so the broker dies
/// with the test process even when the test is killed (the death signal fires when the spawning
/// *thread* exits, hence the dedicated thread rather than the test's own).
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("tansu-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the broker spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap()
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("broker spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("broker spawner thread is gone"))?
}

/// Runs a future to completion on the current thread (rdkafka's admin futures are completed by
/// librdkafka's own threads, so no async runtime is needed; this also works inside one).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

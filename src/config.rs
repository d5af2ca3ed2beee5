//! The one configuration type (TOML file, then flags), and its validated form.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;
use thiserror::Error;

use crate::billing::{Country, EraCalendar, RateCard};
use crate::ingest::OnPremises;
use crate::pipeline::UserHasher;

pub const DEFAULT_LATENESS_SECS: u64 = 120;
pub const DEFAULT_FREE_TIER: u32 = 1000;
/// docs/billing-rules.md §5 rule 3: service messages free per business number and month.
pub const DEFAULT_SERVICE_FREE_TIER: u32 = 1000;
pub const DEFAULT_CURRENCY: &str = "USD";
/// Meta batches at most 1,000 updates per POST; 4 MiB is far above any real payload.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 4 << 20;
/// docs/billing-rules.md §8: Meta retries for 36 h; keep dedupe memory at least 7 days.
pub const DEFAULT_DEDUPE_HORIZON_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_lateness")]
    pub allowed_lateness_secs: u64,
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    #[serde(default = "default_dedupe_horizon")]
    pub dedupe_horizon_secs: u64,
    /// Entries kept in memory in front of RocksDB (per store).
    #[serde(default = "default_cache_entries")]
    pub state_cache_entries: usize,
    #[serde(default)]
    pub waba: Vec<WabaConfig>,
    /// Volume tiers CSV (docs/billing-rules.md §5 rule 5); `--tiers` overrides it.
    #[serde(default)]
    pub tiers: Option<std::path::PathBuf>,
    #[serde(default)]
    pub on_premises: Option<OnPremisesConfig>,
    /// `wabill run` only.
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub schema_registry: SchemaRegistryConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
}

/// Where and how `wabill run` talks to Kafka.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Prefix of every topic and consumer group name.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Partitions of topics wabill creates (webhooks, events, conversations, billing,
    /// dead letters, changelogs). Existing topics keep theirs.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication")]
    pub replication: i32,
    /// `effectively_once` (default; any broker) or `exactly_once` (Kafka transactions).
    #[serde(default)]
    pub processing_guarantee: ProcessingGuarantee,
    /// Most records applied per batch (one persist + commit per batch).
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// A partition with no input for this long applies everything still waiting for the
    /// watermark (wall clock; only then).
    #[serde(default = "default_idle_flush_ms")]
    pub idle_flush_ms: u64,
    #[serde(default)]
    pub topics: TopicNames,
    /// Passed to librdkafka as is, for every client (e.g. `"security.protocol" =
    /// "SASL_SSL"`).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// Passed to consumers only, after `properties` (e.g. `"fetch.wait.max.ms"`).
    #[serde(default)]
    pub consumer_properties: std::collections::BTreeMap<String, String>,
    /// Passed to producers only, after `properties` (e.g. `"linger.ms"`).
    #[serde(default)]
    pub producer_properties: std::collections::BTreeMap<String, String>,
}

/// `[kafka] processing_guarantee`: an enum, so a typo fails at config load like any other
/// config error instead of when `wabill run` starts its stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Any broker: idempotent outputs, state persisted after the outputs (README).
    #[default]
    EffectivelyOnce,
    /// Kafka transactions (Apache Kafka or a broker with the full transaction protocol).
    ExactlyOnce,
}

impl ProcessingGuarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingGuarantee::EffectivelyOnce => "effectively_once",
            ProcessingGuarantee::ExactlyOnce => "exactly_once",
        }
    }
}

impl std::fmt::Display for ProcessingGuarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProcessingGuarantee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "effectively_once" => Ok(ProcessingGuarantee::EffectivelyOnce),
            "exactly_once" => Ok(ProcessingGuarantee::ExactlyOnce),
            other => Err(format!(
                "unknown processing_guarantee {other:?} (effectively_once or exactly_once)"
            )),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("empty kafka config parses"))
    }
}

/// Topic names; empty means `<prefix>-<name>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicNames {
    #[serde(default)]
    pub webhooks: String,
    #[serde(default)]
    pub events: String,
    #[serde(default)]
    pub conversations: String,
    #[serde(default)]
    pub billing: String,
    #[serde(default)]
    pub dead_letter: String,
}

impl KafkaConfig {
    fn name(&self, set: &str, default: &str) -> String {
        if set.is_empty() {
            format!("{}-{default}", self.prefix)
        } else {
            set.to_string()
        }
    }
    pub fn webhooks_topic(&self) -> String {
        self.name(&self.topics.webhooks, "webhooks")
    }
    pub fn events_topic(&self) -> String {
        self.name(&self.topics.events, "events")
    }
    pub fn conversations_topic(&self) -> String {
        self.name(&self.topics.conversations, "conversations")
    }
    pub fn billing_topic(&self) -> String {
        self.name(&self.topics.billing, "billing")
    }
    pub fn dead_letter_topic(&self) -> String {
        self.name(&self.topics.dead_letter, "dead-letter")
    }
    pub fn changelog_topic(&self, stage: &str) -> String {
        format!("{}-{stage}-changelog", self.prefix)
    }
    /// `processing_guarantee = "exactly_once"`: Kafka transactions (see README).
    pub fn exactly_once(&self) -> bool {
        self.processing_guarantee == ProcessingGuarantee::ExactlyOnce
    }
    /// One transactional id per stage task (input partition): a restarted or moved task
    /// fences its predecessor's producer and aborts what it left open.
    pub fn transactional_id(&self, stage: &str, partition: i32) -> String {
        format!("{}-{stage}-{partition}", self.prefix)
    }
    pub fn group(&self, stage: &str) -> String {
        format!("{}-{stage}", self.prefix)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "default_state_dir")]
    pub dir: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: default_state_dir(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// When set, schemas are registered and records use the Confluent wire format;
    /// otherwise Avro single-object encoding. `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    /// HTTP basic credentials as `key:secret` (Confluent's `basic.auth.user.info`).
    /// `WABILL_SCHEMA_REGISTRY_BASIC_AUTH` overrides it, so the secret can stay out of
    /// files.
    #[serde(default)]
    pub basic_auth_user_info: Option<Secret>,
    /// PEM file of the CA certificate(s) that sign the registry's certificate (a private
    /// CA). When set, only these are trusted; otherwise the bundled Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Register the schemas at start-up (default). `false` only looks them up, for
    /// credentials without write access (Confluent's `auto.register.schemas=false`).
    #[serde(default = "default_true")]
    pub auto_register: bool,
}

fn default_true() -> bool {
    true
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("empty schema_registry config parses"))
    }
}

/// A configuration value that must not appear in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[privacy]`: users in the output as keyed hashes (pipeline/privacy.rs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// `user` in every output record and statement becomes HMAC-SHA-256(key, number), hex.
    #[serde(default)]
    pub hash_users: bool,
    /// A file holding the key (its bytes; one trailing newline is not part of it).
    /// `WABILL_USER_HASH_KEY` wins over it. The key itself is never a config value.
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

/// The environment variable holding the user hash key (wins over `[privacy] key_file`).
pub const USER_HASH_KEY_ENV: &str = "WABILL_USER_HASH_KEY";

impl PrivacyConfig {
    /// The hasher when `hash_users` is on: the key from `WABILL_USER_HASH_KEY` (its
    /// bytes as given), else from `key_file` (its bytes, one trailing `\n` or `\r\n`
    /// removed). On with no key, or an empty one, is an error: never a silent fallback
    /// to numbers in the output.
    pub fn user_hasher(&self, env: impl Fn(&str) -> Option<String>) -> Result<Option<UserHasher>, ConfigError> {
        if !self.hash_users {
            return Ok(None);
        }
        let (key, from) = match (env(USER_HASH_KEY_ENV), &self.key_file) {
            (Some(k), _) => (k.into_bytes(), USER_HASH_KEY_ENV.to_string()),
            (None, Some(path)) => {
                let p = path.display().to_string();
                let mut bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                (bytes, format!("[privacy] key_file {p}"))
            }
            (None, None) => return Err(ConfigError::NoUserHashKey),
        };
        UserHasher::new(&key)
            .map(Some)
            .ok_or(ConfigError::EmptyUserHashKey { from })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of /metrics, /healthz, /readyz.
    #[serde(default = "default_http_addr")]
    pub addr: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: default_http_addr(),
        }
    }
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_prefix() -> String {
    "wabill".into()
}
fn default_partitions() -> i32 {
    8
}
fn default_replication() -> i32 {
    1
}
fn default_batch_max() -> usize {
    // Measured: 50 k records per batch gives 3.5x the throughput of 5 k (fewer flush
    // round trips, more changelog keys coalesced) and still persists in well under a
    // second, far inside max.poll.interval.ms (BENCHMARKS.md).
    50_000
}
fn default_idle_flush_ms() -> u64 {
    5000
}
fn default_state_dir() -> String {
    "./wabill-state".into()
}
fn default_http_addr() -> String {
    "127.0.0.1:9464".into()
}

impl Default for Config {
    fn default() -> Self {
        // An empty TOML document always deserialises (every key has a default).
        toml::from_str("").unwrap_or_else(|_| unreachable!("empty config parses"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WabaConfig {
    pub id: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub markup_percent: Option<String>,
    #[serde(default)]
    pub free_tier: Option<u32>,
    #[serde(default)]
    pub currency: Option<String>,
    /// First WABA-local day on which authentication templates to users abroad open
    /// `authentication_international` conversations (docs/billing-rules.md §4 rule 3), `YYYY-MM-DD`.
    #[serde(default)]
    pub auth_international_from: Option<String>,
    /// Countries (ISO 3166 alpha-2) whose users never get authentication-international
    /// rates from this WABA: its own country.
    #[serde(default)]
    pub auth_international_exclude: Vec<String>,
    /// Business portfolio the WABA belongs to: volume tiers count across a portfolio's
    /// WABAs (docs/billing-rules.md §5 rule 5). Default: the WABA's own id.
    #[serde(default)]
    pub portfolio: Option<String>,
    /// `pmp-2026-10`: service messages free per business number and WABA-local month
    /// (docs/billing-rules.md §5 rule 3). Default 1000; 0 turns it off.
    #[serde(default)]
    pub service_free_tier: Option<u32>,
}

/// Payloads without the Cloud API envelope carry no WABA or number: they come from here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPremisesConfig {
    pub waba_id: String,
    pub phone_number_id: String,
}

fn default_lateness() -> u64 {
    DEFAULT_LATENESS_SECS
}
fn default_max_payload() -> usize {
    DEFAULT_MAX_PAYLOAD_BYTES
}
fn default_dedupe_horizon() -> u64 {
    DEFAULT_DEDUPE_HORIZON_SECS
}
fn default_cache_entries() -> usize {
    1 << 20
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: String, source: toml::de::Error },
    #[error("waba {id}: time_zone {tz:?} is not an IANA time zone")]
    TimeZone { id: String, tz: String },
    #[error("waba {id}: markup_percent {value:?} is not a decimal")]
    Markup { id: String, value: String },
    #[error("waba {id}: currency {currency:?} has no rows in the rate card")]
    NoCard { id: String, currency: String },
    #[error("waba {0} is configured twice")]
    Duplicate(String),
    #[error("environment {key}={value:?} is not a number")]
    Env { key: String, value: String },
    #[error("environment {key}: {reason}")]
    EnvValue { key: String, reason: String },
    #[error("dedupe_horizon_secs must be at least 36 h (Meta retries for 36 h)")]
    HorizonTooShort,
    #[error("waba {id}: auth_international_from {value:?} is not a date (YYYY-MM-DD)")]
    AuthInternationalFrom { id: String, value: String },
    #[error("waba {0}: portfolio is empty (leave it out to use the WABA's own id)")]
    Portfolio(String),
    #[error("waba {id}: auth_international_exclude entry {value:?} is not an ISO 3166 alpha-2 country code")]
    AuthInternationalExclude { id: String, value: String },
    #[error("[privacy] hash_users = true needs a key: set WABILL_USER_HASH_KEY or [privacy] key_file")]
    NoUserHashKey,
    #[error("the user hash key ({from}) is empty")]
    EmptyUserHashKey { from: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Toml { path: p, source })
    }

    /// Environment overrides (`WABILL_...`), applied after the file and before flags.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let num = |k: &str, v: String| -> Result<i64, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                key: k.to_string(),
                value: v,
            })
        };
        if let Some(v) = env("WABILL_KAFKA_BROKERS") {
            self.kafka.brokers = v;
        }
        if let Some(v) = env("WABILL_KAFKA_PREFIX") {
            self.kafka.prefix = v;
        }
        if let Some(v) = env("WABILL_KAFKA_PARTITIONS") {
            self.kafka.partitions = num("WABILL_KAFKA_PARTITIONS", v)? as i32;
        }
        if let Some(v) = env("WABILL_PROCESSING_GUARANTEE") {
            self.kafka.processing_guarantee = v.parse().map_err(|reason| ConfigError::EnvValue {
                key: "WABILL_PROCESSING_GUARANTEE".into(),
                reason,
            })?;
        }
        if let Some(v) = env("WABILL_STATE_DIR") {
            self.state.dir = v;
        }
        if let Some(v) = env("WABILL_SCHEMA_REGISTRY_URL") {
            self.schema_registry.url = Some(v);
        }
        if let Some(v) = env("WABILL_SCHEMA_REGISTRY_BASIC_AUTH") {
            self.schema_registry.basic_auth_user_info = Some(Secret::new(v));
        }
        if let Some(v) = env("WABILL_SCHEMA_REGISTRY_CA_FILE") {
            self.schema_registry.ca_file = Some(v.into());
        }
        if let Some(v) = env("WABILL_HTTP_ADDR") {
            self.http.addr = v;
        }
        if let Some(v) = env("WABILL_ALLOWED_LATENESS_SECS") {
            self.allowed_lateness_secs = num("WABILL_ALLOWED_LATENESS_SECS", v)? as u64;
        }
        if let Some(v) = env("WABILL_IDLE_FLUSH_MS") {
            self.kafka.idle_flush_ms = num("WABILL_IDLE_FLUSH_MS", v)? as u64;
        }
        Ok(())
    }

    pub fn on_premises(&self) -> Option<OnPremises> {
        self.on_premises.as_ref().map(|o| OnPremises {
            waba_id: o.waba_id.clone(),
            phone_number_id: o.phone_number_id.clone(),
        })
    }

    /// Validates per-WABA settings against the rate card: a WABA whose currency has no
    /// card is a start-up error, not a run of unpriced conversations.
    pub fn profiles(&self, card: &RateCard) -> Result<Profiles, ConfigError> {
        if self.dedupe_horizon_secs < 36 * 3600 {
            return Err(ConfigError::HorizonTooShort);
        }
        let mut by_id = rustc_hash::FxHashMap::default();
        for w in &self.waba {
            let tz_name = w.time_zone.clone().unwrap_or_else(|| "UTC".into());
            let tz = Tz::from_str(&tz_name).map_err(|_| ConfigError::TimeZone {
                id: w.id.clone(),
                tz: tz_name.clone(),
            })?;
            let markup = match &w.markup_percent {
                None => Decimal::ZERO,
                Some(v) => Decimal::from_str(v.trim()).map_err(|_| ConfigError::Markup {
                    id: w.id.clone(),
                    value: v.clone(),
                })?,
            };
            let currency = w
                .currency
                .clone()
                .unwrap_or_else(|| DEFAULT_CURRENCY.into())
                .to_ascii_uppercase();
            if !card.has_currency(&currency) {
                return Err(ConfigError::NoCard {
                    id: w.id.clone(),
                    currency,
                });
            }
            let auth_international_from = match &w.auth_international_from {
                None => None,
                Some(v) => Some(crate::billing::time::local_midnight(
                    &tz,
                    chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").map_err(|_| {
                        ConfigError::AuthInternationalFrom {
                            id: w.id.clone(),
                            value: v.clone(),
                        }
                    })?,
                )),
            };
            let auth_international_exclude = w
                .auth_international_exclude
                .iter()
                .map(|c| {
                    Country::new(&c.trim().to_ascii_uppercase()).ok_or_else(|| ConfigError::AuthInternationalExclude {
                        id: w.id.clone(),
                        value: c.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let portfolio = match w.portfolio.as_deref().map(str::trim) {
                None => w.id.clone(),
                Some("") => return Err(ConfigError::Portfolio(w.id.clone())),
                Some(p) => p.to_string(),
            };
            let p = WabaProfile {
                id: w.id.clone(),
                portfolio,
                service_free_tier: w.service_free_tier.unwrap_or(DEFAULT_SERVICE_FREE_TIER),
                time_zone: tz,
                calendar: EraCalendar::new(&tz),
                markup_percent: markup,
                free_tier: w.free_tier.unwrap_or(DEFAULT_FREE_TIER),
                currency,
                auth_international_from,
                auth_international_exclude,
            };
            if by_id.insert(w.id.clone(), Arc::new(p)).is_some() {
                return Err(ConfigError::Duplicate(w.id.clone()));
            }
        }
        Ok(Profiles {
            by_id,
            default: Arc::new(WabaProfile::default_for("")),
        })
    }
}

/// A WABA's billing settings, resolved once.
#[derive(Debug, Clone)]
pub struct WabaProfile {
    pub id: String,
    /// The business portfolio (the WABA's own id unless configured; empty in the shared
    /// default profile: use `Profiles::portfolio_of`).
    pub portfolio: String,
    /// Free service messages per business number and month in `pmp-2026-10`.
    pub service_free_tier: u32,
    pub time_zone: Tz,
    pub calendar: EraCalendar,
    pub markup_percent: Decimal,
    pub free_tier: u32,
    pub currency: String,
    /// docs/billing-rules.md §4 rule 3: the instant (WABA-local midnight) from which authentication
    /// templates to users abroad bill as international; `None`: never.
    pub auth_international_from: Option<crate::billing::Ts>,
    pub auth_international_exclude: Vec<Country>,
}

impl WabaProfile {
    /// The WABA's part of docs/billing-rules.md §4 rule 3 at `ts` for a user of `country` (the rate card's
    /// part is asked by the caller).
    pub fn auth_international_applies(&self, ts: crate::billing::Ts, country: Country) -> bool {
        self.auth_international_from.is_some_and(|from| ts >= from)
            && !self.auth_international_exclude.contains(&country)
    }

    pub fn default_for(id: &str) -> Self {
        WabaProfile {
            id: id.to_string(),
            portfolio: id.to_string(),
            service_free_tier: DEFAULT_SERVICE_FREE_TIER,
            time_zone: chrono_tz::UTC,
            calendar: EraCalendar::new(&chrono_tz::UTC),
            markup_percent: Decimal::ZERO,
            free_tier: DEFAULT_FREE_TIER,
            currency: DEFAULT_CURRENCY.into(),
            auth_international_from: None,
            auth_international_exclude: Vec::new(),
        }
    }
}

/// WABAs not in the configuration get the defaults (UTC, USD, 1,000 free, no markup).
#[derive(Debug, Clone)]
pub struct Profiles {
    by_id: rustc_hash::FxHashMap<String, Arc<WabaProfile>>,
    default: Arc<WabaProfile>,
}

impl Profiles {
    pub fn get(&self, waba_id: &str) -> &WabaProfile {
        self.by_id.get(waba_id).map(|p| p.as_ref()).unwrap_or(&self.default)
    }

    /// The business portfolio of a WABA: configured, else the WABA's own id.
    pub fn portfolio_of<'a>(&'a self, waba_id: &'a str) -> &'a str {
        match self.by_id.get(waba_id) {
            Some(p) => &p.portfolio,
            None => waba_id,
        }
    }
    pub fn default_profiles() -> Profiles {
        Profiles {
            by_id: rustc_hash::FxHashMap::default(),
            default: Arc::new(WabaProfile::default_for("")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_specific() {
        let card = RateCard::bundled_sample().unwrap();
        let c: Config = toml::from_str("[[waba]]\nid='1'\ntime_zone='Mars/Base'\n").unwrap();
        assert!(matches!(c.profiles(&card), Err(ConfigError::TimeZone { .. })));
        let c: Config = toml::from_str("[[waba]]\nid='1'\ncurrency='EUR'\n").unwrap();
        assert!(matches!(c.profiles(&card), Err(ConfigError::NoCard { .. })));
        let c: Config = toml::from_str("[[waba]]\nid='1'\nmarkup_percent='x'\n").unwrap();
        assert!(matches!(c.profiles(&card), Err(ConfigError::Markup { .. })));
        assert!(
            toml::from_str::<Config>("allowed_latenes_secs = 3\n").is_err(),
            "typos are rejected"
        );
        let c = Config::default();
        assert_eq!(c.allowed_lateness_secs, 120);
        let c: Config = toml::from_str("[[waba]]\nid='1'\nauth_international_from='2024-02-30'\n").unwrap();
        assert!(matches!(
            c.profiles(&card),
            Err(ConfigError::AuthInternationalFrom { .. })
        ));
        let c: Config = toml::from_str("[[waba]]\nid='1'\nauth_international_exclude=['India']\n").unwrap();
        assert!(matches!(
            c.profiles(&card),
            Err(ConfigError::AuthInternationalExclude { .. })
        ));
    }

    #[test]
    fn auth_international_starts_at_local_midnight_and_excludes() {
        let card = RateCard::bundled_sample().unwrap();
        let c: Config = toml::from_str(
            "[[waba]]\nid='1'\ntime_zone='Asia/Kolkata'\nauth_international_from='2024-06-01'\nauth_international_exclude=['in']\n",
        )
        .unwrap();
        let p = c.profiles(&card).unwrap();
        let w = p.get("1");
        // 2024-06-01 00:00 in Kolkata (UTC+5:30) is 2024-05-31T18:30:00Z = 1 717 180 200.
        let br = Country::new("BR").unwrap();
        assert!(!w.auth_international_applies(1_717_180_199, br));
        assert!(w.auth_international_applies(1_717_180_200, br));
        assert!(!w.auth_international_applies(1_717_180_200, Country::new("IN").unwrap()));
        assert!(!p.get("other").auth_international_applies(1_717_180_200, br));
    }

    #[test]
    fn processing_guarantee_is_checked_at_load() {
        let c: Config = toml::from_str("[kafka]\nprocessing_guarantee = 'exactly_once'\n").unwrap();
        assert_eq!(c.kafka.processing_guarantee, ProcessingGuarantee::ExactlyOnce);
        assert!(c.kafka.exactly_once());
        let c: Config = toml::from_str("[kafka]\nprocessing_guarantee = 'effectively_once'\n").unwrap();
        assert!(!c.kafka.exactly_once());
        assert!(!Config::default().kafka.exactly_once(), "default: effectively_once");

        // A typo is a load error naming the key, through the same path as a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wabill.toml");
        std::fs::write(&path, "[kafka]\nprocessing_guarantee = \"exactly-once\"\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Toml { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("processing_guarantee"), "{text}");
        assert!(
            text.contains("exactly_once"),
            "the message lists the valid values: {text}"
        );

        // The environment override is checked the same way.
        let mut c = Config::default();
        let e = c
            .apply_env(|k| (k == "WABILL_PROCESSING_GUARANTEE").then(|| "exactlyonce".to_string()))
            .unwrap_err();
        assert!(matches!(e, ConfigError::EnvValue { .. }), "{e:?}");
        c.apply_env(|k| (k == "WABILL_PROCESSING_GUARANTEE").then(|| "exactly_once".to_string()))
            .unwrap();
        assert!(c.kafka.exactly_once());
    }

    #[test]
    fn user_hash_key_from_environment_or_file() {
        let user = "5511987654321";
        let no_env = |_: &str| None;
        let env = |v: &'static str| move |k: &str| (k == USER_HASH_KEY_ENV).then(|| v.to_string());

        // Off (the default): no hasher, no key needed, even with one in the environment.
        assert!(Config::default().privacy.user_hasher(no_env).unwrap().is_none());
        assert!(!Config::default().privacy.hash_users);
        let c: Config = toml::from_str("[privacy]\nhash_users = false\n").unwrap();
        assert!(c.privacy.user_hasher(env("k")).unwrap().is_none());

        // On without a key: a start-up error that says what to set.
        let c: Config = toml::from_str("[privacy]\nhash_users = true\n").unwrap();
        let e = c.privacy.user_hasher(no_env).unwrap_err();
        assert!(matches!(e, ConfigError::NoUserHashKey), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("WABILL_USER_HASH_KEY") && text.contains("key_file"),
            "{text}"
        );
        let e = c.privacy.user_hasher(env("")).unwrap_err();
        assert!(matches!(e, ConfigError::EmptyUserHashKey { .. }), "{e:?}");

        let from_env = c.privacy.user_hasher(env("s3cret")).unwrap().unwrap();
        let reference = UserHasher::new(b"s3cret").unwrap();
        assert_eq!(from_env.apply(user), reference.apply(user));

        // A key file: its bytes, one trailing newline (LF or CRLF) not part of the key.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("user-hash.key");
        let with_file = |contents: &[u8]| -> Config {
            std::fs::write(&file, contents).unwrap();
            toml::from_str(&format!(
                "[privacy]\nhash_users = true\nkey_file = '{}'\n",
                file.display()
            ))
            .unwrap()
        };
        for contents in [&b"s3cret"[..], b"s3cret\n", b"s3cret\r\n"] {
            let h = with_file(contents).privacy.user_hasher(no_env).unwrap().unwrap();
            assert_eq!(h.apply(user), reference.apply(user), "{contents:?}");
        }
        let h = with_file(b"s3cret\n\n").privacy.user_hasher(no_env).unwrap().unwrap();
        assert_ne!(h.apply(user), reference.apply(user), "only one newline is trimmed");
        let c = with_file(b"file-key\n");
        let h = c.privacy.user_hasher(env("s3cret")).unwrap().unwrap();
        assert_eq!(
            h.apply(user),
            reference.apply(user),
            "the environment wins over the file"
        );
        let e = with_file(b"\n").privacy.user_hasher(no_env).unwrap_err();
        assert!(matches!(e, ConfigError::EmptyUserHashKey { .. }), "{e:?}");
        assert!(e.to_string().contains("key_file"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let e = c.privacy.user_hasher(no_env).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");

        // The key itself is not a config value (it would end up in files and `Debug`).
        assert!(toml::from_str::<Config>("[privacy]\nhash_users = true\nkey = 'x'\n").is_err());
    }

    #[test]
    fn registry_credentials_from_file_or_environment() {
        let mut c: Config = toml::from_str(
            "[schema_registry]\nurl = 'https://r:8081'\nbasic_auth_user_info = 'key:file-secret'\nca_file = '/etc/ca.pem'\n",
        )
        .unwrap();
        let auth = c.schema_registry.basic_auth_user_info.clone().unwrap();
        assert_eq!(auth.expose(), "key:file-secret");
        assert!(
            !format!("{c:?}").contains("file-secret"),
            "Debug must not print the secret"
        );
        c.apply_env(|k| (k == "WABILL_SCHEMA_REGISTRY_BASIC_AUTH").then(|| "key:env-secret".to_string()))
            .unwrap();
        let auth = c.schema_registry.basic_auth_user_info.clone().unwrap();
        assert_eq!(auth.expose(), "key:env-secret", "the environment wins");
        let mut c = Config::default();
        c.apply_env(|k| (k == "WABILL_SCHEMA_REGISTRY_BASIC_AUTH").then(|| "k:s".to_string()))
            .unwrap();
        assert_eq!(
            c.schema_registry.basic_auth_user_info.unwrap().expose(),
            "k:s",
            "or fills in"
        );
    }
}

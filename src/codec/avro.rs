//! Avro binary encoding of the four Kafka records (schemas/*.avsc), written by hand.
//!
//! apache-avro's generic `Value` path allocates a tree per record and resolves the schema
//! on every call, which is far too slow for the events topic (the target is ≥ 500 k
//! records/s per core). The encoders and decoders here write and read the Avro binary
//! encoding directly — zig-zag varints for `int`/`long`, length-prefixed `string`/`bytes`,
//! a branch index for unions, a symbol index for enums, fields in schema order — and are
//! cross-checked against apache-avro in `tests/avro.rs`. apache-avro is used only once, to
//! parse the bundled schemas and compute their fingerprints.
//!
//! Framing (the bytes before the Avro body):
//! - **single-object encoding** (Avro spec): `C3 01`, then the 8-byte little-endian
//!   CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form;
//! - **Confluent wire format**: `00`, then the 4-byte big-endian schema registry id.
//!
//! Decoders accept both. A single-object record must carry the fingerprint of the schema
//! its decoder is for; a Confluent id is accepted as is (mapping ids to schemas is the
//! registry's business). Decoding never panics on bad input: every fault is a
//! [`CodecError`].
//!
//! Schema evolution is backward compatible only: new fields must have defaults, fields are
//! never removed or renamed, and readers decode with the writer's schema (found in the
//! registry, or by fingerprint). These hand-written decoders read the current version of
//! each schema and every earlier one (`schemas/history/`): as versions only append fields
//! with defaults, an earlier version's record is the current one cut short, and a decoder
//! reads an appended field only when bytes remain (the Confluent framing carries no
//! fingerprint, so this is also how a Confluent reader tells the versions apart).

use std::io::Write as _;
use std::sync::OnceLock;

use apache_avro::rabin::Rabin;
use apache_avro::Schema;
use chrono::{DateTime, NaiveDateTime};
use rust_decimal::Decimal;
use thiserror::Error;

use crate::billing::time::format_ts;
use crate::billing::{Country, EraId, MessageCategory, MessageKind, MessagePricing, Origin, PricingType, Ts};
use crate::ingest::{EventKind, MessageEvent, MetaPricing, Referral, StatusKind};
use crate::pipeline::{Billed, ConversationBilled, ConversationOpened, MessageCharged, MessageDelivered, Unit};

/// First two bytes of an Avro single-object encoded record.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// First byte of a Confluent wire-format record.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// Header lengths of the two framings.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// The records wabill writes to Kafka, one schema each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// `io.wabill.v1.MessageEvent` (events topic).
    MessageEvent,
    /// `io.wabill.v1.ConversationOpened` (conversations topic).
    ConversationOpened,
    /// `io.wabill.v1.ConversationBilled` (billing topic, docs/billing-rules.md §10).
    ConversationBilled,
    /// `io.wabill.v1.DeadLetter` (dead-letter topic).
    DeadLetter,
    /// `io.wabill.v1.MessageDelivered` (conversations topic, per-message eras).
    MessageDelivered,
    /// `io.wabill.v1.MessageCharged` (billing topic, docs/billing-rules.md §10).
    MessageCharged,
}

impl RecordKind {
    pub const ALL: [RecordKind; 6] = [
        RecordKind::MessageEvent,
        RecordKind::ConversationOpened,
        RecordKind::ConversationBilled,
        RecordKind::DeadLetter,
        RecordKind::MessageDelivered,
        RecordKind::MessageCharged,
    ];

    fn index(self) -> usize {
        match self {
            RecordKind::MessageEvent => 0,
            RecordKind::ConversationOpened => 1,
            RecordKind::ConversationBilled => 2,
            RecordKind::DeadLetter => 3,
            RecordKind::MessageDelivered => 4,
            RecordKind::MessageCharged => 5,
        }
    }

    /// Full Avro name of the record schema.
    pub fn full_name(self) -> &'static str {
        match self {
            RecordKind::MessageEvent => "io.wabill.v1.MessageEvent",
            RecordKind::ConversationOpened => "io.wabill.v1.ConversationOpened",
            RecordKind::ConversationBilled => "io.wabill.v1.ConversationBilled",
            RecordKind::DeadLetter => "io.wabill.v1.DeadLetter",
            RecordKind::MessageDelivered => "io.wabill.v1.MessageDelivered",
            RecordKind::MessageCharged => "io.wabill.v1.MessageCharged",
        }
    }

    /// The schema file's text (with docs), as registered in a schema registry.
    pub fn schema_text(self) -> &'static str {
        match self {
            RecordKind::MessageEvent => include_str!("../../schemas/message_event.avsc"),
            RecordKind::ConversationOpened => {
                include_str!("../../schemas/conversation_opened.avsc")
            }
            RecordKind::ConversationBilled => {
                include_str!("../../schemas/conversation_billed.avsc")
            }
            RecordKind::DeadLetter => include_str!("../../schemas/dead_letter.avsc"),
            RecordKind::MessageDelivered => include_str!("../../schemas/message_delivered.avsc"),
            RecordKind::MessageCharged => include_str!("../../schemas/message_charged.avsc"),
        }
    }

    /// The schema parsed by apache-avro (for generic readers and tools).
    pub fn schema(self) -> &'static Schema {
        &info(self).schema
    }

    /// Parsing Canonical Form of the schema (what the fingerprint is taken of).
    pub fn canonical_form(self) -> &'static str {
        &info(self).canonical
    }

    /// CRC-64-AVRO (Rabin) fingerprint of the Parsing Canonical Form, as a number; the
    /// single-object header carries it little-endian.
    pub fn fingerprint(self) -> u64 {
        info(self).fingerprint
    }

    /// The record kind whose current schema has this fingerprint.
    pub fn from_fingerprint(fp: u64) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.fingerprint() == fp)
    }

    /// Whether `fp` is the fingerprint of this kind's current schema or of an earlier
    /// version its decoder reads.
    pub fn reads_fingerprint(self, fp: u64) -> bool {
        fp == self.fingerprint() || history_fingerprints(self).contains(&fp)
    }
}

/// Earlier versions of a record's schema (oldest first) whose records the decoders still
/// read: state journals, topics and registries may hold them after an upgrade.
fn history(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::MessageEvent => &[include_str!("../../schemas/history/message_event.v1.avsc")],
        _ => &[],
    }
}

/// Fingerprints of `history(kind)`.
fn history_fingerprints(kind: RecordKind) -> &'static [u64] {
    static FPS: OnceLock<Vec<Vec<u64>>> = OnceLock::new();
    let all = FPS.get_or_init(|| {
        RecordKind::ALL
            .iter()
            .map(|k| {
                history(*k)
                    .iter()
                    .map(|text| {
                        // Bundled constants checked by the unit tests: a failure is a build defect.
                        let schema = Schema::parse_str(text).unwrap_or_else(|e| {
                            panic!("bundled Avro schema history of {} is invalid: {e}", k.full_name())
                        });
                        rabin_u64(&schema)
                    })
                    .collect()
            })
            .collect()
    });
    &all[kind.index()]
}

fn rabin_u64(schema: &Schema) -> u64 {
    let fp = schema.fingerprint::<Rabin>();
    let mut le = [0u8; 8];
    for (d, s) in le.iter_mut().zip(fp.bytes.iter()) {
        *d = *s;
    }
    u64::from_le_bytes(le)
}

/// The text of a bundled schema (`schemas/*.avsc`).
pub fn schema_text(kind: RecordKind) -> &'static str {
    kind.schema_text()
}

struct SchemaInfo {
    schema: Schema,
    canonical: String,
    fingerprint: u64,
}

fn info(kind: RecordKind) -> &'static SchemaInfo {
    static SCHEMAS: OnceLock<Vec<SchemaInfo>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        RecordKind::ALL
            .iter()
            .map(|k| {
                // The schemas are compile-time constants checked by the unit tests, so a
                // failure here is a build defect, not bad input.
                let schema = Schema::parse_str(k.schema_text())
                    .unwrap_or_else(|e| panic!("bundled Avro schema {} is invalid: {e}", k.full_name()));
                let canonical = schema.canonical_form();
                let fingerprint = rabin_u64(&schema);
                SchemaInfo {
                    schema,
                    canonical,
                    fingerprint,
                }
            })
            .collect()
    });
    &all[kind.index()]
}

/// How an encoded record is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Avro single-object encoding: `C3 01` + 8-byte little-endian Rabin fingerprint.
    SingleObject,
    /// Confluent wire format: `00` + 4-byte big-endian schema registry id.
    Confluent { schema_id: u32 },
}

/// The framing found at the start of an encoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    SingleObject { fingerprint: u64 },
    Confluent { schema_id: u32 },
}

impl Header {
    /// Bytes the header takes before the Avro body.
    pub fn size(self) -> usize {
        match self {
            Header::SingleObject { .. } => SINGLE_OBJECT_HEADER_LEN,
            Header::Confluent { .. } => CONFLUENT_HEADER_LEN,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("empty record: expected an Avro single-object header (c3 01) or a Confluent header (00)")]
    Empty,
    #[error("bad magic bytes {found:02x?}: expected an Avro single-object header (c3 01) or a Confluent header (00)")]
    BadMagic { found: Vec<u8> },
    #[error("truncated record: {what} needs {needed} byte(s) at offset {at}, only {available} left")]
    Truncated {
        what: &'static str,
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("unknown schema fingerprint {found:016x} (as bytes {found_le:02x?}): expected {expected} (fingerprint {expected_fingerprint:016x})")]
    UnknownFingerprint {
        found: u64,
        found_le: [u8; 8],
        expected: &'static str,
        expected_fingerprint: u64,
    },
    #[error("schema fingerprint {found:016x} is that of {actual}, not of {expected}")]
    WrongSchema {
        found: u64,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("field {field}: malformed varint at offset {at} (longer than {max} bytes or overflowing)")]
    BadVarint { field: &'static str, at: usize, max: usize },
    #[error("field {field}: negative length {len}")]
    NegativeLength { field: &'static str, len: i64 },
    #[error("field {field}: value {value} does not fit an Avro int")]
    IntOutOfRange { field: &'static str, value: i64 },
    #[error("field {field}: invalid boolean byte {byte:#04x} (expected 0 or 1)")]
    InvalidBoolean { field: &'static str, byte: u8 },
    #[error("field {field}: invalid enum index {index} (the enum has {symbols} symbols)")]
    InvalidEnumIndex {
        field: &'static str,
        index: i64,
        symbols: usize,
    },
    #[error("field {field}: invalid union branch {index} (expected 0 = null or 1 = value)")]
    InvalidUnionIndex { field: &'static str, index: i64 },
    #[error("field {field}: invalid UTF-8 in string")]
    InvalidUtf8 { field: &'static str },
    #[error("field {field}: {value:?} is not an ISO 3166-1 alpha-2 country code (two upper-case letters)")]
    BadCountry { field: &'static str, value: String },
    #[error("field {field}: unknown era {value:?}")]
    BadEra { field: &'static str, value: String },
    #[error("field {field}: unknown message kind {value:?}")]
    BadMessageKind { field: &'static str, value: String },
    #[error("field {field}: unknown origin {value:?}")]
    BadOrigin { field: &'static str, value: String },
    #[error("field {field}: {value:?} is not an exact decimal number")]
    BadDecimal { field: &'static str, value: String },
    #[error("field {field}: {value:?} is not an RFC 3339 timestamp with whole seconds")]
    BadTimestamp { field: &'static str, value: String },
    #[error("{count} trailing byte(s) after the end of the {record} record")]
    TrailingBytes { record: &'static str, count: usize },
    #[error("field {field}: unknown {what} {value:?}")]
    BadSymbol {
        field: &'static str,
        what: &'static str,
        value: String,
    },
    #[error("schema registry id {id} is none of {expected}")]
    UnknownSchemaId { id: u32, expected: &'static str },
    #[error("schema fingerprint {found:016x} is none of {expected}")]
    NotOneOf { found: u64, expected: &'static str },
}

/// A record one stage could not process, as written to the dead-letter topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterRecord {
    /// `ingest`, `windows` or `ledger`.
    pub stage: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reason: String,
    /// The rejected record's value, byte for byte.
    pub original: Vec<u8>,
    /// The rejected record's key, when it had one.
    pub key: Option<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------
// Framing

/// Writes the framing header of `kind` to `out`.
pub fn write_header(kind: RecordKind, framing: &Framing, out: &mut Vec<u8>) {
    match framing {
        Framing::SingleObject => {
            out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
            out.extend_from_slice(&kind.fingerprint().to_le_bytes());
        }
        Framing::Confluent { schema_id } => {
            out.push(CONFLUENT_MAGIC);
            out.extend_from_slice(&schema_id.to_be_bytes());
        }
    }
}

/// Reads the framing header of an encoded record; returns it with the Avro body.
pub fn split_framing(bytes: &[u8]) -> Result<(Header, &[u8]), CodecError> {
    let truncated = |what, needed| CodecError::Truncated {
        what,
        at: 0,
        needed,
        available: bytes.len(),
    };
    match bytes {
        [] => Err(CodecError::Empty),
        [CONFLUENT_MAGIC, rest @ ..] => {
            let Some((id, body)) = rest.split_first_chunk::<4>() else {
                return Err(truncated("Confluent header", CONFLUENT_HEADER_LEN));
            };
            Ok((
                Header::Confluent {
                    schema_id: u32::from_be_bytes(*id),
                },
                body,
            ))
        }
        [0xC3] => Err(truncated("single-object header", SINGLE_OBJECT_HEADER_LEN)),
        [0xC3, 0x01, rest @ ..] => {
            let Some((fp, body)) = rest.split_first_chunk::<8>() else {
                return Err(truncated("single-object header", SINGLE_OBJECT_HEADER_LEN));
            };
            Ok((
                Header::SingleObject {
                    fingerprint: u64::from_le_bytes(*fp),
                },
                body,
            ))
        }
        _ => Err(CodecError::BadMagic {
            found: bytes.iter().take(2).copied().collect(),
        }),
    }
}

/// The Avro body of a record of `kind`, after checking its framing.
fn body_of(kind: RecordKind, bytes: &[u8]) -> Result<Reader<'_>, CodecError> {
    let (header, _) = split_framing(bytes)?;
    if let Header::SingleObject { fingerprint } = header {
        let expected = kind.fingerprint();
        if !kind.reads_fingerprint(fingerprint) {
            return Err(match RecordKind::from_fingerprint(fingerprint) {
                Some(actual) => CodecError::WrongSchema {
                    found: fingerprint,
                    actual: actual.full_name(),
                    expected: kind.full_name(),
                },
                None => CodecError::UnknownFingerprint {
                    found: fingerprint,
                    found_le: fingerprint.to_le_bytes(),
                    expected: kind.full_name(),
                    expected_fingerprint: expected,
                },
            });
        }
    }
    let current = match header {
        Header::SingleObject { fingerprint } => Some(fingerprint == kind.fingerprint()),
        Header::Confluent { .. } => None,
    };
    Ok(Reader {
        buf: bytes,
        pos: header.size(),
        current,
    })
}

// ---------------------------------------------------------------------------------------
// Primitive writers

#[inline]
fn varint(v: i64) -> ([u8; 10], usize) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut b = [0u8; 10];
    let mut i = 0;
    while n >= 0x80 {
        b[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    b[i] = n as u8;
    (b, i + 1)
}

#[inline]
fn put_long(out: &mut Vec<u8>, v: i64) {
    let (b, n) = varint(v);
    out.extend_from_slice(&b[..n]);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

#[inline]
fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(b as u8);
}

/// A string produced by `write` in place, then length-prefixed: no temporary `String`.
fn put_str_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let pos = out.len();
    out.push(0);
    write(out);
    let len = out.len() - pos - 1;
    if len < 64 {
        // zig-zag(len) < 128: one byte.
        out[pos] = (len as u8) << 1;
    } else {
        let (b, n) = varint(len as i64);
        out.splice(pos..pos + 1, b[..n].iter().copied());
    }
}

/// `money::to_output`: normalised, no trailing zeros, `0` for zero.
fn put_decimal(out: &mut Vec<u8>, d: Decimal) {
    put_str_with(out, |o| {
        let n = d.normalize();
        if n.is_zero() {
            o.push(b'0');
        } else {
            // Writing to a Vec cannot fail.
            let _ = write!(o, "{n}");
        }
    });
}

/// `time::format_ts`: `YYYY-MM-DDTHH:MM:SSZ`.
fn put_timestamp(out: &mut Vec<u8>, ts: Ts) {
    put_str_with(out, |o| write_rfc3339(o, ts));
}

fn write_rfc3339(o: &mut Vec<u8>, ts: Ts) {
    match crate::billing::time::rfc3339_fixed(ts) {
        Some(b) => o.extend_from_slice(&b),
        None => o.extend_from_slice(format_ts(ts).as_bytes()),
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses the exact shape `YYYY-MM-DDTHH:MM:SSZ`; `None` for anything else.
fn parse_rfc3339_fast(s: &[u8]) -> Option<Ts> {
    let b: &[u8; 20] = s.try_into().ok()?;
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Inverse of `time::format_ts`: RFC 3339 (any offset, whole seconds), the signed-year
/// form `format_ts` writes outside years 0000..=9999, or the `@<secs>` form it falls back
/// to for instants chrono cannot represent.
fn parse_timestamp(field: &'static str, s: &str) -> Result<Ts, CodecError> {
    if let Some(ts) = parse_rfc3339_fast(s.as_bytes()) {
        return Ok(ts);
    }
    let bad = || CodecError::BadTimestamp {
        field,
        value: excerpt(s),
    };
    if let Some(secs) = s.strip_prefix('@') {
        return secs.parse::<i64>().map_err(|_| bad());
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        if dt.timestamp_subsec_nanos() != 0 {
            return Err(bad());
        }
        return Ok(dt.timestamp());
    }
    // Years outside 0000..=9999, which `format_ts` writes with a sign (`-0001-...`,
    // `+10000-...`) and RFC 3339 cannot express.
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
        .map(|dt| dt.and_utc().timestamp())
        .map_err(|_| bad())
}

// ---------------------------------------------------------------------------------------
// Primitive reader

struct Reader<'a> {
    /// The whole record (header included), so errors give offsets into it.
    buf: &'a [u8],
    pos: usize,
    /// Which schema version wrote the record, as far as the framing says: `Some(true)`
    /// the current one (single-object, current fingerprint), `Some(false)` an earlier one
    /// (single-object, a history fingerprint), `None` unknown (Confluent framing).
    current: Option<bool>,
}

impl<'a> Reader<'a> {
    #[inline]
    fn long(&mut self, field: &'static str) -> Result<i64, CodecError> {
        let start = self.pos;
        let mut n: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(CodecError::Truncated {
                    what: field,
                    at: start,
                    needed: self.pos - start + 1,
                    available: self.buf.len() - start,
                });
            };
            self.pos += 1;
            // The 10th byte may only carry the 64th bit.
            if shift == 63 && b > 1 {
                return Err(CodecError::BadVarint {
                    field,
                    at: start,
                    max: 10,
                });
            }
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn int(&mut self, field: &'static str) -> Result<i32, CodecError> {
        let start = self.pos;
        let v = self.long(field)?;
        if self.pos - start > 5 {
            return Err(CodecError::BadVarint {
                field,
                at: start,
                max: 5,
            });
        }
        i32::try_from(v).map_err(|_| CodecError::IntOutOfRange { field, value: v })
    }

    #[inline]
    fn bool(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.buf.get(self.pos) {
            Some(0) => {
                self.pos += 1;
                Ok(false)
            }
            Some(1) => {
                self.pos += 1;
                Ok(true)
            }
            Some(&byte) => Err(CodecError::InvalidBoolean { field, byte }),
            None => Err(CodecError::Truncated {
                what: field,
                at: self.pos,
                needed: 1,
                available: 0,
            }),
        }
    }

    #[inline]
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.long(field)?;
        if len < 0 {
            return Err(CodecError::NegativeLength { field, len });
        }
        let available = self.buf.len() - self.pos;
        if len as u64 > available as u64 {
            return Err(CodecError::Truncated {
                what: field,
                at: self.pos,
                needed: usize::try_from(len).unwrap_or(usize::MAX),
                available,
            });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    #[inline]
    fn str(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map_err(|_| CodecError::InvalidUtf8 { field })
    }

    #[inline]
    fn string(&mut self, field: &'static str) -> Result<String, CodecError> {
        self.str(field).map(str::to_string)
    }

    fn enum_index(&mut self, field: &'static str, symbols: usize) -> Result<usize, CodecError> {
        let index = i64::from(self.int(field)?);
        if index < 0 || index as usize >= symbols {
            return Err(CodecError::InvalidEnumIndex { field, index, symbols });
        }
        Ok(index as usize)
    }

    /// `["null", T]`: whether the value branch follows.
    fn optional(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            index => Err(CodecError::InvalidUnionIndex { field, index }),
        }
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, CodecError> {
        Ok(if self.optional(field)? {
            Some(self.string(field)?)
        } else {
            None
        })
    }

    fn country(&mut self, field: &'static str) -> Result<Country, CodecError> {
        let s = self.str(field)?;
        Country::new(s).ok_or_else(|| CodecError::BadCountry {
            field,
            value: excerpt(s),
        })
    }

    fn era(&mut self, field: &'static str) -> Result<EraId, CodecError> {
        let s = self.str(field)?;
        EraId::parse(s).ok_or_else(|| CodecError::BadEra {
            field,
            value: excerpt(s),
        })
    }

    fn origin(&mut self, field: &'static str) -> Result<Origin, CodecError> {
        let s = self.str(field)?;
        parse_origin(s).ok_or_else(|| CodecError::BadOrigin {
            field,
            value: excerpt(s),
        })
    }

    fn decimal(&mut self, field: &'static str) -> Result<Decimal, CodecError> {
        let s = self.str(field)?;
        Decimal::from_str_exact(s).map_err(|_| CodecError::BadDecimal {
            field,
            value: excerpt(s),
        })
    }

    fn timestamp(&mut self, field: &'static str) -> Result<Ts, CodecError> {
        let s = self.str(field)?;
        parse_timestamp(field, s)
    }

    /// Whether to read a field appended by the current schema version: always for a
    /// record of the current version (a missing field is then a truncation error), never
    /// for one of an earlier version, and under the Confluent framing (which names no
    /// version) when bytes remain — an earlier version's record ends before the field.
    /// A string field holding one of a fixed set of spellings.
    fn symbol<T>(
        &mut self,
        field: &'static str,
        what: &'static str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<T, CodecError> {
        let s = self.str(field)?;
        parse(s).ok_or_else(|| CodecError::BadSymbol {
            field,
            what,
            value: excerpt(s),
        })
    }

    fn more(&self) -> bool {
        match self.current {
            Some(current) => current,
            None => self.pos < self.buf.len(),
        }
    }

    fn finish(self, record: &'static str) -> Result<(), CodecError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes { record, count }),
        }
    }
}

/// At most 64 characters of a bad value, for error messages (the value may be huge).
fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Exact wabill spelling first (the writers only emit those), then Meta's variants.
fn parse_origin(s: &str) -> Option<Origin> {
    Origin::ALL
        .into_iter()
        .find(|o| o.as_str() == s)
        .or_else(|| Origin::normalise(s))
}

// ---------------------------------------------------------------------------------------
// MessageEvent

const KIND_SYMBOLS: usize = 6;
const REFERRAL_SYMBOLS: usize = 3;

fn kind_index(kind: EventKind) -> (i64, i64) {
    match kind {
        EventKind::Inbound { referral } => (
            0,
            match referral {
                Referral::None => 0,
                Referral::Ad => 1,
                Referral::Other => 2,
            },
        ),
        EventKind::Status { status } => (
            match status {
                StatusKind::Sent => 1,
                StatusKind::Delivered => 2,
                StatusKind::Read => 3,
                StatusKind::Failed => 4,
            },
            0,
        ),
        EventKind::SendLog => (5, 0),
    }
}

/// Appends `ev` to `out`, framed. `meta: Some(MetaPricing::default())` (Meta sent a
/// pricing object with nothing usable in it) is written like `None`: all three
/// `meta_*` fields null.
pub fn encode_event(ev: &MessageEvent, framing: &Framing, out: &mut Vec<u8>) {
    out.reserve(
        SINGLE_OBJECT_HEADER_LEN
            + 40
            + ev.waba_id.len()
            + ev.phone_number_id.len()
            + ev.user.len()
            + ev.message_id.len()
            + ev.meta
                .as_ref()
                .and_then(|m| m.conversation_id.as_ref())
                .map_or(0, |c| c.len() + 24),
    );
    write_header(RecordKind::MessageEvent, framing, out);
    put_long(out, ev.ts);
    put_str(out, &ev.waba_id);
    put_str(out, &ev.phone_number_id);
    put_str(out, &ev.user);
    put_str(out, &ev.message_id);
    let (kind, referral) = kind_index(ev.kind);
    put_long(out, kind);
    put_long(out, referral);
    put_str(out, ev.country.as_str());
    put_bool(out, ev.number_valid);
    let meta = ev.meta.as_ref();
    match meta.and_then(|m| m.conversation_id.as_deref()) {
        Some(c) => {
            put_long(out, 1);
            put_str(out, c);
        }
        None => put_long(out, 0),
    }
    match meta.and_then(|m| m.origin) {
        Some(o) => {
            put_long(out, 1);
            put_str(out, o.as_str());
        }
        None => put_long(out, 0),
    }
    match meta.and_then(|m| m.billable) {
        Some(b) => {
            put_long(out, 1);
            put_bool(out, b);
        }
        None => put_long(out, 0),
    }
    match ev.message_kind {
        Some(k) => {
            put_long(out, 1);
            put_str(out, k.as_str());
        }
        None => put_long(out, 0),
    }
}

/// Decodes a framed `MessageEvent`. All three `meta_*` fields null gives `meta: None`.
/// `referral` is read only for inbound messages (statuses always carry `none`).
pub fn decode_event(bytes: &[u8]) -> Result<MessageEvent, CodecError> {
    let mut r = body_of(RecordKind::MessageEvent, bytes)?;
    let ts = r.long("ts")?;
    let waba_id = r.string("waba_id")?;
    let phone_number_id = r.string("phone_number_id")?;
    let user = r.string("user")?;
    let message_id = r.string("message_id")?;
    let kind_ix = r.enum_index("kind", KIND_SYMBOLS)?;
    let referral = match r.enum_index("referral", REFERRAL_SYMBOLS)? {
        0 => Referral::None,
        1 => Referral::Ad,
        _ => Referral::Other,
    };
    let kind = match kind_ix {
        0 => EventKind::Inbound { referral },
        1 => EventKind::Status {
            status: StatusKind::Sent,
        },
        2 => EventKind::Status {
            status: StatusKind::Delivered,
        },
        3 => EventKind::Status {
            status: StatusKind::Read,
        },
        4 => EventKind::Status {
            status: StatusKind::Failed,
        },
        _ => EventKind::SendLog,
    };
    let country = r.country("country")?;
    let number_valid = r.bool("number_valid")?;
    let conversation_id = r.opt_string("meta_conversation_id")?;
    let origin = if r.optional("meta_origin")? {
        Some(r.origin("meta_origin")?)
    } else {
        None
    };
    let billable = if r.optional("meta_billable")? {
        Some(r.bool("meta_billable")?)
    } else {
        None
    };
    // v2: appended with default null (a v1 record ends here).
    let message_kind = if r.more() && r.optional("message_kind")? {
        let s = r.str("message_kind")?;
        Some(MessageKind::parse(s).ok_or_else(|| CodecError::BadMessageKind {
            field: "message_kind",
            value: excerpt(s),
        })?)
    } else {
        None
    };
    r.finish(RecordKind::MessageEvent.full_name())?;
    let meta = (conversation_id.is_some() || origin.is_some() || billable.is_some()).then_some(MetaPricing {
        conversation_id,
        origin,
        billable,
    });
    Ok(MessageEvent {
        ts,
        waba_id,
        phone_number_id,
        user,
        message_id,
        kind,
        country,
        number_valid,
        meta,
        message_kind,
    })
}

// ---------------------------------------------------------------------------------------
// ConversationOpened

pub fn encode_opened(c: &ConversationOpened, framing: &Framing, out: &mut Vec<u8>) {
    out.reserve(
        SINGLE_OBJECT_HEADER_LEN
            + 64
            + c.conversation_id.len()
            + c.waba_id.len()
            + c.phone_number_id.len()
            + c.user.len()
            + c.opening_message_id.len(),
    );
    write_header(RecordKind::ConversationOpened, framing, out);
    put_str(out, &c.conversation_id);
    put_str(out, &c.waba_id);
    put_str(out, &c.phone_number_id);
    put_str(out, &c.user);
    put_str(out, c.era.as_str());
    put_str(out, c.origin.as_str());
    put_long(out, c.opened_at);
    put_long(out, c.expires_at);
    put_str(out, &c.opening_message_id);
    put_str(out, c.country.as_str());
    put_bool(out, c.late);
}

pub fn decode_opened(bytes: &[u8]) -> Result<ConversationOpened, CodecError> {
    let mut r = body_of(RecordKind::ConversationOpened, bytes)?;
    let c = ConversationOpened {
        conversation_id: r.string("conversation_id")?,
        waba_id: r.string("waba_id")?,
        phone_number_id: r.string("phone_number_id")?,
        user: r.string("user")?,
        era: r.era("era")?,
        origin: r.origin("origin")?,
        opened_at: r.long("opened_at")?,
        expires_at: r.long("expires_at")?,
        opening_message_id: r.string("opening_message_id")?,
        country: r.country("country")?,
        late: r.bool("late")?,
    };
    r.finish(RecordKind::ConversationOpened.full_name())?;
    Ok(c)
}

// ---------------------------------------------------------------------------------------
// ConversationBilled

/// Appends `b` to `out`, framed, with the docs/billing-rules.md §10 fields in contract order — the same
/// values as the JSON lines of `wabill replay` (`ConversationBilled::to_out`).
pub fn encode_billed(b: &ConversationBilled, framing: &Framing, out: &mut Vec<u8>) {
    let o = &b.opened;
    out.reserve(
        SINGLE_OBJECT_HEADER_LEN
            + 160
            + o.conversation_id.len()
            + o.waba_id.len()
            + o.phone_number_id.len()
            + o.user.len()
            + o.opening_message_id.len()
            + b.market.len(),
    );
    write_header(RecordKind::ConversationBilled, framing, out);
    put_str(out, &o.conversation_id);
    put_str(out, &o.waba_id);
    put_str(out, &o.phone_number_id);
    put_str(out, &o.user);
    put_str(out, o.era.as_str());
    put_str(out, o.origin.as_str());
    put_timestamp(out, o.opened_at);
    put_timestamp(out, o.expires_at);
    put_str(out, &b.month);
    put_str(out, &o.opening_message_id);
    put_str(out, o.country.as_str());
    put_str(out, &b.market);
    put_bool(out, b.free_tier);
    put_bool(out, b.billable);
    put_decimal(out, b.price);
    put_decimal(out, b.billed_price);
    put_str(out, &b.currency);
    put_bool(out, o.late);
}

pub fn decode_billed(bytes: &[u8]) -> Result<ConversationBilled, CodecError> {
    let mut r = body_of(RecordKind::ConversationBilled, bytes)?;
    let conversation_id = r.string("conversation_id")?;
    let waba_id = r.string("waba_id")?;
    let phone_number_id = r.string("phone_number_id")?;
    let user = r.string("user")?;
    let era = r.era("era")?;
    let origin = r.origin("origin")?;
    let opened_at = r.timestamp("opened_at")?;
    let expires_at = r.timestamp("expires_at")?;
    let month = r.string("month")?;
    let opening_message_id = r.string("opening_message_id")?;
    let country = r.country("country")?;
    let market = r.string("market")?;
    let free_tier = r.bool("free_tier")?;
    let billable = r.bool("billable")?;
    let price = r.decimal("price")?;
    let billed_price = r.decimal("billed_price")?;
    let currency = r.string("currency")?;
    let late = r.bool("late")?;
    r.finish(RecordKind::ConversationBilled.full_name())?;
    Ok(ConversationBilled {
        opened: ConversationOpened {
            conversation_id,
            waba_id,
            phone_number_id,
            user,
            era,
            origin,
            opened_at,
            expires_at,
            opening_message_id,
            country,
            late,
        },
        month,
        market,
        free_tier,
        billable,
        price,
        billed_price,
        currency,
    })
}

// ---------------------------------------------------------------------------------------
// MessageDelivered, MessageCharged, and the topics that carry two record kinds

pub fn encode_delivered(m: &MessageDelivered, framing: &Framing, out: &mut Vec<u8>) {
    out.reserve(
        SINGLE_OBJECT_HEADER_LEN
            + 64
            + m.charge_id.len()
            + m.waba_id.len()
            + m.phone_number_id.len()
            + m.user.len()
            + m.message_id.len(),
    );
    write_header(RecordKind::MessageDelivered, framing, out);
    put_str(out, &m.charge_id);
    put_str(out, &m.waba_id);
    put_str(out, &m.phone_number_id);
    put_str(out, &m.user);
    put_str(out, m.era.as_str());
    put_str(out, &m.message_id);
    put_long(out, m.delivered_at);
    put_str(out, m.country.as_str());
    put_str(out, m.category.as_str());
    put_str(out, m.pricing.as_str());
    put_bool(out, m.late);
}

pub fn decode_delivered(bytes: &[u8]) -> Result<MessageDelivered, CodecError> {
    let mut r = body_of(RecordKind::MessageDelivered, bytes)?;
    let m = MessageDelivered {
        charge_id: r.string("charge_id")?,
        waba_id: r.string("waba_id")?,
        phone_number_id: r.string("phone_number_id")?,
        user: r.string("user")?,
        era: r.era("era")?,
        message_id: r.string("message_id")?,
        delivered_at: r.long("delivered_at")?,
        country: r.country("country")?,
        category: r.symbol("category", "message category", MessageCategory::parse)?,
        pricing: r.symbol("pricing", "message pricing", MessagePricing::parse)?,
        late: r.bool("late")?,
    };
    r.finish(RecordKind::MessageDelivered.full_name())?;
    Ok(m)
}

/// Appends `c` to `out`, framed, with the docs/billing-rules.md §10 fields in contract
/// order — the same values as the JSON lines of `wabill replay` (`MessageCharged::to_out`).
pub fn encode_charged(c: &MessageCharged, framing: &Framing, out: &mut Vec<u8>) {
    let m = &c.delivered;
    out.reserve(
        SINGLE_OBJECT_HEADER_LEN
            + 160
            + m.charge_id.len()
            + m.waba_id.len()
            + c.portfolio.len()
            + m.phone_number_id.len()
            + m.user.len()
            + m.message_id.len()
            + c.market.len(),
    );
    write_header(RecordKind::MessageCharged, framing, out);
    put_str(out, &m.charge_id);
    put_str(out, &m.waba_id);
    put_str(out, &c.portfolio);
    put_str(out, &m.phone_number_id);
    put_str(out, &m.user);
    put_str(out, m.era.as_str());
    put_str(out, &m.message_id);
    put_timestamp(out, m.delivered_at);
    put_str(out, &c.month);
    put_str(out, m.category.as_str());
    put_str(out, c.pricing_type.as_str());
    match &c.tier {
        None => put_long(out, 0),
        Some(t) => {
            put_long(out, 1);
            put_str(out, t);
        }
    }
    put_str(out, m.country.as_str());
    put_str(out, &c.market);
    put_bool(out, c.billable);
    put_decimal(out, c.price);
    put_decimal(out, c.billed_price);
    put_str(out, &c.currency);
    put_bool(out, m.late);
}

/// Decodes a `MessageCharged`. The record does not carry the windows stage's `pricing`;
/// it reads back as what the charge shows (`regular` → `Charged`, a free type → `Free`).
pub fn decode_charged(bytes: &[u8]) -> Result<MessageCharged, CodecError> {
    let mut r = body_of(RecordKind::MessageCharged, bytes)?;
    let charge_id = r.string("charge_id")?;
    let waba_id = r.string("waba_id")?;
    let portfolio = r.string("portfolio")?;
    let phone_number_id = r.string("phone_number_id")?;
    let user = r.string("user")?;
    let era = r.era("era")?;
    let message_id = r.string("message_id")?;
    let delivered_at = r.timestamp("delivered_at")?;
    let month = r.string("month")?;
    let category = r.symbol("category", "message category", MessageCategory::parse)?;
    let pricing_type = r.symbol("pricing_type", "pricing type", PricingType::parse)?;
    let tier = r.opt_string("tier")?;
    let country = r.country("country")?;
    let market = r.string("market")?;
    let billable = r.bool("billable")?;
    let price = r.decimal("price")?;
    let billed_price = r.decimal("billed_price")?;
    let currency = r.string("currency")?;
    let late = r.bool("late")?;
    r.finish(RecordKind::MessageCharged.full_name())?;
    Ok(MessageCharged {
        delivered: MessageDelivered {
            charge_id,
            waba_id,
            phone_number_id,
            user,
            era,
            message_id,
            delivered_at,
            country,
            category,
            pricing: match pricing_type {
                PricingType::Regular => MessagePricing::Charged,
                t => MessagePricing::Free(t),
            },
            late,
        },
        portfolio,
        month,
        market,
        pricing_type,
        tier,
        billable,
        price,
        billed_price,
        currency,
    })
}

/// Which of `kinds` a framed record is: by its fingerprint (single-object framing, current
/// or history schema), or by `by_schema_id` (Confluent framing: the registry ids the
/// caller resolved; the bytes alone cannot say).
pub fn kind_among(
    bytes: &[u8],
    kinds: &[RecordKind],
    expected: &'static str,
    by_schema_id: &dyn Fn(u32) -> Option<RecordKind>,
) -> Result<RecordKind, CodecError> {
    let (header, _) = split_framing(bytes)?;
    let found = match header {
        Header::SingleObject { fingerprint } => kinds
            .iter()
            .copied()
            .find(|k| k.reads_fingerprint(fingerprint))
            .ok_or(CodecError::NotOneOf {
                found: fingerprint,
                expected,
            })?,
        Header::Confluent { schema_id } => {
            by_schema_id(schema_id)
                .filter(|k| kinds.contains(k))
                .ok_or(CodecError::UnknownSchemaId {
                    id: schema_id,
                    expected,
                })?
        }
    };
    Ok(found)
}

/// A unit on the conversations topic (or in the ledger's journal).
pub fn encode_unit(u: &Unit, conversation: &Framing, message: &Framing, out: &mut Vec<u8>) {
    match u {
        Unit::Conversation(c) => encode_opened(c, conversation, out),
        Unit::Message(m) => encode_delivered(m, message, out),
    }
}

pub fn decode_unit(bytes: &[u8], by_schema_id: &dyn Fn(u32) -> Option<RecordKind>) -> Result<Unit, CodecError> {
    let kinds = [RecordKind::ConversationOpened, RecordKind::MessageDelivered];
    match kind_among(bytes, &kinds, "ConversationOpened or MessageDelivered", by_schema_id)? {
        RecordKind::MessageDelivered => decode_delivered(bytes).map(Unit::Message),
        _ => decode_opened(bytes).map(Unit::Conversation),
    }
}

/// A record on the billing topic.
pub fn encode_billing(b: &Billed, conversation: &Framing, message: &Framing, out: &mut Vec<u8>) {
    match b {
        Billed::Conversation(c) => encode_billed(c, conversation, out),
        Billed::Message(m) => encode_charged(m, message, out),
    }
}

pub fn decode_billing(bytes: &[u8], by_schema_id: &dyn Fn(u32) -> Option<RecordKind>) -> Result<Billed, CodecError> {
    let kinds = [RecordKind::ConversationBilled, RecordKind::MessageCharged];
    match kind_among(bytes, &kinds, "ConversationBilled or MessageCharged", by_schema_id)? {
        RecordKind::MessageCharged => decode_charged(bytes).map(Billed::Message),
        _ => decode_billed(bytes).map(Billed::Conversation),
    }
}

/// For single-object framed records, which need no registry.
pub fn no_registry(_schema_id: u32) -> Option<RecordKind> {
    None
}

// ---------------------------------------------------------------------------------------
// DeadLetter

pub fn encode_dead_letter(d: &DeadLetterRecord, framing: &Framing, out: &mut Vec<u8>) {
    out.reserve(
        SINGLE_OBJECT_HEADER_LEN
            + 40
            + d.stage.len()
            + d.source_topic.len()
            + d.reason.len()
            + d.original.len()
            + d.key.as_ref().map_or(0, Vec::len),
    );
    write_header(RecordKind::DeadLetter, framing, out);
    put_str(out, &d.stage);
    put_str(out, &d.source_topic);
    put_long(out, i64::from(d.source_partition));
    put_long(out, d.source_offset);
    put_str(out, &d.reason);
    put_bytes(out, &d.original);
    match &d.key {
        Some(k) => {
            put_long(out, 1);
            put_bytes(out, k);
        }
        None => put_long(out, 0),
    }
}

pub fn decode_dead_letter(bytes: &[u8]) -> Result<DeadLetterRecord, CodecError> {
    let mut r = body_of(RecordKind::DeadLetter, bytes)?;
    let d = DeadLetterRecord {
        stage: r.string("stage")?,
        source_topic: r.string("source_topic")?,
        source_partition: r.int("source_partition")?,
        source_offset: r.long("source_offset")?,
        reason: r.string("reason")?,
        original: r.bytes("original")?.to_vec(),
        key: if r.optional("key")? {
            Some(r.bytes("key")?.to_vec())
        } else {
            None
        },
    };
    r.finish(RecordKind::DeadLetter.full_name())?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::time::{FAST_TS_MAX as TS_FAST_MAX, FAST_TS_MIN as TS_FAST_MIN};
    use std::str::FromStr;

    fn event() -> MessageEvent {
        MessageEvent {
            ts: 1_646_096_400,
            waba_id: "102290129340398".into(),
            phone_number_id: "106540352242922".into(),
            user: "5511987654321".into(),
            message_id: "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFDNBMEQ=".into(),
            kind: EventKind::Status {
                status: StatusKind::Delivered,
            },
            country: Country::new("BR").unwrap(),
            number_valid: true,
            meta: Some(MetaPricing {
                conversation_id: Some("8f5c1a".into()),
                origin: Some(Origin::BusinessInitiated),
                billable: Some(true),
            }),
            message_kind: Some(MessageKind::NonTemplate),
        }
    }

    fn opened() -> ConversationOpened {
        ConversationOpened {
            conversation_id: "c-1f3a".into(),
            waba_id: "w1".into(),
            phone_number_id: "p1".into(),
            user: "15551234567".into(),
            era: EraId::Cbp2022,
            origin: Origin::UserInitiated,
            opened_at: 1_646_096_400,
            expires_at: 1_646_096_400 + 86_400,
            opening_message_id: "wamid.x".into(),
            country: Country::new("US").unwrap(),
            late: false,
        }
    }

    fn billed() -> ConversationBilled {
        ConversationBilled {
            opened: opened(),
            month: "2022-03".into(),
            market: "North America".into(),
            free_tier: false,
            billable: true,
            price: Decimal::from_str("0.0147").unwrap(),
            billed_price: Decimal::from_str("0.0165375").unwrap(),
            currency: "USD".into(),
        }
    }

    fn framings() -> [Framing; 2] {
        [Framing::SingleObject, Framing::Confluent { schema_id: 0x0102_0304 }]
    }

    #[test]
    fn schemas_parse_and_have_distinct_fingerprints() {
        let fps: Vec<u64> = RecordKind::ALL.iter().map(|k| k.fingerprint()).collect();
        for (i, a) in fps.iter().enumerate() {
            for b in &fps[i + 1..] {
                assert_ne!(a, b);
            }
        }
        for k in RecordKind::ALL {
            assert!(k.canonical_form().contains(k.full_name()), "{k:?}");
            assert_eq!(RecordKind::from_fingerprint(k.fingerprint()), Some(k));
            assert_eq!(schema_text(k), k.schema_text());
        }
    }

    /// Parsing Canonical Form written out by hand from the spec's rules (full names;
    /// only name, type, fields, symbols; no docs or defaults; no whitespace).
    #[test]
    fn canonical_form_of_message_event() {
        let s = |n: &str| format!(r#"{{"name":"{n}","type":"string"}}"#);
        let expected = [
            r#"{"name":"io.wabill.v1.MessageEvent","type":"record","fields":["#.to_string(),
            r#"{"name":"ts","type":"long"},"#.into(),
            s("waba_id") + ",",
            s("phone_number_id") + ",",
            s("user") + ",",
            s("message_id") + ",",
            r#"{"name":"kind","type":{"name":"io.wabill.v1.EventKind","type":"enum","symbols":["inbound","sent","delivered","read","failed","send_log"]}},"#.into(),
            r#"{"name":"referral","type":{"name":"io.wabill.v1.Referral","type":"enum","symbols":["none","ad","other"]}},"#.into(),
            s("country") + ",",
            r#"{"name":"number_valid","type":"boolean"},"#.into(),
            r#"{"name":"meta_conversation_id","type":["null","string"]},"#.into(),
            r#"{"name":"meta_origin","type":["null","string"]},"#.into(),
            r#"{"name":"meta_billable","type":["null","boolean"]},"#.into(),
            r#"{"name":"message_kind","type":["null","string"]}"#.into(),
            "]}".into(),
        ]
        .concat();
        assert_eq!(RecordKind::MessageEvent.canonical_form(), expected);
    }

    /// CRC-64-AVRO as the Avro spec defines it, independent of apache-avro.
    fn crc64_avro(data: &[u8]) -> u64 {
        const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
        let mut table = [0u64; 256];
        for (i, t) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            }
            *t = fp;
        }
        let mut fp = EMPTY;
        for &b in data {
            fp = (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize];
        }
        fp
    }

    #[test]
    fn fingerprints_are_crc64_avro_of_canonical_form() {
        // Test vector from the Avro repository's share/test/data/schema-tests.txt.
        assert_eq!(crc64_avro(br#""null""#) as i64, 7_195_948_357_588_979_594);
        for k in RecordKind::ALL {
            assert_eq!(k.fingerprint(), crc64_avro(k.canonical_form().as_bytes()));
        }
    }

    #[test]
    fn single_object_header_layout() {
        let mut out = Vec::new();
        encode_opened(&opened(), &Framing::SingleObject, &mut out);
        assert_eq!(&out[..2], &[0xC3, 0x01]);
        assert_eq!(out[2..10], RecordKind::ConversationOpened.fingerprint().to_le_bytes());
        let mut out = Vec::new();
        encode_opened(&opened(), &Framing::Confluent { schema_id: 7 }, &mut out);
        assert_eq!(&out[..5], &[0, 0, 0, 0, 7]);
    }

    #[test]
    fn round_trips() {
        let mut ev2 = event();
        ev2.kind = EventKind::Inbound { referral: Referral::Ad };
        ev2.meta = None;
        let dl = DeadLetterRecord {
            stage: "ingest".into(),
            source_topic: "webhooks".into(),
            source_partition: -3,
            source_offset: i64::MAX,
            reason: "unparseable number".into(),
            original: vec![0, 1, 2, 255],
            key: Some(b"k".to_vec()),
        };
        for f in framings() {
            for ev in [event(), ev2.clone()] {
                let mut out = Vec::new();
                encode_event(&ev, &f, &mut out);
                assert_eq!(decode_event(&out), Ok(ev));
            }
            let mut out = Vec::new();
            encode_opened(&opened(), &f, &mut out);
            assert_eq!(decode_opened(&out), Ok(opened()));
            let mut out = Vec::new();
            encode_billed(&billed(), &f, &mut out);
            assert_eq!(decode_billed(&out), Ok(billed()));
            for d in [dl.clone(), DeadLetterRecord::default()] {
                let mut out = Vec::new();
                encode_dead_letter(&d, &f, &mut out);
                assert_eq!(decode_dead_letter(&out), Ok(d));
            }
        }
    }

    #[test]
    fn empty_meta_reads_back_as_none() {
        let mut ev = event();
        ev.meta = Some(MetaPricing::default());
        let mut out = Vec::new();
        encode_event(&ev, &Framing::SingleObject, &mut out);
        assert_eq!(decode_event(&out).unwrap().meta, None);
    }

    #[test]
    fn billed_body_matches_json_output() {
        let b = billed();
        let mut out = Vec::new();
        encode_billed(&b, &Framing::Confluent { schema_id: 1 }, &mut out);
        let j = b.to_out();
        let body = &out[CONFLUENT_HEADER_LEN..];
        for needle in [
            j.opened_at.as_str(),
            j.expires_at.as_str(),
            j.price.as_str(),
            j.billed_price.as_str(),
        ] {
            assert!(body.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle}");
        }
        assert_eq!(j.opened_at, "2022-03-01T01:00:00Z");
        assert_eq!(j.billed_price, "0.0165375");
    }

    #[test]
    fn fast_timestamp_matches_format_ts() {
        let mut samples = vec![
            0,
            -1,
            1,
            86_399,
            86_400,
            951_782_400, // 2000-02-29
            4_107_456_000,
            TS_FAST_MIN,
            TS_FAST_MIN - 1,
            TS_FAST_MAX,
            TS_FAST_MAX + 1,
            i64::MIN,
            i64::MAX,
        ];
        let mut x: i64 = 0x1234_5678;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            samples.push(x.rem_euclid(TS_FAST_MAX - TS_FAST_MIN) + TS_FAST_MIN);
        }
        for ts in samples {
            let mut o = Vec::new();
            write_rfc3339(&mut o, ts);
            let s = String::from_utf8(o).unwrap();
            assert_eq!(s, format_ts(ts), "{ts}");
            assert_eq!(parse_timestamp("t", &s), Ok(ts), "{s}");
        }
    }

    #[test]
    fn timestamp_parsing_accepts_rfc3339_and_rejects_junk() {
        assert_eq!(parse_timestamp("t", "2022-03-01T04:00:00+03:00"), Ok(1_646_096_400));
        assert_eq!(parse_timestamp("t", "2022-03-01T01:00:00.000Z"), Ok(1_646_096_400));
        for bad in [
            "",
            "2022-02-29T00:00:00Z",
            "2022-13-01T00:00:00Z",
            "2022-03-01T24:00:00Z",
            "2022-03-01T01:00:00.5Z",
            "2022-03-01 01:00:00",
            "@",
            "@x",
        ] {
            assert!(parse_timestamp("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_values_are_cut_short() {
        let e = parse_timestamp("t", &"é".repeat(10_000)).unwrap_err();
        assert!(e.to_string().len() < 250, "{e}");
        assert_eq!(excerpt("short"), "short");
    }

    #[test]
    fn long_strings_get_multi_byte_length() {
        let mut b = billed();
        b.opened.conversation_id = "x".repeat(300);
        b.price = Decimal::from_str("0.0000000000000000000000000001").unwrap();
        b.billed_price = Decimal::from_str("-79228162514264337593543950335").unwrap();
        let mut out = Vec::new();
        encode_billed(&b, &Framing::SingleObject, &mut out);
        assert_eq!(decode_billed(&out), Ok(b));
        // put_str_with across the one-byte limit.
        for n in [0usize, 1, 63, 64, 65, 127, 128, 8191, 8192] {
            let mut a = Vec::new();
            put_str_with(&mut a, |o| o.extend(std::iter::repeat_n(b'a', n)));
            let mut e = Vec::new();
            put_str(&mut e, &"a".repeat(n));
            assert_eq!(a, e, "{n}");
        }
    }

    #[test]
    fn varints() {
        for v in [0i64, -1, 1, 63, -64, 64, i64::MAX, i64::MIN, i32::MAX as i64] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            let mut r = Reader {
                buf: &out,
                pos: 0,
                current: None,
            };
            assert_eq!(r.long("v"), Ok(v));
            assert!(r.finish("x").is_ok());
        }
        // 11-byte varint, and a 10th byte carrying more than one bit.
        let mut bad = vec![0xFF; 10];
        bad.push(0);
        assert!(matches!(
            Reader {
                buf: &bad,
                pos: 0,
                current: None
            }
            .long("v"),
            Err(CodecError::BadVarint { .. })
        ));
        let mut bad = vec![0xFF; 9];
        bad.push(0x02);
        assert!(Reader {
            buf: &bad,
            pos: 0,
            current: None
        }
        .long("v")
        .is_err());
        // int: over-long or out of range.
        let mut out = Vec::new();
        put_long(&mut out, i64::from(i32::MAX) + 1);
        assert!(matches!(
            Reader {
                buf: &out,
                pos: 0,
                current: None
            }
            .int("i"),
            Err(CodecError::IntOutOfRange { .. })
        ));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let mut out = Vec::new();
        encode_opened(&opened(), &Framing::SingleObject, &mut out);
        let e = decode_event(&out).unwrap_err();
        assert!(matches!(e, CodecError::WrongSchema { .. }));
        assert!(e.to_string().contains("io.wabill.v1.ConversationOpened"), "{e}");

        let mut bad = out.clone();
        bad[2] ^= 0xFF;
        let e = decode_opened(&bad).unwrap_err();
        assert!(matches!(e, CodecError::UnknownFingerprint { .. }), "{e}");
        assert!(e.to_string().contains("unknown schema fingerprint"), "{e}");

        let e = decode_opened(b"{\"json\":1}").unwrap_err();
        assert!(matches!(e, CodecError::BadMagic { .. }), "{e}");
        assert_eq!(decode_opened(b""), Err(CodecError::Empty));

        let mut trailing = out.clone();
        trailing.push(0);
        assert!(matches!(
            decode_opened(&trailing),
            Err(CodecError::TrailingBytes { count: 1, .. })
        ));

        // A bad country code is rejected, not mapped to a guess.
        let mut c = Vec::new();
        write_header(RecordKind::ConversationOpened, &Framing::SingleObject, &mut c);
        for s in ["id", "w", "p", "u", "cbp-2022", "service"] {
            put_str(&mut c, s);
        }
        put_long(&mut c, 1);
        put_long(&mut c, 2);
        put_str(&mut c, "m");
        put_str(&mut c, "usa");
        put_bool(&mut c, false);
        let e = decode_opened(&c).unwrap_err();
        assert!(matches!(e, CodecError::BadCountry { .. }), "{e}");

        // Invalid enum index and invalid UTF-8.
        let mut ev = Vec::new();
        encode_event(&event(), &Framing::SingleObject, &mut ev);
        let kind_at = SINGLE_OBJECT_HEADER_LEN
            + {
                let mut t = Vec::new();
                put_long(&mut t, event().ts);
                t.len()
            }
            + [
                event().waba_id,
                event().phone_number_id,
                event().user,
                event().message_id,
            ]
            .iter()
            .map(|s| {
                let mut t = Vec::new();
                put_str(&mut t, s);
                t.len()
            })
            .sum::<usize>();
        let mut bad = ev.clone();
        bad[kind_at] = 12; // zig-zag 6: the enum has six symbols (send_log is 5)
        assert!(matches!(
            decode_event(&bad),
            Err(CodecError::InvalidEnumIndex {
                field: "kind",
                index: 6,
                ..
            })
        ));
        let mut bad = ev.clone();
        bad[SINGLE_OBJECT_HEADER_LEN + 7] = 0xFF; // ts is 5 bytes, then waba_id's length, then its text
        assert!(matches!(
            decode_event(&bad),
            Err(CodecError::InvalidUtf8 { field: "waba_id" })
        ));
    }
}

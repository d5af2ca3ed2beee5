//! The Avro layer (src/codec/avro.rs, src/codec/registry.rs): round trips, a cross-check
//! against apache-avro in both directions, fingerprints, bad input, and the schema
//! registry client against a tiny HTTP server (HTTPS, credentials: tests/registry_tls.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread;

use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter, Schema};
use proptest::prelude::*;
use rust_decimal::Decimal;

use wabill::billing::{Country, EraId, MessageKind, Origin, TemplateCategory};
use wabill::codec::avro::{
    decode_billed, decode_billing, decode_charged, decode_dead_letter, decode_delivered, decode_event, decode_opened,
    decode_unit, encode_billed, encode_dead_letter, encode_event, encode_opened, schema_text, split_framing,
    CodecError, DeadLetterRecord, Framing, Header, RecordKind,
};
use wabill::codec::registry::{self, RegistryError};
use wabill::ingest::{EventKind, MessageEvent, MetaPricing, Referral, StatusKind};
use wabill::pipeline::{ConversationBilled, ConversationOpened};

// ---------------------------------------------------------------------------------------
// Strategies

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._=-]{0,40}",
        any::<String>(),
        // Long enough for a multi-byte length prefix.
        "[a-z]{60,200}",
    ]
}

fn country() -> impl Strategy<Value = Country> {
    "[A-Z]{2}".prop_map(|s| Country::new(&s).expect("two upper-case letters"))
}

fn era() -> impl Strategy<Value = EraId> {
    prop::sample::select(vec![
        EraId::Cbp2022,
        EraId::Cbp2023,
        EraId::Cbp2024_11,
        EraId::Pmp2025_07,
        EraId::Pmp2026_10,
    ])
}

fn origin() -> impl Strategy<Value = Origin> {
    prop::sample::select(Origin::ALL.to_vec())
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        prop::sample::select(vec![Referral::None, Referral::Ad, Referral::Other])
            .prop_map(|referral| EventKind::Inbound { referral }),
        prop::sample::select(vec![
            StatusKind::Sent,
            StatusKind::Delivered,
            StatusKind::Read,
            StatusKind::Failed,
        ])
        .prop_map(|status| EventKind::Status { status }),
        Just(EventKind::SendLog),
    ]
}

fn message_kind() -> impl Strategy<Value = Option<MessageKind>> {
    proptest::option::of(prop::sample::select(MessageKind::ALL.to_vec()))
}

/// `Some(MetaPricing::default())` is written like `None` (documented), so it is not
/// generated.
fn meta() -> impl Strategy<Value = Option<MetaPricing>> {
    proptest::option::of(
        (
            proptest::option::of(text()),
            proptest::option::of(origin()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(conversation_id, origin, billable)| MetaPricing {
                conversation_id,
                origin,
                billable,
            }),
    )
    .prop_map(|m| m.filter(|m| *m != MetaPricing::default()))
}

fn ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        1_500_000_000i64..1_900_000_000,
        // Years 0000..=9999, the RFC 3339 range.
        -62_167_219_200i64..=253_402_300_799,
        any::<i64>(),
    ]
}

fn decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (0i64..100_000, 0u32..=8).prop_map(|(m, s)| Decimal::new(m, s)),
        (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u32..=28)
            .prop_map(|(lo, mid, hi, neg, s)| Decimal::from_parts(lo, mid, hi, neg, s)),
    ]
}

fn event() -> impl Strategy<Value = MessageEvent> {
    (
        ts(),
        text(),
        text(),
        text(),
        text(),
        kind(),
        country(),
        any::<bool>(),
        meta(),
        message_kind(),
    )
        .prop_map(
            |(ts, waba_id, phone_number_id, user, message_id, kind, country, number_valid, meta, message_kind)| {
                MessageEvent {
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
                }
            },
        )
}

fn opened_with(ts: BoxedStrategy<i64>) -> impl Strategy<Value = ConversationOpened> {
    (
        (text(), text(), text(), text()),
        era(),
        origin(),
        ts.clone(),
        ts,
        text(),
        country(),
        any::<bool>(),
    )
        .prop_map(
            |(
                (conversation_id, waba_id, phone_number_id, user),
                era,
                origin,
                opened_at,
                expires_at,
                opening_message_id,
                country,
                late,
            )| ConversationOpened {
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
        )
}

fn opened() -> impl Strategy<Value = ConversationOpened> {
    opened_with(any::<i64>().boxed())
}

fn billed() -> impl Strategy<Value = ConversationBilled> {
    (
        opened_with(ts().boxed()),
        "[0-9]{4}-[0-9]{2}",
        text(),
        any::<bool>(),
        any::<bool>(),
        decimal(),
        decimal(),
        "[A-Z]{3}",
    )
        .prop_map(
            |(opened, month, market, free_tier, billable, price, billed_price, currency)| ConversationBilled {
                opened,
                month,
                market,
                free_tier,
                billable,
                price,
                billed_price,
                currency,
            },
        )
}

fn dead_letter() -> impl Strategy<Value = DeadLetterRecord> {
    (
        text(),
        text(),
        any::<i32>(),
        any::<i64>(),
        text(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(
            |(stage, source_topic, source_partition, source_offset, reason, original, key)| DeadLetterRecord {
                stage,
                source_topic,
                source_partition,
                source_offset,
                reason,
                original,
                key,
            },
        )
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::SingleObject),
        any::<u32>().prop_map(|schema_id| Framing::Confluent { schema_id }),
    ]
}

// ---------------------------------------------------------------------------------------
// Expected apache-avro values

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn opt(v: Option<Value>) -> Value {
    match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn event_value(ev: &MessageEvent) -> Value {
    let (kind, referral) = match ev.kind {
        EventKind::Inbound { referral } => (
            (0, "inbound"),
            match referral {
                Referral::None => (0, "none"),
                Referral::Ad => (1, "ad"),
                Referral::Other => (2, "other"),
            },
        ),
        EventKind::Status { status } => (
            match status {
                StatusKind::Sent => (1, "sent"),
                StatusKind::Delivered => (2, "delivered"),
                StatusKind::Read => (3, "read"),
                StatusKind::Failed => (4, "failed"),
            },
            (0, "none"),
        ),
        EventKind::SendLog => ((5, "send_log"), (0, "none")),
    };
    let meta = ev.meta.clone().unwrap_or_default();
    record(vec![
        ("ts", Value::Long(ev.ts)),
        ("waba_id", s(&ev.waba_id)),
        ("phone_number_id", s(&ev.phone_number_id)),
        ("user", s(&ev.user)),
        ("message_id", s(&ev.message_id)),
        ("kind", Value::Enum(kind.0, kind.1.into())),
        ("referral", Value::Enum(referral.0, referral.1.into())),
        ("country", s(ev.country.as_str())),
        ("number_valid", Value::Boolean(ev.number_valid)),
        ("meta_conversation_id", opt(meta.conversation_id.as_deref().map(s))),
        ("meta_origin", opt(meta.origin.map(|o| s(o.as_str())))),
        ("meta_billable", opt(meta.billable.map(Value::Boolean))),
        ("message_kind", opt(ev.message_kind.map(|k| s(k.as_str())))),
    ])
}

fn opened_value(c: &ConversationOpened) -> Value {
    record(vec![
        ("conversation_id", s(&c.conversation_id)),
        ("waba_id", s(&c.waba_id)),
        ("phone_number_id", s(&c.phone_number_id)),
        ("user", s(&c.user)),
        ("era", s(c.era.as_str())),
        ("origin", s(c.origin.as_str())),
        ("opened_at", Value::Long(c.opened_at)),
        ("expires_at", Value::Long(c.expires_at)),
        ("opening_message_id", s(&c.opening_message_id)),
        ("country", s(c.country.as_str())),
        ("late", Value::Boolean(c.late)),
    ])
}

/// From the JSON output's field set (`to_out`), so Avro and JSON lines carry the same
/// values.
fn billed_value(b: &ConversationBilled) -> Value {
    let j = b.to_out();
    record(vec![
        ("conversation_id", s(j.conversation_id)),
        ("waba_id", s(j.waba_id)),
        ("phone_number_id", s(j.phone_number_id)),
        ("user", s(j.user)),
        ("era", s(j.era)),
        ("origin", s(j.origin)),
        ("opened_at", s(&j.opened_at)),
        ("expires_at", s(&j.expires_at)),
        ("month", s(j.month)),
        ("opening_message_id", s(j.opening_message_id)),
        ("country", s(j.country)),
        ("market", s(j.market)),
        ("free_tier", Value::Boolean(j.free_tier)),
        ("billable", Value::Boolean(j.billable)),
        ("price", s(&j.price)),
        ("billed_price", s(&j.billed_price)),
        ("currency", s(j.currency)),
        ("late", Value::Boolean(j.late)),
    ])
}

fn dead_letter_value(d: &DeadLetterRecord) -> Value {
    record(vec![
        ("stage", s(&d.stage)),
        ("source_topic", s(&d.source_topic)),
        ("source_partition", Value::Int(d.source_partition)),
        ("source_offset", Value::Long(d.source_offset)),
        ("reason", s(&d.reason)),
        ("original", Value::Bytes(d.original.clone())),
        ("key", opt(d.key.clone().map(Value::Bytes))),
    ])
}

/// apache-avro's datum decoder (`from_avro_datum` before 0.22).
fn from_avro_datum(schema: &Schema, body: &mut &[u8]) -> apache_avro::AvroResult<Value> {
    GenericDatumReader::builder(schema).build()?.read_value(body)
}

/// apache-avro's datum encoder (`to_avro_datum` before 0.22).
fn to_avro_datum(schema: &Schema, value: Value) -> apache_avro::AvroResult<Vec<u8>> {
    GenericDatumWriter::builder(schema).build()?.write_value_to_vec(value)
}

fn schema(kind: RecordKind) -> Schema {
    Schema::parse_str(schema_text(kind)).expect("bundled schema parses")
}

fn framed(kind: RecordKind, framing: &Framing, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match framing {
        Framing::SingleObject => {
            out.extend_from_slice(&[0xC3, 0x01]);
            out.extend_from_slice(&schema(kind).fingerprint::<Rabin>().bytes);
        }
        Framing::Confluent { schema_id } => {
            out.push(0);
            out.extend_from_slice(&schema_id.to_be_bytes());
        }
    }
    out.extend_from_slice(body);
    out
}

/// Our encoding → apache-avro's decoder gives `expected`; apache-avro's encoding of
/// `expected` → our decoder gives the record back; both encodings are byte-identical.
fn cross_check<T: PartialEq + std::fmt::Debug>(
    kind: RecordKind,
    framing: &Framing,
    ours: &[u8],
    expected: Value,
    decode: fn(&[u8]) -> Result<T, CodecError>,
    original: &T,
) -> Result<(), TestCaseError> {
    let schema = schema(kind);
    let (_, mut body) = split_framing(ours).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let body_copy = body.to_vec();
    let theirs = from_avro_datum(&schema, &mut body)
        .map_err(|e| TestCaseError::fail(format!("apache-avro cannot read ours: {e}")))?;
    prop_assert!(body.is_empty(), "apache-avro left {} bytes", body.len());
    prop_assert_eq!(&theirs, &expected);

    let their_body =
        to_avro_datum(&schema, expected).map_err(|e| TestCaseError::fail(format!("apache-avro cannot write: {e}")))?;
    prop_assert_eq!(&their_body, &body_copy);
    let back = decode(&framed(kind, framing, &their_body))
        .map_err(|e| TestCaseError::fail(format!("we cannot read apache-avro's: {e}")))?;
    prop_assert_eq!(&back, original);
    Ok(())
}

fn encoded<T>(r: &T, framing: &Framing, encode: fn(&T, &Framing, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    encode(r, framing, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// (a) round trips and (b) cross-checks

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn event_round_trip_and_cross_check(ev in event(), f in framing()) {
        let out = encoded(&ev, &f, encode_event);
        prop_assert_eq!(decode_event(&out), Ok(ev.clone()));
        cross_check(RecordKind::MessageEvent, &f, &out, event_value(&ev), decode_event, &ev)?;
    }

    #[test]
    fn opened_round_trip_and_cross_check(c in opened(), f in framing()) {
        let out = encoded(&c, &f, encode_opened);
        prop_assert_eq!(decode_opened(&out), Ok(c.clone()));
        cross_check(RecordKind::ConversationOpened, &f, &out, opened_value(&c), decode_opened, &c)?;
    }

    #[test]
    fn billed_round_trip_and_cross_check(b in billed(), f in framing()) {
        let out = encoded(&b, &f, encode_billed);
        let back = decode_billed(&out);
        prop_assert_eq!(&back, &Ok(b.clone()));
        // Decimals compare by value: check the scale-free text too.
        let back = back.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.to_out().price, b.to_out().price);
        prop_assert_eq!(back.to_out().billed_price, b.to_out().billed_price);
        cross_check(RecordKind::ConversationBilled, &f, &out, billed_value(&b), decode_billed, &b)?;
    }

    #[test]
    fn dead_letter_round_trip_and_cross_check(d in dead_letter(), f in framing()) {
        let out = encoded(&d, &f, encode_dead_letter);
        prop_assert_eq!(decode_dead_letter(&out), Ok(d.clone()));
        cross_check(RecordKind::DeadLetter, &f, &out, dead_letter_value(&d), decode_dead_letter, &d)?;
    }

    /// apache-avro's own single-object reader accepts our single-object records.
    #[test]
    fn apache_single_object_reader_reads_ours(ev in event(), d in dead_letter()) {
        let reader = GenericSingleObjectReader::builder()
            .schema(schema(RecordKind::MessageEvent))
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out = encoded(&ev, &Framing::SingleObject, encode_event);
        let v = reader.read_value(&mut &out[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(v, event_value(&ev));

        let reader = GenericSingleObjectReader::builder()
            .schema(schema(RecordKind::DeadLetter))
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out = encoded(&d, &Framing::SingleObject, encode_dead_letter);
        let v = reader.read_value(&mut &out[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(v, dead_letter_value(&d));
    }

    // (d) random bytes never panic, bare or behind a valid header.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_event(&bytes);
        let _ = decode_opened(&bytes);
        let _ = decode_billed(&bytes);
        let _ = decode_dead_letter(&bytes);
        for kind in RecordKind::ALL {
            for f in [Framing::SingleObject, Framing::Confluent { schema_id: 1 }] {
                let b = framed(kind, &f, &bytes);
                match kind {
                    RecordKind::MessageEvent => { let _ = decode_event(&b); }
                    RecordKind::ConversationOpened => { let _ = decode_opened(&b); }
                    RecordKind::ConversationBilled => { let _ = decode_billed(&b); }
                    RecordKind::DeadLetter => { let _ = decode_dead_letter(&b); }
                    RecordKind::MessageDelivered => {
                        let _ = decode_delivered(&b);
                        let _ = decode_unit(&b, &|_| Some(RecordKind::MessageDelivered));
                    }
                    RecordKind::MessageCharged => {
                        let _ = decode_charged(&b);
                        let _ = decode_billing(&b, &|_| Some(RecordKind::MessageCharged));
                    }
                }
            }
        }
    }

    /// Flipping bytes of a valid record gives an error or some record, never a panic.
    #[test]
    fn corrupted_records_never_panic(
        ev in event(),
        b in billed(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut e = encoded(&ev, &Framing::Confluent { schema_id: 3 }, encode_event);
        let mut c = encoded(&b, &Framing::Confluent { schema_id: 3 }, encode_billed);
        for (i, x) in &flips {
            let n = e.len();
            e[i % n] ^= x;
            let n = c.len();
            c[i % n] ^= x;
        }
        let _ = decode_event(&e);
        let _ = decode_billed(&c);
    }
}

// ---------------------------------------------------------------------------------------
// (c) fingerprints

#[test]
fn single_object_header_carries_apache_avro_rabin_fingerprint() {
    for kind in RecordKind::ALL {
        let schema = schema(kind);
        let fp = schema.fingerprint::<Rabin>().bytes;
        assert_eq!(fp.len(), 8);
        assert_eq!(kind.fingerprint().to_le_bytes().to_vec(), fp, "{kind:?}");
        assert_eq!(kind.canonical_form(), schema.canonical_form());
    }
    let ev = sample_event();
    let out = encoded(&ev, &Framing::SingleObject, encode_event);
    let fp = schema(RecordKind::MessageEvent).fingerprint::<Rabin>().bytes;
    assert_eq!(&out[..2], &[0xC3, 0x01]);
    assert_eq!(&out[2..10], &fp[..]);
    assert_eq!(
        split_framing(&out).unwrap().0,
        Header::SingleObject {
            fingerprint: RecordKind::MessageEvent.fingerprint()
        }
    );
}

#[test]
fn apache_single_object_writer_output_is_readable() {
    let d = sample_dead_letter();
    let schema = schema(RecordKind::DeadLetter);
    let mut w = GenericSingleObjectWriter::new_with_capacity(&schema, 256).unwrap();
    let mut out = Vec::new();
    w.write_value(dead_letter_value(&d), &mut out).unwrap();
    assert_eq!(decode_dead_letter(&out), Ok(d.clone()));
    assert_eq!(out, encoded(&d, &Framing::SingleObject, encode_dead_letter));
}

#[test]
fn schemas_have_docs_names_and_defaults() {
    for kind in RecordKind::ALL {
        let v: serde_json::Value = serde_json::from_str(schema_text(kind)).unwrap();
        assert_eq!(v["namespace"], "io.wabill.v1");
        assert_eq!(
            format!("io.wabill.v1.{}", v["name"].as_str().unwrap()),
            kind.full_name()
        );
        let doc = v["doc"].as_str().unwrap();
        assert!(doc.contains("backward compatible"), "{kind:?}");
        assert!(doc.contains("New fields must have defaults"), "{kind:?}");
        for f in v["fields"].as_array().unwrap() {
            assert!(f["doc"].as_str().is_some_and(|d| !d.is_empty()), "{f}");
            if f["type"].is_array() {
                assert!(f.get("default").is_some_and(|d| d.is_null()), "{f}");
            }
        }
    }
    // docs/billing-rules.md §10 field names, in contract order.
    let v: serde_json::Value = serde_json::from_str(schema_text(RecordKind::ConversationBilled)).unwrap();
    let names: Vec<&str> = v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "conversation_id",
            "waba_id",
            "phone_number_id",
            "user",
            "era",
            "origin",
            "opened_at",
            "expires_at",
            "month",
            "opening_message_id",
            "country",
            "market",
            "free_tier",
            "billable",
            "price",
            "billed_price",
            "currency",
            "late"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// (d) bad input

fn sample_event() -> MessageEvent {
    MessageEvent {
        ts: 1_646_096_400,
        waba_id: "102290129340398".into(),
        phone_number_id: "106540352242922".into(),
        user: "5511987654321".into(),
        message_id: "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFDNBMEQ=".into(),
        kind: EventKind::Status {
            status: StatusKind::Read,
        },
        country: Country::new("BR").unwrap(),
        number_valid: false,
        meta: Some(MetaPricing {
            conversation_id: Some("c0ffee".into()),
            origin: Some(Origin::UserInitiated),
            billable: Some(false),
        }),
        message_kind: Some(MessageKind::Template(TemplateCategory::Utility)),
    }
}

fn sample_opened() -> ConversationOpened {
    ConversationOpened {
        conversation_id: "c-1".into(),
        waba_id: "w".into(),
        phone_number_id: "p".into(),
        user: "15551234567".into(),
        era: EraId::Cbp2023,
        origin: Origin::Marketing,
        opened_at: 1_700_000_000,
        expires_at: 1_700_086_400,
        opening_message_id: "wamid.1".into(),
        country: Country::new("US").unwrap(),
        late: true,
    }
}

fn sample_billed() -> ConversationBilled {
    ConversationBilled {
        opened: sample_opened(),
        month: "2023-11".into(),
        market: "North America".into(),
        free_tier: false,
        billable: true,
        price: "0.025".parse().unwrap(),
        billed_price: "0.028125".parse().unwrap(),
        currency: "USD".into(),
    }
}

fn sample_dead_letter() -> DeadLetterRecord {
    DeadLetterRecord {
        stage: "ingest".into(),
        source_topic: "wabill.webhooks".into(),
        source_partition: 3,
        source_offset: 123_456,
        reason: "user number +999 has no known calling code".into(),
        original: br#"{"object":"whatsapp_business_account"}"#.to_vec(),
        key: None,
    }
}

/// An encoded record and whether a decoder rejects some bytes.
type Case = (Vec<u8>, fn(&[u8]) -> bool);

/// Every framed sample record, cut at every byte, is an error.
#[test]
fn truncation_at_every_position_is_an_error() {
    for f in [Framing::SingleObject, Framing::Confluent { schema_id: 9 }] {
        let cases: Vec<Case> = vec![
            (encoded(&sample_event(), &f, encode_event), |b| decode_event(b).is_err()),
            (encoded(&sample_opened(), &f, encode_opened), |b| {
                decode_opened(b).is_err()
            }),
            (encoded(&sample_billed(), &f, encode_billed), |b| {
                decode_billed(b).is_err()
            }),
            (encoded(&sample_dead_letter(), &f, encode_dead_letter), |b| {
                decode_dead_letter(b).is_err()
            }),
        ];
        for (i, (full, is_err)) in cases.into_iter().enumerate() {
            assert!(!is_err(&full));
            for cut in 0..full.len() {
                // Under the Confluent framing (no fingerprint), a MessageEvent cut exactly
                // before `message_kind` (appended in v2: branch byte, length byte and
                // "utility" in the sample) is a complete v1 record: read as such, by design
                // (message_event_v1_records_are_still_read).
                let tail = 2 + "utility".len();
                let v1_boundary = i == 0 && matches!(f, Framing::Confluent { .. }) && cut == full.len() - tail;
                if v1_boundary {
                    continue;
                }
                assert!(is_err(&full[..cut]), "cut at {cut} of {}", full.len());
            }
            let mut longer = full.clone();
            longer.push(0);
            assert!(is_err(&longer), "trailing byte");
        }
    }
}

#[test]
fn wrong_magic_and_wrong_schema_are_named() {
    let ev = encoded(&sample_event(), &Framing::SingleObject, encode_event);

    let mut bad = ev.clone();
    bad[0] = 0xC4;
    let e = decode_event(&bad).unwrap_err();
    assert!(matches!(e, CodecError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("bad magic"), "{e}");

    let mut bad = ev.clone();
    bad[1] = 0x02;
    assert!(matches!(decode_event(&bad), Err(CodecError::BadMagic { .. })));

    // JSON where Avro is expected.
    let e = decode_event(br#"{"object":"whatsapp_business_account"}"#).unwrap_err();
    assert!(matches!(e, CodecError::BadMagic { .. }), "{e}");

    // A record of another schema.
    let e = decode_billed(&ev).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("io.wabill.v1.MessageEvent") && msg.contains("io.wabill.v1.ConversationBilled"),
        "{msg}"
    );

    // An unknown fingerprint is named in the error.
    let mut bad = ev.clone();
    bad[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let e = decode_event(&bad).unwrap_err();
    assert!(matches!(e, CodecError::UnknownFingerprint { .. }), "{e}");
    assert!(e.to_string().contains("0123456789abcdef"), "{e}");

    // Confluent framing: any id is accepted.
    let c = encoded(
        &sample_event(),
        &Framing::Confluent { schema_id: u32::MAX },
        encode_event,
    );
    assert_eq!(decode_event(&c), Ok(sample_event()));
    assert_eq!(split_framing(&c).unwrap().0, Header::Confluent { schema_id: u32::MAX });
}

#[test]
fn bad_field_values_are_errors() {
    let schema = schema(RecordKind::ConversationOpened);
    let good = opened_value(&sample_opened());
    let with = |field: &str, v: Value| {
        let Value::Record(mut fields) = good.clone() else {
            unreachable!()
        };
        for (k, x) in &mut fields {
            if k == field {
                *x = v.clone();
            }
        }
        framed(
            RecordKind::ConversationOpened,
            &Framing::SingleObject,
            &to_avro_datum(&schema, Value::Record(fields)).unwrap(),
        )
    };
    for (field, v, want) in [
        ("country", s("usa"), "country"),
        ("country", s("us"), "country"),
        ("era", s("cbp-1999"), "era"),
        ("origin", s("spam"), "origin"),
    ] {
        let e = decode_opened(&with(field, v)).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    }
    // Meta's origin spellings are normalised, as in ingest.
    let c = decode_opened(&with("origin", s("customer_initiated"))).unwrap();
    assert_eq!(c.origin, Origin::UserInitiated);

    let schema = schema_billed();
    let good = billed_value(&sample_billed());
    let with = |field: &str, v: Value| {
        let Value::Record(mut fields) = good.clone() else {
            unreachable!()
        };
        for (k, x) in &mut fields {
            if k == field {
                *x = v.clone();
            }
        }
        framed(
            RecordKind::ConversationBilled,
            &Framing::Confluent { schema_id: 1 },
            &to_avro_datum(&schema, Value::Record(fields)).unwrap(),
        )
    };
    for (field, v) in [
        ("price", s("12,5")),
        ("price", s("")),
        ("billed_price", s("NaN")),
        ("opened_at", s("yesterday")),
        ("expires_at", s("2023-11-14T22:13:20.5Z")),
    ] {
        let e = decode_billed(&with(field, v)).unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    // Other RFC 3339 spellings of the same instant are accepted.
    let b = decode_billed(&with("opened_at", s("2023-11-15T01:13:20+03:00"))).unwrap();
    assert_eq!(b.opened.opened_at, 1_700_000_000);

    // Invalid boolean byte, invalid union branch, bad UTF-8.
    let mut d = encoded(&sample_dead_letter(), &Framing::SingleObject, encode_dead_letter);
    let last = d.len() - 1;
    d[last] = 4; // key: union branch 2
    assert!(matches!(
        decode_dead_letter(&d),
        Err(CodecError::InvalidUnionIndex { field: "key", index: 2 })
    ));
    let mut o = encoded(&sample_opened(), &Framing::SingleObject, encode_opened);
    let last = o.len() - 1;
    o[last] = 2;
    assert!(matches!(
        decode_opened(&o),
        Err(CodecError::InvalidBoolean { field: "late", .. })
    ));
    let mut o = encoded(&sample_opened(), &Framing::SingleObject, encode_opened);
    o[11] = 0xFF; // first byte of conversation_id
    assert!(matches!(
        decode_opened(&o),
        Err(CodecError::InvalidUtf8 {
            field: "conversation_id"
        })
    ));
    // A huge length must not allocate or panic.
    let mut o = encoded(&sample_opened(), &Framing::SingleObject, encode_opened);
    o.truncate(10);
    o.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert!(matches!(decode_opened(&o), Err(CodecError::Truncated { .. })));
    o.truncate(10);
    o.push(0x01); // length -1
    assert!(matches!(decode_opened(&o), Err(CodecError::NegativeLength { .. })));
}

fn schema_billed() -> Schema {
    schema(RecordKind::ConversationBilled)
}

// ---------------------------------------------------------------------------------------
// (e) schema registry client

struct Request {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Serves one HTTP request on 127.0.0.1 with `response`; returns the URL and a handle
/// yielding the request it saw.
fn one_shot_server(response: String) -> (String, thread::JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut r = BufReader::new(&stream);
        let mut request_line = String::new();
        r.read_line(&mut request_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        (&stream).write_all(response.as_bytes()).unwrap();
        Request {
            request_line: request_line.trim_end().to_string(),
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    });
    (url, handle)
}

fn http_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn registry_register_returns_the_id() {
    let (url, server) = one_shot_server(http_response("200 OK", r#"{"id":7}"#));
    let subject = registry::value_subject("wabill.billing");
    let text = schema_text(RecordKind::ConversationBilled);
    let id = registry::register(&url, &subject, text).unwrap();
    assert_eq!(id, 7);

    let req = server.join().unwrap();
    assert_eq!(
        req.request_line,
        "POST /subjects/wabill.billing-value/versions HTTP/1.1"
    );
    let header = |n: &str| req.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/vnd.schemaregistry.v1+json")
    );
    assert!(header("host").is_some());
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1);
    assert_eq!(body["schema"].as_str(), Some(text));
    // What the registry receives is a valid Avro schema.
    Schema::parse_str(body["schema"].as_str().unwrap()).unwrap();

    // Records then carry the id in the Confluent header.
    let out = encoded(&sample_billed(), &Framing::Confluent { schema_id: id }, encode_billed);
    assert_eq!(&out[..5], &[0, 0, 0, 0, 7]);
}

#[test]
fn registry_error_carries_the_message() {
    let msg = "Schema being registered is incompatible with an earlier schema for subject \\\"wabill.events-value\\\"";
    let (url, server) = one_shot_server(http_response(
        "409 Conflict",
        &format!(r#"{{"error_code":409,"message":"{msg}"}}"#),
    ));
    let e = registry::register(&url, "wabill.events-value", schema_text(RecordKind::MessageEvent)).unwrap_err();
    server.join().unwrap();
    assert!(matches!(e, RegistryError::Http { status: 409, .. }), "{e:?}");
    assert_eq!(e.status(), Some(409));
    let text = e.to_string();
    assert!(text.contains("HTTP 409"), "{text}");
    assert!(text.contains("\"wabill.events-value\""), "names the subject: {text}");
    assert!(text.contains("Schema being registered is incompatible"), "{text}");
}

#[test]
fn registry_bad_urls_and_dead_servers() {
    let e = registry::register("ftp://registry:8081", "s", "\"string\"").unwrap_err();
    assert!(matches!(e, RegistryError::BadUrl { .. }), "{e:?}");
    assert!(e.to_string().contains("https://host:port"), "{e}");

    // Nothing listens: a connection error, quickly.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t0 = std::time::Instant::now();
    let e = registry::register(&format!("http://127.0.0.1:{port}"), "s-value", "\"string\"").unwrap_err();
    assert!(matches!(e, RegistryError::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains("\"s-value\""), "names the subject: {e}");
    assert!(t0.elapsed() < registry::TIMEOUT, "{:?}", t0.elapsed());

    // A 2xx without an id.
    let (url, server) = one_shot_server(http_response("200 OK", r#"{"version":1}"#));
    let e = registry::register(&url, "s", "\"string\"").unwrap_err();
    server.join().unwrap();
    assert!(matches!(e, RegistryError::BadResponse { .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// The evolution rule

/// Adding a field with a default is backward compatible: a v2 reader reads today's
/// records through schema resolution (the registry path). Adding one without a default
/// is not, which is why the rule demands defaults.
#[test]
fn adding_a_defaulted_field_is_backward_compatible() {
    let samples: Vec<(RecordKind, Vec<u8>)> = vec![
        (
            RecordKind::MessageEvent,
            encoded(&sample_event(), &Framing::SingleObject, encode_event),
        ),
        (
            RecordKind::ConversationOpened,
            encoded(&sample_opened(), &Framing::SingleObject, encode_opened),
        ),
        (
            RecordKind::ConversationBilled,
            encoded(&sample_billed(), &Framing::SingleObject, encode_billed),
        ),
        (
            RecordKind::DeadLetter,
            encoded(&sample_dead_letter(), &Framing::SingleObject, encode_dead_letter),
        ),
    ];
    for (kind, bytes) in samples {
        let v1 = schema(kind);
        let with_field = |field: serde_json::Value| {
            let mut v: serde_json::Value = serde_json::from_str(schema_text(kind)).unwrap();
            v["fields"].as_array_mut().unwrap().push(field);
            Schema::parse_str(&v.to_string()).unwrap()
        };
        let v2 = with_field(serde_json::json!({
            "name": "added_in_v2", "type": ["null", "string"], "default": null, "doc": "test"
        }));
        assert!(SchemaCompatibility::can_read(&v1, &v2).is_ok(), "{kind:?}");
        let (_, mut body) = split_framing(&bytes).unwrap();
        let value = GenericDatumReader::builder(&v1)
            .reader_schema(&v2)
            .build()
            .unwrap()
            .read_value(&mut body)
            .unwrap();
        let Value::Record(fields) = value else {
            panic!("not a record")
        };
        assert_eq!(
            fields.last(),
            Some(&("added_in_v2".to_string(), Value::Union(0, Box::new(Value::Null))))
        );

        let bad = with_field(serde_json::json!({"name": "added_in_v2", "type": "string"}));
        assert!(SchemaCompatibility::can_read(&v1, &bad).is_err(), "{kind:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Speed

/// A MessageEvent written by an earlier wabill (schema v1, `schemas/history/`), by
/// apache-avro's own single-object writer, is still read: the current schema can read v1
/// (Avro's resolution rules), and wabill's decoder accepts the v1 fingerprint and gives
/// the appended field its default (`message_kind` null). The same record with the
/// Confluent framing (no fingerprint) reads the same way.
#[test]
fn message_event_v1_records_are_still_read() {
    let v1 = Schema::parse_str(include_str!("../schemas/history/message_event.v1.avsc")).unwrap();
    let current = schema(RecordKind::MessageEvent);
    assert!(SchemaCompatibility::can_read(&v1, &current).is_ok());
    assert_ne!(v1.fingerprint::<Rabin>().bytes, current.fingerprint::<Rabin>().bytes);
    let mut ev = sample_event();
    ev.message_kind = None;
    let Value::Record(mut fields) = event_value(&ev) else {
        panic!("not a record")
    };
    assert_eq!(fields.pop().map(|f| f.0), Some("message_kind".to_string()));
    let mut w = GenericSingleObjectWriter::new_with_capacity(&v1, 256).unwrap();
    let mut so = Vec::new();
    w.write_value(Value::Record(fields.clone()), &mut so).unwrap();
    assert_eq!(decode_event(&so), Ok(ev.clone()));
    // Confluent framing: 00 + id + the v1 body.
    let mut confluent = vec![0, 0, 0, 0, 7];
    confluent.extend_from_slice(&to_avro_datum(&v1, Value::Record(fields)).unwrap());
    assert_eq!(decode_event(&confluent), Ok(ev));
}

//! One-pass scanner for well-formed Cloud API payloads, the common case.
//!
//! The general path (`meta.rs`) parses a payload three times: the envelope with every
//! change value kept raw, each value with every message and status kept raw, then each
//! message and status. This scanner reads the payload once and builds exactly the
//! `InboundJson`/`StatusJson` values serde would, which then go through the same code
//! as the general path. It accepts a strict subset of what serde accepts and gives up
//! (`Bail`) on anything else, and on anything that would be a dead letter: the caller
//! then discards what it produced and runs the general path, which decides and words
//! every error. So for every payload the result is the general path's, by construction:
//!
//! - JSON syntax is checked as serde_json checks it (whitespace, literals, numbers,
//!   string escapes, control characters, trailing characters), or more strictly.
//! - A field the structs declare is read only in the form serde reads it without
//!   transformation: a string without escapes (serde borrows it as is), `true`/`false`,
//!   `null` for an `Option`, an object for a struct. Any other form, a key with an escape
//!   (serde would unescape it), or a declared field given twice (serde rejects it) bails.
//! - Fields the structs do not declare are skipped after a syntax check, as serde skips
//!   them; field order does not matter to serde, so when this scanner needs a field
//!   before another (the entry id before its changes, the metadata before the messages)
//!   and finds them the other way round, it bails.
//! - Anything unusual bails: On-Premises payloads, a wrong `object`, a change without a
//!   usable value, a message or status that would be a dead letter.

use std::borrow::Cow;

use super::event::MessageEvent;
use super::meta::{
    ConversationJson, Ctx, InboundJson, Normaliser, OriginJson, PayloadStats, PricingJson, ReferralJson, StatusJson,
    TS_RANGE,
};
use crate::billing::Ts;

/// The scanner's only error: "use the general path".
struct Bail;

type R<T> = Result<T, Bail>;

/// Nesting deeper than this bails (serde_json's own limit is 128; skipping is recursive).
const MAX_DEPTH: u32 = 100;

/// Runs the scanner over one payload. `None`: not handled here; `out` may hold partial
/// results the caller must discard.
pub(super) fn normalise(n: &mut Normaliser, payload: &str, out: &mut Vec<MessageEvent>) -> Option<PayloadStats> {
    let mut sc = Scanner {
        s: payload,
        b: payload.as_bytes(),
        i: 0,
    };
    sc.envelope(n, out).ok()
}

struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    /// JSON whitespace, as serde_json skips it.
    #[inline(always)]
    fn ws(&mut self) {
        // Compact JSON has none: one compare in the common case.
        if self.b.get(self.i).is_some_and(|&c| c <= b' ') {
            self.ws_slow();
        }
    }

    #[inline(never)]
    fn ws_slow(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\t' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(Bail)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn lit(&mut self, word: &[u8]) -> R<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// A string the caller reads: only without escapes or control characters, where
    /// serde's borrowed `Cow<str>` is exactly the text between the quotes.
    #[inline]
    fn plain_str(&mut self) -> R<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = find_special(self.b, start);
        if self.b.get(end) != Some(&b'"') {
            return Err(Bail);
        }
        self.i = end + 1;
        // The quotes are ASCII, so these are char boundaries of valid UTF-8.
        self.s.get(start..end).ok_or(Bail)
    }

    /// `null` → `None` (serde's `Option`), anything else read by `f` → `Some`.
    fn nullable<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<Option<T>> {
        if self.peek()? == b'n' {
            self.lit(b"null")?;
            Ok(None)
        } else {
            f(self).map(Some)
        }
    }

    /// `null` → `None`, a plain string → `Some`.
    fn opt_str(&mut self) -> R<Option<Cow<'a, str>>> {
        self.nullable(|sc| Ok(Cow::Borrowed(sc.plain_str()?)))
    }

    fn req_str(&mut self) -> R<Cow<'a, str>> {
        Ok(Cow::Borrowed(self.plain_str()?))
    }

    /// A skipped string, validated as serde_json's `ignore_str` does: escapes are one of
    /// `"\/bfnrt` or `u` and four hex digits; control characters are errors.
    fn skip_str(&mut self) -> R<()> {
        self.eat(b'"')?;
        loop {
            self.i = find_special(self.b, self.i);
            let c = *self.b.get(self.i).ok_or(Bail)?;
            self.i += 1;
            match c {
                b'"' => return Ok(()),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or(Bail)?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let h = self.b.get(self.i..self.i + 4).ok_or(Bail)?;
                            if !h.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Bail);
                            }
                            self.i += 4;
                        }
                        _ => return Err(Bail),
                    }
                }
                0..=0x1f => return Err(Bail),
                _ => {}
            }
        }
    }

    /// A JSON number (RFC 8259 grammar, which is what serde_json accepts).
    fn skip_number(&mut self) -> R<()> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return Err(Bail),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return Err(Bail);
            }
            self.digits();
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return Err(Bail);
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    /// Any value, checked and skipped (serde's `IgnoredAny`). Leading whitespace skipped.
    fn skip_value(&mut self, depth: u32) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(Bail);
        }
        self.ws();
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip_str()?;
                    self.ws();
                    self.eat(b':')?;
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Bail),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(Bail),
                    }
                }
            }
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => Err(Bail),
        }
    }

    /// An object of a declared struct: `f` gets each key (only keys without escapes, so
    /// they compare as serde compares field names) and must consume its value.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a str) -> R<()>) -> R<()> {
        self.ws();
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.plain_str()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }

    /// An array (a `Vec` field): `f` must consume each element.
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        self.ws();
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            f(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Bail),
            }
        }
    }

    fn envelope(&mut self, n: &mut Normaliser, out: &mut Vec<MessageEvent>) -> R<PayloadStats> {
        let mut stats = PayloadStats::default();
        let mut object: Option<Option<Cow<'a, str>>> = None;
        let mut entry = false;
        self.object(|sc, key| match key {
            "object" => once(&mut object, sc.opt_str()?),
            "entry" => {
                if std::mem::replace(&mut entry, true) {
                    return Err(Bail);
                }
                sc.array(|sc| sc.entry(n, out, &mut stats))
            }
            // On-Premises shapes (and a Cloud API payload carrying them) go the general way.
            "messages" | "statuses" => Err(Bail),
            _ => sc.skip_value(0),
        })?;
        self.ws();
        if self.i != self.b.len() || !entry {
            return Err(Bail);
        }
        match object.flatten() {
            Some(o) if o != "whatsapp_business_account" => Err(Bail),
            _ => Ok(stats),
        }
    }

    fn entry(&mut self, n: &mut Normaliser, out: &mut Vec<MessageEvent>, stats: &mut PayloadStats) -> R<()> {
        let mut id: Option<&'a str> = None;
        let mut changes = false;
        self.object(|sc, key| match key {
            "id" => once(&mut id, sc.plain_str()?),
            "changes" => {
                if std::mem::replace(&mut changes, true) {
                    return Err(Bail);
                }
                let waba_id = id.ok_or(Bail)?;
                sc.array(|sc| sc.change(n, waba_id, out, stats))
            }
            _ => sc.skip_value(0),
        })?;
        id.map(|_| ()).ok_or(Bail)
    }

    /// One change. Meta puts `value` before `field`, so the value is read as a messages
    /// value right away and its events are taken back if `field` turns out to be another
    /// webhook field (whose value may be any JSON).
    fn change(
        &mut self,
        n: &mut Normaliser,
        waba_id: &'a str,
        out: &mut Vec<MessageEvent>,
        stats: &mut PayloadStats,
    ) -> R<()> {
        let mut field: Option<Option<&'a str>> = None;
        // None: no `value` key; Some(false): a value that is not a good messages value.
        let mut value_ok: Option<bool> = None;
        let out_before = out.len();
        let stats_before = *stats;
        self.object(|sc, key| match key {
            "field" => {
                let f = sc.nullable(|sc| sc.plain_str())?;
                once(&mut field, f)
            }
            "value" => {
                if value_ok.is_some() {
                    return Err(Bail);
                }
                let start = sc.i;
                let ok = sc.change_value(n, waba_id, out, stats).is_ok();
                if !ok {
                    sc.i = start;
                    sc.skip_value(0)?;
                    out.truncate(out_before);
                    *stats = stats_before;
                }
                value_ok = Some(ok);
                Ok(())
            }
            _ => sc.skip_value(0),
        })?;
        if field.flatten().is_some_and(|f| f != "messages") {
            out.truncate(out_before);
            *stats = stats_before;
            stats.ignored_changes += 1;
            return Ok(());
        }
        match value_ok {
            Some(true) => Ok(()),
            // No value, or one that is not a messages value: dead letters, general path.
            _ => Err(Bail),
        }
    }

    fn change_value(
        &mut self,
        n: &mut Normaliser,
        waba_id: &'a str,
        out: &mut Vec<MessageEvent>,
        stats: &mut PayloadStats,
    ) -> R<()> {
        let mut phone_number_id: Option<&'a str> = None;
        let (mut messages, mut statuses) = (false, false);
        self.object(|sc, key| match key {
            "metadata" => {
                let mut pnid = None;
                sc.object(|sc, key| match key {
                    "phone_number_id" => once(&mut pnid, sc.plain_str()?),
                    _ => sc.skip_value(0),
                })?;
                let pnid = pnid.ok_or(Bail)?;
                once(&mut phone_number_id, pnid)
            }
            "messages" => {
                // The general path emits a value's messages before its statuses.
                if std::mem::replace(&mut messages, true) || statuses {
                    return Err(Bail);
                }
                let ctx = Ctx {
                    waba_id,
                    phone_number_id: phone_number_id.ok_or(Bail)?,
                    path: "",
                };
                sc.array(|sc| {
                    let m = sc.inbound()?;
                    match n.inbound_parsed(&ctx, m, stats) {
                        Ok(Some(ev)) => out.push(ev),
                        Ok(None) => stats.ignored_messages += 1,
                        Err(_) => return Err(Bail),
                    }
                    Ok(())
                })
            }
            "statuses" => {
                if std::mem::replace(&mut statuses, true) {
                    return Err(Bail);
                }
                let ctx = Ctx {
                    waba_id,
                    phone_number_id: phone_number_id.ok_or(Bail)?,
                    path: "",
                };
                sc.array(|sc| {
                    let s = sc.status()?;
                    out.push(n.status_parsed(&ctx, s, stats).map_err(|_| Bail)?);
                    Ok(())
                })
            }
            _ => sc.skip_value(0),
        })?;
        phone_number_id.map(|_| ()).ok_or(Bail)
    }

    /// Unix seconds as a string, exactly as `unix_ts` reads it (the integer form bails).
    fn timestamp(&mut self) -> R<Ts> {
        let s = self.plain_str()?;
        s.trim()
            .parse::<i64>()
            .ok()
            .filter(|t| TS_RANGE.contains(t))
            .ok_or(Bail)
    }

    fn inbound(&mut self) -> R<InboundJson<'a>> {
        let (mut from, mut id, mut timestamp, mut kind, mut referral) = (None, None, None, None, None);
        self.object(|sc, key| match key {
            "from" => once(&mut from, sc.req_str()?),
            "id" => once(&mut id, sc.req_str()?),
            "timestamp" => once(&mut timestamp, sc.timestamp()?),
            "type" => once(&mut kind, sc.opt_str()?),
            "referral" => {
                let r = sc.nullable(|sc| {
                    let mut source_type = None;
                    sc.object(|sc, key| match key {
                        "source_type" => once(&mut source_type, sc.opt_str()?),
                        _ => sc.skip_value(0),
                    })?;
                    Ok(ReferralJson {
                        source_type: source_type.flatten(),
                    })
                })?;
                once(&mut referral, r)
            }
            _ => sc.skip_value(0),
        })?;
        Ok(InboundJson {
            from: from.ok_or(Bail)?,
            id: id.ok_or(Bail)?,
            timestamp: timestamp.ok_or(Bail)?,
            kind: kind.flatten(),
            referral: referral.flatten(),
        })
    }

    fn status(&mut self) -> R<StatusJson<'a>> {
        let (mut id, mut status, mut timestamp, mut recipient_id) = (None, None, None, None);
        let (mut conversation, mut pricing) = (None, None);
        self.object(|sc, key| match key {
            "id" => once(&mut id, sc.req_str()?),
            "status" => once(&mut status, sc.req_str()?),
            "timestamp" => once(&mut timestamp, sc.timestamp()?),
            "recipient_id" => once(&mut recipient_id, sc.req_str()?),
            "conversation" => {
                let c = sc.nullable(|sc| {
                    let (mut cid, mut origin) = (None, None);
                    sc.object(|sc, key| match key {
                        "id" => once(&mut cid, sc.opt_str()?),
                        "origin" => {
                            let o = sc.nullable(|sc| {
                                let mut kind = None;
                                sc.object(|sc, key| match key {
                                    "type" => once(&mut kind, sc.opt_str()?),
                                    _ => sc.skip_value(0),
                                })?;
                                Ok(OriginJson { kind: kind.flatten() })
                            })?;
                            once(&mut origin, o)
                        }
                        _ => sc.skip_value(0),
                    })?;
                    Ok(ConversationJson {
                        id: cid.flatten(),
                        origin: origin.flatten(),
                    })
                })?;
                once(&mut conversation, c)
            }
            "pricing" => {
                let p = sc.nullable(|sc| {
                    let (mut billable, mut category) = (None, None);
                    sc.object(|sc, key| match key {
                        "billable" => {
                            let v = match sc.peek()? {
                                b't' => sc.lit(b"true").map(|_| Some(true))?,
                                b'f' => sc.lit(b"false").map(|_| Some(false))?,
                                b'n' => sc.lit(b"null").map(|_| None)?,
                                _ => return Err(Bail),
                            };
                            once(&mut billable, v)
                        }
                        "category" => once(&mut category, sc.opt_str()?),
                        _ => sc.skip_value(0),
                    })?;
                    Ok(PricingJson {
                        billable: billable.flatten(),
                        category: category.flatten(),
                    })
                })?;
                once(&mut pricing, p)
            }
            _ => sc.skip_value(0),
        })?;
        Ok(StatusJson {
            id: id.ok_or(Bail)?,
            status: status.ok_or(Bail)?,
            timestamp: timestamp.ok_or(Bail)?,
            recipient_id: recipient_id.ok_or(Bail)?,
            conversation: conversation.flatten(),
            pricing: pricing.flatten(),
        })
    }
}

/// Index of the first `"`, `\\` or control character at or after `i` (`b.len()` if none).
/// String scanning is the largest single cost of reading a payload, so: sixteen bytes at
/// a time with SSE2 (part of every x86-64), then eight at a time with serde_json's own
/// word-at-a-time test (a borrow can only flag a byte after the first real match, so the
/// lowest flagged byte is exact), then byte by byte.
#[inline]
fn find_special(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = b.get(i..i + 16) {
        let Ok(bytes) = <[u8; 16]>::try_from(chunk) else { break };
        // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 CPU has it.
        let m = unsafe { special_mask16(bytes) };
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else { break };
        let w = u64::from_le_bytes(bytes);
        let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let e = w ^ (ONES * u64::from(b'\\'));
        let escape = e.wrapping_sub(ONES) & !e;
        let m = (ctrl | quote | escape) & HIGH;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// Bit k set when byte k is `"`, `\\` or below 0x20.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn special_mask16(bytes: [u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };
    let lo = i64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    let hi = i64::from_le_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]);
    let v = _mm_set_epi64x(hi, lo);
    let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
    let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
    // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
    let limit = _mm_set1_epi8(0x1f);
    let control = _mm_cmpeq_epi8(_mm_max_epu8(v, limit), limit);
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
}

/// Sets a declared field; a second occurrence bails (serde: "duplicate field").
#[inline]
fn once<T>(slot: &mut Option<T>, v: T) -> R<()> {
    if slot.is_some() {
        return Err(Bail);
    }
    *slot = Some(v);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Differential tests: for every payload, the fast scanner either gives up or gives
    //! exactly what the general path gives.
    use super::super::meta::{BadEvent, Normaliser, OnPremises, PayloadError};
    use super::super::MessageEvent;
    use proptest::prelude::*;

    type Outcome = (Vec<MessageEvent>, Vec<BadEvent>, Result<String, PayloadError>);

    fn normaliser() -> Normaliser {
        Normaliser::new(
            Some(OnPremises {
                waba_id: "1".into(),
                phone_number_id: "2".into(),
            }),
            1 << 20,
        )
    }

    fn run(n: &mut Normaliser, p: &str, general: bool) -> Outcome {
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        let r = if general {
            n.normalise_general(p, &mut out, &mut bad)
        } else {
            n.normalise(p, &mut out, &mut bad)
        };
        (out, bad, r.map(|s| format!("{s:?}")))
    }

    /// Returns whether the fast scanner took the payload.
    fn check(p: &str) -> bool {
        let mut n = normaliser();
        let mut out = Vec::new();
        let fast = super::normalise(&mut n, p, &mut out).is_some();
        let a = run(&mut n, p, false);
        let b = run(&mut normaliser(), p, true);
        assert_eq!(a, b, "payload: {p}");
        fast
    }

    fn sim_lines(n: u64) -> Vec<String> {
        let cfg = crate::sim::SimConfig {
            events: n,
            users: 50,
            ..crate::sim::SimConfig::default()
        };
        let mut v = Vec::new();
        crate::sim::generate(&cfg, |l| v.push(l.to_string()));
        // Per-message-era traffic: PMP pricing objects, free entry point conversations.
        let cfg = crate::sim::SimConfig {
            events: n,
            users: 50,
            start: crate::sim::SERVICE_CHARGED_FROM - 86_400,
            days: 5,
            send_log: true,
            ..crate::sim::SimConfig::default()
        };
        crate::sim::generate(&cfg, |l| v.push(l.to_string()));
        v
    }

    fn corpus() -> Vec<String> {
        let mut v = sim_lines(400);
        let root = env!("CARGO_MANIFEST_DIR");
        for f in [
            "tests/golden/multi-waba-2022-03/input.jsonl",
            "data/sample/webhooks-2022-03.jsonl",
            "data/sample/webhooks-2025-2026.jsonl",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap_or_default();
            v.extend(text.lines().take(2000).map(str::to_string));
        }
        v
    }

    #[test]
    fn fast_path_takes_generated_traffic_and_agrees() {
        let lines = sim_lines(3000);
        let taken = lines.iter().filter(|l| check(l)).count();
        // Send-log records take the serde path (they are not Meta payloads).
        let payloads = lines
            .iter()
            .filter(|l| !l.starts_with(r#"{"object":"send_log""#))
            .count();
        assert_eq!(taken, payloads, "every generated payload is well-formed");
        let corpus = corpus();
        for l in &corpus {
            check(l);
        }
    }

    #[test]
    fn hand_made_edge_cases_agree() {
        let s = r#"{"id":"wamid.A","status":"delivered","timestamp":"1646092828","recipient_id":"5511987654321"}"#;
        let m =
            r#"{"from":"5511987654321","id":"wamid.B","timestamp":"1646092828","type":"text","text":{"body":"hi"}}"#;
        let wrap = |value: &str, field: &str| {
            format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"10","changes":[{{"value":{value},"field":{field}}}]}}]}}"#
            )
        };
        let meta = r#""metadata":{"phone_number_id":"20"}"#;
        let st = |f: &str, t: &str| {
            wrap(
                &format!(r#"{{{meta},"statuses":[{}]}}"#, s.replace(f, t)),
                r#""messages""#,
            )
        };
        let ms = |f: &str, t: &str| {
            wrap(
                &format!(r#"{{{meta},"messages":[{}]}}"#, m.replace(f, t)),
                r#""messages""#,
            )
        };
        let cases = [
            wrap(&format!(r#"{{{meta},"statuses":[{s}]}}"#), r#""messages""#),
            wrap(&format!(r#"{{{meta},"statuses":[{s}]}}"#), "null"),
            wrap(
                &format!(r#"{{{meta},"statuses":[{s}]}}"#),
                r#""message_template_status_update""#,
            ),
            wrap(r#"{"event":"APPROVED"}"#, r#""message_template_status_update""#),
            wrap("null", r#""account_update""#),
            wrap("null", r#""messages""#),
            wrap(
                &format!(r#"{{{meta},"statuses":[{s}],"messages":[{m}]}}"#),
                r#""messages""#,
            ),
            wrap(
                &format!(r#"{{{meta},"messages":[{m}],"statuses":[{s}]}}"#),
                r#""messages""#,
            ),
            wrap(&format!(r#"{{"statuses":[{s}],{meta}}}"#), r#""messages""#),
            wrap(&format!(r#"{{{meta},{meta},"statuses":[{s}]}}"#), r#""messages""#),
            wrap(
                &format!(r#"{{{meta},"statuses":[{s}],"statuses":[]}}"#),
                r#""messages""#,
            ),
            st("1646092828", "1646092828.5"),
            st(r#""1646092828""#, "1646092828"),
            st("1646092828", " 1646092828 "),
            st("1646092828", "+1646092828"),
            st("1646092828", "-5"),
            st("delivered", "deliv\\u0065red"),
            st(r#""status""#, r#""st\u0061tus""#),
            st("delivered", "seen"),
            st("5511987654321", "999123"),
            st(r#""id":"wamid.A""#, r#""id":"""#),
            ms(r#""text""#, r#""system""#),
            ms(
                r#""type":"text","#,
                r#""referral":{"source_type":"ad","x":[1,-2.5e3,true,null]},"#,
            ),
            ms(r#""type":"text","#, r#""referral":null,"type":null,"#),
            ms(r#""type":"text","#, r#""referral":["ad"],"#),
            ms("hi", r#"h\"i\n\u00e9\ud83d"#),
            ms("hi", r#"h\x"#),
            ms("hi", "h\ti"),
            st(
                r#""recipient_id""#,
                r#""conversation":{"id":"c1","origin":{"type":"referral_conversion"}},"pricing":{"billable":false,"category":"referral_conversion"},"recipient_id""#,
            ),
            st(
                r#""recipient_id""#,
                r#""conversation":null,"pricing":{"billable":null},"recipient_id""#,
            ),
            st(r#""recipient_id""#, r#""pricing":{"billable":1},"recipient_id""#),
            st(
                r#""recipient_id""#,
                r#""errors":[{"code":131026,"title":"x"}],"recipient_id""#,
            ),
            r#"{"object":"page","entry":[]}"#.to_string(),
            r#"{"entry":[],"object":"whatsapp_business_account"}"#.to_string(),
            r#"{"entry":null}"#.to_string(),
            r#"{"entry":[{"changes":[],"id":"1"}]}"#.to_string(),
            r#"{"entry":[{"id":"1"}]} x"#.to_string(),
            r#"{"entry":[{"id":"1"}],}"#.to_string(),
            r#"{"entry":[{"id":"1"},]}"#.to_string(),
            r#"  { "entry" : [ { "id" : "1" , "changes" : [ ] } ] , "x" : 01 }  "#.to_string(),
            r#"{"entry":[{"id":"1","changes":[]}],"x":-0.0e+1}"#.to_string(),
            r#"{"entry":[{"id":"1","changes":[]}],"x":1.}"#.to_string(),
            format!(r#"{{"messages":[{m}]}}"#),
            format!(r#"{{"statuses":[{s}],"entry":[]}}"#),
            r#"[{"entry":[]}]"#.to_string(),
            "{}".to_string(),
            "".to_string(),
        ];
        let taken: Vec<bool> = cases.iter().map(|c| check(c)).collect();
        // The plain forms are taken (so the comparisons above test the scanner).
        let want = [0, 1, 2, 3, 4, 7, 13, 14, 21, 22, 23, 25, 28, 29, 31, 33, 40];
        let got: Vec<usize> = (0..cases.len()).filter(|&i| taken[i]).collect();
        assert_eq!(got, want);
    }

    /// Byte-level mutations of real payloads.
    fn mutate(p: &str, ops: &[(u8, usize, usize)]) -> String {
        const PIECES: &[&str] = &[
            "\"",
            "\\",
            "\\u0041",
            "\\n",
            ",",
            ":",
            "{",
            "}",
            "[",
            "]",
            " ",
            "null",
            "true",
            "1",
            "-",
            "0",
            "\"x\":1,",
            "\"id\":\"d\",",
            "\"field\":\"statuses\",",
            "\t",
            "\u{1}",
            "é",
        ];
        let mut b: Vec<u8> = p.as_bytes().to_vec();
        for &(op, at, k) in ops {
            if b.is_empty() {
                break;
            }
            let at = at % b.len();
            match op % 4 {
                0 => {
                    b.remove(at);
                }
                1 => {
                    let piece = PIECES[k % PIECES.len()].as_bytes();
                    b.splice(at..at, piece.iter().copied());
                }
                2 => {
                    let end = (at + 1 + k % 40).min(b.len());
                    let seg: Vec<u8> = b[at..end].to_vec();
                    b.splice(at..at, seg);
                }
                _ => {
                    let end = (at + 1 + k % 20).min(b.len());
                    b.drain(at..end);
                }
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    /// What `find_special` computes, byte by byte.
    fn naive_special(b: &[u8], i: usize) -> usize {
        (i..b.len())
            .find(|&k| b[k] == b'"' || b[k] == b'\\' || b[k] < 0x20)
            .unwrap_or(b.len().max(i))
    }

    proptest! {
        #[test]
        fn find_special_is_the_first_special_byte(b in proptest::collection::vec(any::<u8>(), 0..80), i in 0usize..80) {
            prop_assert_eq!(super::find_special(&b, i), naive_special(&b, i));
        }

        /// Mostly plain bytes, so the first special one often lies beyond the first
        /// sixteen- and eight-byte blocks (uniform bytes are special one time in eight).
        #[test]
        fn find_special_finds_rare_special_bytes(
            b in proptest::collection::vec(prop_oneof![30 => 0x20u8..=0xff, 1 => any::<u8>()], 0..100),
            i in 0usize..40,
        ) {
            prop_assert_eq!(super::find_special(&b, i), naive_special(&b, i));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10000, ..ProptestConfig::default() })]
        #[test]
        fn mutated_payloads_agree(line in 0usize..400, ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..4)) {
            thread_local!(static CORPUS: Vec<String> = corpus());
            let p = CORPUS.with(|c| mutate(&c[line % c.len()], &ops));
            check(&p);
        }
    }
}

//! A deterministic generator of realistic Meta webhook traffic: users writing in (some
//! from Click-to-WhatsApp ads), businesses replying and sending templates, statuses that
//! arrive batched, out of order within seconds, duplicated by retries, `read` without
//! `delivered`, failures; with the send log on, the BSP's send-log records and Meta's
//! `pricing` objects as Meta sends them in each era (from 2025-07-01 its per-message
//! verdicts, `"pricing_model":"PMP"`). Used for the bundled sample, benchmarks and
//! property tests.

use std::fmt::Write as _;

use crate::billing::Ts;

/// SplitMix64: tiny, fast, and the same sequence on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Approximate number of message/status events to produce.
    pub events: u64,
    pub users: u64,
    pub wabas: u64,
    /// First instant of the simulated period.
    pub start: Ts,
    pub days: i64,
    /// Fraction of payloads delivered twice (Meta retries).
    pub duplicate_rate: f64,
    /// Maximum displacement of a payload from its timestamp order, in seconds; keep it
    /// below the allowed lateness for "no late events" traffic.
    pub max_disorder_secs: i64,
    /// Share of traffic that goes to the first WABA (to push it past its free tier).
    pub first_waba_share: f64,
    /// Emit the BSP's send-log records and Meta's `pricing` objects with a category (the
    /// category and per-message eras need a message's kind, docs/billing-rules.md §6; from
    /// 2025-07-01 the objects are Meta's per-message verdicts). Off: the 2022 traffic of
    /// earlier versions, byte for byte.
    pub send_log: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            events: 10_000,
            users: 1_000,
            wabas: 4,
            start: 1_646_092_800, // 2022-03-01T00:00:00Z
            days: 31,
            duplicate_rate: 0.01,
            max_disorder_secs: 60,
            first_waba_share: 0.4,
            send_log: false,
        }
    }
}

/// First instant of `cbp-2023` in UTC: Meta's `pricing.category` names a category from
/// then on (the generator's WABAs are all in UTC unless configured otherwise; a WABA in
/// another zone sees a few hours of 2022 spellings after its own switch, which the
/// pricing fallback treats as "unknown", exactly as for real traffic).
pub const CATEGORY_ERAS_FROM: Ts = 1_685_577_600;

/// First instant of `pmp-2025-07` in UTC (2025-07-01): messages sent from then on carry
/// Meta's per-message `pricing` objects (`"pricing_model":"PMP"`, a `type` and the rate's
/// `category`), and the traffic gets `MARKETING_LITE` templates, replies only inside the
/// customer service window, and follow-ups inside free entry point windows. Nothing
/// changes for traffic before it: the same seed gives the same bytes as before.
pub const PER_MESSAGE_FROM: Ts = 1_751_328_000;

/// First instant of `pmp-2026-10` in UTC (2026-10-01): Meta charges utility templates in
/// the CSW and service messages after the business number's free tier.
pub const SERVICE_CHARGED_FROM: Ts = 1_790_812_800;

/// Meta's free service messages per business number and month from 2026-10-01, as the
/// generator plays Meta (UTC months: the generator knows no WABA time zone).
const META_SERVICE_FREE_TIER: u64 = 1000;

const DAY: Ts = 86_400;

/// Meta's free entry point window in the per-message eras.
const FEP_SECS: Ts = 72 * 3600;

/// What a simulated business message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimKind {
    NonTemplate,
    Marketing,
    /// Marketing Messages API (per-message eras only).
    MarketingLite,
    Utility,
    Authentication,
}

impl SimKind {
    fn category(self) -> &'static str {
        match self {
            SimKind::NonTemplate => "service",
            SimKind::Marketing => "marketing",
            SimKind::MarketingLite => "marketing_lite",
            SimKind::Utility => "utility",
            SimKind::Authentication => "authentication",
        }
    }
    fn template(self) -> Option<(&'static str, &'static str)> {
        match self {
            SimKind::NonTemplate => None,
            SimKind::Marketing => Some(("spring_sale", "MARKETING")),
            SimKind::MarketingLite => Some(("weekend_offer", "MARKETING_LITE")),
            SimKind::Utility => Some(("order_update", "UTILITY")),
            SimKind::Authentication => Some(("login_code", "AUTHENTICATION")),
        }
    }
}

/// Where a simulated message's kind can be read: its send-log record, Meta's pricing
/// category on its statuses, both, or neither (then a delivery that needs it is a dead
/// letter).
#[derive(Debug, Clone, Copy)]
struct KindInfo {
    kind: SimKind,
    priced: bool,
}

/// Meta's per-message verdict on a message sent from 2025-07-01, as its statuses carry it
/// (`pricing.type`, `pricing.category`; docs/billing-rules.md §5). The generator plays
/// Meta here; wabill decides by its own rules and reads only the category, as the
/// fallback source of a message's kind.
#[derive(Debug, Clone, Copy)]
struct MetaPmp {
    pricing_type: &'static str,
    category: &'static str,
    /// The free entry point window the message is in: (opening instant, expiry). Meta
    /// then sends a `conversation` object too, with an id per window.
    fep: Option<(Ts, Ts)>,
}

/// A simulated business message.
#[derive(Debug, Clone)]
struct Msg {
    id: String,
    /// `None` when the traffic has no send log (2022 traffic).
    kind: Option<KindInfo>,
    /// Its `sent` instant.
    sent: Ts,
    /// Reaches the user (`delivered` and/or `read`); false: `failed`.
    delivers: bool,
    /// Meta's per-message pricing (messages sent from `PER_MESSAGE_FROM` with a kind).
    pmp: Option<MetaPmp>,
}

impl SimConfig {
    /// The month every benchmark uses (BENCHMARKS.md): seed 42, 100 k users, 50 WABAs,
    /// 31 days from 2022-03-01.
    pub fn benchmark_month(events: u64) -> SimConfig {
        SimConfig {
            seed: 42,
            events,
            users: 100_000,
            wabas: 50,
            first_waba_share: 0.05,
            ..SimConfig::default()
        }
    }
}

/// WABA ids of the simulation (stable, realistic 15-digit ids).
pub fn waba_id(i: u64) -> String {
    format!("1022901293{:05}", 40398 + i * 7919 % 59_000)
}
pub fn phone_number_id(waba: u64, n: u64) -> String {
    format!("1065403522{:05}", 42922 + waba * 131 + n)
}

/// Country prefixes and national-number lengths of simulated users, with weights.
const COUNTRIES: &[(&str, usize, u64)] = &[
    ("1650", 7, 12),  // US
    ("1416", 7, 3),   // Canada
    ("1876", 7, 1),   // Jamaica → Rest of Latin America
    ("1242", 7, 1),   // Bahamas → Other
    ("5511", 9, 20),  // Brazil (mobile 9 digits)
    ("9198", 8, 15),  // India
    ("447", 9, 8),    // UK
    ("4915", 10, 6),  // Germany
    ("52155", 8, 6),  // Mexico
    ("234803", 7, 5), // Nigeria
    ("254712", 6, 4), // Kenya → Rest of Africa
    ("5491", 10, 4),  // Argentina
    ("6591", 7, 3),   // Singapore → Rest of APAC
    ("3069", 8, 2),   // Greece → CEE
    ("9715", 8, 2),   // UAE
    ("9743", 7, 1),   // Qatar → Rest of Middle East
    ("7701", 8, 1),   // Kazakhstan → Other
];

fn user_number(rng: &mut Rng, i: u64) -> String {
    let total: u64 = COUNTRIES.iter().map(|c| c.2).sum();
    let mut pick = (i.wrapping_mul(2_654_435_761) ^ rng.below(1)) % total;
    let mut entry = COUNTRIES[0];
    for c in COUNTRIES {
        if pick < c.2 {
            entry = *c;
            break;
        }
        pick -= c.2;
    }
    let (prefix, len, _) = entry;
    let mut s = String::from(prefix);
    // Deterministic digits from the user index; the first national digit avoids 0/1.
    let mut x = i
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    for k in 0..len {
        let d = if k == 0 { 2 + (x % 8) } else { x % 10 };
        s.push(char::from(b'0' + d as u8));
        x /= 10;
        if x == 0 {
            x = i.wrapping_mul(31).wrapping_add(k as u64 * 977 + 12_345);
        }
    }
    s
}

#[derive(Debug, Clone)]
enum Item {
    Inbound {
        id: String,
        referral_ad: Option<bool>,
    },
    Status {
        /// Index into the messages.
        msg: usize,
        status: &'static str,
        /// Carries Meta's `conversation`/`pricing` objects (before 2025-07-01: `sent` and
        /// `delivered`; from then on `sent` and exactly one of `delivered`/`read`).
        pricing: bool,
    },
    SendLog {
        msg: usize,
    },
}

#[derive(Debug, Clone)]
struct Ev {
    ts: Ts,
    waba: u64,
    phone: u64,
    user: u64,
    item: Item,
}

/// Who a message goes to: (WABA, business number, user) indices.
type Pair = (u64, u64, u64);

fn next_id(rng: &mut Rng, seq: &mut u64) -> String {
    *seq += 1;
    format!("wamid.HBgL{:016X}{:08X}", rng.next_u64(), *seq)
}

/// One business message sent at `t`: its send-log record, statuses and failure. `free_form`:
/// the business may answer free-form (before 2025-07-01: the user wrote in this session;
/// from then on: the CSW is open at `t`). Draws from `rng` in exactly the order of the
/// generator's earlier versions for messages sent before `PER_MESSAGE_FROM`.
#[allow(clippy::too_many_arguments)]
fn business_message(
    rng: &mut Rng,
    cfg: &SimConfig,
    seq: &mut u64,
    evs: &mut Vec<Ev>,
    msgs: &mut Vec<Msg>,
    (waba, phone, user): Pair,
    t: Ts,
    free_form: bool,
) {
    let pmp = t >= PER_MESSAGE_FROM;
    let id = next_id(rng, seq);
    let m = msgs.len();
    let push = |evs: &mut Vec<Ev>, ts: Ts, item: Item| {
        evs.push(Ev {
            ts,
            waba,
            phone,
            user,
            item,
        })
    };
    // Only with send_log on: no extra draws otherwise, so 2022 traffic keeps its bytes.
    let kind = cfg.send_log.then(|| {
        let kind = if free_form && rng.chance(0.75) {
            SimKind::NonTemplate
        } else {
            match rng.below(20) {
                0..=8 => SimKind::Marketing,
                9..=16 => SimKind::Utility,
                _ => SimKind::Authentication,
            }
        };
        // Per-message eras: some marketing goes through the Marketing Messages API.
        let kind = if pmp && kind == SimKind::Marketing && rng.chance(0.3) {
            SimKind::MarketingLite
        } else {
            kind
        };
        // Most messages are in the send log; of the rest most carry Meta's
        // category; a few carry neither.
        let logged = rng.chance(0.9);
        let priced = logged || rng.chance(0.9);
        if logged {
            push(evs, t, Item::SendLog { msg: m });
        }
        KindInfo { kind, priced }
    });
    msgs.push(Msg {
        id,
        kind,
        sent: t,
        delivers: true,
        pmp: None,
    });
    push(
        evs,
        t,
        Item::Status {
            msg: m,
            status: "sent",
            pricing: true,
        },
    );
    if rng.chance(0.02) {
        msgs[m].delivers = false;
        push(
            evs,
            t + rng.range(1, 30),
            Item::Status {
                msg: m,
                status: "failed",
                pricing: false,
            },
        );
        return;
    }
    let d = t + rng.range(1, 20);
    let read_only = rng.chance(0.03);
    let read_at = (read_only || rng.chance(0.6)).then(|| d + rng.range(0, 7200));
    // Per-message eras: Meta's pricing comes on `sent` and on one of `delivered`/`read`
    // (docs reference §2): mostly `delivered`, sometimes the `read` that follows it.
    let on_read = pmp && cfg.send_log && !read_only && read_at.is_some() && rng.chance(0.25);
    if !read_only {
        push(
            evs,
            d,
            Item::Status {
                msg: m,
                status: "delivered",
                pricing: !on_read,
            },
        );
    }
    if let Some(r) = read_at {
        push(
            evs,
            r,
            Item::Status {
                msg: m,
                status: "read",
                pricing: pmp && cfg.send_log && (read_only || on_read),
            },
        );
    }
}

/// Generates the traffic as JSON lines of Meta Cloud API payloads.
pub fn generate(cfg: &SimConfig, mut write: impl FnMut(&str)) {
    let mut rng = Rng::new(cfg.seed);
    let users: Vec<(String, u64, u64)> = (0..cfg.users)
        .map(|i| {
            let waba = if rng.chance(cfg.first_waba_share) {
                0
            } else {
                rng.below(cfg.wabas.max(1))
            };
            let phone = rng.below(2);
            (user_number(&mut rng, i), waba, phone)
        })
        .collect();
    let mut evs: Vec<Ev> = Vec::with_capacity(cfg.events as usize + 16);
    let mut msgs: Vec<Msg> = Vec::new();
    let end = cfg.start + cfg.days * DAY;
    let mut seq = 0u64;
    while (evs.len() as u64) < cfg.events {
        let u = rng.below(cfg.users.max(1));
        let (_, waba, phone) = users[u as usize];
        let pair = (waba, phone, u);
        let mut t = rng.range(cfg.start, end - 3 * 3600);
        let pmp = t >= PER_MESSAGE_FROM;
        let user_wrote = rng.chance(0.6);
        // The user's CSW (per-message eras: free-form replies only inside it).
        let mut csw_until = Ts::MIN;
        let mut referral = None;
        let referral_at = t;
        if user_wrote {
            // The user writes first (sometimes from an ad or a boosted post; Click-to-WhatsApp
            // ads are more common in the per-message eras' traffic).
            referral = if rng.chance(if pmp { 0.12 } else { 0.06 }) {
                Some(rng.chance(0.8))
            } else {
                None
            };
            // An ad click sends the ad's greeting alone (per-message eras), so the
            // business's answer opens a free entry point.
            let more = rng.below(2);
            let more = if pmp && referral == Some(true) { 0 } else { more };
            for k in 0..=more {
                let id = next_id(&mut rng, &mut seq);
                let r = if k == 0 { referral } else { None };
                evs.push(Ev {
                    ts: t,
                    waba,
                    phone,
                    user: u,
                    item: Item::Inbound { id, referral_ad: r },
                });
                csw_until = t + DAY;
                t += rng.range(5, 300);
            }
            // The business answers, usually quickly, sometimes a day later.
            t += if rng.chance(0.9) {
                rng.range(10, 3600)
            } else {
                rng.range(20 * 3600, 30 * 3600)
            };
        }
        for _ in 0..=rng.below(3) {
            let free_form = if t >= PER_MESSAGE_FROM {
                t < csw_until
            } else {
                user_wrote
            };
            business_message(&mut rng, cfg, &mut seq, &mut evs, &mut msgs, pair, t, free_form);
            t += rng.range(30, 4 * 3600);
        }
        // Per-message eras: after an ad conversation the business follows up with a
        // template a day or two later, inside the 72-hour free entry point window.
        if pmp && referral == Some(true) && rng.chance(0.6) {
            let f = referral_at + rng.range(26 * 3600, 60 * 3600);
            if f < end {
                business_message(&mut rng, cfg, &mut seq, &mut evs, &mut msgs, pair, f, false);
            }
        }
    }
    evs.sort_by_key(|e| e.ts);
    meta_per_message_view(&evs, &mut msgs, &users);
    // Arrival order: displaced by up to max_disorder_secs, never more, so no event is
    // late when max_disorder_secs is below the allowed lateness.
    let mut keyed: Vec<(Ts, usize)> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| (e.ts + rng.range(0, cfg.max_disorder_secs.max(0) + 1), i))
        .collect();
    keyed.sort();
    let mut line = String::with_capacity(2048);
    let mut i = 0;
    while i < keyed.len() {
        // Batch consecutive events of the same business number (Meta batches updates).
        let first = &evs[keyed[i].1];
        let mut batch = vec![keyed[i].1];
        let max = 1 + rng.below(4) as usize;
        while batch.len() < max && i + batch.len() < keyed.len() {
            let e = &evs[keyed[i + batch.len()].1];
            // Meta batches updates that happen together: same number, within seconds.
            if e.waba != first.waba || e.phone != first.phone || (e.ts - first.ts).abs() > 5 {
                break;
            }
            batch.push(keyed[i + batch.len()].1);
        }
        i += batch.len();
        // Send-log records are the BSP's own lines, one per message, not Meta payloads.
        let (logs, hooks): (Vec<usize>, Vec<usize>) = batch
            .iter()
            .partition(|&&k| matches!(evs[k].item, Item::SendLog { .. }));
        for k in logs {
            line.clear();
            send_log_line(&mut line, &evs[k], &msgs, &users);
            write(&line);
        }
        if hooks.is_empty() {
            continue;
        }
        line.clear();
        payload(&mut line, &evs, &hooks, &msgs, &users);
        write(&line);
        if rng.chance(cfg.duplicate_rate) {
            write(&line);
        }
    }
}

/// Plays Meta for the messages sent from 2025-07-01 (reference §2; docs/billing-rules.md
/// §5): walks the events in time order with each pair's CSW and free entry point window
/// and each business number's monthly service count, and sets `Msg::pmp`. Meta decides
/// when it sends (the statuses carry the verdict from `sent` on); a message that fails
/// opens no window and uses no free tier. Draws nothing, so the output before
/// `PER_MESSAGE_FROM` is unchanged.
fn meta_per_message_view(evs: &[Ev], msgs: &mut [Msg], users: &[(String, u64, u64)]) {
    #[derive(Default)]
    struct PairState {
        csw_until: Ts,
        /// The latest inbound message carried an ad referral: (its instant, used).
        ad: Option<(Ts, bool)>,
        /// The open free entry point window: (opened, expires).
        fep: Option<(Ts, Ts)>,
    }
    let mut pairs: std::collections::HashMap<Pair, PairState> = std::collections::HashMap::new();
    let mut service: std::collections::HashMap<(u64, u64, i64), u64> = std::collections::HashMap::new();
    for e in evs {
        let p = pairs.entry((e.waba, e.phone, e.user)).or_default();
        match &e.item {
            Item::Inbound { referral_ad, .. } => {
                p.csw_until = p.csw_until.max(e.ts + DAY);
                p.ad = (*referral_ad == Some(true)).then_some((e.ts, false));
            }
            Item::Status {
                msg, status: "sent", ..
            } => {
                let m = &mut msgs[*msg];
                let Some(k) = m.kind.filter(|_| m.sent >= PER_MESSAGE_FROM) else {
                    continue;
                };
                let s = m.sent;
                let mut fep = p.fep.filter(|w| s < w.1);
                if fep.is_none() && m.delivers {
                    if let Some((at, used @ false)) = &mut p.ad {
                        if s < *at + DAY {
                            *used = true;
                            fep = Some((s, s + FEP_SECS));
                            p.fep = fep;
                        }
                    }
                }
                let regular = |category| ("regular", category);
                let (pricing_type, category) = match (fep, k.kind) {
                    (Some(_), _) => ("free_entry_point", "referral_conversion"),
                    (None, SimKind::NonTemplate) if s < SERVICE_CHARGED_FROM => ("free_customer_service", "service"),
                    (None, SimKind::NonTemplate) => {
                        let n = service.entry((e.waba, e.phone, month_index(s))).or_default();
                        let t = if *n < META_SERVICE_FREE_TIER {
                            ("free_customer_service", "service")
                        } else {
                            regular("service")
                        };
                        *n += u64::from(m.delivers);
                        t
                    }
                    (None, SimKind::Utility) if s < SERVICE_CHARGED_FROM && s < p.csw_until => {
                        ("free_customer_service", "utility")
                    }
                    // Meta's authentication-international: users in India (a market with an
                    // international rate) of the first WABA (the sample's Brazilian retailer).
                    (None, SimKind::Authentication) if e.waba == 0 && users[e.user as usize].0.starts_with("91") => {
                        regular("authentication-international")
                    }
                    (None, kind) => regular(kind.category()),
                };
                m.pmp = Some(MetaPmp {
                    pricing_type,
                    category,
                    fep,
                });
            }
            _ => {}
        }
    }
}

/// SplitMix64's finaliser: 64 well-mixed bits (ids that look like Meta's).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Months since year 0 of a UTC instant.
fn month_index(ts: Ts) -> i64 {
    use chrono::Datelike;
    let d = chrono::DateTime::from_timestamp(ts, 0).unwrap_or_default();
    i64::from(d.year()) * 12 + i64::from(d.month0())
}

fn send_log_line(out: &mut String, e: &Ev, msgs: &[Msg], users: &[(String, u64, u64)]) {
    let Item::SendLog { msg } = &e.item else {
        return;
    };
    let m = &msgs[*msg];
    let Some(k) = m.kind else {
        return;
    };
    let pnid = phone_number_id(e.waba, e.phone);
    let _ = write!(
        out,
        r#"{{"object":"send_log","message_id":"{}","waba_id":"{}","phone_number_id":"{}","to":"{}","timestamp":"{}","template":"#,
        m.id,
        waba_id(e.waba),
        pnid,
        users[e.user as usize].0,
        e.ts
    );
    match k.kind.template() {
        None => out.push_str("null}"),
        Some((name, category)) => {
            let _ = write!(
                out,
                r#"{{"name":"{name}","language":"en_US","category":"{category}"}}}}"#
            );
        }
    }
}

fn payload(out: &mut String, evs: &[Ev], batch: &[usize], msgs: &[Msg], users: &[(String, u64, u64)]) {
    let e0 = &evs[batch[0]];
    let pnid = phone_number_id(e0.waba, e0.phone);
    let _ = write!(
        out,
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{}","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"1555{}","phone_number_id":"{}"}}"#,
        waba_id(e0.waba),
        &pnid[pnid.len() - 7..],
        pnid
    );
    let inbound: Vec<&Ev> = batch
        .iter()
        .map(|&k| &evs[k])
        .filter(|e| matches!(e.item, Item::Inbound { .. }))
        .collect();
    let statuses: Vec<&Ev> = batch
        .iter()
        .map(|&k| &evs[k])
        .filter(|e| matches!(e.item, Item::Status { .. }))
        .collect();
    if !inbound.is_empty() {
        out.push_str(r#","contacts":["#);
        for (k, e) in inbound.iter().enumerate() {
            let wa = &users[e.user as usize].0;
            let _ = write!(
                out,
                r#"{}{{"profile":{{"name":"User {}"}},"wa_id":"{}"}}"#,
                if k > 0 { "," } else { "" },
                e.user,
                wa
            );
        }
        out.push_str(r#"],"messages":["#);
        for (k, e) in inbound.iter().enumerate() {
            let Item::Inbound { id, referral_ad } = &e.item else {
                continue;
            };
            let wa = &users[e.user as usize].0;
            if k > 0 {
                out.push(',');
            }
            out.push('{');
            if let Some(ad) = referral_ad {
                let _ = write!(
                    out,
                    r#""referral":{{"source_url":"https://fb.me/3cr4Wqqkv","source_id":"1202263058548{:05}","source_type":"{}","headline":"Chat with us","media_type":"image"}},"#,
                    e.user % 100_000,
                    if *ad { "ad" } else { "post" }
                );
            }
            let _ = write!(
                out,
                r#""from":"{}","id":"{}","timestamp":"{}","text":{{"body":"Hello, is my order on its way?"}},"type":"text"}}"#,
                wa, id, e.ts
            );
        }
        out.push(']');
    }
    if !statuses.is_empty() {
        out.push_str(r#","statuses":["#);
        for (k, e) in statuses.iter().enumerate() {
            let Item::Status { msg, status, pricing } = &e.item else {
                continue;
            };
            let m = &msgs[*msg];
            let wa = &users[e.user as usize].0;
            if k > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"{{"id":"{}","status":"{}","timestamp":"{}","recipient_id":"{}""#,
                m.id, status, e.ts, wa
            );
            if *status == "failed" {
                out.push_str(r#","errors":[{"code":131049,"title":"This message was not delivered to maintain healthy ecosystem engagement."}]"#);
            } else if !*pricing {
            } else if let Some(p) = &m.pmp {
                // Per-message eras (v24 webhooks): a `conversation` object only inside a
                // free entry point window (an id per window, the expiry on `sent`), and
                // the `pricing` object — unless the message is one of the few whose kind
                // nothing tells (a relay that drops Meta's objects).
                if let Some((opened, expires)) = p.fep {
                    let _ = write!(
                        out,
                        r#","conversation":{{"id":"{:016x}{:016x}"{},"origin":{{"type":"referral_conversion"}}}}"#,
                        mix(e.user ^ (opened as u64) << 20),
                        mix(opened as u64 ^ e.user << 7),
                        if *status == "sent" {
                            format!(r#","expiration_timestamp":"{expires}""#)
                        } else {
                            String::new()
                        }
                    );
                }
                if m.kind.is_some_and(|k| k.priced) {
                    let _ = write!(
                        out,
                        r#","pricing":{{"billable":{},"pricing_model":"PMP","type":"{}","category":"{}"}}"#,
                        p.pricing_type == "regular",
                        p.pricing_type,
                        p.category
                    );
                }
            } else if let Some(k) = m.kind.filter(|_| e.ts >= CATEGORY_ERAS_FROM) {
                // Category eras: Meta's pricing category (here the message's own category;
                // for a free-form message inside a template conversation Meta names the
                // conversation's, which joins the same conversation, docs/billing-rules.md §6).
                let origin = k.kind.category();
                let category = if k.priced {
                    format!(r#","category":"{origin}""#)
                } else {
                    String::new()
                };
                let _ = write!(
                    out,
                    r#","conversation":{{"id":"{:032x}","origin":{{"type":"{origin}"}}}},"pricing":{{"billable":true,"pricing_model":"CBP"{category}}}"#,
                    (e.user as u128) * 0x1F1F_1F1F + e.ts as u128 / 86_400,
                );
            } else {
                let _ = write!(
                    out,
                    r#","conversation":{{"id":"{:032x}"{},"origin":{{"type":"business_initiated"}}}},"pricing":{{"billable":true,"pricing_model":"CBP","category":"business_initiated"}}"#,
                    (e.user as u128) * 0x1F1F_1F1F + e.ts as u128 / 86_400,
                    if *status == "sent" {
                        format!(r#","expiration_timestamp":"{}""#, e.ts + 86_400)
                    } else {
                        String::new()
                    }
                );
            }
            out.push('}');
        }
        out.push(']');
    }
    out.push_str(r#"},"field":"messages"}]}]}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_parses() {
        let cfg = SimConfig {
            events: 500,
            users: 50,
            ..SimConfig::default()
        };
        let mut a = Vec::new();
        generate(&cfg, |l| a.push(l.to_string()));
        let mut b = Vec::new();
        generate(&cfg, |l| b.push(l.to_string()));
        assert_eq!(a, b);
        for l in &a {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["object"], "whatsapp_business_account");
        }
        // Every simulated number resolves to a country.
        for i in 0..200 {
            let mut rng = Rng::new(1);
            let n = user_number(&mut rng, i);
            crate::billing::market::resolve_uncached(&n).unwrap();
        }
    }

    /// Statuses of generated traffic by message id: (status, ts, raw pricing object text).
    fn statuses(lines: &[String]) -> std::collections::BTreeMap<String, Vec<(String, i64, Option<String>)>> {
        let mut m: std::collections::BTreeMap<String, Vec<(String, i64, Option<String>)>> = Default::default();
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["object"] != "whatsapp_business_account" {
                continue;
            }
            for s in v["entry"][0]["changes"][0]["value"]["statuses"]
                .as_array()
                .into_iter()
                .flatten()
            {
                m.entry(s["id"].as_str().unwrap().to_string()).or_default().push((
                    s["status"].as_str().unwrap().to_string(),
                    s["timestamp"].as_str().unwrap().parse().unwrap(),
                    s.get("pricing").map(|p| p.to_string()),
                ));
            }
        }
        m
    }

    #[test]
    fn per_message_traffic_carries_metas_pmp_pricing() {
        // Reference §2: from 2025-07-01 `pricing` comes on `sent` and on exactly one of
        // `delivered`/`read`, with Meta's type and category; the same verdict on both.
        let cfg = SimConfig {
            seed: 9,
            events: 6000,
            users: 300,
            start: SERVICE_CHARGED_FROM - 6 * DAY,
            days: 12,
            send_log: true,
            ..SimConfig::default()
        };
        let mut lines = Vec::new();
        generate(&cfg, |l| lines.push(l.to_string()));
        let mut seen = std::collections::BTreeSet::new();
        let mut priced_messages = 0;
        for (id, st) in statuses(&lines) {
            let objects: Vec<&(String, i64, Option<String>)> = st.iter().filter(|s| s.2.is_some()).collect();
            if objects.is_empty() {
                continue; // failed before any status with pricing, or one of the few unpriced
            }
            priced_messages += 1;
            let sent = st.iter().find(|s| s.0 == "sent").unwrap();
            assert!(sent.2.is_some(), "{id}: pricing on sent");
            let reached: Vec<&&(String, i64, Option<String>)> =
                objects.iter().filter(|s| s.0 == "delivered" || s.0 == "read").collect();
            if st.iter().any(|s| s.0 == "delivered" || s.0 == "read") {
                // Retries repeat a payload: count distinct statuses.
                let kinds: std::collections::BTreeSet<&str> = reached.iter().map(|s| s.0.as_str()).collect();
                assert_eq!(kinds.len(), 1, "{id}: pricing on exactly one of delivered/read: {st:?}");
            }
            let p = sent.2.as_ref().unwrap();
            assert!(
                objects.iter().all(|s| s.2.as_ref() == Some(p)),
                "{id}: one verdict: {st:?}"
            );
            let v: serde_json::Value = serde_json::from_str(p).unwrap();
            assert_eq!(v["pricing_model"], "PMP");
            let (t, c) = (v["type"].as_str().unwrap(), v["category"].as_str().unwrap());
            assert_eq!(v["billable"], t == "regular", "{p}");
            let ok = match t {
                "free_entry_point" => c == "referral_conversion",
                "free_customer_service" => c == "service" || (c == "utility" && sent.1 < SERVICE_CHARGED_FROM),
                "regular" => [
                    "marketing",
                    "marketing_lite",
                    "utility",
                    "authentication",
                    "authentication-international",
                    "service",
                ]
                .contains(&c),
                _ => false,
            };
            assert!(ok, "{p}");
            seen.insert((t.to_string(), c.to_string()));
        }
        assert!(priced_messages > 1000, "{priced_messages}");
        for want in [
            ("regular", "marketing_lite"),
            ("regular", "authentication-international"),
            ("free_entry_point", "referral_conversion"),
            ("free_customer_service", "utility"),
            ("free_customer_service", "service"),
            ("regular", "utility"),
        ] {
            assert!(
                seen.contains(&(want.0.to_string(), want.1.to_string())),
                "{want:?} missing: {seen:?}"
            );
        }
        // Meta's field order, as in reference §2.
        for l in &lines {
            for (k, _) in l.match_indices(r#""pricing":{"#) {
                let obj = &l[k + 11..k + l[k..].find('}').unwrap()];
                let keys: Vec<&str> = obj.split(',').map(|f| f.split(':').next().unwrap()).collect();
                assert_eq!(
                    keys,
                    [r#""billable""#, r#""pricing_model""#, r#""type""#, r#""category""#],
                    "{obj}"
                );
            }
        }
        // Send-log records name MARKETING_LITE templates too.
        assert!(lines.iter().any(|l| l.contains(r#""category":"MARKETING_LITE""#)));
        // A conversation object only inside free entry point windows.
        for l in &lines {
            if l.contains(r#""conversation""#) {
                assert!(l.contains("referral_conversion"), "{l}");
            }
        }
    }

    /// One pair's events for `meta_per_message_view`.
    fn ev(ts: Ts, item: Item) -> Ev {
        Ev {
            ts,
            waba: 1,
            phone: 0,
            user: 0,
            item,
        }
    }

    fn msg(msgs: &mut Vec<Msg>, evs: &mut Vec<Ev>, ts: Ts, kind: SimKind) -> usize {
        let m = msgs.len();
        msgs.push(Msg {
            id: format!("wamid.{m}"),
            kind: Some(KindInfo { kind, priced: true }),
            sent: ts,
            delivers: true,
            pmp: None,
        });
        evs.push(ev(
            ts,
            Item::Status {
                msg: m,
                status: "sent",
                pricing: true,
            },
        ));
        m
    }

    #[test]
    fn metas_view_of_windows_and_the_service_free_tier() {
        let users = vec![("5511987654321".to_string(), 1, 0)];
        let (mut msgs, mut evs) = (Vec::new(), Vec::new());
        let t0 = PER_MESSAGE_FROM + 3 * DAY;
        // pmp-2025-07: an inbound message opens the CSW; utility inside is free, outside regular.
        evs.push(ev(
            t0,
            Item::Inbound {
                id: "in1".into(),
                referral_ad: None,
            },
        ));
        let u_in = msg(&mut msgs, &mut evs, t0 + 60, SimKind::Utility);
        let s_in = msg(&mut msgs, &mut evs, t0 + 120, SimKind::NonTemplate);
        let u_out = msg(&mut msgs, &mut evs, t0 + DAY + 1, SimKind::Utility);
        // An ad click: the reply opens a 72-hour free entry point window, a template two
        // days later is inside it, one after 72 h is not.
        let t1 = t0 + 5 * DAY;
        evs.push(ev(
            t1,
            Item::Inbound {
                id: "in2".into(),
                referral_ad: Some(true),
            },
        ));
        let f0 = msg(&mut msgs, &mut evs, t1 + 600, SimKind::NonTemplate);
        let f1 = msg(&mut msgs, &mut evs, t1 + 2 * DAY, SimKind::Marketing);
        let f2 = msg(&mut msgs, &mut evs, t1 + 600 + FEP_SECS, SimKind::Marketing);
        // pmp-2026-10: utility in the CSW is charged; service free for 1,000 per number and month.
        let t2 = SERVICE_CHARGED_FROM + DAY;
        evs.push(ev(
            t2,
            Item::Inbound {
                id: "in3".into(),
                referral_ad: None,
            },
        ));
        let u_26 = msg(&mut msgs, &mut evs, t2 + 60, SimKind::Utility);
        let first = msgs.len();
        for k in 0..=META_SERVICE_FREE_TIER as i64 {
            msg(&mut msgs, &mut evs, t2 + 100 + k, SimKind::NonTemplate);
        }
        let next_month = msg(
            &mut msgs,
            &mut evs,
            SERVICE_CHARGED_FROM + 40 * DAY,
            SimKind::NonTemplate,
        );
        meta_per_message_view(&evs, &mut msgs, &users);
        let v = |m: usize| {
            let p = msgs[m].pmp.unwrap();
            (p.pricing_type, p.category)
        };
        assert_eq!(v(u_in), ("free_customer_service", "utility"));
        assert_eq!(v(s_in), ("free_customer_service", "service"));
        assert_eq!(v(u_out), ("regular", "utility"));
        assert_eq!(v(f0), ("free_entry_point", "referral_conversion"));
        assert_eq!(v(f1), ("free_entry_point", "referral_conversion"));
        assert_eq!(msgs[f0].pmp.unwrap().fep, msgs[f1].pmp.unwrap().fep);
        assert_eq!(v(f2), ("regular", "marketing"));
        assert_eq!(v(u_26), ("regular", "utility"));
        assert_eq!(v(first), ("free_customer_service", "service"));
        assert_eq!(v(first + 999), ("free_customer_service", "service"));
        assert_eq!(v(first + 1000), ("regular", "service"));
        assert_eq!(v(next_month), ("free_customer_service", "service"));
    }
}

//! A deterministic generator of realistic Meta webhook traffic: users writing in (some
//! from Click-to-WhatsApp ads), businesses replying and sending templates, statuses that
//! arrive batched, out of order within seconds, duplicated by retries, `read` without
//! `delivered`, failures. Used for the bundled sample, benchmarks and property tests.

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
    /// Emit the BSP's send-log records and Meta's category `pricing` objects (the category
    /// eras need a message's kind, docs/billing-rules.md §6). Off: the 2022 traffic of earlier versions,
    /// byte for byte.
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

/// What a simulated business message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimKind {
    NonTemplate,
    Marketing,
    Utility,
    Authentication,
}

impl SimKind {
    fn category(self) -> &'static str {
        match self {
            SimKind::NonTemplate => "service",
            SimKind::Marketing => "marketing",
            SimKind::Utility => "utility",
            SimKind::Authentication => "authentication",
        }
    }
    fn template(self) -> Option<(&'static str, &'static str)> {
        match self {
            SimKind::NonTemplate => None,
            SimKind::Marketing => Some(("spring_sale", "MARKETING")),
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
        id: String,
        status: &'static str,
        kind: Option<KindInfo>,
    },
    SendLog {
        id: String,
        kind: SimKind,
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
    let end = cfg.start + cfg.days * 86_400;
    let mut msg_seq = 0u64;
    let mut next_id = |rng: &mut Rng| {
        msg_seq += 1;
        format!("wamid.HBgL{:016X}{:08X}", rng.next_u64(), msg_seq)
    };
    while (evs.len() as u64) < cfg.events {
        let u = rng.below(cfg.users.max(1));
        let (_, waba, phone) = users[u as usize];
        let mut t = rng.range(cfg.start, end - 3 * 3600);
        let push = |evs: &mut Vec<Ev>, ts: Ts, item: Item| {
            evs.push(Ev {
                ts,
                waba,
                phone,
                user: u,
                item,
            })
        };
        let user_wrote = rng.chance(0.6);
        if user_wrote {
            // The user writes first (sometimes from an ad or a boosted post).
            let referral = if rng.chance(0.06) { Some(rng.chance(0.8)) } else { None };
            for k in 0..=rng.below(2) {
                let id = next_id(&mut rng);
                let r = if k == 0 { referral } else { None };
                push(&mut evs, t, Item::Inbound { id, referral_ad: r });
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
            let id = next_id(&mut rng);
            // Only with send_log on: no extra draws otherwise, so 2022 traffic keeps its bytes.
            let kind = cfg.send_log.then(|| {
                let kind = if user_wrote && rng.chance(0.75) {
                    SimKind::NonTemplate
                } else {
                    match rng.below(20) {
                        0..=8 => SimKind::Marketing,
                        9..=16 => SimKind::Utility,
                        _ => SimKind::Authentication,
                    }
                };
                // Most messages are in the send log; of the rest most carry Meta's
                // category; a few carry neither.
                let logged = rng.chance(0.9);
                let priced = logged || rng.chance(0.9);
                if logged {
                    push(&mut evs, t, Item::SendLog { id: id.clone(), kind });
                }
                KindInfo { kind, priced }
            });
            push(
                &mut evs,
                t,
                Item::Status {
                    id: id.clone(),
                    status: "sent",
                    kind,
                },
            );
            if rng.chance(0.02) {
                push(
                    &mut evs,
                    t + rng.range(1, 30),
                    Item::Status {
                        id,
                        status: "failed",
                        kind,
                    },
                );
            } else {
                let d = t + rng.range(1, 20);
                let read_only = rng.chance(0.03);
                if !read_only {
                    push(
                        &mut evs,
                        d,
                        Item::Status {
                            id: id.clone(),
                            status: "delivered",
                            kind,
                        },
                    );
                }
                if read_only || rng.chance(0.6) {
                    push(
                        &mut evs,
                        d + rng.range(0, 7200),
                        Item::Status {
                            id,
                            status: "read",
                            kind,
                        },
                    );
                }
            }
            t += rng.range(30, 4 * 3600);
        }
    }
    evs.sort_by_key(|e| e.ts);
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
            send_log_line(&mut line, &evs[k], &users);
            write(&line);
        }
        if hooks.is_empty() {
            continue;
        }
        line.clear();
        payload(&mut line, &evs, &hooks, &users);
        write(&line);
        if rng.chance(cfg.duplicate_rate) {
            write(&line);
        }
    }
}

fn send_log_line(out: &mut String, e: &Ev, users: &[(String, u64, u64)]) {
    let Item::SendLog { id, kind } = &e.item else {
        return;
    };
    let pnid = phone_number_id(e.waba, e.phone);
    let _ = write!(
        out,
        r#"{{"object":"send_log","message_id":"{}","waba_id":"{}","phone_number_id":"{}","to":"{}","timestamp":"{}","template":"#,
        id,
        waba_id(e.waba),
        pnid,
        users[e.user as usize].0,
        e.ts
    );
    match kind.template() {
        None => out.push_str("null}"),
        Some((name, category)) => {
            let _ = write!(
                out,
                r#"{{"name":"{name}","language":"en_US","category":"{category}"}}}}"#
            );
        }
    }
}

fn payload(out: &mut String, evs: &[Ev], batch: &[usize], users: &[(String, u64, u64)]) {
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
            let Item::Status { id, status, kind } = &e.item else {
                continue;
            };
            let wa = &users[e.user as usize].0;
            if k > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"{{"id":"{}","status":"{}","timestamp":"{}","recipient_id":"{}""#,
                id, status, e.ts, wa
            );
            if *status == "failed" {
                out.push_str(r#","errors":[{"code":131049,"title":"This message was not delivered to maintain healthy ecosystem engagement."}]"#);
            } else if let Some(k) = kind.filter(|_| e.ts >= CATEGORY_ERAS_FROM && *status != "read") {
                // Category eras: Meta's pricing category (here the message's own category;
                // for a free-form message inside a template conversation Meta names the
                // conversation's, which joins the same conversation, docs/billing-rules.md §9).
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
            } else if *status != "read" {
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
}

//! Country and market of a user number (docs/billing-rules.md §7).
//!
//! The country comes from libphonenumber's metadata (the `phonenumber` port), never from
//! a hand-typed prefix list, so +1 876 is Jamaica and +1 242 the Bahamas. The market
//! comes from a mapping file (`data/markets.csv`, shipped inside the binary).

use chrono::NaiveDate;
use phonenumber::metadata::DATABASE;
use rustc_hash::FxHashMap;
use thiserror::Error;

/// ISO 3166-1 alpha-2 code, stored inline to keep events and state small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    pub fn new(code: &str) -> Option<Country> {
        let b = code.as_bytes();
        if b.len() == 2 && b.iter().all(|c| c.is_ascii_uppercase()) {
            Some(Country([b[0], b[1]]))
        } else {
            None
        }
    }
    pub fn as_str(&self) -> &str {
        // Constructed only from two ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NumberError {
    #[error("user number is empty")]
    Empty,
    #[error("user number {0:?} has characters other than digits")]
    NotDigits(String),
    #[error("user number {0:?} has no known country calling code")]
    UnknownCallingCode(String),
    #[error("user number {0:?} has a non-geographic calling code (no country to bill)")]
    NonGeographic(String),
}

/// How a number resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub country: Country,
    /// False when libphonenumber rejects the number: it is still billed by its calling
    /// code's main country (docs/billing-rules.md §7) and counted.
    pub valid: bool,
}

/// libphonenumber compiles its metadata's patterns lazily into an LRU cache of 100
/// regexes. Parsing and validating a +1 number alone tries the patterns of up to 25
/// regions, so with a few countries in the traffic the cache thrashes and every new user
/// recompiles regexes (and rebuilds their lazy DFAs): about 60 % of a resolution. A
/// larger capacity only changes what stays compiled, never a match result. The whole
/// metadata holds fewer patterns than this, so nothing is ever evicted.
const REGEX_CACHE_CAPACITY: usize = 1 << 16;

/// Resolves `wa_id`s (E.164 digits without `+`) to countries, memoising results: a parse
/// costs microseconds and the same users write again and again.
///
/// The memo runs once per event over every user of the traffic, so its size decides how
/// often a lookup misses the CPU cache: a bucket is 16 bytes, the number itself as key
/// (`memo_key`, one-to-one with the digit string) and the answer packed in a `Memo`
/// (an error is rebuilt from its kind and the number it names).
#[derive(Default)]
pub struct CountryResolver {
    cache: FxHashMap<u64, Memo>,
    capacity: usize,
    matchers: Matchers,
}

impl CountryResolver {
    pub fn new(capacity: usize) -> Self {
        CountryResolver {
            cache: FxHashMap::default(),
            capacity: capacity.max(1),
            matchers: Matchers::default(),
        }
    }

    /// Loads libphonenumber's metadata now rather than on the first event (about 100 ms),
    /// and lets its regex cache hold every pattern (see `REGEX_CACHE_CAPACITY`).
    pub fn warm_up() {
        if let Ok(mut cache) = DATABASE.cache().lock() {
            if cache.capacity() < REGEX_CACHE_CAPACITY {
                cache.set_capacity(REGEX_CACHE_CAPACITY);
            }
        }
        let _ = phonenumber::parse(None, "+14155550100");
    }

    pub fn resolve(&mut self, wa_id: &str) -> Result<Resolved, NumberError> {
        // Anything but 1–19 plain digits (a `+`, other characters, longer) is resolved
        // uncached: never the case for Meta's wa_ids, and each still gets its answer.
        let Some(key) = memo_key(wa_id) else {
            return self.matchers.resolve(wa_id);
        };
        if let Some(m) = self.cache.get(&key) {
            return m.answer(wa_id);
        }
        let r = self.matchers.resolve(wa_id);
        if self.cache.len() >= self.capacity {
            self.cache.clear();
        }
        self.cache.insert(key, Memo::of(&r));
        r
    }
}

/// Digit count (4 bits) and value (60 bits) of a string of 1 to 15 ASCII digits, the
/// longest E.164 number: distinct strings, distinct keys (the count keeps leading zeros
/// apart; 15 digits are below 2^60). Longer strings are not memoised.
fn memo_key(wa_id: &str) -> Option<u64> {
    let b = wa_id.as_bytes();
    if b.is_empty() || b.len() > 15 {
        return None;
    }
    let mut v = 0u64;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    Some((b.len() as u64) << 60 | v)
}

/// A memoised answer in three bytes: the kind (valid, invalid, or which error) and the
/// country's two letters.
#[derive(Clone, Copy)]
struct Memo([u8; 3]);

impl Memo {
    fn of(r: &Result<Resolved, NumberError>) -> Memo {
        match r {
            Ok(Resolved { country, valid }) => {
                let [a, b] = country.0;
                Memo([u8::from(*valid), a, b])
            }
            Err(NumberError::Empty) => Memo([2, 0, 0]),
            Err(NumberError::NotDigits(_)) => Memo([3, 0, 0]),
            Err(NumberError::UnknownCallingCode(_)) => Memo([4, 0, 0]),
            Err(NumberError::NonGeographic(_)) => Memo([5, 0, 0]),
        }
    }

    /// The answer for `wa_id`, the number this memo was made for.
    fn answer(self, wa_id: &str) -> Result<Resolved, NumberError> {
        let [kind, a, b] = self.0;
        match kind {
            0 | 1 => Ok(Resolved {
                country: Country([a, b]),
                valid: kind == 1,
            }),
            2 => Err(NumberError::Empty),
            3 => Err(NumberError::NotDigits(wa_id.to_string())),
            4 => Err(NumberError::UnknownCallingCode(wa_id.to_string())),
            _ => Err(NumberError::NonGeographic(wa_id.to_string())),
        }
    }
}

/// What both resolutions start with: digits only, after an optional `+`.
fn wa_id_digits(wa_id: &str) -> Result<&str, NumberError> {
    let digits = wa_id.strip_prefix('+').unwrap_or(wa_id);
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NumberError::NotDigits(wa_id.to_string()));
    }
    Ok(digits)
}

/// The reference parse: libphonenumber's, which knows the calling code.
fn parse_wa_id(wa_id: &str) -> Result<phonenumber::PhoneNumber, NumberError> {
    let digits = wa_id_digits(wa_id)?;
    phonenumber::parse(None, format!("+{digits}")).map_err(|_| NumberError::UnknownCallingCode(wa_id.to_string()))
}

/// The reference resolution, entirely by the `phonenumber` crate's API. `Matchers::resolve`
/// computes the same function faster (and is tested against this).
pub fn resolve_uncached(wa_id: &str) -> Result<Resolved, NumberError> {
    let pn = parse_wa_id(wa_id)?;
    let code = pn.code().value();
    let region = match pn.metadata(&DATABASE) {
        Some(m) => m.id().to_string(),
        None => DATABASE
            .by_code(&code)
            .and_then(|v| v.first().map(|m| m.id().to_string()))
            .ok_or_else(|| NumberError::UnknownCallingCode(wa_id.to_string()))?,
    };
    let country = Country::new(&region).ok_or_else(|| NumberError::NonGeographic(wa_id.to_string()))?;
    Ok(Resolved {
        country,
        valid: pn.is_valid(),
    })
}

/// `resolve_uncached` without its regex costs, same result for every input.
///
/// After `phonenumber::parse` (kept as is), the crate decides the region (`source_for`)
/// and validity (`number_type(..) != Unknown`) by testing the national number against
/// metadata patterns, each test being `CachedRegex::find(v).map(|m| m.start() == 0)`
/// (after a `possible_length` check for descriptors). Each such `find` locks a mutex,
/// SipHashes the pattern text into an LRU, and runs an *unanchored* search whose lazy DFA
/// keeps growing new states for new numbers. Here the same steps run in the same order on
/// the same metadata, with one change: the test is an anchored match of the same pattern,
/// `^(?:P)`, compiled once per pattern with the options phonenumber compiles it with
/// (`ignore_whitespace`, the rest default). The two are equal: a leftmost search returns
/// a match starting at 0 exactly when some match starts at 0, which is what `^(?:P)`
/// matches. (The `\n` before `)` ends a possible `#` comment in whitespace mode.) A
/// pattern that would not compile anchored falls back to the crate's own `find`.
///
/// Validity only asks whether `number_type` is not `Unknown`: that is the general
/// descriptor matching and at least one of the ten typed descriptors it then tries
/// (premium rate, toll free, shared cost, VoIP, personal, pager, UAN, voicemail, fixed
/// line, mobile) matching, whatever the order.
#[derive(Default)]
struct Matchers {
    /// Anchored regex per pattern, keyed by the address of the pattern's text inside the
    /// static metadata database (which never moves or changes). `None`: use the crate's `find`.
    anchored: FxHashMap<usize, Anchored>,
}

type Anchored = Option<std::sync::Arc<regex::Regex>>;

/// Compiled anchored patterns shared by every resolver of the process (compiling one
/// costs up to milliseconds; each resolver keeps its own lock-free map in front).
static COMPILED: std::sync::Mutex<Option<FxHashMap<usize, Anchored>>> = std::sync::Mutex::new(None);

fn compiled(src: &'static str) -> Anchored {
    let mut guard = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .get_or_insert_with(FxHashMap::default)
        .entry(src.as_ptr() as usize)
        .or_insert_with(|| {
            regex::RegexBuilder::new(&format!("^(?:{src}\n)"))
                .ignore_whitespace(true)
                .build()
                .ok()
                .map(std::sync::Arc::new)
        })
        .clone()
}

type Meta = &'static phonenumber::Metadata;

/// What `phonenumber::parse` yields that the resolution reads: the calling code and the
/// national number (`NationalNumber`: value and leading zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    code: u16,
    value: u64,
    zeros: u8,
}

impl Matchers {
    fn resolve(&mut self, wa_id: &str) -> Result<Resolved, NumberError> {
        let digits = wa_id_digits(wa_id)?;
        let p = self
            .parse(digits)
            .ok_or_else(|| NumberError::UnknownCallingCode(wa_id.to_string()))?;
        let code = p.code;
        // `PhoneNumber::metadata` looks the region up with the national number without
        // its leading zeros; `is_valid` with them (`NationalNumber`'s `Display`).
        let bare = p.value.to_string();
        let shown = format!("{}{bare}", "0".repeat(usize::from(p.zeros)));
        let meta = self.source(code, &bare);
        let region = match meta {
            Some(m) => m.id().to_string(),
            None => DATABASE
                .by_code(&code)
                .and_then(|v| v.first().map(|m| m.id().to_string()))
                .ok_or_else(|| NumberError::UnknownCallingCode(wa_id.to_string()))?,
        };
        let country = Country::new(&region).ok_or_else(|| NumberError::NonGeographic(wa_id.to_string()))?;
        let valid_meta = if shown == bare { meta } else { self.source(code, &shown) };
        let valid = match valid_meta {
            Some(m) => self.known_type(m, &shown),
            None => false,
        };
        Ok(Resolved { country, valid })
    }

    /// `phonenumber::parse(None, "+" + digits)` for ASCII digits, step by step as the
    /// crate (0.3) does it, minus the costs that do not change its result: the RFC 3966
    /// attempt (it fails on `+` and digits alone: the prefix rule takes every digit and
    /// leaves no national part), the natural-language extraction and extension regexes
    /// (nothing to strip from plain digits), and every metadata pattern test done as an
    /// anchored match (see the type's note). `None` where the crate returns an error.
    /// Tested against the crate on every calling code and on random digit strings.
    fn parse(&mut self, digits: &str) -> Option<Parsed> {
        let db: &'static phonenumber::metadata::Database = &DATABASE;
        // is_viable: `+` then at least three digits; country_code: more than two digits,
        // the first not 0, and the first known code of one to three digits.
        if digits.len() < 3 || digits.starts_with('0') {
            return None;
        }
        let (code, rest) = (1..=3).find_map(|len| {
            let code: u16 = digits[..len].parse().ok()?;
            db.by_code(&code).is_some().then(|| (code, &digits[len..]))
        })?;
        let mut national: std::borrow::Cow<'_, str> = rest.into();
        if let Some(meta) = self.source(code, rest.trim_start_matches('0')) {
            let mut potential = self.strip_national_prefix(meta, rest);
            if let Some(prefix) = meta.national_prefix() {
                if let Some(stripped) = potential.strip_prefix(prefix) {
                    potential = stripped.to_string().into();
                }
            }
            // `validator::length(meta, potential, Type::Unknown) != TooShort`.
            let general = meta.descriptors().general();
            let possible = general.possible_length();
            let len = potential.len() as u16;
            let too_short =
                !possible.is_empty() && !general.possible_local_length().contains(&len) && len < possible[0];
            if !too_short {
                national = potential;
            }
        }
        if !(2..=17).contains(&national.len()) {
            return None;
        }
        // `NationalNumber::from_str`: leading zeros apart, the rest a u64 below 2^56.
        let zeros = national.bytes().take_while(|&b| b == b'0').count();
        let value: u64 = national[zeros..].parse().ok()?;
        (value < 1 << 56).then_some(Parsed {
            code,
            value,
            zeros: zeros as u8,
        })
    }

    /// The crate's `parser::helper::national_number` (national prefix and carrier code
    /// stripping; the carrier is not kept).
    fn strip_national_prefix<'a>(&mut self, meta: Meta, national: &'a str) -> std::borrow::Cow<'a, str> {
        let Some(parsing) = meta.national_prefix_for_parsing() else {
            return match meta.national_prefix() {
                Some(prefix) => national.strip_prefix(prefix).unwrap_or(national).into(),
                None => national.into(),
            };
        };
        let src: &'static str = parsing.as_str();
        let re = self.anchored(src).clone();
        // `find` then `start == 0`, then `captures`: the leftmost-first match at 0 is the
        // anchored match, with the same groups.
        let caps = match &re {
            Some(re) => re.captures(national),
            None => parsing
                .captures(national)
                .filter(|c| c.get(0).is_some_and(|m| m.start() == 0)),
        };
        let Some(caps) = caps else {
            return national.into();
        };
        let end = caps.get(0).map_or(0, |m| m.end());
        let last_group = caps.len().checked_sub(1).and_then(|i| caps.get(i));
        let general = meta.descriptors().general();
        match (meta.national_prefix_transform_rule(), last_group) {
            // The crate also tests `viable && !general.is_match(&national[start..])` here,
            // with start = 0: never true.
            (None, _) | (_, None) => national[end..].to_string().into(),
            (Some(rule), Some(_)) => {
                // No example number or random input reaches the `return number` below
                // with the bundled metadata (searched); kept so the step stays the crate's.
                let viable = self.is_match(general, national);
                let transformed = match &re {
                    Some(re) => re.replace(national, rule),
                    None => parsing.replace(national, rule),
                }
                .into_owned();
                if viable && !self.is_match(general, &transformed) {
                    national.into()
                } else {
                    transformed.into()
                }
            }
        }
    }

    fn anchored(&mut self, src: &'static str) -> &Anchored {
        self.anchored
            .entry(src.as_ptr() as usize)
            .or_insert_with(|| compiled(src))
    }

    /// phonenumber's `source_for` followed by the metadata lookup `metadata()` and
    /// `is_valid_with` both do.
    fn source(&mut self, code: u16, national: &str) -> Option<Meta> {
        let db: &'static phonenumber::metadata::Database = &DATABASE;
        let regions = db.region(&code)?;
        let by_region = |r: &str| -> Option<Meta> {
            let id: phonenumber::country::Id = r.parse().ok()?;
            db.by_id(id.as_ref())
        };
        if regions.len() == 1 {
            return if regions[0] == "001" {
                db.by_code(&code).and_then(|m| m.into_iter().next())
            } else {
                by_region(regions[0])
            };
        }
        for region in regions {
            let meta = db.by_id(region)?;
            let hit = match meta.leading_digits() {
                Some(p) => self.starts_at_0(p.as_str(), national, || {
                    p.find(national).is_some_and(|m| m.start() == 0)
                }),
                None => self.known_type(meta, national),
            };
            if hit {
                return by_region(region);
            }
        }
        None
    }

    /// `number_type(meta, value) != Type::Unknown`.
    fn known_type(&mut self, meta: Meta, value: &str) -> bool {
        let d = meta.descriptors();
        if !self.is_match(d.general(), value) {
            return false;
        }
        typed_descriptors(d)
            .into_iter()
            .flatten()
            .any(|desc| self.is_match(desc, value))
    }

    /// `Descriptor::is_match`.
    fn is_match(&mut self, d: &'static phonenumber::metadata::Descriptor, value: &str) -> bool {
        let lengths = d.possible_length();
        if !lengths.is_empty() && !lengths.contains(&(value.len() as u16)) {
            return false;
        }
        let p = d.national_number();
        self.starts_at_0(p.as_str(), value, || p.find(value).is_some_and(|m| m.start() == 0))
    }

    /// `pattern.find(value).map(|m| m.start() == 0).unwrap_or(false)`, for the pattern
    /// whose source is `src`; `find` is that crate call (the fallback).
    fn starts_at_0(&mut self, src: &'static str, value: &str, find: impl FnOnce() -> bool) -> bool {
        match self.anchored(src) {
            Some(re) => re.is_match(value),
            None => find(),
        }
    }
}

/// The ten typed descriptors `number_type` tries, in its order.
fn typed_descriptors(
    d: &'static phonenumber::metadata::Descriptors,
) -> [Option<&'static phonenumber::metadata::Descriptor>; 10] {
    [
        d.premium_rate(),
        d.toll_free(),
        d.shared_cost(),
        d.voip(),
        d.personal_number(),
        d.pager(),
        d.uan(),
        d.voicemail(),
        d.fixed_line(),
        d.mobile(),
    ]
}

#[derive(Debug, Error)]
pub enum MarketMapError {
    #[error("market mapping line {line}: {reason}")]
    Line { line: usize, reason: String },
}

/// Country → market, from the mapping file. Countries not listed are in "Other".
///
/// Mappings change by date (docs/billing-rules.md §7): a row may carry an `effective_from`
/// (WABA-local date); the row of a country in effect on the billed date applies, and a row
/// without a date is in effect from the beginning.
#[derive(Debug, Clone)]
pub struct MarketMap {
    /// Each country's rows, sorted by `effective_from` (`NaiveDate::MIN` when undated).
    by_country: FxHashMap<Country, Vec<(NaiveDate, String)>>,
}

pub const OTHER_MARKET: &str = "Other";
pub const BUNDLED_MARKETS: &str = include_str!("../../data/markets.csv");

impl MarketMap {
    pub fn bundled() -> Self {
        // The bundled file is checked by a unit test; an error here is a build defect.
        Self::parse(BUNDLED_MARKETS).unwrap_or_else(|_| MarketMap {
            by_country: FxHashMap::default(),
        })
    }

    /// Parses `country,market[,effective_from]` lines (header first; `#` comments allowed;
    /// a market name may be quoted).
    pub fn parse(text: &str) -> Result<Self, MarketMapError> {
        let mut by_country: FxHashMap<Country, Vec<(NaiveDate, String)>> = FxHashMap::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if i == 0 || line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| MarketMapError::Line { line: i + 1, reason };
            let (c, rest) = line
                .split_once(',')
                .ok_or_else(|| bad("expected `country,market[,effective_from]`".into()))?;
            let country =
                Country::new(c.trim()).ok_or_else(|| bad(format!("{c:?} is not an ISO 3166 alpha-2 code")))?;
            let (market, date) = split_market(rest);
            let from = match date {
                None => NaiveDate::MIN,
                Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|_| bad(format!("effective_from {d:?} is not YYYY-MM-DD")))?,
            };
            if market.is_empty() {
                return Err(bad("empty market".into()));
            }
            let rows = by_country.entry(country).or_default();
            if rows.iter().any(|(f, _)| *f == from) {
                return Err(bad(match date {
                    None => format!("{country} listed twice"),
                    Some(d) => format!("{country} listed twice from {d}"),
                }));
            }
            rows.push((from, market));
        }
        for rows in by_country.values_mut() {
            rows.sort();
        }
        Ok(MarketMap { by_country })
    }

    /// The market of `country` on `date` (WABA-local).
    pub fn market(&self, country: Country, date: NaiveDate) -> &str {
        let Some(rows) = self.by_country.get(&country) else {
            return OTHER_MARKET;
        };
        let idx = rows.partition_point(|(f, _)| *f <= date);
        match idx.checked_sub(1) {
            Some(i) => rows[i].1.as_str(),
            None => OTHER_MARKET,
        }
    }

    /// Every row: (market, first date it is in effect; `NaiveDate::MIN` when undated).
    pub fn markets(&self) -> impl Iterator<Item = (&str, NaiveDate)> {
        self.by_country.values().flatten().map(|(f, m)| (m.as_str(), *f))
    }
}

/// `market` or `"market"` then an optional `,effective_from`.
fn split_market(rest: &str) -> (String, Option<&str>) {
    let rest = rest.trim();
    if let Some(q) = rest.strip_prefix('"') {
        if let Some(end) = q.find('"') {
            let date = q[end + 1..]
                .trim()
                .strip_prefix(',')
                .map(str::trim)
                .filter(|d| !d.is_empty());
            return (q[..end].to_string(), date);
        }
    }
    match rest.rsplit_once(',') {
        Some((m, d)) => (m.trim().to_string(), Some(d.trim()).filter(|d| !d.is_empty())),
        None => (rest.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn country(n: &str) -> String {
        resolve_uncached(n).unwrap().country.to_string()
    }

    #[test]
    fn nanp_numbers_split_by_area_code() {
        assert_eq!(country("16505551234"), "US");
        assert_eq!(country("18765551234"), "JM");
        assert_eq!(country("12425551234"), "BS");
        assert_eq!(country("18095551234"), "DO");
        assert_eq!(country("17875551234"), "PR");
        assert_eq!(country("14165551234"), "CA");
    }

    #[test]
    fn markets_from_mapping_file() {
        let m = MarketMap::bundled();
        let day = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let mk = |n: &str| m.market(resolve_uncached(n).unwrap().country, day).to_string();
        assert_eq!(mk("16505551234"), "North America");
        assert_eq!(mk("14165551234"), "North America");
        assert_eq!(mk("18765551234"), "Rest of Latin America");
        assert_eq!(mk("18095551234"), "Rest of Latin America");
        assert_eq!(mk("17875551234"), "Rest of Latin America");
        assert_eq!(mk("12425551234"), "Other");
        assert_eq!(mk("447700900123"), "United Kingdom");
        assert_eq!(mk("5511987654321"), "Brazil");
        assert_eq!(mk("919876543210"), "India");
        assert_eq!(mk("4915123456789"), "Germany");
        assert_eq!(mk("2348031234567"), "Nigeria");
        assert_eq!(mk("254712345678"), "Rest of Africa");
        assert_eq!(mk("61412345678"), "Rest of Asia Pacific");
        assert_eq!(mk("48512345678"), "Rest of Central & Eastern Europe");
        assert_eq!(mk("306912345678"), "Rest of Central & Eastern Europe");
        assert_eq!(mk("4367612345678"), "Rest of Western Europe");
        assert_eq!(mk("97433123456"), "Rest of Middle East");
        assert_eq!(mk("77012345678"), "Other"); // Kazakhstan shares +7 with Russia
        assert_eq!(mk("79161234567"), "Russia");
    }

    #[test]
    fn dated_rows_switch_on_their_date() {
        // docs/billing-rules.md §7: Singapore became its own market on 2026-07-01, Zimbabwe
        // moved to Rest of Africa on 2025-10-01, Kazakhstan became standalone 2026-10-01.
        let m = MarketMap::bundled();
        let on = |n: &str, y, mo, d| {
            m.market(
                resolve_uncached(n).unwrap().country,
                NaiveDate::from_ymd_opt(y, mo, d).unwrap(),
            )
            .to_string()
        };
        assert_eq!(on("6591234567", 2026, 6, 30), "Rest of Asia Pacific");
        assert_eq!(on("6591234567", 2026, 7, 1), "Singapore");
        assert_eq!(on("263771234567", 2025, 9, 30), "Other");
        assert_eq!(on("263771234567", 2025, 10, 1), "Rest of Africa");
        assert_eq!(on("77012345678", 2026, 9, 30), "Other");
        assert_eq!(on("77012345678", 2026, 10, 1), "Kazakhstan");
        let twice = MarketMap::parse("country,market,effective_from\nSG,A,2026-07-01\nSG,B,2026-07-01\n");
        assert!(twice.is_err());
        let bad = MarketMap::parse("country,market,effective_from\nSG,A,July\n");
        assert!(bad.is_err());
        let quoted = MarketMap::parse("country,market\nPL,\"Rest of Central & Eastern Europe\"\n").unwrap();
        assert_eq!(
            quoted.market(Country::new("PL").unwrap(), NaiveDate::MIN),
            "Rest of Central & Eastern Europe"
        );
    }

    /// `Matchers::resolve` equals the crate-only reference on every calling code, with
    /// national numbers of many lengths, leading zeros, and the simulator's prefixes.
    #[test]
    fn fast_resolution_equals_reference() {
        let mut m = Matchers::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut numbers: Vec<String> = vec!["".into(), "+".into(), "12ab".into(), "+4412".into(), "0".into()];
        for cc in 1..=999u64 {
            for len in [2usize, 6, 8, 9, 10, 12] {
                for zero in [false, true] {
                    let mut n = cc.to_string();
                    for i in 0..len {
                        let d = if zero && i == 0 { 0 } else { next() % 10 };
                        n.push(char::from(b'0' + d as u8));
                    }
                    numbers.push(n);
                }
            }
        }
        for (prefix, len) in [
            ("1650", 7),
            ("1416", 7),
            ("1876", 7),
            ("1242", 7),
            ("1809", 7),
            ("1787", 7),
            ("5511", 9),
            ("5521", 9),
            ("9198", 8),
            ("4477", 8),
            ("4915", 9),
            ("2348", 9),
            ("2547", 8),
            ("6141", 7),
            ("4851", 7),
            ("3069", 8),
            ("4367", 9),
            ("9743", 6),
            ("7701", 8),
            ("7916", 7),
            ("3906", 8),
            ("3933", 8),
            ("5255", 8),
            ("6281", 9),
            ("3361", 7),
        ] {
            for _ in 0..40 {
                let mut n = prefix.to_string();
                for _ in 0..len {
                    n.push(char::from(b'0' + (next() % 10) as u8));
                }
                numbers.push(n);
            }
        }
        let mut valid = 0;
        for n in &numbers {
            let want = resolve_uncached(n);
            assert_eq!(m.resolve(n), want, "{n}");
            valid += usize::from(want.is_ok_and(|r| r.valid));
        }
        assert!(valid > 1000, "the sample holds valid numbers too ({valid})");
        assert!(m.anchored.len() > 500 && m.anchored.values().all(Option::is_some));
    }

    fn crate_parse(digits: &str) -> Option<Parsed> {
        phonenumber::parse(None, format!("+{digits}")).ok().map(|pn| Parsed {
            code: pn.code().value(),
            value: pn.national().value(),
            zeros: pn.national().zeros(),
        })
    }

    /// `Matchers::parse` equals `phonenumber::parse` on every known calling code, national
    /// parts of every length up to the limit, starting with the national prefixes and
    /// trunk/carrier codes metadata strips (0, 00, 01, 044, 045, 1, 15, 8, 9, 06), and on
    /// short and unknown-code inputs.
    #[test]
    fn fast_parse_equals_crate_parse() {
        let mut m = Matchers::default();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut digit = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(b'0' + (seed % 10) as u8)
        };
        let mut numbers: Vec<String> = ["0", "00", "1", "12", "123", "999", "0123456789", "1234567890123456789"]
            .map(String::from)
            .to_vec();
        let mut known = 0;
        for cc in 1..=999u16 {
            if DATABASE.by_code(&cc).is_none() {
                numbers.push(format!("{cc}12345678"));
                continue;
            }
            known += 1;
            for head in ["", "0", "00", "01", "044", "045", "1", "15", "8", "9", "06"] {
                for len in [0usize, 1, 2, 4, 6, 7, 8, 9, 10, 11, 13, 15, 17] {
                    let mut n = format!("{cc}{head}");
                    for _ in 0..len {
                        n.push(digit());
                    }
                    numbers.push(n);
                }
            }
        }
        // Every region's example numbers (valid by construction), bare and behind its
        // national prefix, a trunk 0, and Argentina-style mobile tokens.
        let mut examples = 0;
        for cc in 1..=999u16 {
            for meta in DATABASE.by_code(&cc).unwrap_or_default() {
                let d = meta.descriptors();
                let descs = std::iter::once(d.general()).chain(typed_descriptors(d).into_iter().flatten());
                for e in descs.filter_map(|d| d.example()) {
                    examples += 1;
                    let np = meta.national_prefix().unwrap_or("");
                    for head in [String::new(), np.to_string(), "0".into(), "9".into(), format!("{np}15")] {
                        numbers.push(format!("{cc}{head}{e}"));
                        numbers.push(format!("{cc}{head}{}", &e[..e.len() / 2]));
                        let (a, b) = e.split_at(e.len().min(2));
                        numbers.push(format!("{cc}{head}{a}15{b}"));
                    }
                }
            }
        }
        assert!(known > 200, "metadata has {known} calling codes");
        assert!(examples > 1000, "metadata has {examples} example numbers");
        let mut parsed = 0;
        for n in &numbers {
            let want = crate_parse(n);
            assert_eq!(m.parse(n), want, "{n}");
            parsed += usize::from(want.is_some());
        }
        assert!(
            parsed > numbers.len() / 2,
            "most inputs parse ({parsed} of {})",
            numbers.len()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn fast_parse_equals_crate_parse_on_any_digits(n in "[0-9]{0,20}") {
            proptest::prop_assert_eq!(Matchers::default().parse(&n), crate_parse(&n));
        }
    }

    #[test]
    fn memo_keys_are_one_to_one_with_digit_strings() {
        assert_eq!(memo_key("0"), Some(1 << 60));
        assert_ne!(memo_key("0447700900123"), memo_key("447700900123"));
        assert_ne!(memo_key("0"), memo_key("00"));
        assert_eq!(memo_key("999999999999999"), Some(15 << 60 | 999_999_999_999_999));
        for n in ["", "+4477", "12a", "1234567890123456", "١٢٣"] {
            assert_eq!(memo_key(n), None, "{n}");
        }
        // Cached and uncached answers agree, errors included (their text names the input).
        let mut r = CountryResolver::new(4);
        for n in [
            "447700900123",
            "0447700900123",
            "+447700900123",
            "999123456",
            "12ab",
            "4412",
            "80012345678",
            "1234567890123456",
            "447700900123",
            "80012345678",
            "999123456",
        ] {
            assert_eq!(r.resolve(n), resolve_uncached(n), "{n}");
        }
        assert!(r.cache.len() <= 4);
        // Every kind of answer, once computed and once from the memo.
        let mut r = CountryResolver::new(100);
        for n in ["447700900123", "4412", "80012345678", "999123456", "0"] {
            for round in 0..2 {
                assert_eq!(r.resolve(n), resolve_uncached(n), "{n} round {round}");
            }
        }
        assert_eq!(r.cache.len(), 5);
    }

    #[test]
    fn bad_numbers_are_errors_invalid_ones_are_billed() {
        assert!(matches!(resolve_uncached(""), Err(NumberError::Empty)));
        assert!(matches!(resolve_uncached("12ab"), Err(NumberError::NotDigits(_))));
        assert!(matches!(
            resolve_uncached("999123456"),
            Err(NumberError::UnknownCallingCode(_))
        ));
        assert!(matches!(
            resolve_uncached("80012345678"),
            Err(NumberError::NonGeographic(_))
        ));
        let r = resolve_uncached("4412").unwrap();
        assert_eq!(r.country.as_str(), "GB");
        assert!(!r.valid);
    }
}

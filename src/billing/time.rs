//! Time as the billing rules see it: Unix seconds from events, never the wall clock.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Unix seconds (UTC). Meta timestamps have second resolution, so nothing finer is needed.
pub type Ts = i64;

pub const HOUR: Ts = 3600;
pub const DAY: Ts = 24 * HOUR;

/// RFC 3339 UTC with a `Z`, the format of every timestamp in wabill's output.
///
/// Years 0000..=9999 are written directly (two per output record, so chrono's format
/// string interpreter showed in profiles); anything else, where chrono adds a sign,
/// goes through chrono. `tests::fast_format_matches_chrono` checks they agree.
pub fn format_ts(ts: Ts) -> String {
    match rfc3339_fixed(ts) {
        // Only ASCII digits and separators were written.
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => format_ts_chrono(ts),
    }
}

/// `format_ts` without allocating, for years 0000..=9999 (`None` outside them): the
/// Avro encoder writes it straight into its buffer.
pub fn rfc3339_fixed(ts: Ts) -> Option<[u8; 20]> {
    if !(FAST_TS_MIN..=FAST_TS_MAX).contains(&ts) {
        return None;
    }
    let (y, m, d) = civil_from_days(ts.div_euclid(DAY));
    let secs = ts.rem_euclid(DAY);
    let mut b = *b"0000-00-00T00:00:00Z";
    for (at, n, v) in [
        (0, 4, y),
        (5, 2, m),
        (8, 2, d),
        (11, 2, secs / 3600),
        (14, 2, secs / 60 % 60),
        (17, 2, secs % 60),
    ] {
        let mut v = v;
        for i in (at..at + n).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    Some(b)
}

/// First and last second of years 0000..=9999.
pub(crate) const FAST_TS_MIN: Ts = -62_167_219_200;
pub(crate) const FAST_TS_MAX: Ts = 253_402_300_799;

fn format_ts_chrono(ts: Ts) -> String {
    match DateTime::<Utc>::from_timestamp(ts, 0) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("@{ts}"),
    }
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The UTC instant of midnight starting `date` in `tz`. Date switches (docs/billing-rules.md §1: eras,
/// rate cards, the 72 h free entry point) all happen at WABA-local midnight. When midnight
/// does not exist (a DST gap at 00:00, e.g. America/Sao_Paulo before 2019) the first
/// instant of the day is used.
pub fn local_midnight(tz: &Tz, date: NaiveDate) -> Ts {
    let mut t = date.and_hms_opt(0, 0, 0).expect("midnight is a valid time");
    for _ in 0..4 {
        match tz.from_local_datetime(&t) {
            chrono::LocalResult::Single(dt) => return dt.timestamp(),
            chrono::LocalResult::Ambiguous(a, _) => return a.timestamp(),
            chrono::LocalResult::None => t += chrono::Duration::hours(1),
        }
    }
    // Unreachable for real zones; fall back to UTC midnight rather than panic.
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("valid"))
        .timestamp()
}

/// WABA-local calendar date of an instant.
pub fn local_date(tz: &Tz, ts: Ts) -> NaiveDate {
    let utc = DateTime::<Utc>::from_timestamp(ts, 0).unwrap_or_default();
    utc.with_timezone(tz).date_naive()
}

/// WABA-local month `YYYY-MM` of an instant: the free-tier bucket.
pub fn local_month(tz: &Tz, ts: Ts) -> String {
    month_label(local_date(tz, ts))
}

/// `YYYY-MM` of a date (`local_month` of an instant on that date).
pub fn month_label(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid constant date")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sao_paulo_month_differs_from_utc_near_midnight() {
        let tz: Tz = "America/Sao_Paulo".parse().unwrap();
        // 2022-03-01T01:00Z is still February 28th in Sao Paulo (UTC-3).
        let ts = 1_646_096_400;
        assert_eq!(format_ts(ts), "2022-03-01T01:00:00Z");
        assert_eq!(local_month(&tz, ts), "2022-02");
        assert_eq!(local_month(&chrono_tz::UTC, ts), "2022-03");
    }

    #[test]
    fn fast_format_matches_chrono() {
        let mut samples = vec![
            0,
            -1,
            1,
            86_399,
            86_400,
            951_782_400, // 2000-02-29
            4_107_456_000,
            FAST_TS_MIN,
            FAST_TS_MIN - 1,
            FAST_TS_MAX,
            FAST_TS_MAX + 1,
            i64::MIN,
            i64::MAX,
        ];
        let mut x: i64 = 0x1234_5678;
        for _ in 0..50_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            samples.push(x.rem_euclid(FAST_TS_MAX - FAST_TS_MIN + 3) + FAST_TS_MIN - 1);
        }
        for ts in samples {
            assert_eq!(format_ts(ts), format_ts_chrono(ts), "{ts}");
        }
    }

    #[test]
    fn local_midnight_is_offset() {
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let m = local_midnight(&tz, date(2022, 2, 1));
        assert_eq!(format_ts(m), "2022-01-31T18:30:00Z");
    }
}

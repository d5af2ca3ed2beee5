//! Time as the billing rules see it: Unix seconds from events, never the wall clock.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// Unix seconds (UTC). Meta timestamps have second resolution, so nothing finer is needed.
pub type Ts = i64;

pub const HOUR: Ts = 3600;
pub const DAY: Ts = 24 * HOUR;

/// RFC 3339 UTC with a `Z`, the format of every timestamp in wabill's output.
pub fn format_ts(ts: Ts) -> String {
    match DateTime::<Utc>::from_timestamp(ts, 0) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("@{ts}"),
    }
}

/// The UTC instant of midnight starting `date` in `tz`. Date switches in the SPEC (eras,
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
    let d = local_date(tz, ts);
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
    fn local_midnight_is_offset() {
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let m = local_midnight(&tz, date(2022, 2, 1));
        assert_eq!(format_ts(m), "2022-01-31T18:30:00Z");
    }
}

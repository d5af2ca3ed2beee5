//! The era table of docs/billing-rules.md §2 as data. Adding an era means adding a row and a policy,
//! not sprinkling date checks through the engine.

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Serialize;

use super::time::{date, local_midnight, Ts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EraId {
    #[serde(rename = "cbp-2022")]
    Cbp2022,
    #[serde(rename = "cbp-2023")]
    Cbp2023,
    #[serde(rename = "cbp-2024-11")]
    Cbp2024_11,
    #[serde(rename = "pmp-2025-07")]
    Pmp2025_07,
    #[serde(rename = "pmp-2026-10")]
    Pmp2026_10,
}

impl EraId {
    /// Stable one-byte code for the state store.
    pub fn code(self) -> u8 {
        match self {
            EraId::Cbp2022 => 1,
            EraId::Cbp2023 => 2,
            EraId::Cbp2024_11 => 3,
            EraId::Pmp2025_07 => 4,
            EraId::Pmp2026_10 => 5,
        }
    }
    pub fn from_code(c: u8) -> Option<EraId> {
        ERA_TABLE.iter().map(|e| e.id).find(|id| id.code() == c)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EraId::Cbp2022 => "cbp-2022",
            EraId::Cbp2023 => "cbp-2023",
            EraId::Cbp2024_11 => "cbp-2024-11",
            EraId::Pmp2025_07 => "pmp-2025-07",
            EraId::Pmp2026_10 => "pmp-2026-10",
        }
    }
    pub fn parse(s: &str) -> Option<EraId> {
        ERA_TABLE.iter().map(|e| e.id).find(|id| id.as_str() == s)
    }
}

/// One row of docs/billing-rules.md §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraDef {
    pub id: EraId,
    /// First WABA-local day of the era.
    pub from: (i32, u32, u32),
}

pub const ERA_TABLE: &[EraDef] = &[
    EraDef {
        id: EraId::Cbp2022,
        from: (2022, 2, 1),
    },
    EraDef {
        id: EraId::Cbp2023,
        from: (2023, 6, 1),
    },
    EraDef {
        id: EraId::Cbp2024_11,
        from: (2024, 11, 1),
    },
    EraDef {
        id: EraId::Pmp2025_07,
        from: (2025, 7, 1),
    },
    EraDef {
        id: EraId::Pmp2026_10,
        from: (2026, 10, 1),
    },
];

/// The day from which a free entry point conversation lasts 72 h instead of 24 h (docs/billing-rules.md §9).
pub const FEP_72H_FROM: (i32, u32, u32) = (2023, 3, 1);

/// Era boundaries and other date switches resolved to UTC instants for one time zone,
/// so the hot path compares integers instead of converting every timestamp to a local date.
#[derive(Debug, Clone)]
pub struct EraCalendar {
    /// (first instant, era), ascending.
    starts: Vec<(Ts, EraDef)>,
    fep_72h_from: Ts,
}

/// Where an instant falls in the era table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraAt {
    pub era: EraDef,
    /// True before the first era (before 2022-02-01): billed as `cbp-2022` and counted.
    pub before_first: bool,
}

impl EraCalendar {
    pub fn new(tz: &Tz) -> Self {
        let starts = ERA_TABLE
            .iter()
            .map(|e| (local_midnight(tz, ymd(e.from)), *e))
            .collect();
        let fep_72h_from = local_midnight(tz, ymd(FEP_72H_FROM));
        EraCalendar { starts, fep_72h_from }
    }

    pub fn era_at(&self, ts: Ts) -> EraAt {
        let mut cur = EraAt {
            era: self.starts[0].1,
            before_first: true,
        };
        for (start, def) in &self.starts {
            if ts >= *start {
                cur = EraAt {
                    era: *def,
                    before_first: false,
                };
            } else {
                break;
            }
        }
        cur
    }

    /// Free entry point length for a conversation opened at `ts`.
    pub fn fep_duration(&self, ts: Ts) -> Ts {
        if ts >= self.fep_72h_from {
            72 * super::time::HOUR
        } else {
            24 * super::time::HOUR
        }
    }
}

fn ymd((y, m, d): (i32, u32, u32)) -> NaiveDate {
    date(y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::time::format_ts;

    #[test]
    fn eras_switch_at_local_midnight() {
        let tz: Tz = "America/Sao_Paulo".parse().unwrap();
        let cal = EraCalendar::new(&tz);
        // 2023-06-01T02:59:59Z is still May 31st in Sao Paulo.
        let t = 1_685_588_399;
        assert_eq!(format_ts(t), "2023-06-01T02:59:59Z");
        assert_eq!(cal.era_at(t).era.id, EraId::Cbp2022);
        assert_eq!(cal.era_at(t + 1).era.id, EraId::Cbp2023);
        assert!(cal.era_at(0).before_first);
    }

    #[test]
    fn fep_length_switches_on_2023_03_01() {
        let cal = EraCalendar::new(&chrono_tz::UTC);
        let switch = 1_677_628_800; // 2023-03-01T00:00:00Z
        assert_eq!(cal.fep_duration(switch - 1), 24 * 3600);
        assert_eq!(cal.fep_duration(switch), 72 * 3600);
    }
}

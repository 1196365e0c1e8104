//! Time limits in working days (工作日): Monday to Friday, less the master data's holidays,
//! plus its worked weekend days (调休上班). A case counts from the working day after the day it
//! was registered and is due at the end of its last working day, in the street's time zone.

use std::collections::HashMap;

use firmware_config::masterdata::{CaseRules, DayKind};
use time::{Date, OffsetDateTime, UtcOffset, Weekday};

/// Longest stretch searched for working days: a calendar that declares years of holidays
/// ends the search rather than the process.
const MAX_SCAN_DAYS: u32 = 3 * 366;

pub struct Calendar {
    days: HashMap<Date, DayKind>,
    offset: UtcOffset,
}

impl Calendar {
    pub fn new(rules: &CaseRules, offset: UtcOffset) -> Self {
        let days = rules
            .calendar
            .iter()
            .filter_map(|d| Some((firmware_config::masterdata::calendar_date(&d.date)?, d.kind)))
            .collect();
        Self { days, offset }
    }

    pub fn is_working(&self, d: Date) -> bool {
        match self.days.get(&d) {
            Some(DayKind::Holiday) => false,
            Some(DayKind::Workday) => true,
            None => !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday),
        }
    }

    /// The end of the `days`-th working day after the day of `from`.
    pub fn due(&self, from: OffsetDateTime, days: u32) -> OffsetDateTime {
        let mut d = from.to_offset(self.offset).date();
        let mut left = days;
        let mut scanned = 0;
        while left > 0 && scanned < MAX_SCAN_DAYS {
            let Some(next) = d.next_day() else { break };
            d = next;
            scanned += 1;
            if self.is_working(d) {
                left -= 1;
            }
        }
        self.end_of(d)
    }

    /// When the reminder for a case `due` goes: the start of the working day `days` working
    /// days before its last (0: the start of its last working day).
    pub fn remind_at(&self, due: OffsetDateTime, days: u32) -> OffsetDateTime {
        // `due` is the midnight after the last working day.
        let mut d = (due.to_offset(self.offset) - time::Duration::nanoseconds(1)).date();
        let mut left = days;
        let mut scanned = 0;
        while left > 0 && scanned < MAX_SCAN_DAYS {
            let Some(prev) = d.previous_day() else { break };
            d = prev;
            scanned += 1;
            if self.is_working(d) {
                left -= 1;
            }
        }
        d.midnight().assume_offset(self.offset)
    }

    /// Working days from the day after `from`'s to `to`'s day, both in the street's time.
    pub fn working_days_between(&self, from: OffsetDateTime, to: OffsetDateTime) -> u32 {
        let (mut d, end) = (
            from.to_offset(self.offset).date(),
            to.to_offset(self.offset).date(),
        );
        let mut n = 0;
        let mut scanned = 0;
        while d < end && scanned < MAX_SCAN_DAYS {
            let Some(next) = d.next_day() else { break };
            d = next;
            scanned += 1;
            if self.is_working(d) {
                n += 1;
            }
        }
        n
    }

    fn end_of(&self, d: Date) -> OffsetDateTime {
        d.next_day()
            .unwrap_or(d)
            .midnight()
            .assume_offset(self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::masterdata::CalendarDay;
    use time::macros::{datetime, offset};

    fn street_2026() -> Calendar {
        let day = |date: &str, kind| CalendarDay {
            date: date.to_owned(),
            kind,
            name: String::new(),
        };
        let rules = CaseRules {
            calendar: vec![
                // 国庆: 1–7 October off, Saturday 10 October worked.
                day("2026-10-01", DayKind::Holiday),
                day("2026-10-02", DayKind::Holiday),
                day("2026-10-05", DayKind::Holiday),
                day("2026-10-06", DayKind::Holiday),
                day("2026-10-07", DayKind::Holiday),
                day("2026-10-10", DayKind::Workday),
            ],
            limits: Vec::new(),
        };
        Calendar::new(&rules, offset!(+8))
    }

    #[test]
    fn weekends_and_holidays_are_skipped_and_a_worked_saturday_counts() {
        let c = street_2026();
        // Registered on Monday 21 September at 15:00 in the street: 5 working days end on
        // Monday 28 September.
        assert_eq!(
            c.due(datetime!(2026-09-21 07:00 UTC), 5),
            datetime!(2026-09-29 00:00 +8)
        );
        // Registered Wednesday 30 September: the holiday week does not count; Thursday 8,
        // Friday 9 and Saturday 10 (worked) do.
        assert_eq!(
            c.due(datetime!(2026-09-30 02:00 UTC), 3),
            datetime!(2026-10-11 00:00 +8)
        );
        // Thursday 16:30 UTC is already Friday in the street: counts from Monday, not Friday.
        assert_eq!(
            c.due(datetime!(2026-09-24 16:30 UTC), 1),
            datetime!(2026-09-29 00:00 +8),
            "the street's day, not UTC's"
        );
    }

    #[test]
    fn the_reminder_goes_at_the_start_of_a_working_day_before_the_last() {
        let c = street_2026();
        let due = datetime!(2026-10-13 00:00 +8); // the end of Monday 12 October
        assert_eq!(c.remind_at(due, 0), datetime!(2026-10-12 00:00 +8));
        // One working day before Monday: the worked Saturday.
        assert_eq!(c.remind_at(due, 1), datetime!(2026-10-10 00:00 +8));
        assert_eq!(
            c.working_days_between(
                datetime!(2026-09-30 12:00 +8),
                datetime!(2026-10-12 09:00 +8)
            ),
            4
        );
    }

    #[test]
    fn a_calendar_of_only_holidays_ends_the_search() {
        let rules = CaseRules {
            calendar: (1..=28)
                .flat_map(|d| {
                    (1..=12).map(move |m| CalendarDay {
                        date: format!("2027-{m:02}-{d:02}"),
                        kind: DayKind::Holiday,
                        name: String::new(),
                    })
                })
                .collect(),
            limits: Vec::new(),
        };
        let c = Calendar::new(&rules, offset!(+8));
        let due = c.due(datetime!(2026-12-31 12:00 +8), 30);
        assert!(due > datetime!(2027-01-01 00:00 +8));
    }
}

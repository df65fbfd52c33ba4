//! Business-time arithmetic, exact across daylight-saving changes, midnight, year ends
//! and leap days: a table of cases, each worked out by hand in its comment, run in both
//! directions (add working time, working time between) and round trip. Then recurring
//! freezes, includes, and the calendar functions of expressions through the engine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use chrono::NaiveDate;
use chrono_tz::Tz;
use common::{rules, t};
use serde_json::json;
use steward_engine::core::Engine;
use steward_engine::decision::Kind;
use steward_engine::event::Event;
use steward_engine::replay::Driver;
use steward_engine::time::{BusinessCalendar, RecurringFreeze};

const H: i64 = 3600;

/// `hours` on the given weekdays (0 = Monday), minutes after midnight.
fn calendar(zone: Tz, days: &[usize], hours: &[(u32, u32)]) -> BusinessCalendar {
    let mut cal = BusinessCalendar::new(zone);
    for &d in days {
        cal.hours[d].extend_from_slice(hours);
    }
    cal
}

const WEEKDAYS: &[usize] = &[0, 1, 2, 3, 4];
const EVERY_DAY: &[usize] = &[0, 1, 2, 3, 4, 5, 6];

/// Europe/Berlin, 08:00–18:00 Monday to Friday.
fn berlin_office() -> BusinessCalendar {
    calendar(chrono_tz::Europe::Berlin, WEEKDAYS, &[(8 * 60, 18 * 60)])
}

fn with_holidays(mut cal: BusinessCalendar, days: &[&str]) -> BusinessCalendar {
    for d in days {
        cal.holidays
            .insert(NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap());
    }
    cal
}

struct Case {
    name: &'static str,
    cal: BusinessCalendar,
    start: &'static str,
    seconds: i64,
    /// `start` plus `seconds` of working time; also the end whose working time since
    /// `start` is `seconds`.
    end: &'static str,
}

fn cases() -> Vec<Case> {
    let berlin = chrono_tz::Europe::Berlin;
    let lord_howe = chrono_tz::Australia::Lord_Howe;
    vec![
        // Friday 2026-03-27 17:30 CET (+01:00) = 16:30Z. 30 min to 18:00 CET (17:00Z).
        // Sunday 2026-03-29 02:00 CET becomes 03:00 CEST. Monday 2026-03-30 08:00 CEST
        // (+02:00) = 06:00Z, plus the 3.5 h left = 11:30 CEST = 09:30Z.
        Case {
            name: "4 business hours from Friday 17:30 across the March change, Berlin",
            cal: berlin_office(),
            start: "2026-03-27T16:30:00Z",
            seconds: 4 * H,
            end: "2026-03-30T09:30:00Z",
        },
        // The same in October: Friday 2026-10-23 17:30 CEST = 15:30Z, 30 min to 16:00Z;
        // Sunday 2026-10-25 03:00 CEST falls back to 02:00 CET (02:00–03:00 twice).
        // Monday 2026-10-26 08:00 CET = 07:00Z + 3.5 h = 11:30 CET = 10:30Z.
        Case {
            name: "4 business hours from Friday 17:30 across the October change, Berlin",
            cal: berlin_office(),
            start: "2026-10-23T15:30:00Z",
            seconds: 4 * H,
            end: "2026-10-26T10:30:00Z",
        },
        // Round the clock, Saturday 2026-10-24 00:00 CEST (22:00Z on the 23rd) to
        // Monday 00:00 CET (23:00Z on the 25th): 24 h + 25 h (the repeated hour) = 49 h.
        Case {
            name: "a 25-hour Sunday, Berlin fall-back, round the clock",
            cal: calendar(berlin, EVERY_DAY, &[(0, 24 * 60)]),
            start: "2026-10-23T22:00:00Z",
            seconds: 49 * H,
            end: "2026-10-25T23:00:00Z",
        },
        // Sunday 2026-10-25 00:00..02:30: 00:00 CEST = 22:00Z on the 24th; 02:30 ends
        // at its last occurrence, 02:30 CET = 01:30Z: 3.5 h of wall-clock range.
        Case {
            name: "a range ending in the repeated hour holds it twice, Berlin",
            cal: calendar(berlin, &[6], &[(0, 150)]),
            start: "2026-10-24T22:00:00Z",
            seconds: 3 * H + 30 * 60,
            end: "2026-10-25T01:30:00Z",
        },
        // Round the clock, Saturday 2026-03-28 00:00 CET (23:00Z on the 27th) to Monday
        // 00:00 CEST (22:00Z on the 29th): 24 h + 23 h = 47 h.
        Case {
            name: "a 23-hour Sunday, Berlin spring-forward, round the clock",
            cal: calendar(berlin, EVERY_DAY, &[(0, 24 * 60)]),
            start: "2026-03-27T23:00:00Z",
            seconds: 47 * H,
            end: "2026-03-29T22:00:00Z",
        },
        // Thursday 2026-04-02 16:00 CEST = 14:00Z: 2 h to 18:00 (16:00Z). Good Friday
        // 04-03 and Easter Monday 04-06 are holidays, 04-04/05 the weekend. Tuesday
        // 2026-04-07 08:00 CEST = 06:00Z + 2 h = 08:00Z.
        Case {
            name: "Easter holidays inside the window, Berlin",
            cal: with_holidays(berlin_office(), &["2026-04-03", "2026-04-06"]),
            start: "2026-04-02T14:00:00Z",
            seconds: 4 * H,
            end: "2026-04-07T08:00:00Z",
        },
        // Lord Howe: standard +10:30, summer +11:00, 30-minute shifts. Sunday
        // 2026-10-04 02:00 +10:30 becomes 02:30 +11:00. Sundays 00:00..06:00:
        // 00:00 +10:30 = 13:30Z on the 3rd; 06:00 +11:00 = 19:00Z: 5.5 h.
        Case {
            name: "Lord Howe spring-forward by 30 minutes: a 5.5-hour night",
            cal: calendar(lord_howe, &[6], &[(0, 6 * 60)]),
            start: "2026-10-03T13:30:00Z",
            seconds: 5 * H + 30 * 60,
            end: "2026-10-03T19:00:00Z",
        },
        // From the same start, 3 h: 13:30Z + 3 h = 16:30Z = 03:30 +11:00 (the clock
        // skipped 02:00–02:30).
        Case {
            name: "Lord Howe spring-forward: 3 hours from midnight end at 03:30",
            cal: calendar(lord_howe, &[6], &[(0, 6 * 60)]),
            start: "2026-10-03T13:30:00Z",
            seconds: 3 * H,
            end: "2026-10-03T16:30:00Z",
        },
        // Sunday 2026-04-05 02:00 +11:00 falls back to 01:30 +10:30. 00:00 +11:00 =
        // 13:00Z on the 4th; 06:00 +10:30 = 19:30Z: 6.5 h.
        Case {
            name: "Lord Howe fall-back by 30 minutes: a 6.5-hour night",
            cal: calendar(lord_howe, &[6], &[(0, 6 * 60)]),
            start: "2026-04-04T13:00:00Z",
            seconds: 6 * H + 30 * 60,
            end: "2026-04-04T19:30:00Z",
        },
        // Sundays 00:00..01:45 on that day: 01:45 happens at 14:45Z (+11:00) and again
        // at 15:15Z (+10:30); the range ends at the last: 13:00Z..15:15Z = 2.25 h.
        Case {
            name: "Lord Howe: a range ending in the repeated half hour",
            cal: calendar(lord_howe, &[6], &[(0, 105)]),
            start: "2026-04-04T13:00:00Z",
            seconds: 2 * H + 15 * 60,
            end: "2026-04-04T15:15:00Z",
        },
        // Night shift, Berlin: 22:00..24:00 Monday to Friday, 00:00..06:00 Tuesday to
        // Saturday. Friday 2026-03-06 23:00 CET = 22:00Z: 1 h to midnight, then
        // Saturday 00:00..03:00 = 02:00Z on the 7th.
        Case {
            name: "hours across midnight, Berlin night shift",
            cal: night_shift(),
            start: "2026-03-06T22:00:00Z",
            seconds: 4 * H,
            end: "2026-03-07T02:00:00Z",
        },
        // Saturday 05:00 CET = 04:00Z: 1 h to 06:00; next shift Monday 2026-03-09
        // 22:00 CET = 21:00Z, + 1 h = 22:00Z.
        Case {
            name: "night shift across the weekend",
            cal: night_shift(),
            start: "2026-03-07T04:00:00Z",
            seconds: 2 * H,
            end: "2026-03-09T22:00:00Z",
        },
        // Wednesday 2026-12-30 15:00 CET = 14:00Z: 3 h to 18:00. 12-31 and 01-01 are
        // holidays, 01-02/03 the weekend. Monday 2027-01-04 08:00 CET = 07:00Z + 5 h =
        // 12:00Z.
        Case {
            name: "across the year end, Berlin",
            cal: with_holidays(
                berlin_office(),
                &["2026-12-24", "2026-12-25", "2026-12-31", "2027-01-01"],
            ),
            start: "2026-12-30T14:00:00Z",
            seconds: 8 * H,
            end: "2027-01-04T12:00:00Z",
        },
        // Monday 2028-02-28 17:00 CET = 16:00Z: 1 h. Tuesday 2028-02-29 (a leap day,
        // a working day) 08:00 CET = 07:00Z + 9 h = 17:00 CET = 16:00Z.
        Case {
            name: "through 29 February 2028",
            cal: berlin_office(),
            start: "2028-02-28T16:00:00Z",
            seconds: 10 * H,
            end: "2028-02-29T16:00:00Z",
        },
        // The leap day as a holiday: Monday 28th 1 h, Wednesday 2028-03-01 08:00 CET =
        // 07:00Z + 1 h = 08:00Z.
        Case {
            name: "29 February 2028 as a holiday",
            cal: with_holidays(berlin_office(), &["2028-02-29"]),
            start: "2028-02-28T16:00:00Z",
            seconds: 2 * H,
            end: "2028-03-01T08:00:00Z",
        },
    ]
}

fn night_shift() -> BusinessCalendar {
    let mut cal = calendar(chrono_tz::Europe::Berlin, WEEKDAYS, &[(22 * 60, 24 * 60)]);
    for d in 1..=5 {
        cal.hours[d].push((0, 6 * 60));
    }
    cal
}

#[test]
fn add_working_time_table() {
    for c in cases() {
        assert_eq!(
            c.cal.add_working_time(t(c.start), c.seconds),
            Some(t(c.end)),
            "{}",
            c.name
        );
    }
}

#[test]
fn working_seconds_between_table() {
    for c in cases() {
        assert_eq!(
            c.cal.working_seconds_between(t(c.start), t(c.end)),
            c.seconds,
            "{}",
            c.name
        );
        // Backwards is the negative.
        assert_eq!(
            c.cal.working_seconds_between(t(c.end), t(c.start)),
            -c.seconds,
            "{} (backwards)",
            c.name
        );
    }
}

#[test]
fn round_trips() {
    for c in cases() {
        let start = t(c.start);
        // Every whole quarter hour up to the case's length comes back.
        for q in 0..=(c.seconds / 900) {
            let s = q * 900;
            let end = c.cal.add_working_time(start, s).unwrap();
            assert_eq!(
                c.cal.working_seconds_between(start, end),
                s,
                "{}: {s} s",
                c.name
            );
            // Adding what lies between lands on the same instant.
            assert_eq!(
                c.cal
                    .add_working_time(start, c.cal.working_seconds_between(start, end)),
                Some(end),
                "{}: {s} s back",
                c.name
            );
        }
    }
}

#[test]
fn a_clock_paused_over_the_weekend_composes_add_and_between() {
    // 8 business hours, started Thursday 2026-03-05 14:00 CET (13:00Z), paused Friday
    // 10:00 CET (09:00Z): Thursday 4 h + Friday 2 h = 6 h used. Resumed Monday
    // 2026-03-09 11:00 CET (10:00Z): the 2 h left end at 13:00 CET = 12:00Z.
    let cal = berlin_office();
    let (start, paused, resumed) = (
        t("2026-03-05T13:00:00Z"),
        t("2026-03-06T09:00:00Z"),
        t("2026-03-09T10:00:00Z"),
    );
    let used = cal.working_seconds_between(start, paused);
    assert_eq!(used, 6 * H);
    let due = cal.add_working_time(resumed, 8 * H - used).unwrap();
    assert_eq!(due, t("2026-03-09T12:00:00Z"));
    // The same as counting all working time and taking out the pause:
    // Thu 4 h + Fri 10 h + Mon 5 h = 19 h, minus Fri 8 h + Mon 3 h paused = 8 h.
    assert_eq!(
        cal.working_seconds_between(start, due) - cal.working_seconds_between(paused, resumed),
        8 * H
    );
}

#[test]
fn instants_outside_working_hours() {
    let cal = berlin_office();
    // Saturday to Sunday: nothing.
    assert_eq!(
        cal.working_seconds_between(t("2026-03-07T10:00:00Z"), t("2026-03-08T10:00:00Z")),
        0
    );
    // Zero working time from a Saturday starts Monday 08:00 CET.
    assert_eq!(
        cal.add_working_time(t("2026-03-07T10:00:00Z"), 0),
        Some(t("2026-03-09T07:00:00Z"))
    );
    // 18:00 is out, 17:59:59 in, 08:00 in.
    assert!(!cal.is_working(t("2026-03-06T17:00:00Z")));
    assert!(cal.is_working(t("2026-03-06T16:59:59Z")));
    assert!(cal.is_working(t("2026-03-06T07:00:00Z")));
}

#[test]
fn overlapping_hours_count_once() {
    // 08:00..12:00 and 10:00..14:00 on Monday: 6 h, not 8.
    let cal = calendar(
        chrono_tz::UTC,
        &[0],
        &[(8 * 60, 12 * 60), (10 * 60, 14 * 60)],
    );
    assert_eq!(
        cal.working_seconds_between(t("2026-03-09T00:00:00Z"), t("2026-03-10T00:00:00Z")),
        6 * H
    );
    assert_eq!(
        cal.add_working_time(t("2026-03-09T00:00:00Z"), 5 * H),
        Some(t("2026-03-09T13:00:00Z"))
    );
}

#[test]
fn include_is_the_union_of_working_time_holidays_and_freezes() {
    let berlin = chrono_tz::Europe::Berlin;
    // Base: weekdays 08:00–18:00, a holiday, a fixed freeze.
    let mut base = with_holidays(berlin_office(), &["2026-12-24"]);
    base.freezes
        .push((t("2026-12-20T00:00:00Z"), t("2026-12-22T00:00:00Z")));
    // Support: its own evenings 17:00–20:00 (overlapping 17:00–18:00), Saturday
    // mornings, a weekly freeze.
    let mut support = calendar(berlin, WEEKDAYS, &[(17 * 60, 20 * 60)]);
    support.hours[5].push((9 * 60, 12 * 60));
    support
        .recurring_freezes
        .push(RecurringFreeze::new("0 0 18 * * fri", berlin, 62 * H).unwrap());
    support.include(&base);
    // Monday 2026-03-09 in Berlin (CET): 08:00–20:00 = 12 h (the shared hour once).
    assert_eq!(
        support.working_seconds_between(t("2026-03-08T23:00:00Z"), t("2026-03-09T23:00:00Z")),
        12 * H
    );
    // Saturday mornings stay: 3 h on 2026-03-07.
    assert_eq!(
        support.working_seconds_between(t("2026-03-06T23:00:00Z"), t("2026-03-07T23:00:00Z")),
        3 * H
    );
    // The included holiday is off for all of its hours, the included freeze holds, the
    // own recurring freeze too.
    assert_eq!(
        support.working_seconds_between(t("2026-12-23T23:00:00Z"), t("2026-12-24T23:00:00Z")),
        0
    );
    assert!(support.in_freeze(t("2026-12-21T12:00:00Z")));
    assert!(support.in_freeze(t("2026-03-07T12:00:00Z")));
    assert!(!support.in_freeze(t("2026-03-11T12:00:00Z")));
}

#[test]
fn recurring_freeze_windows_last_elapsed_time() {
    let berlin = chrono_tz::Europe::Berlin;
    let mut cal = berlin_office();
    cal.recurring_freezes
        .push(RecurringFreeze::new("0 18 * * fri", berlin, 62 * H).unwrap());
    // Friday 2026-03-06 18:00 CET = 17:00Z to Monday 08:00 CET = 07:00Z.
    assert!(!cal.in_freeze(t("2026-03-06T16:59:59Z")));
    assert!(cal.in_freeze(t("2026-03-06T17:00:00Z")));
    assert!(cal.in_freeze(t("2026-03-09T06:59:59Z")));
    assert!(!cal.in_freeze(t("2026-03-09T07:00:00Z")));
    assert_eq!(
        cal.freeze_at(t("2026-03-08T12:00:00Z")),
        Some((t("2026-03-06T17:00:00Z"), t("2026-03-09T07:00:00Z")))
    );
    // Over the March change the window is 62 elapsed hours: Friday 2026-03-27 18:00
    // CET = 17:00Z to Monday 2026-03-30 07:00Z, which is 09:00 CEST on the wall clock.
    assert!(cal.in_freeze(t("2026-03-30T06:59:59Z")));
    assert!(!cal.in_freeze(t("2026-03-30T07:00:00Z")));
    // Midweek is free.
    assert!(!cal.in_freeze(t("2026-03-11T12:00:00Z")));
}

fn event(id: &str, ty: &str, time: &str, data: serde_json::Value) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": ty,
        "time": time, "subject": "CHG-1", "data": data,
    }))
    .unwrap()
}

const CALENDARS: &str = r#"
calendar weekdays {
  zone "Europe/Berlin"
  hours mon..fri 08:00..18:00
  holidays "2026-04-03"
}

calendar office {
  zone "Europe/Berlin"
  include weekdays
  freeze "2026-12-20T00:00" .. "2027-01-04T00:00"
  freeze every "0 18 * * fri" for 62 hours
}
"#;

#[test]
fn a_change_during_a_freeze_is_detected_by_a_rule() {
    let rules = rules(&format!(
        r#"{CALENDARS}
rule change_in_freeze {{
  control "8.5.3" "Changes are not deployed during freeze windows" detective
  on "change.implemented" when in_freeze(office, event.time) do {{
    violation "change ${{event.subject}} deployed during a freeze"
  }}
}}
"#
    ));
    let mut driver = Driver::new(Engine::new(rules));
    let mut out = Vec::new();
    // Wednesday: free. Saturday: the weekly freeze. 2026-12-28: the year-end freeze.
    for (id, time) in [
        ("1", "2026-03-11T10:00:00Z"),
        ("2", "2026-03-14T10:00:00Z"),
        ("3", "2026-12-28T10:00:00Z"),
    ] {
        driver.feed(&event(id, "change.implemented", time, json!({})), &mut out);
    }
    let violations: Vec<_> = out
        .iter()
        .filter(|d| d.kind == Kind::Violation)
        .map(|d| (d.at, d.control.clone().unwrap()))
        .collect();
    assert_eq!(
        violations,
        [
            (t("2026-03-14T10:00:00Z"), "8.5.3".to_string()),
            (t("2026-12-28T10:00:00Z"), "8.5.3".to_string()),
        ]
    );
}

#[test]
fn calendar_functions_in_expressions() {
    let rules = rules(&format!(
        r#"{CALENDARS}
rule measure {{
  on "incident.responded" do {{
    evidence "measured" {{
      working: in_working_hours(office, event.time),
      by_string: in_working_hours("office", timestamp(event.time)),
      between: string(business_between(office, timestamp(event.data.opened), timestamp(event.time))),
      due: string(add_business(office, timestamp(event.data.opened), duration("4h"))),
      frozen: in_freeze(office, now),
      included_hours: in_working_hours(office, timestamp("2026-04-02T08:00:00Z")),
      included_holiday: in_working_hours(office, timestamp("2026-04-03T08:00:00Z"))
    }}
  }}
}}
"#
    ));
    let mut driver = Driver::new(Engine::new(rules));
    let mut out = Vec::new();
    // Opened Friday 2026-03-27 17:30 CET (16:30Z), responded Monday 2026-03-30 09:00
    // CEST (07:00Z): 30 min + 1 h = 5400 s; due 4 business hours later is 09:30Z.
    driver.feed(
        &event(
            "1",
            "incident.responded",
            "2026-03-30T07:00:00Z",
            json!({"opened": "2026-03-27T16:30:00Z"}),
        ),
        &mut out,
    );
    let evidence = out
        .iter()
        .find(|d| d.kind == Kind::Evidence)
        .unwrap_or_else(|| panic!("no evidence: {out:?}"));
    let args = evidence.args.clone().unwrap();
    assert_eq!(
        args,
        json!({
            "working": true,
            "by_string": true,
            "between": "5400s",
            "due": "2026-03-30T09:30:00Z",
            "frozen": false,
            // `office` has the hours and the holiday of the calendar it includes.
            "included_hours": true,
            "included_holiday": false,
        }),
        "{evidence:?}"
    );
}

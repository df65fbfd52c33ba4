//! SLA clocks: the state of one clock of a workflow instance, and its arithmetic.
//!
//! A clock counts time while it runs: wall time, or working time of a calendar. Its
//! state is what was counted before the current running segment (`banked`) and when
//! that segment began (`since`), so elapsed time is exact however often it is paused,
//! and a clock reloaded from the store continues where it stood. Thresholds are
//! shares of the goal; the engine arms one durable timer per threshold not yet fired
//! (see `core/sla.rs`).

use chrono::{DateTime, Duration, Utc};
use steward_dsl::cel::{Key, MapValue, Value};

use crate::ruleset::Sla;

/// Where a clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Paused,
    /// Stopped by a `stop` condition (the goal was met or missed; it no longer counts).
    Stopped,
    Cancelled,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Stopped => "stopped",
            Phase::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Phase> {
        Some(match name {
            "running" => Phase::Running,
            "paused" => Phase::Paused,
            "stopped" => Phase::Stopped,
            "cancelled" => Phase::Cancelled,
            _ => return None,
        })
    }

    /// Running or paused: the clock's run is not over.
    pub fn is_open(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused)
    }
}

/// One clock of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    /// Counts the clock's runs (each start or reset begins one); threshold timers carry it.
    pub run: u64,
    pub phase: Phase,
    /// The instant the run counts from (earlier than its event for a retroactive start).
    pub started: DateTime<Utc>,
    /// When the current running segment began; when the clock last changed otherwise.
    pub since: DateTime<Utc>,
    /// Time counted before `since`.
    pub banked: Duration,
    /// Thresholds (percentages) fired in this run, in the order they fired.
    pub fired: Vec<u64>,
    /// Pending threshold timers.
    pub timers: Vec<u64>,
}

impl Clock {
    /// A new run counting from `started`, which is at or before `now`.
    pub fn start(run: u64, started: DateTime<Utc>) -> Clock {
        Clock {
            run,
            phase: Phase::Running,
            started,
            since: started,
            banked: Duration::zero(),
            fired: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// Time counted up to `now`.
    pub fn elapsed(&self, sla: &Sla, now: DateTime<Utc>) -> Duration {
        match self.phase {
            Phase::Running => self.banked + measure(sla, self.since, now),
            _ => self.banked,
        }
    }

    /// Ends the running segment at `now` (banks its time) and moves to `phase`.
    pub fn settle(&mut self, sla: &Sla, now: DateTime<Utc>, phase: Phase) {
        self.banked = self.elapsed(sla, now);
        self.since = now;
        self.phase = phase;
    }

    /// When the running clock reaches `target` counted time (`None`: never, the
    /// calendar has no working time left).
    pub fn due(&self, sla: &Sla, target: Duration) -> Option<DateTime<Utc>> {
        advance(sla, self.since, target - self.banked)
    }

    /// The value `sla.NAME` has in expressions.
    pub fn value(clock: Option<&Clock>, sla: &Sla, now: DateTime<Utc>) -> Value {
        let elapsed = clock.map_or(Duration::zero(), |c| c.elapsed(sla, now));
        let phase = clock.map(|c| c.phase);
        let mut map = MapValue::new();
        let mut put = |k: &str, v: Value| {
            map.insert(Key::String(k.into()), v);
        };
        put("elapsed", Value::Duration(elapsed));
        put("remaining", Value::Duration(remaining(sla, elapsed)));
        put("goal", Value::Duration(sla.goal));
        put(
            "started",
            clock.map_or(Value::Null, |c| Value::Timestamp(c.started)),
        );
        for p in [
            Phase::Running,
            Phase::Paused,
            Phase::Stopped,
            Phase::Cancelled,
        ] {
            put(p.name(), Value::Bool(phase == Some(p)));
        }
        put(
            "breached",
            Value::Bool(clock.is_some() && elapsed >= sla.goal),
        );
        Value::Map(std::sync::Arc::new(map))
    }
}

/// What is left of the goal (zero once breached).
pub fn remaining(sla: &Sla, elapsed: Duration) -> Duration {
    (sla.goal - elapsed).max(Duration::zero())
}

/// `percent` % of the goal, to the nanosecond.
pub fn share(sla: &Sla, percent: u64) -> Duration {
    let p = i128::from(percent);
    match sla.goal.num_nanoseconds() {
        Some(n) => Duration::nanoseconds((i128::from(n) * p / 100) as i64),
        None => Duration::milliseconds((i128::from(sla.goal.num_milliseconds()) * p / 100) as i64),
    }
}

/// Counted time between two instants: wall time, or the calendar's working time.
pub fn measure(sla: &Sla, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    if to <= from {
        return Duration::zero();
    }
    match &sla.calendar {
        Some(cal) => cal.working_time_between(from, to),
        None => to - from,
    }
}

/// The instant `amount` of counted time after `from`.
pub fn advance(sla: &Sla, from: DateTime<Utc>, amount: Duration) -> Option<DateTime<Utc>> {
    match &sla.calendar {
        Some(cal) => cal.add_working(from, amount),
        None => from.checked_add_signed(amount.max(Duration::zero())),
    }
}

//! Driving the core over a stream of events on a virtual clock.
//!
//! The clock starts at `from` (default: the first event's time), moves to each event's
//! `time` — firing the timers and cadences due up to it, in order — and finally to
//! `until`. Events never move the clock backwards: a late event is applied at the
//! current time.

use chrono::{DateTime, Utc};

use crate::core::{Applied, Engine};
use crate::decision::Decision;
use crate::event::{Event, EventError};

/// One line of an events file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Decodes one line of a JSON-lines events file. Blank lines give `None`.
/// Replayed events must carry `time`.
pub fn decode_line(line: usize, text: &str, require_time: bool) -> Option<Result<Event, BadLine>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(
        Event::from_json_str(trimmed)
            .map_err(|e: EventError| BadLine {
                line,
                reason: e.to_string(),
            })
            .and_then(|event| {
                if require_time && event.time.is_none() {
                    Err(BadLine {
                        line,
                        reason: format!("event `{}`: missing `time`", event.id),
                    })
                } else {
                    Ok(event)
                }
            }),
    )
}

/// The core plus a virtual clock.
pub struct Driver {
    pub engine: Engine,
    clock: Option<DateTime<Utc>>,
}

impl Driver {
    /// A driver whose clock resumes from the engine's last known time, if any.
    pub fn new(engine: Engine) -> Driver {
        let clock = engine.world().now;
        Driver { engine, clock }
    }

    pub fn clock(&self) -> Option<DateTime<Utc>> {
        self.clock
    }

    /// Starts the clock at `from` (if it is not already running) and schedules cadences.
    pub fn start(&mut self, from: DateTime<Utc>) {
        if self.clock.is_none() {
            self.clock = Some(from);
        }
        let at = self.clock.unwrap_or(from);
        self.engine.start(at);
    }

    /// Moves the clock to `to` (never backwards), firing what falls due.
    pub fn advance(&mut self, to: DateTime<Utc>, out: &mut Vec<Decision>) {
        let now = match self.clock {
            Some(c) if c > to => c,
            _ => to,
        };
        self.engine.advance(now, out);
        self.clock = Some(now);
    }

    /// Applies an event at its own time (or the current time, if that is later).
    pub fn feed(&mut self, event: &Event, out: &mut Vec<Decision>) -> Applied {
        let at = event
            .time
            .or(self.clock)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if self.clock.is_none() {
            self.start(at);
        }
        self.advance(at, out);
        let now = self.clock.unwrap_or(at);
        self.engine.apply(event, now, out)
    }
}

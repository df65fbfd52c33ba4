//! Decisions: what the engine decided, one record each, in order. They are the
//! replay output, the evidence (hash-chained) and the source of outbox entries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::event::format_time;

/// The kinds of decision, as written in the `kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A workflow instance entered a state (`from` absent for the initial state).
    Transition,
    /// A connector call or an emitted event, queued in the outbox.
    Action,
    /// A nonconformity.
    Violation,
    /// An `evidence` record written by a rule.
    Evidence,
    /// A timer fired.
    Timer,
    /// An escalation step ran or a ladder started or stopped.
    Escalation,
    /// An approval was requested, a decision counted or refused, or an outcome reached.
    Approval,
    /// A cadence ran, or its expected evidence arrived.
    Cadence,
    /// A counter's threshold held.
    Counter,
    /// An SLA clock event.
    Sla,
    /// An expression failed at run time; the reaction it belonged to was skipped.
    Error,
    /// A connector call from the outbox was executed; `result` holds what it returned.
    #[serde(rename = "action_succeeded")]
    ActionSucceeded,
    /// A connector call from the outbox was given up (a permanent error, or its
    /// attempts ran out); `message` says why.
    #[serde(rename = "action_failed")]
    ActionFailed,
}

/// One decision. Field order is fixed, so the JSON encoding is byte-for-byte stable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    #[serde(serialize_with = "serialize_time")]
    pub at: DateTime<Utc>,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cadence: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// How many times an action was tried (outcome decisions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// A connector's result (`action_succeeded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

fn serialize_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

impl Decision {
    pub fn new(at: DateTime<Utc>, kind: Kind) -> Self {
        Decision {
            at,
            kind,
            workflow: None,
            key: None,
            rule: None,
            cadence: None,
            counter: None,
            control: None,
            state: None,
            from: None,
            to: None,
            connector: None,
            op: None,
            args: None,
            message: None,
            period: None,
            approver: None,
            outcome: None,
            attempts: None,
            result: None,
            action_id: None,
            event: None,
            policy: None,
        }
    }

    /// The decision as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The canonical encoding: [`canonical_json`] of the serialized decision, written
    /// directly (the fields in code-point order of their names).
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push('{');
        let mut first = true;
        let mut field = |out: &mut String, name: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
        };
        let text = |out: &mut String,
                    name: &str,
                    v: &Option<String>,
                    field: &mut dyn FnMut(&mut String, &str)| {
            if let Some(v) = v {
                field(out, name);
                push_json_str(out, v);
            }
        };
        text(&mut out, "action_id", &self.action_id, &mut field);
        text(&mut out, "approver", &self.approver, &mut field);
        if let Some(args) = &self.args {
            field(&mut out, "args");
            write_canonical(args, &mut out);
        }
        field(&mut out, "at");
        push_json_str(&mut out, &format_time(self.at));
        if let Some(attempts) = self.attempts {
            field(&mut out, "attempts");
            out.push_str(&attempts.to_string());
        }
        text(&mut out, "cadence", &self.cadence, &mut field);
        text(&mut out, "connector", &self.connector, &mut field);
        text(&mut out, "control", &self.control, &mut field);
        text(&mut out, "counter", &self.counter, &mut field);
        text(&mut out, "event", &self.event, &mut field);
        text(&mut out, "from", &self.from, &mut field);
        text(&mut out, "key", &self.key, &mut field);
        field(&mut out, "kind");
        out.push('"');
        out.push_str(self.kind.name());
        out.push('"');
        text(&mut out, "message", &self.message, &mut field);
        text(&mut out, "op", &self.op, &mut field);
        text(&mut out, "outcome", &self.outcome, &mut field);
        text(&mut out, "period", &self.period, &mut field);
        text(&mut out, "policy", &self.policy, &mut field);
        if let Some(result) = &self.result {
            field(&mut out, "result");
            write_canonical(result, &mut out);
        }
        text(&mut out, "rule", &self.rule, &mut field);
        text(&mut out, "state", &self.state, &mut field);
        text(&mut out, "to", &self.to, &mut field);
        text(&mut out, "workflow", &self.workflow, &mut field);
        out.push('}');
        out
    }
}

impl Kind {
    /// The name written in the `kind` field.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Transition => "transition",
            Kind::Action => "action",
            Kind::Violation => "violation",
            Kind::Evidence => "evidence",
            Kind::Timer => "timer",
            Kind::Escalation => "escalation",
            Kind::Approval => "approval",
            Kind::Cadence => "cadence",
            Kind::Counter => "counter",
            Kind::Sla => "sla",
            Kind::Error => "error",
            Kind::ActionSucceeded => "action_succeeded",
            Kind::ActionFailed => "action_failed",
        }
    }
}

/// Writes `s` as a JSON string, escaped exactly as serde_json escapes it.
fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The head of the evidence chain: how many records, and the last hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// One evidence record: the decision's canonical encoding chained to its predecessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRecord {
    pub seq: u64,
    pub at: String,
    pub kind: String,
    pub record: String,
    pub prev_hash: String,
    pub hash: String,
}

impl ChainHead {
    /// Appends a decision: `hash = SHA-256(prev_hash || canonical(record))`.
    pub fn append(&mut self, decision: &Decision) -> EvidenceRecord {
        let record = decision.canonical();
        let hash = chain_hash(&self.hash, &record);
        let prev = hash_hex(&self.hash);
        self.seq += 1;
        self.hash = hash;
        EvidenceRecord {
            seq: self.seq,
            at: format_time(decision.at),
            kind: decision.kind.name().to_string(),
            record,
            prev_hash: prev,
            hash: hash_hex(&hash),
        }
    }

    /// Appends a decision without building its record (when nothing is committed):
    /// the head moves exactly as with [`ChainHead::append`].
    pub fn advance(&mut self, decision: &Decision) {
        self.hash = chain_hash(&self.hash, &decision.canonical());
        self.seq += 1;
    }
}

/// A chain hash in lower-case hex, as records and the store keep it, written into a
/// string of the right size (`hex::encode` collects it a char at a time, which cost
/// about 3% of an event's time on the engine thread).
pub fn hash_hex(hash: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in hash {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

pub fn chain_hash(prev: &[u8; 32], record: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(record.as_bytes());
    hasher.finalize().into()
}

/// Canonical JSON: object keys sorted by code point, no insignificant whitespace,
/// strings and numbers as serde_json writes them.
pub fn canonical_json(value: &Json) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, k);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        Json::String(s) => push_json_str(out, s),
        other => out.push_str(&other.to_string()),
    }
}

/// Verifies a sequence of evidence records: contiguous sequence numbers, each
/// `prev_hash` equal to the previous `hash`, each hash recomputed from the record.
/// Returns the first broken sequence number and why.
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a EvidenceRecord>,
) -> Result<u64, (u64, String)> {
    let mut head = ChainHead::default();
    let genesis = hash_hex(&head.hash);
    // The previous hash in hex: once verified, a record's own `hash` is the next one's.
    let mut prev: &str = &genesis;
    for r in records {
        if r.seq != head.seq + 1 {
            return Err((r.seq, format!("expected record {}", head.seq + 1)));
        }
        if r.prev_hash != prev {
            return Err((r.seq, "previous hash does not match".to_string()));
        }
        let hash = chain_hash(&head.hash, &r.record);
        if hash_hex(&hash) != r.hash {
            return Err((r.seq, "record hash does not match its content".to_string()));
        }
        head.seq = r.seq;
        head.hash = hash;
        prev = &r.hash;
    }
    Ok(head.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_print_as_the_hex_crate_prints_them() {
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(0x0f);
        }
        for h in [hash, [0; 32], [0xff; 32], chain_hash(&hash, "{}")] {
            assert_eq!(hash_hex(&h), hex::encode(h));
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: Json = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":"x"}}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"c":"x","d":[1,2]},"b":1}"#);
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é\u{2028}\u{1F600}/\\\"");
        for s in [all.as_str(), "", "plain", "\u{7f}\u{0}x"] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn canonical_matches_the_generic_encoding() {
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut bare = Decision::new(at, Kind::Error);
        bare.message = Some("line\nbreak \"quoted\"".to_string());
        let mut full = Decision::new(at, Kind::Action);
        let text = |s: &str| Some(format!("{s} \u{1}é"));
        full.workflow = text("w");
        full.key = text("k");
        full.rule = text("r");
        full.cadence = text("c");
        full.counter = text("n");
        full.control = text("8.1");
        full.state = text("s");
        full.from = text("f");
        full.to = text("t");
        full.connector = text("jira");
        full.op = text("comment");
        full.args =
            Some(serde_json::json!({"z": [1, 2.5, null, {"b": true, "a": "x\ty"}], "a": -3}));
        full.message = text("m");
        full.period = text("2026-Q1");
        full.approver = text("alice");
        full.outcome = text("granted");
        full.action_id = text("a/1");
        full.event = text("e1");
        full.policy = text("p@1");
        full.attempts = Some(3);
        full.result = Some(serde_json::json!({"status": 200, "id": "10001"}));
        let mut failed = Decision::new(at, Kind::ActionFailed);
        failed.attempts = Some(5);
        failed.message = text("HTTP 503");
        for d in [bare, full, failed] {
            let generic = canonical_json(&serde_json::to_value(&d).unwrap());
            assert_eq!(d.canonical(), generic);
        }
    }

    #[test]
    fn tampering_breaks_the_chain() {
        let mut head = ChainHead::default();
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut records: Vec<_> = (0..3)
            .map(|i| {
                let mut d = Decision::new(at, Kind::Violation);
                d.message = Some(format!("m{i}"));
                head.append(&d)
            })
            .collect();
        assert_eq!(verify_chain(&records), Ok(3));
        let mut relinked = records.clone();
        relinked[2].prev_hash = relinked[0].hash.clone();
        assert_eq!(
            verify_chain(&relinked),
            Err((3, "previous hash does not match".to_string()))
        );
        records[1].record = records[1].record.replace("m1", "m9");
        assert_eq!(verify_chain(&records).unwrap_err().0, 2);
    }
}

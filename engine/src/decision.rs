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
            action_id: None,
            event: None,
            policy: None,
        }
    }

    /// The decision as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
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
        let record = canonical_json(&serde_json::to_value(decision).unwrap_or(Json::Null));
        let hash = chain_hash(&self.hash, &record);
        let prev = hex::encode(self.hash);
        self.seq += 1;
        self.hash = hash;
        EvidenceRecord {
            seq: self.seq,
            at: format_time(decision.at),
            kind: serde_json::to_value(decision.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            record,
            prev_hash: prev,
            hash: hex::encode(hash),
        }
    }
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
                out.push_str(&Json::String(k.clone()).to_string());
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
    for r in records {
        if r.seq != head.seq + 1 {
            return Err((r.seq, format!("expected record {}", head.seq + 1)));
        }
        if r.prev_hash != hex::encode(head.hash) {
            return Err((r.seq, "previous hash does not match".to_string()));
        }
        let hash = chain_hash(&head.hash, &r.record);
        if hex::encode(hash) != r.hash {
            return Err((r.seq, "record hash does not match its content".to_string()));
        }
        head.seq = r.seq;
        head.hash = hash;
    }
    Ok(head.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys() {
        let v: Json = serde_json::from_str(r#"{"b":1,"a":{"d":[1,2],"c":"x"}}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"c":"x","d":[1,2]},"b":1}"#);
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
        records[1].record = records[1].record.replace("m1", "m9");
        assert_eq!(verify_chain(&records).unwrap_err().0, 2);
    }
}

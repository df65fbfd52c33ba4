//! The persisted form of the core's world: names instead of indices (so a changed
//! ruleset still loads), and a lossless JSON encoding of CEL values.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeTuple, Serializer};
use serde_json::{Value as Json, json};
use steward_dsl::cel::{Key, MapValue, Value};

use crate::core::{Approval, ApprovalRole, CounterState, Instance, TimerKind};
use crate::ruleset::Ruleset;
use crate::sla::{Clock, Phase};

/// Encodes a CEL value so that [`decode_value`] gives it back exactly. Strings, bools,
/// ints, null and lists are plain JSON; other types are one-key tagged objects.
pub fn encode_value(v: &Value) -> Json {
    // Cannot fail: every map key written is a string.
    serde_json::to_value(Encoded(v)).unwrap_or(Json::Null)
}

/// A CEL value in the form of [`encode_value`], serialized without building the JSON
/// tree first (what a commit writes for every changed instance).
struct Encoded<'a>(&'a Value);

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn tagged<S: Serializer>(s: S, tag: &str, text: &str) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(tag, text)?;
            map.end()
        }
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Uint(u) => tagged(s, "$u", &u.to_string()),
            Value::Double(d) => tagged(s, "$d", &d.to_string()),
            Value::String(text) => s.serialize_str(text),
            Value::Bytes(b) => tagged(
                s,
                "$b",
                &base64::engine::general_purpose::STANDARD.encode(b),
            ),
            Value::List(items) => s.collect_seq(items.iter().map(Encoded)),
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("$m", &Entries(m))?;
                map.end()
            }
            Value::Timestamp(t) => tagged(
                s,
                "$t",
                &t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
            Value::Duration(d) => tagged(
                s,
                "$dur",
                &d.num_nanoseconds()
                    .map_or_else(|| format!("{}s", d.num_seconds()), |n| n.to_string()),
            ),
            Value::Type(t) => tagged(s, "$type", t),
        }
    }
}

/// A map's entries as `[[key, value], …]`: keys may be ints, uints or bools.
struct Entries<'a>(&'a MapValue);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, v)| Entry(k.to_value(), v)))
    }
}

/// One map entry: `[key, value]`.
struct Entry<'a>(Value, &'a Value);

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut pair = s.serialize_tuple(2)?;
        pair.serialize_element(&Encoded(&self.0))?;
        pair.serialize_element(&Encoded(self.1))?;
        pair.end()
    }
}

pub fn decode_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_f64().map(Value::Double))
            .unwrap_or(Value::Null),
        Json::String(s) => Value::String(Arc::from(s.as_str())),
        Json::Array(items) => Value::List(items.iter().map(decode_value).collect()),
        Json::Object(o) => {
            let Some((tag, inner)) = o.iter().next() else {
                return Value::Map(Arc::new(MapValue::new()));
            };
            let text = inner.as_str().unwrap_or_default();
            match tag.as_str() {
                "$u" => text.parse().map(Value::Uint).unwrap_or(Value::Null),
                "$d" => text.parse().map(Value::Double).unwrap_or(Value::Null),
                "$b" => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(|b| Value::Bytes(Arc::from(b)))
                    .unwrap_or(Value::Null),
                "$t" => DateTime::parse_from_rfc3339(text)
                    .map(|t| Value::Timestamp(t.with_timezone(&Utc)))
                    .unwrap_or(Value::Null),
                "$dur" => match text.strip_suffix('s') {
                    Some(secs) => secs
                        .parse()
                        .ok()
                        .and_then(TimeDelta::try_seconds)
                        .map_or(Value::Null, Value::Duration),
                    None => text
                        .parse()
                        .map(|n| Value::Duration(TimeDelta::nanoseconds(n)))
                        .unwrap_or(Value::Null),
                },
                "$type" => Value::Type(Arc::from(text)),
                "$m" => {
                    let mut map = MapValue::new();
                    for pair in inner.as_array().into_iter().flatten() {
                        if let Some([k, v]) = pair.as_array().map(Vec::as_slice)
                            && let Some(key) = Key::from_value(&decode_value(k))
                        {
                            map.insert(key, decode_value(v));
                        }
                    }
                    Value::Map(Arc::new(map))
                }
                _ => Value::Null,
            }
        }
    }
}

pub fn encode_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn decode_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn workflow_index(rules: &Ruleset, name: &str) -> Option<usize> {
    rules.workflows.iter().position(|w| w.name == name)
}

fn state_index(rules: &Ruleset, w: usize, name: &str) -> Option<usize> {
    rules
        .workflows
        .get(w)?
        .states
        .iter()
        .position(|s| s.name == name)
}

fn ladder_index(rules: &Ruleset, w: usize, name: &str) -> Option<usize> {
    rules
        .workflows
        .get(w)?
        .ladders
        .iter()
        .position(|l| l.name == name)
}

pub fn cadence_index(rules: &Ruleset, name: &str) -> Option<usize> {
    rules.cadences.iter().position(|c| c.name == name)
}

pub fn counter_index(rules: &Ruleset, name: &str) -> Option<usize> {
    rules.counters.iter().position(|c| c.name == name)
}

/// An instance as the text of its row: `{"state", "seq", "step", "vars", "approval",
/// "ladders", "state_timers", "slas"}`.
pub fn encode_instance(rules: &Ruleset, w: usize, inst: &Instance) -> String {
    let wf = &rules.workflows[w];
    let row = InstanceRow {
        state: &wf.states[inst.state].name,
        seq: inst.seq,
        step: inst.step,
        vars: Vars(&inst.vars),
        approval: inst.approval.as_ref().map(encode_approval),
        ladders: inst
            .ladders
            .iter()
            .map(|(l, run)| (wf.ladders[*l].name.as_str(), *run))
            .collect(),
        state_timers: &inst.state_timers,
        slas: encode_clocks(rules, w, &inst.slas),
    };
    // Cannot fail: every map key written is a string.
    serde_json::to_string(&row).unwrap_or_default()
}

#[derive(Serialize)]
struct InstanceRow<'a> {
    state: &'a str,
    seq: u64,
    step: u64,
    vars: Vars<'a>,
    approval: Option<Json>,
    ladders: Vec<(&'a str, u64)>,
    state_timers: &'a [u64],
    slas: Json,
}

/// An instance's variables, each value in the form of [`encode_value`].
struct Vars<'a>(&'a BTreeMap<String, Value>);

impl Serialize for Vars<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, Encoded(v))))
    }
}

/// SLA clocks by name: `{"resolution": {"run", "phase", "started", "since", "banked",
/// "fired", "timers"}}`.
fn encode_clocks(rules: &Ruleset, w: usize, clocks: &BTreeMap<usize, Clock>) -> Json {
    let slas = &rules.workflows[w].slas;
    Json::Object(
        clocks
            .iter()
            .filter_map(|(i, c)| {
                Some((
                    slas.get(*i)?.name.clone(),
                    json!({
                        "run": c.run,
                        "phase": c.phase.name(),
                        "started": encode_time(c.started),
                        "since": encode_time(c.since),
                        "banked": encode_value(&Value::Duration(c.banked)),
                        "fired": c.fired,
                        "timers": c.timers,
                    }),
                ))
            })
            .collect(),
    )
}

fn decode_clocks(rules: &Ruleset, w: usize, j: Option<&Json>) -> BTreeMap<usize, Clock> {
    let slas = &rules.workflows[w].slas;
    let u64s = |v: &Json| -> Vec<u64> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Json::as_u64)
            .collect()
    };
    j.and_then(Json::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, c)| {
            let i = slas.iter().position(|s| s.name == *name)?;
            let banked = match decode_value(c.get("banked")?) {
                Value::Duration(d) => d,
                _ => return None,
            };
            Some((
                i,
                Clock {
                    run: c.get("run")?.as_u64()?,
                    phase: Phase::parse(c.get("phase")?.as_str()?)?,
                    started: decode_time(c.get("started")?.as_str()?)?,
                    since: decode_time(c.get("since")?.as_str()?)?,
                    banked,
                    fired: u64s(c.get("fired")?),
                    timers: u64s(c.get("timers")?),
                },
            ))
        })
        .collect()
}

fn strings(j: &Json) -> Vec<String> {
    j.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn encode_approval(a: &Approval) -> Json {
    json!({
        "roles": a.roles.iter().map(|r| json!({
            "group": r.group, "eligible": r.eligible, "required": r.required, "approvals": r.approvals,
        })).collect::<Vec<_>>(),
        "excluded": a.excluded, "approvals": a.approvals, "rejections": a.rejections,
        "veto": a.veto,
        "delegations": a.delegations.iter().map(|(f, t)| json!([f, t])).collect::<Vec<_>>(),
        "open": a.open, "granted": a.granted, "request": a.request, "spec": a.spec,
        "material": a.material,
    })
}

fn decode_approval(a: &Json) -> Approval {
    let role = |r: &Json| ApprovalRole {
        group: r["group"].as_str().unwrap_or_default().to_string(),
        eligible: strings(&r["eligible"]),
        required: r["required"].as_u64().unwrap_or(1) as usize,
        approvals: strings(&r["approvals"]),
    };
    let roles = match a.get("roles").and_then(Json::as_array) {
        Some(list) => list.iter().map(role).collect(),
        // Written before quorums per group: one group, its fields at the top.
        None => vec![role(a)],
    };
    Approval {
        roles,
        excluded: strings(&a["excluded"]),
        approvals: strings(&a["approvals"]),
        rejections: strings(&a["rejections"]),
        veto: a["veto"].as_u64().unwrap_or(1) as usize,
        delegations: a["delegations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                Some((
                    d.get(0)?.as_str()?.to_string(),
                    d.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect(),
        open: a["open"].as_bool().unwrap_or(false),
        granted: a["granted"].as_bool().unwrap_or(false),
        request: a["request"].as_u64().unwrap_or(0),
        spec: a["spec"].as_u64().unwrap_or(0) as usize,
        material: a["material"].as_object().cloned().unwrap_or_default(),
    }
}

pub fn decode_instance(rules: &Ruleset, w: usize, j: &Json) -> Option<Instance> {
    let state = state_index(rules, w, j.get("state")?.as_str()?)?;
    let approval = j
        .get("approval")
        .filter(|a| !a.is_null())
        .map(decode_approval);
    Some(Instance {
        state,
        seq: j.get("seq")?.as_u64()?,
        step: j.get("step")?.as_u64()?,
        vars: j
            .get("vars")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), decode_value(v)))
            .collect::<BTreeMap<_, _>>(),
        approval,
        ladders: j
            .get("ladders")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| {
                Some((
                    ladder_index(rules, w, l.get(0)?.as_str()?)?,
                    l.get(1)?.as_u64()?,
                ))
            })
            .collect(),
        state_timers: j
            .get("state_timers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_u64)
            .collect(),
        slas: decode_clocks(rules, w, j.get("slas")),
    })
}

pub fn encode_timer(rules: &Ruleset, kind: &TimerKind) -> Json {
    match kind {
        TimerKind::State {
            workflow,
            key,
            state,
            seq,
            index,
        } => {
            json!({"type": "state", "workflow": rules.workflows[*workflow].name, "key": key.as_ref(),
            "state": rules.workflows[*workflow].states[*state].name, "seq": seq, "index": index})
        }
        TimerKind::ApprovalExpiry {
            workflow,
            key,
            request,
        } => {
            json!({"type": "approval", "workflow": rules.workflows[*workflow].name, "key": key.as_ref(), "request": request})
        }
        TimerKind::Escalation {
            workflow,
            key,
            ladder,
            run,
            step,
            repeat,
        } => {
            json!({"type": "escalation", "workflow": rules.workflows[*workflow].name, "key": key.as_ref(),
            "ladder": rules.workflows[*workflow].ladders[*ladder].name, "run": run, "step": step, "repeat": repeat})
        }
        TimerKind::Cadence { cadence } => {
            json!({"type": "cadence", "cadence": rules.cadences[*cadence].name})
        }
        TimerKind::Expect { cadence, period } => {
            json!({"type": "expect", "cadence": rules.cadences[*cadence].name, "period": period})
        }
        TimerKind::Sla {
            workflow,
            key,
            sla,
            run,
            percent,
        } => {
            json!({"type": "sla", "workflow": rules.workflows[*workflow].name, "key": key.as_ref(),
            "sla": rules.workflows[*workflow].slas[*sla].name, "run": run, "percent": percent})
        }
    }
}

pub fn decode_timer(rules: &Ruleset, j: &Json) -> Option<TimerKind> {
    let workflow = || workflow_index(rules, j.get("workflow")?.as_str()?);
    let key = || j.get("key")?.as_str().map(Arc::<str>::from);
    Some(match j.get("type")?.as_str()? {
        "state" => {
            let w = workflow()?;
            TimerKind::State {
                workflow: w,
                key: key()?,
                state: state_index(rules, w, j.get("state")?.as_str()?)?,
                seq: j.get("seq")?.as_u64()?,
                index: j.get("index")?.as_u64()? as usize,
            }
        }
        "approval" => TimerKind::ApprovalExpiry {
            workflow: workflow()?,
            key: key()?,
            request: j.get("request")?.as_u64()?,
        },
        "escalation" => {
            let w = workflow()?;
            TimerKind::Escalation {
                workflow: w,
                key: key()?,
                ladder: ladder_index(rules, w, j.get("ladder")?.as_str()?)?,
                run: j.get("run")?.as_u64()?,
                step: j.get("step")?.as_u64()? as usize,
                repeat: j.get("repeat").and_then(Json::as_u64).unwrap_or(0),
            }
        }
        "cadence" => TimerKind::Cadence {
            cadence: cadence_index(rules, j.get("cadence")?.as_str()?)?,
        },
        "expect" => TimerKind::Expect {
            cadence: cadence_index(rules, j.get("cadence")?.as_str()?)?,
            period: j.get("period")?.as_str()?.to_string(),
        },
        "sla" => {
            let w = workflow()?;
            let name = j.get("sla")?.as_str()?;
            TimerKind::Sla {
                workflow: w,
                key: key()?,
                sla: rules.workflows[w]
                    .slas
                    .iter()
                    .position(|s| s.name == name)?,
                run: j.get("run")?.as_u64()?,
                percent: j.get("percent")?.as_u64()?,
            }
        }
        _ => return None,
    })
}

pub fn encode_counter(state: &CounterState) -> Json {
    json!({
        "times": state.times.iter().map(|t| encode_time(*t)).collect::<Vec<_>>(),
        "period": state.period,
        "count": state.count,
    })
}

pub fn decode_counter(j: &Json) -> CounterState {
    CounterState {
        times: j["times"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().and_then(decode_time))
            .collect::<VecDeque<_>>(),
        period: j["period"].as_str().unwrap_or_default().to_string(),
        count: j["count"].as_u64().unwrap_or(0),
    }
}

pub fn workflow_of(rules: &Ruleset, name: &str) -> Option<usize> {
    workflow_index(rules, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let original = Value::from_json(&json!({"a": [1, "x", null, true], "b": {"c": 2.5}}));
        let values = [
            original,
            Value::Uint(7),
            Value::Double(0.1),
            Value::Timestamp(decode_time("2026-03-01T10:00:00.123456789Z").unwrap()),
            Value::Duration(TimeDelta::milliseconds(1500)),
            Value::Bytes(Arc::from(&b"\x00\xff"[..])),
        ];
        for v in values {
            assert_eq!(decode_value(&encode_value(&v)), v);
        }
    }

    /// An instance's row text, written straight from the instance, reads back as the
    /// same instance, every kind of value in its variables included.
    #[test]
    fn instance_rows_round_trip() {
        let text = r#"
workflow ticket key event.subject {
  start on "ticket.opened"
  state open {
    on "ticket.closed" -> closed
  }
  final state closed {}
}
"#;
        let sources = [steward_dsl::Source {
            path: "t.stw".to_string(),
            text: text.to_string(),
        }];
        let checked = steward_dsl::check(&sources);
        assert!(checked.is_ok(), "{:?}", checked.diagnostics);
        let rules = Ruleset::compile(&checked.files, &[text]).unwrap();
        let nested = Value::from_json(&json!({"a": [1, "x", null, true], "b": {"c": 2.5}}));
        let vars: BTreeMap<String, Value> = [
            ("nested", nested),
            ("uint", Value::Uint(u64::MAX)),
            ("double", Value::Double(-0.1)),
            ("text", Value::String(Arc::from("quote \" and \u{e9}"))),
            (
                "at",
                Value::Timestamp(decode_time("2026-03-01T10:00:00.123456789Z").unwrap()),
            ),
            ("took", Value::Duration(TimeDelta::milliseconds(1500))),
            ("bytes", Value::Bytes(Arc::from(&b"\x00\xff"[..]))),
            ("kind", Value::Type(Arc::from("int"))),
            ("none", Value::Null),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let instance = Instance {
            state: 0,
            seq: 3,
            step: 7,
            vars,
            approval: None,
            ladders: Vec::new(),
            state_timers: vec![4, 9],
            slas: BTreeMap::new(),
        };
        let row = encode_instance(&rules, 0, &instance);
        let json: Json = serde_json::from_str(&row).unwrap();
        assert_eq!(json["state"], "open");
        assert_eq!(json["vars"]["uint"], json!({"$u": u64::MAX.to_string()}));
        let back = decode_instance(&rules, 0, &json).unwrap();
        assert_eq!(back.vars, instance.vars);
        assert_eq!(
            (back.state, back.seq, back.step, back.state_timers),
            (0, 3, 7, vec![4, 9])
        );
    }
}

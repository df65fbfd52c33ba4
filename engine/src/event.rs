//! The CloudEvents 1.0 envelope (JSON format) and its validation.
//!
//! Decoding is strict where the specification is (required attributes, attribute
//! names, extension value types) and reports the first problem with the attribute it
//! concerns, so an invalid event can be dead-lettered with a precise reason.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value as Json};
use steward_dsl::cel::Value;

/// Largest accepted encoded event, in bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// A validated CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub time: Option<DateTime<Utc>>,
    pub subject: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    /// `data` when it was JSON (or text, as a JSON string); decoded `data_base64` is
    /// kept as bytes in `data_base64`.
    pub data: Option<Json>,
    pub data_base64: Option<Vec<u8>>,
    /// Extension attributes, in the order they appeared.
    pub extensions: Map<String, Json>,
}

/// Why an input is not a usable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a CloudEvent: {0}")]
    NotCloudEvent(String),
    #[error("event `{id}`: {reason}")]
    Invalid { id: String, reason: String },
    #[error("event is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

impl EventError {
    fn invalid(id: &str, reason: impl Into<String>) -> Self {
        EventError::Invalid {
            id: id.to_string(),
            reason: reason.into(),
        }
    }
}

const CONTEXT_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

impl Event {
    /// Decodes one event from its JSON text.
    pub fn from_json_str(text: &str) -> Result<Event, EventError> {
        if text.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge {
                size: text.len(),
                limit: MAX_EVENT_BYTES,
            });
        }
        // The envelope is read member by member straight into its slots: no map is
        // built (and hashed) for the attributes only to be taken apart again.
        let mut de = serde_json::Deserializer::from_str(text);
        let members = serde::Deserializer::deserialize_any(&mut de, MembersVisitor)
            .and_then(|members| de.end().map(|()| members))
            .map_err(|e| EventError::NotJson(e.to_string()))?;
        match members {
            Some(members) => members.into_event(),
            None => Err(EventError::NotCloudEvent(
                "expected a JSON object".to_string(),
            )),
        }
    }

    /// Validates a JSON value as a CloudEvent 1.0.
    pub fn from_json(value: Json) -> Result<Event, EventError> {
        let Json::Object(object) = value else {
            return Err(EventError::NotCloudEvent(
                "expected a JSON object".to_string(),
            ));
        };
        Members::from_map(object).into_event()
    }
}

/// The members of an envelope as found, before validation: the attributes by name,
/// everything else (extensions) in order of appearance.
#[derive(Default)]
struct Members {
    id: Option<Json>,
    specversion: Option<Json>,
    source: Option<Json>,
    event_type: Option<Json>,
    time: Option<Json>,
    subject: Option<Json>,
    datacontenttype: Option<Json>,
    dataschema: Option<Json>,
    data: Option<Json>,
    data_base64: Option<Json>,
    rest: Map<String, Json>,
}

impl Members {
    fn slot(&mut self, name: &str) -> Option<&mut Option<Json>> {
        Some(match name {
            "id" => &mut self.id,
            "specversion" => &mut self.specversion,
            "source" => &mut self.source,
            "type" => &mut self.event_type,
            "time" => &mut self.time,
            "subject" => &mut self.subject,
            "datacontenttype" => &mut self.datacontenttype,
            "dataschema" => &mut self.dataschema,
            "data" => &mut self.data,
            "data_base64" => &mut self.data_base64,
            _ => return None,
        })
    }

    fn from_map(object: Map<String, Json>) -> Members {
        let mut members = Members::default();
        for (name, value) in object {
            match members.slot(&name) {
                Some(slot) => *slot = Some(value),
                None => {
                    members.rest.insert(name, value);
                }
            }
        }
        members
    }

    /// Validates the members as a CloudEvent 1.0.
    fn into_event(mut self) -> Result<Event, EventError> {
        let id = match self.id.take() {
            Some(Json::String(s)) if !s.is_empty() => s,
            Some(Json::String(_)) => {
                return Err(EventError::NotCloudEvent("`id` is empty".to_string()));
            }
            Some(_) => {
                return Err(EventError::NotCloudEvent(
                    "`id` must be a string".to_string(),
                ));
            }
            None => return Err(EventError::NotCloudEvent("missing `id`".to_string())),
        };
        match self.specversion.take() {
            Some(Json::String(v)) if v == "1.0" => {}
            Some(Json::String(v)) => {
                return Err(EventError::invalid(
                    &id,
                    format!("unsupported `specversion` `{v}`, expected `1.0`"),
                ));
            }
            Some(_) => return Err(EventError::invalid(&id, "`specversion` must be a string")),
            None => return Err(EventError::invalid(&id, "missing `specversion`")),
        }
        let source = required_string(self.source.take(), "source", &id)?;
        let event_type = required_string(self.event_type.take(), "type", &id)?;
        let time = match optional_string(self.time.take(), "time", &id)? {
            Some(text) => Some(
                DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| {
                        EventError::invalid(&id, format!("`time` `{text}` is not RFC 3339: {e}"))
                    })?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let subject = optional_string(self.subject.take(), "subject", &id)?;
        let datacontenttype = optional_string(self.datacontenttype.take(), "datacontenttype", &id)?;
        let dataschema = optional_string(self.dataschema.take(), "dataschema", &id)?;
        let data = self.data.take();
        let data_base64 = match optional_string(self.data_base64.take(), "data_base64", &id)? {
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| EventError::invalid(&id, format!("`data_base64`: {e}")))?,
            ),
            None => None,
        };
        if data.is_some() && data_base64.is_some() {
            return Err(EventError::invalid(
                &id,
                "`data` and `data_base64` are mutually exclusive",
            ));
        }
        let data = data.filter(|d| !d.is_null());
        for (name, value) in &self.rest {
            validate_extension(name, value, &id)?;
        }
        Ok(Event {
            id,
            source,
            event_type,
            time,
            subject,
            datacontenttype,
            dataschema,
            data,
            data_base64,
            extensions: self.rest,
        })
    }
}

/// Reads a JSON document into [`Members`]; `None` when it is not an object.
struct MembersVisitor;

impl<'de> serde::de::Visitor<'de> for MembersVisitor {
    type Value = Option<Members>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::default();
        while let Some(MemberName(name)) = map.next_key()? {
            match members.slot(&name) {
                Some(slot) => *slot = Some(map.next_value()?),
                None => {
                    let value = map.next_value()?;
                    members.rest.insert(name.into_owned(), value);
                }
            }
        }
        Ok(Some(members))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A member name, borrowed from the input unless it had escapes.
struct MemberName<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MemberName(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(MemberName(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

impl Event {
    /// The event as JSON (CloudEvents JSON format), attributes in a fixed order.
    pub fn to_json(&self) -> Json {
        let mut map = Map::new();
        map.insert("specversion".into(), "1.0".into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("source".into(), self.source.clone().into());
        map.insert("type".into(), self.event_type.clone().into());
        if let Some(time) = self.time {
            map.insert("time".into(), format_time(time).into());
        }
        if let Some(subject) = &self.subject {
            map.insert("subject".into(), subject.clone().into());
        }
        if let Some(ct) = &self.datacontenttype {
            map.insert("datacontenttype".into(), ct.clone().into());
        }
        if let Some(schema) = &self.dataschema {
            map.insert("dataschema".into(), schema.clone().into());
        }
        for (k, v) in &self.extensions {
            map.insert(k.clone(), v.clone());
        }
        if let Some(data) = &self.data {
            map.insert("data".into(), data.clone());
        }
        if let Some(bytes) = &self.data_base64 {
            map.insert(
                "data_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into(),
            );
        }
        Json::Object(map)
    }

    /// The event as a CEL value (`event` in expressions): attributes, extensions and
    /// `data` (JSON data as maps and lists; other data as a string or bytes).
    pub fn to_value(&self) -> Value {
        let mut json = self.to_json();
        if let (Json::Object(map), Some(bytes)) = (&mut json, &self.data_base64) {
            map.remove("data_base64");
            let data = match String::from_utf8(bytes.clone()) {
                Ok(text) => match serde_json::from_str::<Json>(&text) {
                    Ok(parsed) if is_json_type(self.datacontenttype.as_deref()) => parsed,
                    _ => Json::String(text),
                },
                Err(_) => Json::Null,
            };
            map.insert("data".into(), data);
        }
        Value::from_json(&json)
    }

    /// The value at a dotted path below `event` (`"data.issue.key"`, `"subject"`),
    /// converted on its own, without building the whole [`Event::to_value`].
    ///
    /// Agrees with selecting the same fields on `to_value()` whenever it answers;
    /// `None` means "not answered here" (absent field, non-object on the way, base64
    /// data, an extension shadowing an attribute), and the caller falls back to the
    /// whole value, which produces the same value or the same error as before.
    pub fn value_at(&self, path: &str) -> Option<Value> {
        let (head, rest) = match split_dot(path) {
            Some((h, r)) => (h, Some(r)),
            None => (path, None),
        };
        let text = |s: &str| rest.is_none().then(|| Value::String(Arc::from(s)));
        match head {
            "data" if self.data_base64.is_none() && !self.extensions.contains_key("data") => {
                let node = walk(self.data.as_ref()?, rest)?;
                return Some(Value::from_json(node));
            }
            "data" | "data_base64" => return None,
            _ => {}
        }
        if !self.extensions.is_empty() && self.extensions.contains_key(head) {
            if CONTEXT_ATTRIBUTES.contains(&head) {
                return None;
            }
            let node = walk(self.extensions.get(head)?, rest)?;
            return Some(Value::from_json(node));
        }
        match head {
            "specversion" => text("1.0"),
            "id" => text(&self.id),
            "source" => text(&self.source),
            "type" => text(&self.event_type),
            "time" => rest
                .is_none()
                .then_some(self.time)?
                .map(|t| Value::String(Arc::from(format_time(t).as_str()))),
            "subject" => self.subject.as_deref().and_then(text),
            "datacontenttype" => self.datacontenttype.as_deref().and_then(text),
            "dataschema" => self.dataschema.as_deref().and_then(text),
            _ => None,
        }
    }

    /// `source` and `id` together identify an event for de-duplication.
    pub fn identity(&self) -> EventIdentity {
        EventIdentity {
            source: Arc::from(self.source.as_str()),
            id: Arc::from(self.id.as_str()),
        }
    }
}

/// `path` split at its first `.`. Paths are short, so a byte scan beats the general
/// pattern searcher, and `.` is ASCII, so both halves are on character boundaries.
pub(crate) fn split_dot(path: &str) -> Option<(&str, &str)> {
    let at = path.bytes().position(|b| b == b'.')?;
    Some((&path[..at], &path[at + 1..]))
}

/// Follows a dotted field path (`issue.fields.status`) down nested objects.
fn walk<'a>(mut node: &'a Json, path: Option<&str>) -> Option<&'a Json> {
    let Some(mut rest) = path else {
        return Some(node);
    };
    loop {
        let (field, tail) = match split_dot(rest) {
            Some((f, t)) => (f, Some(t)),
            None => (rest, None),
        };
        node = field_of(node.as_object()?, field)?;
        match tail {
            Some(t) => rest = t,
            None => return Some(node),
        }
    }
}

/// One field of an object. Event objects are small: up to a dozen fields, comparing
/// keys in order is cheaper than hashing the name (the map's hasher is SipHash).
fn field_of<'a>(object: &'a Map<String, Json>, field: &str) -> Option<&'a Json> {
    if object.len() <= 12 {
        object
            .iter()
            .find(|(k, _)| k.as_str() == field)
            .map(|(_, v)| v)
    } else {
        object.get(field)
    }
}

fn is_json_type(content_type: Option<&str>) -> bool {
    match content_type {
        None => true,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
        }
    }
}

/// The de-duplication identity of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventIdentity {
    pub source: Arc<str>,
    pub id: Arc<str>,
}

impl fmt::Display for EventIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.source, self.id)
    }
}

/// RFC 3339 in UTC with a `Z`, whole seconds unless there is a fraction.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn required_string(value: Option<Json>, name: &str, id: &str) -> Result<String, EventError> {
    match value {
        Some(Json::String(s)) if !s.is_empty() => Ok(s),
        Some(Json::String(_)) => Err(EventError::invalid(id, format!("`{name}` is empty"))),
        Some(_) => Err(EventError::invalid(
            id,
            format!("`{name}` must be a string"),
        )),
        None => Err(EventError::invalid(id, format!("missing `{name}`"))),
    }
}

fn optional_string(
    value: Option<Json>,
    name: &str,
    id: &str,
) -> Result<Option<String>, EventError> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(EventError::invalid(
            id,
            format!("`{name}` must be a string"),
        )),
    }
}

/// Extension names are lower-case ASCII letters and digits; values are strings,
/// booleans or 32-bit integers (the JSON format's mapping of CloudEvents types).
fn validate_extension(name: &str, value: &Json, id: &str) -> Result<(), EventError> {
    if CONTEXT_ATTRIBUTES.contains(&name) {
        return Ok(());
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(EventError::invalid(
            id,
            format!("extension attribute name `{name}` must be lower-case letters and digits"),
        ));
    }
    match value {
        Json::String(_) | Json::Bool(_) | Json::Null => Ok(()),
        Json::Number(n) => match n.as_i64() {
            Some(v) if i32::try_from(v).is_ok() => Ok(()),
            _ => Err(EventError::invalid(
                id,
                format!("extension `{name}` value `{n}` is not a 32-bit integer"),
            )),
        },
        Json::Array(_) | Json::Object(_) => Err(EventError::invalid(
            id,
            format!("extension `{name}` must be a string, boolean or integer"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading the text member by member agrees with validating the parsed value, for
    /// good and bad envelopes alike (escaped names, duplicates, order of extensions).
    #[test]
    fn text_and_value_decoding_agree() {
        let cases = [
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","zeta":"z","alpha":1,"data":{"a":[1,{"b":null}]}}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ty\u0070e":"u"}"#,
            r#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t","x":"a","x":"b"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":null,"data_base64":"aGk="}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"aGk="}"#,
            r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#,
            r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad":1}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","n":4294967296}"#,
            r#"[1,2,{"id":"x"}]"#,
            r#""text""#,
            r#"null"#,
        ];
        for text in cases {
            let via_value = Event::from_json(serde_json::from_str(text).unwrap());
            assert_eq!(Event::from_json_str(text), via_value, "{text}");
        }
        for bad in [r#"{"id":"1""#, r#"{"id":"1"} x"#, r#"[1,2"#, ""] {
            assert!(
                matches!(Event::from_json_str(bad), Err(EventError::NotJson(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn minimal_event_decodes() {
        let e = Event::from_json_str(
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"2026-01-01T10:00:00+01:00"}"#,
        )
        .unwrap();
        assert_eq!(e.event_type, "t");
        assert_eq!(format_time(e.time.unwrap()), "2026-01-01T09:00:00Z");
    }

    #[test]
    fn missing_id_is_not_a_cloud_event() {
        let err =
            Event::from_json_str(r#"{"specversion":"1.0","source":"/s","type":"t"}"#).unwrap_err();
        assert_eq!(err.to_string(), "not a CloudEvent: missing `id`");
    }

    #[test]
    fn bad_time_names_the_event_and_field() {
        let err = Event::from_json_str(
            r#"{"specversion":"1.0","id":"e7","source":"/s","type":"t","time":"yesterday"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event `e7`: `time` `yesterday`"),
            "{err}"
        );
    }
}

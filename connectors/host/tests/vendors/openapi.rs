//! Validates HTTP requests against an OpenAPI 3.0 document: Atlassian's published spec
//! of the Jira Cloud platform REST API v3 (`../shared/oracles/jira/openapi/`).
//!
//! A request is checked for: an operation whose method and path template match (the
//! most specific template wins: literal segments before `{params}`); its path and query
//! parameters (required ones present, no unknown ones, values of the declared type and
//! enum); its body (present when required, absent when the operation takes none, JSON
//! when the operation takes `application/json`, valid against the operation's
//! `requestBody` schema with every `$ref` resolved from `components`).
//!
//! Body schemas are OpenAPI 3.0 Schema Objects; they are turned into JSON Schema draft 4
//! (which they are based on) and validated by the `jsonschema` crate. The differences
//! handled: `nullable: true` (adds `null` to the type), and `readOnly` properties, which
//! are not required in requests (OpenAPI 3.0: "required" on a read-only property
//! applies to responses only).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

/// Where the spec lives, from the crate (connectors/host, [`super::host_dir`]) via the
/// repo root.
pub fn jira_spec_path() -> PathBuf {
    super::host_dir().join("../../../shared/oracles/jira/openapi/jira-platform-swagger-v3.v3.json")
}

/// The Jira platform spec, loaded once per test binary.
pub fn jira_spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = jira_spec_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("cannot read the Jira OpenAPI spec {}: {e}", path.display())
        });
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        Spec::new(&doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    location: String,
    required: bool,
    schema: Value,
}

#[derive(Debug, Clone)]
struct RequestBody {
    required: bool,
    media_types: Vec<String>,
    /// The `application/json` schema, if the operation takes JSON.
    json_schema: Option<Value>,
}

#[derive(Debug, Clone)]
struct Operation {
    method: String,
    operation_id: String,
    params: Vec<Param>,
    body: Option<RequestBody>,
    /// Documented responses: status (`"200"`, `"default"`) → the JSON schema, if any.
    responses: Vec<(String, Option<Value>)>,
}

#[derive(Debug, Clone)]
struct PathItem {
    template: String,
    segments: Vec<Segment>,
    operations: Vec<Operation>,
}

/// An OpenAPI 3.0 document, ready to validate requests.
pub struct Spec {
    paths: Vec<PathItem>,
    /// `components.schemas`, converted to JSON Schema.
    schemas: Map<String, Value>,
    /// Compiled body validators by operation id.
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// The operation a valid request matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The spec's `operationId`.
    pub operation_id: String,
    /// The path template, e.g. `/rest/api/3/issue/{issueIdOrKey}`.
    pub template: String,
    /// Path parameters, decoded.
    pub path_params: BTreeMap<String, String>,
}

/// A request to validate.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path (percent-encoded as sent).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The body bytes (empty for none).
    pub body: &'a [u8],
}

impl Spec {
    /// Reads `paths` and `components` of an OpenAPI 3.0 document.
    pub fn new(doc: &Value) -> Result<Spec, String> {
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("no `paths` object")?;
        let components = doc.get("components").cloned().unwrap_or(json!({}));
        let schemas = components
            .get("schemas")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), to_json_schema(v)))
                    .collect::<Map<String, Value>>()
            })
            .unwrap_or_default();
        let parameters = components
            .get("parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut items = Vec::new();
        for (template, item) in paths {
            let shared_params = item.get("parameters").cloned().unwrap_or(json!([]));
            let mut operations = Vec::new();
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                let Some(op) = item.get(method) else { continue };
                let mut params = Vec::new();
                for raw in shared_params.as_array().into_iter().flatten().chain(
                    op.get("parameters")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                ) {
                    let p = resolve_param(raw, &parameters)?;
                    // An operation's parameter overrides a path item's of the same name.
                    params.retain(|q: &Param| !(q.name == p.name && q.location == p.location));
                    params.push(p);
                }
                let body = op.get("requestBody").map(|rb| {
                    let content = rb.get("content").and_then(Value::as_object);
                    RequestBody {
                        required: rb.get("required") == Some(&Value::Bool(true)),
                        media_types: content
                            .map(|c| c.keys().cloned().collect())
                            .unwrap_or_default(),
                        json_schema: content
                            .and_then(|c| c.get("application/json"))
                            .and_then(|m| m.get("schema"))
                            .map(to_json_schema),
                    }
                });
                let responses = op
                    .get("responses")
                    .and_then(Value::as_object)
                    .map(|r| {
                        r.iter()
                            .map(|(status, resp)| {
                                let schema = resp
                                    .get("content")
                                    .and_then(|c| c.get("application/json"))
                                    .and_then(|m| m.get("schema"))
                                    .map(to_json_schema);
                                (status.clone(), schema)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                operations.push(Operation {
                    responses,
                    method: method.to_ascii_uppercase(),
                    operation_id: op
                        .get("operationId")
                        .and_then(Value::as_str)
                        .unwrap_or(template)
                        .to_owned(),
                    params,
                    body,
                });
            }
            items.push(PathItem {
                template: template.clone(),
                segments: template
                    .split('/')
                    .skip(1)
                    .map(
                        |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(name) => Segment::Param(name.to_owned()),
                            None => Segment::Literal(s.to_owned()),
                        },
                    )
                    .collect(),
                operations,
            });
        }
        Ok(Spec {
            paths: items,
            schemas,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// Number of operations in the document.
    pub fn operation_count(&self) -> usize {
        self.paths.iter().map(|p| p.operations.len()).sum()
    }

    /// Validates one request; `Err` lists every violation found.
    pub fn validate(&self, req: &Request<'_>) -> Result<Matched, Vec<String>> {
        let method = req.method.to_ascii_uppercase();
        let line = match req.query {
            Some(q) => format!("{method} {}?{q}", req.path),
            None => format!("{method} {}", req.path),
        };
        let segments: Vec<String> = req
            .path
            .split('/')
            .skip(1)
            .map(|s| super::server::percent_decode(s, false))
            .collect();
        if !req.path.starts_with('/') {
            return Err(vec![format!("{line}: the path is not absolute")]);
        }
        // Templates matching the path, most specific first (literal beats parameter,
        // segment by segment from the left).
        let mut candidates: Vec<&PathItem> = self
            .paths
            .iter()
            .filter(|p| matches_path(&p.segments, &segments))
            .collect();
        candidates.sort_by_key(|p| {
            p.segments
                .iter()
                .map(|s| matches!(s, Segment::Param(_)))
                .collect::<Vec<bool>>()
        });
        if candidates.is_empty() {
            return Err(vec![format!(
                "{line}: no path template of the spec matches `{}`",
                req.path
            )]);
        }
        let Some((item, op)) = candidates.iter().find_map(|p| {
            p.operations
                .iter()
                .find(|o| o.method == method)
                .map(|o| (*p, o))
        }) else {
            let templates: Vec<String> = candidates
                .iter()
                .map(|p| {
                    let methods: Vec<&str> =
                        p.operations.iter().map(|o| o.method.as_str()).collect();
                    format!("{} ({})", p.template, methods.join(", "))
                })
                .collect();
            return Err(vec![format!(
                "{line}: method {method} is not defined for {}",
                templates.join("; ")
            )]);
        };
        let at = format!("{line} [{} {}]", op.operation_id, item.template);
        let mut violations = Vec::new();

        // Path parameters.
        let mut path_params = BTreeMap::new();
        for (seg, value) in item.segments.iter().zip(&segments) {
            if let Segment::Param(name) = seg {
                path_params.insert(name.clone(), value.clone());
                match op
                    .params
                    .iter()
                    .find(|p| p.location == "path" && &p.name == name)
                {
                    Some(p) => {
                        if let Err(e) = check_param_value(&p.schema, value) {
                            violations.push(format!("{at}: path parameter `{name}`: {e}"));
                        }
                    }
                    None => violations.push(format!(
                        "{at}: path parameter `{name}` is not declared by the operation"
                    )),
                }
            }
        }

        // Query parameters.
        let pairs = super::server::parse_query(req.query.unwrap_or(""));
        for (name, value) in &pairs {
            match op
                .params
                .iter()
                .find(|p| p.location == "query" && &p.name == name)
            {
                Some(p) => {
                    if let Err(e) = check_param_value(&p.schema, value) {
                        violations.push(format!("{at}: query parameter `{name}`: {e}"));
                    }
                }
                None => {
                    let known: Vec<&str> = op
                        .params
                        .iter()
                        .filter(|p| p.location == "query")
                        .map(|p| p.name.as_str())
                        .collect();
                    violations.push(format!(
                        "{at}: unknown query parameter `{name}` (the operation takes: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        for p in op
            .params
            .iter()
            .filter(|p| p.required && p.location == "query")
        {
            if !pairs.iter().any(|(n, _)| n == &p.name) {
                violations.push(format!(
                    "{at}: required query parameter `{}` is missing",
                    p.name
                ));
            }
        }

        // Body.
        match &op.body {
            None => {
                if !req.body.is_empty() {
                    violations.push(format!(
                        "{at}: the operation takes no request body, {} bytes were sent",
                        req.body.len()
                    ));
                }
            }
            Some(rb) if req.body.is_empty() => {
                if rb.required {
                    violations.push(format!("{at}: the request body is required"));
                }
            }
            Some(rb) => {
                let media = req.content_type.map(|c| {
                    c.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                });
                match media.as_deref() {
                    Some(m) if rb.media_types.iter().any(|t| t.eq_ignore_ascii_case(m)) => {}
                    other => violations.push(format!(
                        "{at}: Content-Type {:?} is not one the operation takes ({})",
                        other,
                        rb.media_types.join(", ")
                    )),
                }
                if let Some(schema) = &rb.json_schema {
                    match serde_json::from_slice::<Value>(req.body) {
                        Err(e) => violations.push(format!("{at}: the body is not JSON: {e}")),
                        Ok(body) => match self.validator(&op.operation_id, schema, true) {
                            Err(e) => violations.push(format!(
                                "{at}: the spec's body schema does not compile: {e}"
                            )),
                            Ok(validator) => {
                                for error in validator.iter_errors(&body) {
                                    let path = error.instance_path().to_string();
                                    violations.push(format!(
                                        "{at}: body{}: {error}",
                                        if path.is_empty() {
                                            String::new()
                                        } else {
                                            format!(" at {path}")
                                        }
                                    ));
                                }
                            }
                        },
                    }
                }
            }
        }

        if violations.is_empty() {
            Ok(Matched {
                operation_id: op.operation_id.clone(),
                template: item.template.clone(),
                path_params,
            })
        } else {
            Err(violations)
        }
    }

    /// Validates an answer to the operation `operation_id`: its status is documented,
    /// and its JSON body (if the status documents a schema) validates against it.
    pub fn validate_response(
        &self,
        operation_id: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), Vec<String>> {
        let Some(op) = self
            .paths
            .iter()
            .flat_map(|p| &p.operations)
            .find(|o| o.operation_id == operation_id)
        else {
            return Err(vec![format!("no operation `{operation_id}` in the spec")]);
        };
        let code = status.to_string();
        let Some((_, schema)) = op
            .responses
            .iter()
            .find(|(s, _)| *s == code)
            .or_else(|| op.responses.iter().find(|(s, _)| s == "default"))
        else {
            let documented: Vec<&str> = op.responses.iter().map(|(s, _)| s.as_str()).collect();
            return Err(vec![format!(
                "{operation_id}: status {status} is not documented ({})",
                documented.join(", ")
            )]);
        };
        let Some(schema) = schema else {
            return Ok(());
        };
        if body.is_empty() {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            vec![format!(
                "{operation_id} {status}: the answer is not JSON: {e}"
            )]
        })?;
        let validator = self
            .validator(&format!("{operation_id} {status}"), schema, false)
            .map_err(|e| {
                vec![format!(
                    "{operation_id} {status}: schema does not compile: {e}"
                )]
            })?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| {
                format!(
                    "{operation_id} {status}: answer at {}: {e}",
                    e.instance_path()
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The compiled validator of a body schema (cached under `cache_key`): the schema
    /// plus the component schemas it reaches through `$ref`, at their usual JSON
    /// pointers. `formats`: whether `format` is checked (requests: yes; answers: no,
    /// Jira's own answers write offsets as `+0000`, which `date-time` refuses).
    fn validator(
        &self,
        cache_key: &str,
        schema: &Value,
        formats: bool,
    ) -> Result<Arc<jsonschema::Validator>, String> {
        let mut cache = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(cache_key) {
            return Ok(Arc::clone(v));
        }
        let mut reached = BTreeSet::new();
        let mut queue = Vec::new();
        collect_refs(schema, &mut queue);
        while let Some(name) = queue.pop() {
            if !reached.insert(name.clone()) {
                continue;
            }
            let component = self
                .schemas
                .get(&name)
                .ok_or_else(|| format!("`$ref` to unknown schema `{name}`"))?;
            collect_refs(component, &mut queue);
        }
        let subset: Map<String, Value> = reached
            .iter()
            .filter_map(|n| self.schemas.get(n).map(|s| (n.clone(), s.clone())))
            .collect();
        let mut root = match schema {
            Value::Object(m) => m.clone(),
            other => return Err(format!("body schema is not an object: {other}")),
        };
        root.insert("components".into(), json!({ "schemas": subset }));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(formats)
            .should_ignore_unknown_formats(true)
            .build(&Value::Object(root))
            .map_err(|e| e.to_string())?;
        let validator = Arc::new(validator);
        cache.insert(cache_key.to_owned(), Arc::clone(&validator));
        Ok(validator)
    }
}

fn resolve_param(raw: &Value, components: &Map<String, Value>) -> Result<Param, String> {
    let p = match raw.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/parameters/")
                .ok_or_else(|| format!("unsupported parameter `$ref` {r}"))?;
            components
                .get(name)
                .ok_or_else(|| format!("`$ref` to unknown parameter {r}"))?
        }
        None => raw,
    };
    let location = p.get("in").and_then(Value::as_str).unwrap_or("").to_owned();
    Ok(Param {
        name: p
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        required: location == "path" || p.get("required") == Some(&Value::Bool(true)),
        location,
        schema: p.get("schema").cloned().unwrap_or(json!({})),
    })
}

fn matches_path(template: &[Segment], segments: &[String]) -> bool {
    template.len() == segments.len()
        && template.iter().zip(segments).all(|(t, s)| match t {
            Segment::Literal(l) => l == s,
            Segment::Param(_) => !s.is_empty(),
        })
}

/// Checks a path or query value (form style: arrays are comma-separated or repeated)
/// against the parameter's schema.
fn check_param_value(schema: &Value, value: &str) -> Result<(), String> {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    if ty == "array" {
        let items = schema.get("items").cloned().unwrap_or(json!({}));
        for part in value.split(',') {
            check_param_value(&items, part)?;
        }
        return Ok(());
    }
    let typed = match ty {
        "boolean" => match value {
            "true" => json!(true),
            "false" => json!(false),
            _ => return Err(format!("`{value}` is not a boolean")),
        },
        "integer" => value
            .parse::<i64>()
            .map(|n| json!(n))
            .map_err(|_| format!("`{value}` is not an integer"))?,
        "number" => value
            .parse::<f64>()
            .map(|n| json!(n))
            .map_err(|_| format!("`{value}` is not a number"))?,
        _ => json!(value),
    };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(&typed)
    {
        return Err(format!(
            "`{value}` is not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    Ok(())
}

fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    if let Some(name) = v
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        out.push(name.to_owned());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// An OpenAPI 3.0 Schema Object as a JSON Schema (draft 4) for validating a request:
/// `nullable: true` admits `null`; read-only properties are not required; annotations
/// that are not JSON Schema (`example`, `xml`, `discriminator`, …) are dropped.
pub fn to_json_schema(schema: &Value) -> Value {
    let Value::Object(m) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        match k.as_str() {
            "example" | "examples" | "xml" | "discriminator" | "externalDocs" | "nullable"
            | "readOnly" | "writeOnly" | "deprecated" => {}
            "properties" | "patternProperties" | "definitions" => {
                let converted = v
                    .as_object()
                    .map(|props| {
                        props
                            .iter()
                            .map(|(name, s)| (name.clone(), to_json_schema(s)))
                            .collect::<Map<String, Value>>()
                    })
                    .map(Value::Object)
                    .unwrap_or_else(|| v.clone());
                out.insert(k.clone(), converted);
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(k.clone(), to_json_schema(v));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = v
                    .as_array()
                    .map(|a| a.iter().map(to_json_schema).collect())
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Array(list));
            }
            "required" => {
                // Read-only properties are required in responses only.
                let props = m.get("properties").and_then(Value::as_object);
                let kept: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|name| {
                        let read_only = name
                            .as_str()
                            .and_then(|n| props.and_then(|p| p.get(n)))
                            .and_then(|p| p.get("readOnly"))
                            == Some(&Value::Bool(true));
                        !read_only
                    })
                    .cloned()
                    .collect();
                if !kept.is_empty() {
                    out.insert(k.clone(), Value::Array(kept));
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if m.get("nullable") == Some(&Value::Bool(true)) {
        match out.get("type").cloned() {
            Some(Value::String(t)) => {
                out.insert("type".into(), json!([t, "null"]));
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            _ => {
                let inner = Value::Object(std::mem::take(&mut out));
                out.insert("anyOf".into(), json!([{ "type": "null" }, inner]));
            }
        }
    }
    Value::Object(out)
}

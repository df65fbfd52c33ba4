//! Connectors and their operations: describe, dispatch, argument decoding.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::steward::connector::types::{self, CallError, Context, Description};
use crate::error::Error;
use crate::schema::Schema;

/// A connector: its name, version and operations. Export it with [`crate::connector!`].
pub trait Connector {
    /// The name `describe` reports (`jira`); also in the `User-Agent`.
    const NAME: &'static str;
    /// The version `describe` reports; usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// The operations, in the order `describe` lists them.
    fn operations() -> Vec<Operation>;
}

/// What the engine knows about the call being made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The operation's name.
    pub operation: String,
    /// The deterministic action id: pass it to the vendor as an idempotency key.
    pub idempotency_key: String,
    /// 1 for the first try; above 1, an earlier try may have reached the vendor.
    pub attempt: u32,
    /// Milliseconds since the Unix epoch after which the host stops the call.
    pub deadline_ms: u64,
}

impl Call {
    /// Whether an earlier try of this call may already have reached the vendor.
    pub fn is_retry(&self) -> bool {
        self.attempt > 1
    }
}

type Handler = Box<dyn Fn(&Call, Value) -> Result<Value, Error>>;

/// One operation: its name, doc, argument schema and handler.
pub struct Operation {
    name: &'static str,
    doc: &'static str,
    schema: Schema,
    handler: Handler,
}

impl std::fmt::Debug for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.name)
            .field("doc", &self.doc)
            .finish_non_exhaustive()
    }
}

impl Operation {
    /// An operation whose arguments decode into `A` (derive `Deserialize` with
    /// `#[serde(deny_unknown_fields)]` so unknown names are refused, as the schema's
    /// `additionalProperties: false` says). Arguments that do not decode are a
    /// permanent error naming the operation.
    pub fn new<A, F>(name: &'static str, doc: &'static str, schema: Schema, handler: F) -> Self
    where
        A: DeserializeOwned,
        F: Fn(&Call, A) -> Result<Value, Error> + 'static,
    {
        Operation {
            name,
            doc,
            schema,
            handler: Box::new(move |call, args| {
                let args: A = serde_json::from_value(args).map_err(|e| {
                    Error::permanent(format!("invalid arguments for `{}`: {e}", call.operation))
                })?;
                handler(call, args)
            }),
        }
    }

    /// The operation's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Its argument schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

/// `describe` of connector `C` (used by [`crate::connector!`]).
#[doc(hidden)]
pub fn __describe<C: Connector>() -> Description {
    Description {
        name: C::NAME.to_owned(),
        version: C::VERSION.to_owned(),
        operations: C::operations()
            .into_iter()
            .map(|op| types::Operation {
                name: op.name.to_owned(),
                doc: op.doc.to_owned(),
                args_schema: op.schema.to_value().to_string(),
            })
            .collect(),
    }
}

/// `invoke` of connector `C` (used by [`crate::connector!`]).
#[doc(hidden)]
pub fn __invoke<C: Connector>(
    operation: &str,
    args: &str,
    ctx: Context,
) -> Result<String, CallError> {
    let call = Call {
        operation: operation.to_owned(),
        idempotency_key: ctx.idempotency_key,
        attempt: ctx.attempt,
        deadline_ms: ctx.deadline_ms,
    };
    dispatch(C::operations(), &call, args).map_err(CallError::from)
}

fn dispatch(operations: Vec<Operation>, call: &Call, args: &str) -> Result<String, Error> {
    let Some(op) = operations.iter().find(|op| op.name == call.operation) else {
        let known: Vec<&str> = operations.iter().map(|op| op.name).collect();
        return Err(Error::permanent(format!(
            "unknown operation `{}` (this connector has: {})",
            call.operation,
            known.join(", ")
        )));
    };
    let args = if args.trim().is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str::<Value>(args).map_err(|e| {
            Error::permanent(format!(
                "arguments of `{}` are not JSON: {e}",
                call.operation
            ))
        })?
    };
    let args = if args.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        args
    };
    if !args.is_object() {
        return Err(Error::permanent(format!(
            "arguments of `{}` must be a JSON object",
            call.operation
        )));
    }
    let result = (op.handler)(call, args)?;
    Ok(result.to_string())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::schema::Prop;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Args {
        text: String,
        n: Option<u32>,
    }

    fn operations() -> Vec<Operation> {
        vec![Operation::new(
            "echo",
            "Echoes",
            Schema::object()
                .required("text", Prop::string("Text"))
                .optional("n", Prop::string("N")),
            |call: &Call, a: Args| {
                Ok(json!({ "text": a.text, "n": a.n, "key": call.idempotency_key }))
            },
        )]
    }

    fn call(op: &str) -> Call {
        Call {
            operation: op.to_owned(),
            idempotency_key: "k".to_owned(),
            attempt: 1,
            deadline_ms: 0,
        }
    }

    fn permanent(r: Result<String, Error>) -> String {
        match r {
            Err(Error::Permanent(m)) => m,
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[test]
    fn dispatches_by_name_and_decodes_arguments() {
        let out = dispatch(operations(), &call("echo"), r#"{"text":"hi","n":2}"#);
        assert_eq!(out, Ok(r#"{"text":"hi","n":2,"key":"k"}"#.to_owned()));
        let m = permanent(dispatch(operations(), &call("nope"), "{}"));
        assert_eq!(m, "unknown operation `nope` (this connector has: echo)");
        let m = permanent(dispatch(
            operations(),
            &call("echo"),
            r#"{"text":"a","x":1}"#,
        ));
        assert!(
            m.starts_with("invalid arguments for `echo`: unknown field `x`"),
            "{m}"
        );
        let m = permanent(dispatch(operations(), &call("echo"), "{}"));
        assert!(m.contains("missing field `text`"), "{m}");
        let m = permanent(dispatch(operations(), &call("echo"), "[]"));
        assert_eq!(m, "arguments of `echo` must be a JSON object");
        let m = permanent(dispatch(operations(), &call("echo"), "{"));
        assert!(m.starts_with("arguments of `echo` are not JSON"), "{m}");
    }

    #[test]
    fn schema_keeps_the_listed_order() {
        let ops = operations();
        let schema = ops[0].schema().to_value();
        let order: Vec<&String> = schema["properties"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .collect();
        assert_eq!(order, ["text", "n"]);
        assert_eq!(schema["required"], json!(["text"]));
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}

//! JSON Schemas of operation arguments, built in the order properties are listed.

use serde_json::{Map, Value, json};

/// The JSON Schema of an operation's arguments: an object whose `properties` keep the
/// order they were added in (rules may pass arguments positionally, in that order),
/// with `required` as marked and `additionalProperties: false`.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    properties: Map<String, Value>,
    required: Vec<String>,
}

impl Schema {
    /// An object schema without properties yet.
    pub fn object() -> Self {
        Schema::default()
    }

    /// Adds a required property.
    #[must_use]
    pub fn required(mut self, name: &str, prop: Prop) -> Self {
        self.properties.insert(name.to_owned(), prop.0);
        self.required.push(name.to_owned());
        self
    }

    /// Adds an optional property.
    #[must_use]
    pub fn optional(mut self, name: &str, prop: Prop) -> Self {
        self.properties.insert(name.to_owned(), prop.0);
        self
    }

    /// The schema as JSON.
    pub fn to_value(&self) -> Value {
        json!({
            "type": "object",
            "properties": self.properties,
            "required": self.required,
            "additionalProperties": false,
        })
    }
}

/// The schema of one property.
#[derive(Debug, Clone)]
pub struct Prop(Value);

impl Prop {
    fn typed(ty: &str, description: &str) -> Self {
        Prop(json!({ "type": ty, "description": description }))
    }

    /// A string.
    pub fn string(description: &str) -> Self {
        Prop::typed("string", description)
    }

    /// An object (any keys).
    pub fn object(description: &str) -> Self {
        Prop::typed("object", description)
    }

    /// An array of any items.
    pub fn array(description: &str) -> Self {
        Prop::typed("array", description)
    }

    /// An array of strings.
    pub fn string_array(description: &str) -> Self {
        Prop(json!({
            "type": "array",
            "description": description,
            "items": { "type": "string" },
        }))
    }

    /// Any JSON value.
    pub fn any(description: &str) -> Self {
        Prop(json!({ "description": description }))
    }

    /// Restricts the value to one of `values`.
    #[must_use]
    pub fn one_of(mut self, values: &[&str]) -> Self {
        if let Value::Object(m) = &mut self.0 {
            m.insert("enum".to_owned(), json!(values));
        }
        self
    }

    /// Documents the value used when the property is absent.
    #[must_use]
    pub fn default(mut self, value: Value) -> Self {
        if let Value::Object(m) = &mut self.0 {
            m.insert("default".to_owned(), value);
        }
        self
    }
}

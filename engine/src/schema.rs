//! Params validation: task params against the JSON schema of their task type, by the `jsonschema`
//! crate (the draft the schema names, 2020-12 for schemars output; `pattern` and string `format`s are
//! asserted). The engine stays pure: the crate is built without its HTTP and file resolvers, so a
//! `$ref` that leaves the schema does not resolve and fails the compile.
//!
//! Kept by hand, each for a reason the crate cannot know:
//! - A string holding a run-time reference (`${ item }`, `${ tasks.… }`) stands for a value that is
//!   only known when the task starts, so errors about such a value are dropped (and `anyOf`/`oneOf`/
//!   `not` errors about a value that contains one).
//! - The integer `format`s schemars emits (`uint16`, `int32`, …) are not JSON Schema formats; their
//!   ranges are added to the schema as `minimum`/`maximum` before it is compiled.
//! - A missing required property and an unexpected one are reported at the property's own pointer,
//!   so that compile errors name the field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Number, Value};

use crate::reference::{has_reference, push_pointer_segment};

/// A value that does not match its schema: where (JSON pointer) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) pointer: String,
    pub(crate) message: String,
}

/// Compiled params schemas by task type, for one compile: each schema is compiled once per plan.
#[derive(Default)]
pub(crate) struct Schemas(RefCell<HashMap<String, Rc<Result<jsonschema::Validator, Violation>>>>);

impl Schemas {
    /// Checks `value` against `schema`, the params schema of `task_type`.
    pub(crate) fn validate(&self, task_type: &str, schema: &Value, value: &Value) -> Result<(), Violation> {
        let cached = self.0.borrow().get(task_type).cloned();
        let compiled = cached.unwrap_or_else(|| {
            let compiled = Rc::new(compile(schema));
            self.0
                .borrow_mut()
                .insert(task_type.to_owned(), Rc::clone(&compiled));
            compiled
        });
        match &*compiled {
            Ok(validator) => check(validator, value),
            Err(violation) => Err(violation.clone()),
        }
    }
}

/// Checks `value` against `schema` (compiling it for this one check).
#[cfg(test)]
pub(crate) fn validate(schema: &Value, value: &Value) -> Result<(), Violation> {
    Schemas::default().validate("", schema, value)
}

fn violation(pointer: &str, message: impl Into<String>) -> Violation {
    Violation {
        pointer: if pointer.is_empty() {
            "/".into()
        } else {
            pointer.to_owned()
        },
        message: message.into(),
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, Violation> {
    let mut schema = schema.clone();
    bound_integer_formats(&mut schema);
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| violation("", format!("the params schema does not compile: {e}")))
}

/// The first error that is not about a run-time reference.
fn check(validator: &jsonschema::Validator, value: &Value) -> Result<(), Violation> {
    for error in validator.iter_errors(value) {
        let path = error.instance_path().as_str();
        let instance = value.pointer(path);
        let about_a_reference = match error.kind() {
            ValidationErrorKind::AnyOf { .. }
            | ValidationErrorKind::OneOfNotValid { .. }
            | ValidationErrorKind::OneOfMultipleValid { .. }
            | ValidationErrorKind::Not { .. } => instance.is_some_and(contains_reference),
            _ => instance.and_then(Value::as_str).is_some_and(has_reference),
        };
        if about_a_reference {
            continue;
        }
        let mut pointer = path.to_owned();
        match error.kind() {
            ValidationErrorKind::Required { property } => {
                push_pointer_segment(&mut pointer, property.as_str().unwrap_or_default());
            }
            ValidationErrorKind::AdditionalProperties { unexpected } if !unexpected.is_empty() => {
                push_pointer_segment(&mut pointer, &unexpected[0]);
            }
            // `additionalProperties: false` without `properties` (a task type that takes no params) comes back
            // as a false schema at the object: name the first field, as above.
            ValidationErrorKind::FalseSchema
                if error.schema_path().as_str().ends_with("/additionalProperties") =>
            {
                if let Some(field) = instance.and_then(Value::as_object).and_then(|m| m.keys().next()) {
                    push_pointer_segment(&mut pointer, field);
                    return Err(violation(
                        &pointer,
                        format!("Additional properties are not allowed ('{field}' was unexpected)"),
                    ));
                }
            }
            _ => {}
        }
        // The crate's anyOf message names no field; say where its first alternative failed (await-condition:
        // "required field is missing at /targetHeight").
        if let ValidationErrorKind::AnyOf { context } = error.kind()
            && let Some(first) = context.first().and_then(|branch| branch.first())
        {
            let mut at = first.instance_path().as_str().to_owned();
            let what = match first.kind() {
                ValidationErrorKind::Required { property } => {
                    push_pointer_segment(&mut at, property.as_str().unwrap_or_default());
                    "required field is missing".to_owned()
                }
                _ => first.to_string(),
            };
            return Err(violation(&pointer, format!("{error} ({what} at {at})")));
        }
        return Err(violation(&pointer, error.to_string()));
    }
    Ok(())
}

fn contains_reference(value: &Value) -> bool {
    match value {
        Value::String(s) => has_reference(s),
        Value::Array(items) => items.iter().any(contains_reference),
        Value::Object(map) => map.values().any(contains_reference),
        _ => false,
    }
}

/// Adds the range of each integer `format` schemars emits as `minimum`/`maximum` (a stricter bound
/// the schema already has is kept).
fn bound_integer_formats(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some((min, max)) = map.get("format").and_then(Value::as_str).and_then(integer_range) {
                tighten(map, "minimum", min, |bound, current| bound > current);
                tighten(map, "maximum", max, |bound, current| bound < current);
            }
            map.values_mut().for_each(bound_integer_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integer_formats),
        _ => {}
    }
}

fn tighten(map: &mut Map<String, Value>, key: &str, bound: Number, stricter: impl Fn(f64, f64) -> bool) {
    let current = map.get(key).and_then(Value::as_f64);
    let bound_f64 = bound.as_f64().unwrap_or_default();
    if current.is_none_or(|current| stricter(bound_f64, current)) {
        map.insert(key.to_owned(), Value::Number(bound));
    }
}

fn integer_range(format: &str) -> Option<(Number, Number)> {
    let signed = |min: i64, max: i64| Some((Number::from(min), Number::from(max)));
    let unsigned = |max: u64| Some((Number::from(0u8), Number::from(max)));
    match format {
        "int8" => signed(i8::MIN.into(), i8::MAX.into()),
        "int16" => signed(i16::MIN.into(), i16::MAX.into()),
        "int32" => signed(i32::MIN.into(), i32::MAX.into()),
        "int64" | "int" => signed(i64::MIN, i64::MAX),
        "uint8" => unsigned(u8::MAX.into()),
        "uint16" => unsigned(u16::MAX.into()),
        "uint32" => unsigned(u32::MAX.into()),
        "uint64" | "uint" => unsigned(u64::MAX),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[test]
    fn an_any_of_names_the_field_its_first_branch_failed_at_and_keeps_its_own_pointer() {
        // `targetHeight` is required unless `condition` is not `height` (await-condition's params).
        let schema = json!({
            "type": "object",
            "properties": {"condition": {"enum": ["height", "catchingUp"]}, "targetHeight": {"type": "integer"}},
            "anyOf": [
                {"required": ["targetHeight"]},
                {"properties": {"condition": {"const": "catchingUp"}}},
            ],
        });
        let err = validate(&schema, &json!({"condition": "height"})).unwrap_err();
        assert_eq!(
            err.pointer, "/",
            "the violation is the object's, not a branch's field"
        );
        assert!(
            err.message.contains("required field is missing at /targetHeight"),
            "{}",
            err.message
        );
        assert!(validate(&schema, &json!({"condition": "catchingUp"})).is_ok());
        assert!(validate(&schema, &json!({"condition": "height", "targetHeight": 3})).is_ok());
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        chain_id: String,
        replicas: u32,
        mode: Mode,
        peers: Vec<Peer>,
        comment: Option<String>,
        target: Target,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    enum Mode {
        Full,
        Archive,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Peer {
        host: String,
        port: u16,
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Target {
        Name(String),
        Ordinal(u8),
    }

    fn schema() -> Value {
        serde_json::to_value(schemars::schema_for!(Params)).unwrap()
    }

    fn valid() -> Value {
        json!({"chainId": "sei", "replicas": 3, "mode": "Full", "peers": [{"host": "a", "port": 26656}], "target": 2})
    }

    #[test]
    fn schemars_output_accepts_a_valid_value() {
        assert_eq!(validate(&schema(), &valid()), Ok(()));
    }

    #[test]
    fn violations_name_the_json_pointer() {
        let cases = [
            ("/chainId", json!({"chainId": 1})),
            ("/replicas", json!({"replicas": -1})),
            ("/mode", json!({"mode": "Light"})),
            ("/peers/0/port", json!({"peers": [{"host": "a", "port": 70000}]})),
            ("/extra", json!({"extra": true})),
            ("/target", json!({"target": 300})),
            ("/comment", json!({"comment": 5})),
        ];
        for (pointer, patch) in cases {
            let mut value = valid();
            for (k, v) in patch.as_object().unwrap() {
                value[k] = v.clone();
            }
            let err = validate(&schema(), &value).unwrap_err();
            assert_eq!(err.pointer, pointer, "{err:?}");
        }
        let mut missing = valid();
        missing.as_object_mut().unwrap().remove("chainId");
        assert_eq!(validate(&schema(), &missing).unwrap_err().pointer, "/chainId");
    }

    #[test]
    fn run_time_references_are_accepted_anywhere() {
        let mut value = valid();
        value["replicas"] = json!("${ tasks.count.outputs.n }");
        value["mode"] = json!("${ item }");
        assert_eq!(validate(&schema(), &value), Ok(()));
    }

    #[test]
    fn boolean_schemas_and_unresolvable_refs() {
        assert!(validate(&json!(true), &json!({"any": 1})).is_ok());
        assert!(validate(&json!(false), &json!(1)).is_err());
        let err = validate(&json!({"$ref": "#/$defs/Missing"}), &json!(1)).unwrap_err();
        assert!(err.message.contains("does not compile"), "{err:?}");
        // No I/O: a remote reference is not fetched.
        let err = validate(&json!({"$ref": "https://example.com/schema.json"}), &json!(1)).unwrap_err();
        assert!(err.message.contains("does not compile"), "{err:?}");
    }

    #[test]
    fn patterns_and_formats_are_asserted() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "addr": {"type": "string", "format": "ipv4"},
            },
        });
        assert!(validate(&schema, &json!({"name": "abc", "addr": "10.0.0.1"})).is_ok());
        assert_eq!(
            validate(&schema, &json!({"name": "ABC"})).unwrap_err().pointer,
            "/name"
        );
        assert_eq!(
            validate(&schema, &json!({"addr": "10.0.0"})).unwrap_err().pointer,
            "/addr"
        );
        // A run-time reference still stands for a value known only when the task starts.
        assert!(validate(&schema, &json!({"name": "${ item }"})).is_ok());
    }
}

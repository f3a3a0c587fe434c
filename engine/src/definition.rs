//! The workflow definition model, as written in YAML (camelCase).
//!
//! Two shapes are accepted by [`WorkflowDefinition::from_yaml`]:
//!
//! ```yaml
//! # flat
//! name: node-update
//! target: SeiNode
//! tasks: [{name: statefulset, type: apply-statefulset}]
//! ```
//!
//! ```yaml
//! # a WorkflowTemplate resource: metadata.name + spec
//! apiVersion: sei.io/v1alpha1
//! kind: WorkflowTemplate
//! metadata: {name: node-update}
//! spec:
//!   target: SeiNode
//!   tasks: [{name: statefulset, type: apply-statefulset}]
//! ```
//!
//! [`WorkflowSpec`] is also the natural `spec` type of a `WorkflowTemplate` CRD. Expressions
//! (`trigger`, `params`, `when`) are CEL source text that the engine stores but never evaluates;
//! durations stay text here and are parsed (and reported with their field) by the compiler.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::compile::{Error, Location};
use crate::plan::{DriftPolicy, ErrorClass, preserve_unknown_object};

/// A named workflow definition plus where it came from (for error messages).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowDefinition {
    /// Workflow name (flat `name`, or `metadata.name` of a WorkflowTemplate).
    pub name: String,
    /// Where the definition was read from (a file name), used in error messages only.
    pub source: String,
    /// The definition body.
    pub spec: WorkflowSpec,
}

/// The body of a workflow definition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Free-form version, recorded in the plan; empty when not declared.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Kind of the resource the workflow runs for (e.g. `SeiNode`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// CEL over `self`: when true, the workflow should run (lifecycle workflows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Workflow params: name -> CEL expression, evaluated once when the plan is created.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Plan deadline for normal tasks, humantime (`"15m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Most task runs in flight at once (at least 1); unbounded when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// How often in-flight tasks are polled, humantime; default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    /// What to do when the trigger fires while a plan of this workflow runs.
    #[serde(default)]
    pub on_drift: DriftPolicy,
    /// The normal tasks.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    /// Tasks that always run once the normal tasks are done, whatever the outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<TaskSpec>,
    /// Opaque effect applied by the operator while the plan is active (e.g. `NodeUpdateInProgress=True`, a phase
    /// such as `Upgrading`): what a running plan of this workflow means for its object's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub on_start: Option<Value>,
    /// Opaque effect applied by the operator when the plan succeeds (e.g. conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub on_success: Option<Value>,
    /// Opaque effect applied by the operator when the plan fails or is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub on_failure: Option<Value>,
}

/// One task of a definition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique task name: letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// Task type, a key of the task type registry.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Tasks of the same stage that must succeed (or be skipped) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// CEL guard; when it evaluates to false the task is recorded as Skipped with a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Name of a workflow param holding a list: the task runs once per item, as `name[item]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// The object the task acts on; may use `${ params.… }` and `${ item }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Task params; may use `${ params.… }`, `${ item }` and `${ tasks.<t>.outputs.<k> }`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub params: Map<String, Value>,
    /// Retry policy; a single attempt when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Per-attempt timeout, humantime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How often a running attempt of this task is polled, humantime; the workflow's `pollInterval` when
    /// absent. A task whose progress also wakes the plan's owner (a watched object) can poll rarely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
}

/// Retry settings of a task; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in total, first included (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Exponential backoff between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// Fraction of each delay that is randomised, 0..=1 (default 1, "full jitter").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Error classes that retry (default `[Transient, Timeout]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<ErrorClass>>,
}

/// Exponential backoff: `min(max, initial × factor^(n-1))` after the n-th failed attempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackoffSpec {
    /// First delay, humantime (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// Growth factor, at least 1 (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Cap, humantime (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

impl WorkflowDefinition {
    /// Parses a definition (flat, or a `WorkflowTemplate` with `metadata.name` and `spec`).
    /// `source_name` (usually the file name) only appears in error messages.
    ///
    /// # Errors
    /// [`Error::Parse`] for malformed YAML, unknown fields, wrong types or a missing name.
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self, Error> {
        let parse_error = |workflow: &str, message: String| Error::Parse {
            at: Box::new(Location::workflow(workflow, source_name, "")),
            message,
        };
        let document: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| parse_error("", e.to_string()))?;
        let serde_yaml::Value::Mapping(mut map) = document else {
            return Err(parse_error("", "a workflow definition must be a mapping".into()));
        };
        let name_of =
            |value: Option<&serde_yaml::Value>| value.and_then(serde_yaml::Value::as_str).map(str::to_owned);
        let (name, body) = if let Some(spec) = map.remove("spec") {
            let metadata = map.get("metadata");
            let name = name_of(metadata.and_then(|m| m.get("name")))
                .ok_or_else(|| parse_error("", "`metadata.name` is missing".into()))?;
            for key in map.keys().filter_map(serde_yaml::Value::as_str) {
                if !matches!(key, "apiVersion" | "kind" | "metadata") {
                    return Err(parse_error(&name, format!("unknown top-level field `{key}`")));
                }
            }
            (name, spec)
        } else {
            let name = name_of(map.remove("name").as_ref())
                .ok_or_else(|| parse_error("", "`name` is missing (or use metadata.name + spec)".into()))?;
            (name, serde_yaml::Value::Mapping(map))
        };
        let spec: WorkflowSpec =
            serde_yaml::from_value(body).map_err(|e| parse_error(&name, e.to_string()))?;
        Ok(Self {
            name,
            source: source_name.to_owned(),
            spec,
        })
    }

    /// A definition built in code (tests, generated workflows).
    pub fn new(name: impl Into<String>, spec: WorkflowSpec) -> Self {
        Self {
            name: name.into(),
            source: String::new(),
            spec,
        }
    }

    /// `sha256:<hex>` over the canonical JSON of `{name, spec}` (object keys sorted, no
    /// whitespace), so formatting and key order in the YAML do not change the digest.
    pub fn digest(&self) -> String {
        let mut value = serde_json::to_value(&self.spec).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("name".into(), Value::String(self.name.clone()));
        }
        let mut hasher = HashWriter(Sha256::new());
        write_canonical(&value, &mut hasher);
        let hash = hasher.0.finalize();
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for byte in hash {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

/// Feeds canonical JSON straight into the hash, without building the text.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `value` as JSON with object keys sorted and no whitespace. Writing into a hash cannot
/// fail, so write results are ignored.
fn write_canonical(value: &Value, out: &mut HashWriter) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.0.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.0.update(b",");
                }
                let _ = serde_json::to_writer(&mut *out, key);
                out.0.update(b":");
                write_canonical(&map[key], out);
            }
            out.0.update(b"}");
        }
        Value::Array(items) => {
            out.0.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.0.update(b",");
                }
                write_canonical(item, out);
            }
            out.0.update(b"]");
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = r#"
name: node-update
version: "3"
target: SeiNode
trigger: self.spec.image != self.status.currentImage
onDrift: Supersede
deadline: 30m
params:
  image: self.spec.image
tasks:
  - {name: statefulset, type: apply-statefulset}
  - name: replace-pod
    type: replace-pod
    dependsOn: [statefulset]
    retry: {maxAttempts: 3, backoff: {initial: 5s, factor: 2, max: 30s}, retryOn: [Transient]}
    timeout: 10m
    params: {image: "${ params.image }"}
finally:
  - {name: report, type: report}
onSuccess: {conditions: [{type: NodeUpdateInProgress, status: "False"}]}
"#;

    #[test]
    fn flat_definitions_parse_with_camel_case_fields() {
        let def = WorkflowDefinition::from_yaml("node-update.yaml", FLAT).unwrap();
        assert_eq!(def.name, "node-update");
        assert_eq!(def.spec.version, "3");
        assert_eq!(def.spec.on_drift, DriftPolicy::Supersede);
        assert_eq!(def.spec.tasks[1].depends_on, ["statefulset"]);
        let retry = def.spec.tasks[1].retry.as_ref().unwrap();
        assert_eq!(retry.max_attempts, Some(3));
        assert_eq!(retry.retry_on.as_deref(), Some(&[ErrorClass::Transient][..]));
        assert_eq!(def.spec.finally.len(), 1);
    }

    #[test]
    fn workflow_template_resources_parse_too() {
        let text = "apiVersion: sei.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: mark-ready}\n\
                    spec:\n  target: SeiNode\n  tasks: [{name: ready, type: mark-ready}]\n";
        let def = WorkflowDefinition::from_yaml("mark-ready.yaml", text).unwrap();
        assert_eq!(def.name, "mark-ready");
        assert_eq!(def.spec.tasks[0].task_type, "mark-ready");
    }

    #[test]
    fn unknown_fields_and_missing_names_are_parse_errors_naming_the_file() {
        let err =
            WorkflowDefinition::from_yaml("x.yaml", "name: x\ntasks: [{name: a, type: t, dependson: []}]")
                .unwrap_err()
                .to_string();
        assert!(err.contains("x.yaml") && err.contains("dependson"), "{err}");
        let err = WorkflowDefinition::from_yaml("y.yaml", "tasks: []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("y.yaml") && err.contains("name"), "{err}");
        assert!(WorkflowDefinition::from_yaml("z.yaml", "- a").is_err());
    }

    #[test]
    fn the_digest_ignores_formatting_and_key_order() {
        let a =
            WorkflowDefinition::from_yaml("a", "name: w\ntasks: [{name: a, type: t, params: {x: 1, y: 2}}]")
                .unwrap();
        let b = WorkflowDefinition::from_yaml(
            "b",
            "tasks:\n- params: {y: 2, x: 1}\n  type: t\n  name: a\nname: w\n",
        )
        .unwrap();
        assert_eq!(a.digest(), b.digest());
        assert!(a.digest().starts_with("sha256:") && a.digest().len() == 71);
        let c =
            WorkflowDefinition::from_yaml("c", "name: w\ntasks: [{name: a, type: t, params: {x: 2, y: 2}}]")
                .unwrap();
        assert_ne!(a.digest(), c.digest());
    }
}

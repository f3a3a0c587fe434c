//! Checks of the definition's own fields, which need no dependency graph: the workflow shape
//! (tasks present, declared params supplied, `maxParallel`), task names, `when` decisions,
//! durations (including a deadline taken from a workflow param) and retry settings.

use std::collections::HashSet;

use serde_json::Value;

use super::{Cx, Error, Mode, Result};
use crate::definition::RetrySpec;
use crate::plan::split_run_name;
use crate::retry::RetryPolicy;
use crate::time::Duration;

fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Cx<'_> {
    /// What must hold before any task is compiled: normal tasks exist, every declared param has a
    /// value (when compiling an instance), `maxParallel` is at least 1, task names are valid and
    /// unique, and every `when` decision supplied belongs to a guarded task.
    pub(super) fn check_workflow(&self) -> Result<()> {
        let spec = &self.def.spec;
        if spec.tasks.is_empty() {
            return Err(Error::EmptyWorkflow {
                at: self.at(None, "tasks"),
            });
        }
        for param in spec.params.keys() {
            if self.mode == Mode::Instance && !self.inputs.params.contains_key(param) {
                return Err(Error::MissingParam {
                    at: self.at(None, &format!("params.{param}")),
                    param: param.clone(),
                });
            }
        }
        if spec.max_parallel == Some(0) {
            return Err(Error::InvalidValue {
                at: self.at(None, "maxParallel"),
                message: "must be at least 1".into(),
            });
        }
        self.check_names()?;
        self.check_guards()
    }

    /// The plan deadline: a humantime duration, or `${ params.<name> }` naming a workflow param whose value is
    /// one (e.g. a ceremony's `spec.genesis.maxCeremonyDuration`), so the object decides it without the
    /// controller knowing the workflow.
    pub(super) fn deadline(&self) -> Result<Option<Duration>> {
        let Some(text) = self.def.spec.deadline.as_deref() else {
            return Ok(None);
        };
        let Some(name) = text
            .trim()
            .strip_prefix("${")
            .and_then(|t| t.strip_suffix('}'))
            .and_then(|t| t.trim().strip_prefix("params."))
            .map(str::trim)
        else {
            return self.duration(None, "deadline", Some(text));
        };
        if !self.def.spec.params.contains_key(name) {
            return Err(Error::InvalidReference {
                at: self.at(None, "deadline"),
                message: format!("unknown workflow param `{name}`{}", self.declared_params()),
            });
        }
        if self.mode == Mode::Static {
            return Ok(None);
        }
        match self.inputs.params.get(name) {
            Some(Value::String(value)) => self.duration(None, "deadline", Some(value)),
            Some(other) => Err(Error::InvalidDuration {
                at: self.at(None, "deadline"),
                value: other.to_string(),
                message: format!("workflow param `{name}` must be a duration string"),
            }),
            None => Err(Error::MissingParam {
                at: self.at(None, "deadline"),
                param: name.to_owned(),
            }),
        }
    }

    /// Parses an optional humantime duration; zero is rejected.
    pub(super) fn duration(
        &self,
        task: Option<&str>,
        field: &str,
        text: Option<&str>,
    ) -> Result<Option<Duration>> {
        let Some(text) = text else { return Ok(None) };
        let invalid = |message: String| Error::InvalidDuration {
            at: self.at(task, field),
            value: text.to_owned(),
            message,
        };
        let duration = Duration::parse(text).map_err(|e| invalid(e.to_string()))?;
        if duration.is_zero() {
            return Err(invalid("must be greater than zero".into()));
        }
        Ok(Some(duration))
    }

    fn check_names(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for task in self.def.spec.tasks.iter().chain(&self.def.spec.finally) {
            if !valid_name(&task.name) {
                return Err(Error::InvalidName {
                    at: self.at(Some(&task.name), "name"),
                    name: task.name.clone(),
                });
            }
            if !seen.insert(task.name.as_str()) {
                return Err(Error::DuplicateTask {
                    at: self.at(Some(&task.name), "name"),
                    name: task.name.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_guards(&self) -> Result<()> {
        let spec = &self.def.spec;
        for key in self.inputs.when.keys() {
            let (name, _) = split_run_name(key);
            let guarded = spec
                .tasks
                .iter()
                .chain(&spec.finally)
                .any(|t| t.name == name && t.when.is_some());
            if !guarded {
                return Err(Error::UnexpectedGuard {
                    at: self.at(Some(key), "when"),
                });
            }
        }
        Ok(())
    }

    pub(super) fn retry(&self, task: &str, spec: Option<&RetrySpec>) -> Result<Option<RetryPolicy>> {
        let Some(spec) = spec else { return Ok(None) };
        let invalid = |field: &str, message: &str| Error::InvalidValue {
            at: self.at(Some(task), field),
            message: message.into(),
        };
        let mut policy = RetryPolicy::default();
        if let Some(max_attempts) = spec.max_attempts {
            if max_attempts == 0 {
                return Err(invalid("retry.maxAttempts", "must be at least 1"));
            }
            policy.max_attempts = max_attempts;
        }
        if let Some(backoff) = &spec.backoff {
            if let Some(initial) =
                self.duration(Some(task), "retry.backoff.initial", backoff.initial.as_deref())?
            {
                policy.initial = initial;
            }
            if let Some(max) = self.duration(Some(task), "retry.backoff.max", backoff.max.as_deref())? {
                policy.max = max;
            }
            if let Some(factor) = backoff.factor {
                if !factor.is_finite() || factor < 1.0 {
                    return Err(invalid(
                        "retry.backoff.factor",
                        "must be a finite number of at least 1",
                    ));
                }
                policy.factor = factor;
            }
            if policy.initial > policy.max {
                return Err(invalid(
                    "retry.backoff.initial",
                    "is longer than retry.backoff.max",
                ));
            }
        }
        if let Some(jitter) = spec.jitter {
            if !(0.0..=1.0).contains(&jitter) {
                return Err(invalid("retry.jitter", "must be between 0 and 1"));
            }
            policy.jitter = jitter;
        }
        if let Some(classes) = &spec.retry_on {
            policy.retry_on.clear();
            for class in classes {
                if !policy.retry_on.contains(class) {
                    policy.retry_on.push(*class);
                }
            }
        }
        Ok((policy != RetryPolicy::default()).then_some(policy))
    }
}

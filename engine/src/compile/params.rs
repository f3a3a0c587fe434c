//! A task's params and target at compile time: workflow params (`${ params.… }`) substituted,
//! run-time references (`${ item }`, `${ tasks.<task>.outputs.<key> }`) checked and left in place,
//! and the result validated against the task type's schema.

use serde_json::Value;

use super::graph::Graph;
use super::{Cx, Error, Mode, Result};
use crate::definition::TaskSpec;
use crate::reference::{Ref, lookup, rewrite};

impl Cx<'_> {
    /// The params of the task at `position` of `graph`, substituted and checked against `schema`.
    pub(super) fn params(
        &self,
        graph: &Graph<'_>,
        position: usize,
        task: &TaskSpec,
        schema: &Value,
    ) -> Result<Value> {
        let name = task.name.as_str();
        let mut params = Value::Object(task.params.clone());
        let mut resolve = |reference: &Ref<'_>| self.resolve_compile_time(graph, position, task, reference);
        rewrite(&mut params, &mut String::new(), &mut resolve).map_err(|(pointer, message)| {
            Error::InvalidReference {
                at: self.at(Some(name), &format!("params{pointer}")),
                message,
            }
        })?;
        self.schemas
            .validate(&task.task_type, schema, &params)
            .map_err(|v| Error::InvalidParams {
                at: self.at(
                    Some(name),
                    &format!("params{}", if v.pointer == "/" { "" } else { &v.pointer }),
                ),
                task_type: task.task_type.clone(),
                pointer: v.pointer,
                message: v.message,
            })?;
        Ok(params)
    }

    /// The task's `target` with workflow params substituted (outputs are not allowed there).
    pub(super) fn target(
        &self,
        graph: &Graph<'_>,
        position: usize,
        task: &TaskSpec,
    ) -> Result<Option<String>> {
        let Some(template) = &task.target else {
            return Ok(None);
        };
        let mut value = Value::String(template.clone());
        let mut resolve = |reference: &Ref<'_>| match reference {
            Ref::Output { .. } => Err("a target cannot use task outputs".to_owned()),
            other => self.resolve_compile_time(graph, position, task, other),
        };
        rewrite(&mut value, &mut String::new(), &mut resolve).map_err(|(_, message)| {
            Error::InvalidReference {
                at: self.at(Some(&task.name), "target"),
                message,
            }
        })?;
        Ok(Some(match value {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    }

    /// Resolves what can be resolved at compile time (workflow params) and checks the rest.
    fn resolve_compile_time(
        &self,
        graph: &Graph<'_>,
        position: usize,
        task: &TaskSpec,
        reference: &Ref<'_>,
    ) -> std::result::Result<Option<Value>, String> {
        match reference {
            Ref::Param { name, .. } if self.mode == Mode::Static => {
                if self.def.spec.params.contains_key(*name) {
                    Ok(None)
                } else {
                    Err(format!(
                        "unknown workflow param `{name}`{}",
                        self.declared_params()
                    ))
                }
            }
            Ref::Param { name, path } => {
                let root = self
                    .inputs
                    .params
                    .get(*name)
                    .ok_or_else(|| format!("unknown workflow param `{name}`"))?;
                let value = lookup(root, path)
                    .ok_or_else(|| format!("workflow param `{name}` has no field `{}`", path.join(".")))?;
                if contains_reference(value) {
                    return Err(format!(
                        "the value of workflow param `{name}` contains `${{`, which is reserved"
                    ));
                }
                Ok(Some(value.clone()))
            }
            Ref::Item if task.for_each.is_some() => Ok(None),
            Ref::Item => Err("`${ item }` is only available in a task with `forEach`".into()),
            Ref::Output {
                task: upstream,
                all,
                key,
                ..
            } => {
                let Some(&up) = graph.index.get(upstream) else {
                    return Err(format!(
                        "`tasks.{upstream}.outputs.{key}` names no task of this stage"
                    ));
                };
                if !graph.is_upstream(position, up) {
                    return Err(format!(
                        "task `{upstream}` is not a dependency (direct or indirect) of this task, so its outputs may not exist yet"
                    ));
                }
                match (&graph.tasks[up].for_each, *all) {
                    (None, true) => Err(format!(
                        "`tasks.{upstream}[*]` needs `{upstream}` to have `forEach`"
                    )),
                    (Some(list), false) if task.for_each.as_ref() != Some(list) => Err(format!(
                        "task `{upstream}` runs once per item of `{list}`: use `tasks.{upstream}[*].outputs.{key}` \
                         for the list of outputs, or give this task `forEach: {list}`"
                    )),
                    _ => Ok(None),
                }
            }
        }
    }
}

fn contains_reference(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(contains_reference),
        Value::Object(map) => map.values().any(contains_reference),
        _ => false,
    }
}

//! One stage's tasks become [`PlannedTask`]s: the task type must be registered, `forEach`
//! expands into one run per item of a list param, `when` decisions mark runs skipped, and params,
//! target, timeout and retry are compiled (see `params` and `settings`).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::graph::Graph;
use super::{Cx, Error, Guard, Mode, Result};
use crate::definition::TaskSpec;
use crate::plan::{MAX_ERROR_MESSAGE_BYTES, PlannedTask, TaskRun, truncate};
use crate::registry::TaskTypeRegistry;

impl Cx<'_> {
    /// Compiles one stage (normal tasks, or finally tasks when `outer` holds the normal ones).
    pub(super) fn stage(
        &self,
        tasks: &[TaskSpec],
        outer: Option<&[TaskSpec]>,
        registry: &(impl TaskTypeRegistry + ?Sized),
    ) -> Result<Vec<PlannedTask>> {
        let graph = Graph::new(self, tasks, outer)?;
        tasks
            .iter()
            .enumerate()
            .map(|(i, task)| self.task(&graph, i, task, registry))
            .collect()
    }

    fn task(
        &self,
        graph: &Graph<'_>,
        position: usize,
        task: &TaskSpec,
        registry: &(impl TaskTypeRegistry + ?Sized),
    ) -> Result<PlannedTask> {
        let name = task.name.as_str();
        let schema = registry
            .params_schema(&task.task_type)
            .ok_or_else(|| Error::UnknownTaskType {
                at: self.at(Some(name), "type"),
                task_type: task.task_type.clone(),
            })?;
        let items = self.items(task)?;
        let timeout = self.duration(Some(name), "timeout", task.timeout.as_deref())?;
        // The task's own, else its type's default (which beats the plan's: a type that declares one, such as a
        // watch-backed wait, must not be polled at a workflow's short round).
        let poll_interval = self
            .duration(Some(name), "pollInterval", task.poll_interval.as_deref())?
            .or_else(|| registry.default_poll_interval(&task.task_type));
        let retry = self.retry(name, task.retry.as_ref())?;
        let params = self.params(graph, position, task, schema)?;
        let target = self.target(graph, position, task)?;
        let runs = match items {
            Some(items) => items
                .into_iter()
                .map(|item| self.initial_run(task, Some(item)))
                .collect::<Result<Vec<_>>>()?,
            None => vec![self.initial_run(task, None)?],
        };
        Ok(PlannedTask {
            name: task.name.clone(),
            task_type: task.task_type.clone(),
            for_each: task.for_each.clone(),
            target,
            depends_on: graph.deps[position]
                .iter()
                .map(|&i| graph.tasks[i].name.clone())
                .collect(),
            params: Arc::new(params),
            retry,
            timeout,
            poll_interval,
            settled: None,
            runs,
        })
    }

    /// The items of a `forEach` task, as strings.
    fn items(&self, task: &TaskSpec) -> Result<Option<Vec<String>>> {
        let Some(param) = &task.for_each else {
            return Ok(None);
        };
        let invalid = |message: String| Error::InvalidForEach {
            at: self.at(Some(&task.name), "forEach"),
            message,
        };
        if self.mode == Mode::Static {
            return if self.def.spec.params.contains_key(param) {
                Ok(Some(Vec::new()))
            } else {
                Err(invalid(format!(
                    "`{param}` is not a declared workflow param{}",
                    self.declared_params()
                )))
            };
        }
        let value = self
            .inputs
            .params
            .get(param)
            .ok_or_else(|| invalid(format!("workflow param `{param}` has no resolved value")))?;
        let list = value
            .as_array()
            .ok_or_else(|| invalid(format!("workflow param `{param}` is not a list")))?;
        let mut items = Vec::with_capacity(list.len());
        let mut seen = HashSet::with_capacity(list.len());
        for value in list {
            let item = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                other => {
                    return Err(invalid(format!(
                        "item {other} of `{param}` is not a string, number or boolean"
                    )));
                }
            };
            if item.is_empty() || item.len() > 253 || item.contains(['[', ']']) || item.contains("${") {
                return Err(invalid(format!(
                    "item `{item}` of `{param}` is empty, too long or contains `[`, `]` or `${{`"
                )));
            }
            if !seen.insert(item.clone()) {
                return Err(invalid(format!("item `{item}` of `{param}` is repeated")));
            }
            items.push(item);
        }
        Ok(Some(items))
    }

    fn initial_run(&self, task: &TaskSpec, item: Option<String>) -> Result<TaskRun> {
        let mut run = TaskRun {
            item,
            ..TaskRun::default()
        };
        if task.when.is_some() {
            let run_name = match &run.item {
                Some(item) => format!("{}[{item}]", task.name),
                None => task.name.clone(),
            };
            let guard = self
                .inputs
                .when
                .get(&run_name)
                .or_else(|| self.inputs.when.get(&task.name))
                .or((self.mode == Mode::Static).then_some(&Guard::Run))
                .ok_or_else(|| Error::MissingGuard {
                    at: self.at(Some(&run_name), "when"),
                })?;
            if let Guard::Skip(reason) = guard {
                run.skip = true;
                run.reason = Some(truncate(format!("when: {reason}"), MAX_ERROR_MESSAGE_BYTES));
            }
        }
        Ok(run)
    }
}

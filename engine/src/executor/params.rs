//! Parameter resolution: a run's params with `${ item }` and upstream output references
//! substituted when it starts ([`resolve_params`]), and the same for the operator's later
//! calls about a run ([`run_params`]).

use std::sync::Arc;

use serde_json::Value;

use super::graph::{Graph, graph};
use super::{Pos, section};
use crate::plan::{Plan, TaskRun, TaskState, split_run_name};
use crate::reference::{Ref, has_reference, lookup, rewrite};

/// The params of run `run` (`task` or `task[item]`) with `${ item }` and output references substituted, as
/// its `StartTask` effect carried them: for the operator's `PollTask` and `CancelTask` calls, which may need
/// them after a restart. `None` for an unknown run; `Some(Err)` when a reference cannot be resolved.
pub fn run_params(plan: &mut Plan, run: &str) -> Option<Result<Arc<Value>, String>> {
    let graph = graph(plan);
    let (name, item) = split_run_name(run);
    let (s, t) = graph.find(plan, name)?;
    let r = section(plan, s)[t]
        .runs
        .iter()
        .position(|x| x.item.as_deref() == item)?;
    Some(resolve_params(plan, &graph, (s, t, r)))
}

/// The run's params with `${ item }` and output references substituted.
pub(super) fn resolve_params(plan: &Plan, graph: &Graph, (s, t, r): Pos) -> Result<Arc<Value>, String> {
    let tasks = section(plan, s);
    let task = &tasks[t];
    if !graph.is_dynamic(plan, s, t) {
        return Ok(Arc::clone(&task.params));
    }
    let mut params = Value::clone(&task.params);
    let item = task.runs[r].item.as_deref();
    let mut resolve = |reference: &Ref<'_>| -> Result<Option<Value>, String> {
        match reference {
            Ref::Item => item
                .map(|i| Some(Value::String(i.to_owned())))
                .ok_or_else(|| "no item for `${ item }`".into()),
            Ref::Param { name, .. } => Err(format!(
                "workflow param `{name}` was not substituted at compile time"
            )),
            Ref::Output {
                task: upstream,
                all,
                key,
                path,
            } => {
                let Some((us, ut)) = graph.find(plan, upstream).filter(|&(us, _)| us == s) else {
                    return Err(format!("no task `{upstream}` in this stage"));
                };
                debug_assert_eq!(us, s);
                let up = &tasks[ut];
                let read = |run: &TaskRun| -> Result<Value, String> {
                    match run.state {
                        TaskState::Skipped => Ok(Value::Null),
                        TaskState::Succeeded => {
                            let outputs = run.outputs.as_ref().unwrap_or(&Value::Null);
                            outputs
                                .get(*key)
                                .and_then(|value| lookup(value, path))
                                .cloned()
                                .ok_or_else(|| format!("task `{upstream}` finished without output `{key}`"))
                        }
                        other => Err(format!("task `{upstream}` is {other:?}, not Succeeded")),
                    }
                };
                if *all {
                    return up
                        .runs
                        .iter()
                        .map(read)
                        .collect::<Result<Vec<_>, _>>()
                        .map(|v| Some(Value::Array(v)));
                }
                let index = if up.for_each.is_some() { r } else { 0 };
                let run = up
                    .runs
                    .get(index)
                    .ok_or_else(|| format!("task `{upstream}` has no run {index}"))?;
                read(run).map(Some)
            }
        }
    };
    rewrite(&mut params, &mut String::new(), &mut resolve)
        .map_err(|(pointer, message)| format!("cannot resolve params{pointer}: {message}"))?;
    Ok(Arc::new(params))
}

pub(super) fn contains_reference(value: &Value) -> bool {
    match value {
        Value::String(s) => has_reference(s),
        Value::Array(items) => items.iter().any(contains_reference),
        Value::Object(map) => map.values().any(contains_reference),
        _ => false,
    }
}

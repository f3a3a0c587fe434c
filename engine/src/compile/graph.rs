//! The dependency graph of one stage: `dependsOn` resolved to positions (unknown names and
//! finally tasks reaching into normal ones are errors), as a petgraph graph that is checked for
//! cycles (the error names the cycle) and answers "is this task upstream of that one" for output
//! references.

use std::collections::HashMap;

use petgraph::algo::{astar, has_path_connecting, tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use super::{Cx, Error, Result};
use crate::definition::TaskSpec;

/// One stage's tasks with their dependencies resolved.
pub(super) struct Graph<'a> {
    pub(super) tasks: &'a [TaskSpec],
    /// Task name -> position in `tasks`.
    pub(super) index: HashMap<&'a str, usize>,
    /// Per task: the positions of its dependencies, deduplicated, in declaration order.
    pub(super) deps: Vec<Vec<usize>>,
    /// The same dependencies as a graph (edges task -> dependency).
    dag: DiGraph<(), ()>,
}

impl<'a> Graph<'a> {
    /// Whether `ancestor` is reachable from `task` through dependencies.
    pub(super) fn is_upstream(&self, task: usize, ancestor: usize) -> bool {
        task != ancestor
            && has_path_connecting(&self.dag, NodeIndex::new(task), NodeIndex::new(ancestor), None)
    }

    /// Resolves the `dependsOn` of `tasks` (a stage; `outer` holds the normal tasks when the stage
    /// is `finally`) and checks that they form no cycle.
    pub(super) fn new(cx: &Cx<'_>, tasks: &'a [TaskSpec], outer: Option<&[TaskSpec]>) -> Result<Self> {
        let index: HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let deps = tasks
            .iter()
            .map(|task| resolve(cx, &index, task, outer))
            .collect::<Result<Vec<_>>>()?;
        let mut dag = DiGraph::<(), ()>::with_capacity(tasks.len(), deps.iter().map(Vec::len).sum());
        for _ in tasks {
            dag.add_node(());
        }
        for (task, own) in deps.iter().enumerate() {
            for &dep in own {
                dag.add_edge(NodeIndex::new(task), NodeIndex::new(dep), ());
            }
        }
        if let Some(cycle) = find_cycle(&dag) {
            let names: Vec<String> = cycle.iter().map(|&i| tasks[i].name.clone()).collect();
            return Err(Error::Cycle {
                at: cx.at(Some(&names[0]), "dependsOn"),
                cycle: names,
            });
        }
        Ok(Self {
            tasks,
            index,
            deps,
            dag,
        })
    }
}

/// The positions of `task`'s dependencies, deduplicated.
fn resolve(
    cx: &Cx<'_>,
    index: &HashMap<&str, usize>,
    task: &TaskSpec,
    outer: Option<&[TaskSpec]>,
) -> Result<Vec<usize>> {
    let mut own = Vec::with_capacity(task.depends_on.len());
    for dep in &task.depends_on {
        match index.get(dep.as_str()) {
            Some(&i) if !own.contains(&i) => own.push(i),
            Some(_) => {}
            None if outer.is_some_and(|o| o.iter().any(|t| &t.name == dep)) => {
                return Err(Error::FinallyDependsOnTask {
                    at: cx.at(Some(&task.name), "dependsOn"),
                    dependency: dep.clone(),
                });
            }
            None => {
                return Err(Error::UnknownDependency {
                    at: cx.at(Some(&task.name), "dependsOn"),
                    dependency: dep.clone(),
                });
            }
        }
    }
    Ok(own)
}

/// A cycle in `dag` (edges task -> dependency), as task indices with the first repeated last:
/// it starts at the first task (in declaration order) that lies on a cycle and takes the
/// shortest way back to it, so the error is the same on every compile.
fn find_cycle(dag: &DiGraph<(), ()>) -> Option<Vec<usize>> {
    toposort(dag, None).err()?;
    let start = tarjan_scc(dag)
        .into_iter()
        .filter(|scc| scc.len() > 1 || dag.contains_edge(scc[0], scc[0]))
        .filter_map(|scc| scc.into_iter().min())
        .min()?;
    let back = dag
        .neighbors(start)
        .filter_map(|next| {
            if next == start {
                return Some((0, vec![start]));
            }
            astar(dag, next, |n| n == start, |_| 1usize, |_| 0)
        })
        .min()?;
    let mut cycle = vec![start.index()];
    cycle.extend(back.1.iter().map(|n| n.index()));
    Some(cycle)
}

//! The derived index of a plan's task graph: each section's dependency table (a petgraph
//! compressed sparse row graph), its topological order, the tasks with a timeout, and the
//! task-name lookup. It is a pure function of the plan's structure, built on the first
//! [`super::advance`] after a plan is read and cached in the plan (never serialised).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use foldhash::fast::FixedState;
use petgraph::csr::Csr;
use petgraph::graph::IndexType;
use petgraph::visit::{DfsPostOrder, IntoNodeIdentifiers, VisitMap};

use super::params::contains_reference;
use super::{FINALLY, MAIN};
use crate::plan::{Plan, PlannedTask};

/// Derived lookup structures over a plan's task graph, cached in the plan (never serialised).
/// Comparison and debug output ignore it: it is a pure function of the plan's structure.
#[derive(Clone, Default)]
pub(crate) struct Index(Option<Arc<Graph>>);

impl PartialEq for Index {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Index")
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Dep {
    pub(super) task: usize,
    /// Both tasks expanded over the same list: run `i` waits for run `i` only.
    pub(super) paired: bool,
}

/// The dependency graph of one section: an edge from each task to each task it depends on,
/// weighted `paired`. A compressed sparse row graph keeps a task's dependencies in one slice,
/// so the scheduling pass reads them as fast as a flat table.
#[derive(Debug, Default)]
pub(super) struct DepTable(Csr<(), bool>);

impl DepTable {
    /// `edges` holds `(task, dependency, paired)` grouped by task in ascending order; a task's
    /// dependencies are sorted and deduplicated here, as the sparse row format requires.
    fn new(len: usize, mut edges: Vec<(u32, u32, bool)>, offsets: &[usize]) -> Self {
        for window in offsets.windows(2) {
            edges[window[0]..window[1]].sort_unstable_by_key(|&(_, dep, _)| dep);
        }
        edges.dedup_by_key(|&mut (task, dep, _)| (task, dep));
        let mut graph = Csr::from_sorted_edges(&edges).unwrap_or_else(|_| {
            // Unreachable: the edges were sorted and deduplicated just above.
            let mut graph = Csr::with_nodes(len);
            for &(task, dep, paired) in &edges {
                graph.add_edge(task, dep, paired);
            }
            graph
        });
        // Tasks after the last one with a dependency have no row yet.
        while graph.node_count() < len {
            graph.add_node(());
        }
        Self(graph)
    }

    pub(super) fn of(&self, task: usize) -> impl Iterator<Item = Dep> + Clone + '_ {
        let node = u32::try_from(task).unwrap_or(u32::MAX);
        self.0
            .neighbors_slice(node)
            .iter()
            .zip(self.0.edges_slice(node))
            .map(|(&dep, &paired)| Dep {
                task: dep.index(),
                paired,
            })
    }
}

#[derive(Debug)]
pub(super) struct Graph {
    pub(super) shape: [usize; 2],
    pub(super) deps: [DepTable; 2],
    /// Tasks of each section with every task after its dependencies (declaration order
    /// otherwise), so one pass sees the final state of a task's dependencies.
    pub(super) order: [Vec<usize>; 2],
    /// Tasks of each section that have a timeout (the only ones the timeout check visits).
    pub(super) timed: [Vec<usize>; 2],
    /// Per task of each section: whether its params hold run-time references to resolve.
    pub(super) dynamic: [Vec<bool>; 2],
    /// Task name -> (section, task). Hashed with foldhash's fixed-seed hasher: faster than SipHash on short
    /// names and deterministic; the keys are a compiled plan's task names, not attacker-chosen input.
    pub(super) names: HashMap<String, (usize, usize), FixedState>,
}

/// Depth-first post-order from each task in declaration order: dependencies first. Tolerates a
/// cycle in a corrupt journal (every task still appears once), which a topological sort would not.
fn topological_order(table: &DepTable) -> Vec<usize> {
    let graph = &table.0;
    let mut order = Vec::with_capacity(graph.node_count());
    let mut dfs = DfsPostOrder::empty(graph);
    for root in graph.node_identifiers() {
        if dfs.discovered.is_visited(&root) {
            continue;
        }
        dfs.move_to(root);
        while let Some(task) = dfs.next(graph) {
            order.push(task.index());
        }
    }
    order
}

impl Graph {
    fn build(plan: &Plan) -> Self {
        let mut names =
            HashMap::with_capacity_and_hasher(plan.tasks.len() + plan.finally.len(), FixedState::default());
        for (s, section) in [&plan.tasks, &plan.finally].into_iter().enumerate() {
            for (t, task) in section.iter().enumerate() {
                names.insert(task.name.clone(), (s, t));
            }
        }
        let deps_of = |section: &[PlannedTask], s: usize| -> DepTable {
            let mut edges = Vec::new();
            let mut offsets = Vec::with_capacity(section.len() + 1);
            offsets.push(0);
            for (t, task) in section.iter().enumerate() {
                for dep in &task.depends_on {
                    match names.get(dep) {
                        Some(&(ds, dt)) if ds == s => {
                            let other = &section[dt];
                            let paired = task.for_each.is_some()
                                && task.for_each == other.for_each
                                && task.runs.len() == other.runs.len();
                            edges.push((
                                t.try_into().unwrap_or(u32::MAX),
                                dt.try_into().unwrap_or(u32::MAX),
                                paired,
                            ));
                        }
                        _ => {
                            tracing::warn!(task = %task.name, dependency = %dep, "Ignoring unknown dependency in journal");
                        }
                    }
                }
                offsets.push(edges.len());
            }
            DepTable::new(section.len(), edges, &offsets)
        };
        let deps = [deps_of(&plan.tasks, MAIN), deps_of(&plan.finally, FINALLY)];
        let order = [topological_order(&deps[MAIN]), topological_order(&deps[FINALLY])];
        let timed_of = |tasks: &[PlannedTask]| -> Vec<usize> {
            tasks
                .iter()
                .enumerate()
                .filter(|(_, task)| task.timeout.is_some())
                .map(|(t, _)| t)
                .collect()
        };
        let timed = [timed_of(&plan.tasks), timed_of(&plan.finally)];
        let dynamic_of = |tasks: &[PlannedTask]| -> Vec<bool> {
            tasks.iter().map(|t| contains_reference(&t.params)).collect()
        };
        let dynamic = [dynamic_of(&plan.tasks), dynamic_of(&plan.finally)];
        Self {
            shape: [plan.tasks.len(), plan.finally.len()],
            deps,
            order,
            timed,
            dynamic,
            names,
        }
    }
}

pub(super) fn graph(plan: &mut Plan) -> Arc<Graph> {
    let shape = [plan.tasks.len(), plan.finally.len()];
    match &plan.index.0 {
        Some(graph) if graph.shape == shape => Arc::clone(graph),
        _ => {
            let graph = Arc::new(Graph::build(plan));
            plan.index = Index(Some(Arc::clone(&graph)));
            graph
        }
    }
}

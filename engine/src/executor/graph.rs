//! The derived index of a plan's task graph: each section's dependency table (a petgraph
//! compressed sparse row graph), its topological order, the tasks with a timeout, the
//! task-name lookup and which tasks' params need resolving. It is a pure function of the
//! plan's structure, built on the first [`super::advance`] after a plan is read and cached in
//! the plan (never serialised).
//!
//! # Cost of the first `advance`
//! A plan read from status has no index, so its first `advance` builds one. The build copies no
//! string and inspects no params:
//! - the name lookup is a hash table of task positions whose keys are compared against the
//!   plan's own names, not a map of cloned names;
//! - the topological order is the declaration order when every dependency points backwards
//!   (checked while the dependencies are resolved), and a depth-first post-order otherwise;
//! - whether a task's params hold run-time references is decided when one of its runs first
//!   starts, and remembered.
//!
//! What is left is bound by memory: right after deserialising, each task's fields and name are
//! cache misses (about 25 ns a task). Persisting the dependencies as positions in the journal
//! was measured and rejected: reading them back cost more than resolving the names
//! (`BENCHMARKS.md`, "Cold advance").

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use petgraph::csr::Csr;
use petgraph::graph::IndexType;
use petgraph::visit::{DfsPostOrder, IntoNodeIdentifiers, VisitMap};

use super::params::contains_reference;
use super::section;
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

/// Whether a task's params hold run-time references, decided on first use.
const UNKNOWN: u8 = 0;
const STATIC: u8 = 1;
const DYNAMIC: u8 = 2;

#[derive(Debug)]
pub(super) struct Graph {
    shape: [usize; 2],
    pub(super) deps: [DepTable; 2],
    /// Tasks of each section with every task after its dependencies (declaration order
    /// otherwise), so one pass sees the final state of a task's dependencies.
    pub(super) order: [Vec<usize>; 2],
    /// Tasks of each section that have a timeout (the only ones the timeout check visits).
    pub(super) timed: [Vec<usize>; 2],
    /// Per task of each section: `UNKNOWN`, `STATIC` or `DYNAMIC` (its params hold run-time
    /// references to resolve). Atomics only because the index is shared (`Arc`) between clones of
    /// a plan; the value is a pure function of the task's params, so racing writers agree.
    dynamic: [Vec<AtomicU8>; 2],
    names: Names,
}

/// Task name -> (section, task): a hash table of positions whose keys are the plan's own task
/// names. Hashed with foldhash's fixed-seed hasher: faster than SipHash on short names and
/// deterministic; the keys are a compiled plan's task names, not attacker-chosen input.
#[derive(Debug, Default)]
struct Names {
    table: HashTable<u32>,
    hasher: FixedState,
}

/// Section `s` and task `t` in one `u32`: the top bit is the section.
const FINALLY_BIT: u32 = 1 << 31;

fn pack(s: usize, t: usize) -> u32 {
    let t = u32::try_from(t).unwrap_or(FINALLY_BIT - 1) & !FINALLY_BIT;
    if s == 0 { t } else { t | FINALLY_BIT }
}

fn unpack(v: u32) -> (usize, usize) {
    (usize::from(v & FINALLY_BIT != 0), (v & !FINALLY_BIT) as usize)
}

impl Names {
    /// Every task name of both sections.
    fn of(plan: &Plan) -> Self {
        let mut names = Self::default();
        names.table.reserve(plan.tasks.len() + plan.finally.len(), |_| 0);
        for s in 0..2 {
            for t in 0..section(plan, s).len() {
                names.insert(plan, s, t);
            }
        }
        names
    }

    fn find(&self, plan: &Plan, name: &str) -> Option<(usize, usize)> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |&v| {
                let (s, t) = unpack(v);
                section(plan, s)[t].name == name
            })
            .map(|&v| unpack(v))
    }

    /// Adds task `t` of section `s` unless its name is already taken (a corrupt journal with a
    /// duplicate name: the first task keeps it).
    fn insert(&mut self, plan: &Plan, s: usize, t: usize) {
        let name = section(plan, s)[t].name.as_str();
        let hash = self.hasher.hash_one(name);
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hash,
            |&v| {
                let (s, t) = unpack(v);
                section(plan, s)[t].name == name
            },
            |&v| {
                let (s, t) = unpack(v);
                hasher.hash_one(section(plan, s)[t].name.as_str())
            },
        );
        if let hashbrown::hash_table::Entry::Vacant(entry) = entry {
            entry.insert(pack(s, t));
        }
    }
}

/// A task's position as a node id of the dependency table.
fn id(t: usize) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
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

/// One section's dependency table, topological order and timed tasks.
struct Section {
    deps: DepTable,
    order: Vec<usize>,
    timed: Vec<usize>,
}

/// The edge from task `t` to its dependency `dt` (both of `tasks`), with its `paired` weight.
fn edge(tasks: &[PlannedTask], t: usize, dt: usize) -> (u32, u32, bool) {
    let (task, other) = (&tasks[t], &tasks[dt]);
    let paired =
        task.for_each.is_some() && task.for_each == other.for_each && task.runs.len() == other.runs.len();
    (id(t), id(dt), paired)
}

impl Section {
    /// `edges` grouped by task in ascending order; `sorted` when every edge points backwards.
    fn new(
        tasks: &[PlannedTask],
        edges: Vec<(u32, u32, bool)>,
        offsets: &[usize],
        sorted: bool,
        timed: Vec<usize>,
    ) -> Self {
        let deps = DepTable::new(tasks.len(), edges, offsets);
        // Every dependency points backwards: declaration order is topological (and is what the
        // depth-first post-order would give).
        let order = if sorted {
            (0..tasks.len()).collect()
        } else {
            topological_order(&deps)
        };
        Self { deps, order, timed }
    }

    /// Section `s` by resolving each `dependsOn` entry through `names`: an entry that names no
    /// task of the section is ignored (with a warning).
    fn from_names(plan: &Plan, s: usize, names: &Names) -> Self {
        let tasks = section(plan, s);
        let mut edges = Vec::with_capacity(tasks.len());
        let mut offsets = Vec::with_capacity(tasks.len() + 1);
        offsets.push(0);
        let mut sorted = true;
        let mut timed = Vec::new();
        for (t, task) in tasks.iter().enumerate() {
            if task.timeout.is_some() {
                timed.push(t);
            }
            for dep in &task.depends_on {
                match names.find(plan, dep) {
                    Some((ds, dt)) if ds == s => {
                        sorted &= dt < t;
                        edges.push(edge(tasks, t, dt));
                    }
                    _ => {
                        tracing::warn!(task = %task.name, dependency = %dep, "Ignoring unknown dependency in journal");
                    }
                }
            }
            offsets.push(edges.len());
        }
        Self::new(tasks, edges, &offsets, sorted, timed)
    }
}

impl Graph {
    fn build(plan: &Plan) -> Self {
        let names = Names::of(plan);
        let main = Section::from_names(plan, 0, &names);
        let finally = Section::from_names(plan, 1, &names);
        let flags = |len: usize| (0..len).map(|_| AtomicU8::new(UNKNOWN)).collect();
        Self {
            shape: [plan.tasks.len(), plan.finally.len()],
            deps: [main.deps, finally.deps],
            order: [main.order, finally.order],
            timed: [main.timed, finally.timed],
            dynamic: [flags(plan.tasks.len()), flags(plan.finally.len())],
            names,
        }
    }

    /// The (section, task) named `name`.
    pub(super) fn find(&self, plan: &Plan, name: &str) -> Option<(usize, usize)> {
        self.names.find(plan, name)
    }

    /// Whether the params of task `t` of section `s` hold run-time references to resolve.
    pub(super) fn is_dynamic(&self, plan: &Plan, s: usize, t: usize) -> bool {
        let flag = &self.dynamic[s][t];
        match flag.load(Ordering::Relaxed) {
            STATIC => false,
            DYNAMIC => true,
            _ => {
                let dynamic = contains_reference(&section(plan, s)[t].params);
                flag.store(if dynamic { DYNAMIC } else { STATIC }, Ordering::Relaxed);
                dynamic
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::compile::{Inputs, compile};
    use crate::definition::WorkflowDefinition;
    use crate::registry::Registry;
    use crate::time::Timestamp;

    fn plan(yaml: &str) -> Plan {
        let definition = WorkflowDefinition::from_yaml("test.yaml", yaml).unwrap();
        let inputs = Inputs::new(uuid::Uuid::from_u128(7), Timestamp::from_unix_millis(0));
        compile(&definition, &inputs, &Registry::new().with_any_params("t")).unwrap()
    }

    /// The shortcut for a plan whose dependencies all point backwards gives what the general
    /// depth-first order gives; and a forward reference takes the general path.
    #[test]
    fn declaration_order_is_used_only_where_it_is_the_topological_order() {
        let backward = plan(
            "name: w\ntasks:\n  - {name: a, type: t}\n  - {name: b, type: t, dependsOn: [a]}\n  - {name: c, type: t}\n  - {name: d, type: t, dependsOn: [c, a]}\n",
        );
        let graph = Graph::build(&backward);
        assert_eq!(graph.order[0], vec![0, 1, 2, 3]);
        assert_eq!(graph.order[0], topological_order(&graph.deps[0]));
        let forward = plan(
            "name: w\ntasks:\n  - {name: a, type: t, dependsOn: [c]}\n  - {name: b, type: t}\n  - {name: c, type: t, dependsOn: [b]}\n",
        );
        let graph = Graph::build(&forward);
        assert_eq!(graph.order[0], vec![1, 2, 0]);
    }

    #[test]
    fn names_resolve_in_both_sections_and_only_there() {
        let plan = plan(
            "name: w\ntasks:\n  - {name: a, type: t}\n  - {name: b, type: t, dependsOn: [a]}\nfinally:\n  - {name: z, type: t}\n",
        );
        let graph = Graph::build(&plan);
        assert_eq!(graph.find(&plan, "a"), Some((0, 0)));
        assert_eq!(graph.find(&plan, "b"), Some((0, 1)));
        assert_eq!(graph.find(&plan, "z"), Some((1, 0)));
        assert_eq!(graph.find(&plan, "y"), None);
    }

    #[test]
    fn params_are_dynamic_only_with_run_time_references_whichever_is_asked_first() {
        let plan = plan(
            "name: w\ntasks:\n  - {name: a, type: t, params: {x: 1}}\n  - {name: b, type: t, dependsOn: [a], params: {x: '${ tasks.a.outputs.y }'}}\n",
        );
        let graph = Graph::build(&plan);
        for _ in 0..2 {
            assert!(graph.is_dynamic(&plan, 0, 1));
            assert!(!graph.is_dynamic(&plan, 0, 0));
        }
    }
}

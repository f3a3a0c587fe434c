//! Chaos (issue 11): the operator is killed again and again, at its failpoints (after a task start, after a
//! poll, before and after the status write, after the span export) and at random moments, over SeiNode inits,
//! an image update of each node and a genesis ceremony, while the sidecar simulator fails 30 % of first
//! executions and restarts now and then (losing its running tasks and its ready flag). Afterwards the simulator's
//! execution log must show at most one finished execution per task id (= per object, task and attempt), and
//! every plan must have ended: Succeeded, or Failed naming its task (a Failed node is retried through
//! `sei.io/retry`, so every node ends Running on the new image).
//!
//! Sizes come from the environment, so the same test is CI's small run and the heavy command:
//! `SEI_CHAOS_KILLS` (default 8; the negative run 30), `SEI_CHAOS_NODES` (3), `SEI_CHAOS_VALIDATORS` (2), `SEI_CHAOS_SEED`. The
//! heavy run: `hack/chaos.sh` (100 kills, 20 nodes, 10 validators). Both print a table.
//!
//! The negative run, `with_blind_submits_the_chaos_run_finds_duplicate_executions`, turns lookup-before-submit
//! off (failpoint `sidecar::skip-submit-lookup`): it must find duplicates, or the positive run proves nothing.

#![allow(clippy::unwrap_used, clippy::panic)] // a test scenario: any failure fails the test

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kube::ResourceExt as _;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use sei_crds::{SeiNode, SeiNodeDeployment};
use serde_json::{Value, json};

use common::{Operator, Rng, Sim, full_node_spec, seinode, setup};

/// The crash points of `operator/src/failpoints.rs` (its list, without the lookup breaker).
const POINTS: &[&str] = sei_operator::failpoints::CRASH_POINTS;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Config {
    kills: u64,
    nodes: u64,
    validators: u64,
    seed: u64,
    /// Lookup-before-submit off (the negative run).
    blind: bool,
}

#[derive(Default)]
struct Tally {
    crashes: BTreeMap<&'static str, u64>,
    random_kills: u64,
    sim_restarts: u64,
    retries: u64,
    control_plane_restarts: Vec<&'static str>,
}

/// Kills one control-plane process of the local cluster (`etcd`, `kube-apiserver`) and starts it again with
/// `hack/cluster.sh up` (which starts only what is missing), mid-plan.
fn restart_component(cluster_dir: &std::path::Path, component: &str) {
    let pid = std::fs::read_to_string(cluster_dir.join("pids").join(format!("{component}.pid"))).unwrap();
    let pid = pid.trim();
    assert!(
        std::process::Command::new("kill")
            .arg(pid)
            .status()
            .unwrap()
            .success()
    );
    // Wait until it is gone (the port must be free for the restart).
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = std::process::Command::new(sei_tests::workspace_root().join("hack").join("cluster.sh"))
        .arg("up")
        .env("SEI_CLUSTER_DIR", cluster_dir)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "restarting {component}: {}",
        String::from_utf8_lossy(&up.stderr)
    );
}

fn node_phase(n: &SeiNode) -> &'static str {
    common::phase(n)
}

/// Every plan summary of every object: (object, workflow, phase, failed task).
fn summaries(nodes: &[SeiNode], fleets: &[SeiNodeDeployment]) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for n in nodes {
        for s in &n.status.clone().unwrap_or_default().plan_history {
            all.push((n.name_any(), serde_json::to_value(s).unwrap()));
        }
    }
    for d in fleets {
        let status = serde_json::to_value(&d.status).unwrap();
        for s in status["planHistory"].as_array().cloned().unwrap_or_default() {
            all.push((d.name_any(), s));
        }
    }
    all
}

/// Retries a Failed node: a new value of `sei.io/retry`.
async fn retry(nodes: &kube::Api<SeiNode>, node: &SeiNode, retried: &mut BTreeMap<String, u32>) {
    let count = retried.entry(node.name_any()).or_default();
    *count += 1;
    nodes
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sei.io/retry": count.to_string()}}})),
        )
        .await
        .unwrap();
}

/// Sets `spec.image` of every standalone node to `seid:v<version>`.
async fn set_images(nodes: &kube::Api<SeiNode>, count: u64, version: u32) {
    for i in 0..count {
        nodes
            .patch(
                &format!("n{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"image": format!("seid:v{version}")}})),
            )
            .await
            .unwrap();
    }
}

/// One chaos run: its namespace, simulator, objects and what happened so far.
struct Run<'c> {
    config: &'c Config,
    ns: sei_tests::TestNamespace,
    sim: Sim,
    nodes: kube::Api<SeiNode>,
    fleets: kube::Api<SeiNodeDeployment>,
    rng: Rng,
    tally: Tally,
    /// The last value of `sei.io/retry` set on each node.
    retried: BTreeMap<String, u32>,
    /// The image version the nodes are asked to run.
    version: u32,
    /// `SEI_FAILPOINTS` of every life: the lookup turned off in the negative run.
    blind: String,
    /// Simulated task duration (ms) and share of first executions that fail (%).
    task_ms: u64,
    fail_percent: u64,
}

impl<'c> Run<'c> {
    /// The namespace, a simulator failing a share of first executions, the SeiNodes and the genesis fleet.
    async fn start(prefix: &str, config: &'c Config) -> Option<Self> {
        let ns = setup(prefix).await?;
        // The negative run makes the window wider (tasks end before a restarted operator repeats their start,
        // and more of them fail) so that it finds what a blind re-submit does in a few lives; the positive run
        // uses the 30 %.
        let (task_ms, fail_percent) = if config.blind { (50, 70) } else { (150, 30) };
        let sim = Sim::start(Duration::from_millis(task_ms), vec![]).await;
        // A share of first executions fail (chosen by a hash of the id); a re-executed id succeeds, so a
        // duplicate execution is visible in the log as two finished runs of one id.
        sim.fault(
            json!({"kind": "fail", "percent": fail_percent, "firstRun": true, "count": 1_000_000,
                         "error": "injected first-run failure"}),
        )
        .await;
        let nodes = ns.api::<SeiNode>();
        let fleets = ns.api::<SeiNodeDeployment>();
        for i in 0..config.nodes {
            let node = seinode(&format!("n{i}"), &full_node_spec("seid:v1"));
            nodes.create(&PostParams::default(), &node).await.unwrap();
        }
        if config.validators > 0 {
            let fleet = common::genesis_fleet("val", i64::try_from(config.validators).unwrap(), "10m");
            fleets.create(&PostParams::default(), &fleet).await.unwrap();
        }
        let blind = if config.blind {
            format!("{}=return;", sei_tasks::catalog::sidecar::SKIP_LOOKUP_FAILPOINT)
        } else {
            String::new()
        };
        Some(Self {
            config,
            ns,
            sim,
            nodes,
            fleets,
            rng: Rng::seeded(config.seed),
            tally: Tally::default(),
            retried: BTreeMap::new(),
            version: 1,
            blind,
            task_ms,
            fail_percent,
        })
    }

    /// `SEI_FAILPOINTS` for the next life: one crash point armed with some probability, or none (the life
    /// then ends in a random SIGKILL). The negative run arms the point where a start is performed but not
    /// journaled, the window the lookup closes.
    fn failpoints(&mut self) -> String {
        let point = if self.config.blind {
            "drive::after-start"
        } else {
            POINTS[usize::try_from(self.rng.between(0, POINTS.len() as u64 - 1)).unwrap()]
        };
        if !(self.config.blind || self.rng.between(0, 3) > 0) {
            return self.blind.clone();
        }
        let percent = if self.config.blind {
            self.rng.between(8, 20)
        } else {
            self.rng.between(10, 40)
        };
        format!("{}{point}={percent}%return", self.blind)
    }

    /// One operator life of 0.5-3 s, ended by a failpoint crash or a SIGKILL, tallied.
    async fn life(&mut self) {
        let failpoints = self.failpoints();
        let mut op = Operator::start(
            self.ns.env(),
            self.ns.name(),
            &self.sim,
            &[
                ("SEI_FAILPOINTS", failpoints.as_str()),
                ("SEI_LEADER_ELECT", "false"),
            ],
        );
        let until = Instant::now() + Duration::from_millis(self.rng.between(500, 3000));
        let mut crashed = None;
        while Instant::now() < until && crashed.is_none() {
            crashed = op.exit_status();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        match crashed {
            Some(status) if status.code() == Some(sei_operator::failpoints::CRASH_EXIT_CODE) => {
                let log = op.log();
                let hit = POINTS
                    .iter()
                    .find(|p| log.contains(&format!("failpoint {p}: crashing")))
                    .copied()
                    .unwrap_or("unknown");
                *self.tally.crashes.entry(hit).or_default() += 1;
            }
            Some(status) => panic!(
                "the operator exited with {status} (not a failpoint crash):\n{}",
                op.log()
            ),
            None => {
                op.kill();
                self.tally.random_kills += 1;
            }
        }
    }

    /// Between lives: the control plane restarts (heavy run), a sidecar restarts now and then, a user retries
    /// Failed nodes, and at each quarter every node gets a newer image, so every life has work to kill.
    async fn between_lives(&mut self, kill: u64, control_plane: bool) {
        let kills = self.config.kills;
        if control_plane && (kill == kills / 3 || kill == 2 * kills / 3) {
            let component = if kill == kills / 3 {
                "kube-apiserver"
            } else {
                "etcd"
            };
            restart_component(self.ns.env().kubeconfig.parent().unwrap(), component);
            self.tally.control_plane_restarts.push(component);
        }
        // A sidecar restart loses its running tasks and its ready flag.
        if self.rng.between(0, 4) == 0 {
            let target = format!("n{}", self.rng.between(0, self.config.nodes.max(1) - 1));
            let url = format!(
                "{}/admin/nodes/{}/{target}/restart",
                self.sim.url(),
                self.ns.name()
            );
            let _ = reqwest::Client::new().post(url).send().await;
            self.tally.sim_restarts += 1;
        }
        for n in self.nodes.list(&ListParams::default()).await.unwrap().items {
            if n.name_any().starts_with('n')
                && node_phase(&n) == "Failed"
                && n.status.as_ref().is_some_and(|s| s.plan.is_none())
            {
                retry(&self.nodes, &n, &mut self.retried).await;
                self.tally.retries += 1;
            }
        }
        // Node-update plans under fire, superseded when the image moves again mid-update.
        let quarter = (kills / 4).max(1);
        if kill > 0 && kill.is_multiple_of(quarter) && self.version < 4 {
            self.version += 1;
            set_images(&self.nodes, self.config.nodes, self.version).await;
        }
    }

    /// Whether every standalone node is Running the last image with no plan (retrying Failed ones), and the
    /// fleet is Ready or Failed with no plan.
    async fn settled(&mut self, final_image: &str) -> (bool, Vec<SeiNode>) {
        let list = self.nodes.list(&ListParams::default()).await.unwrap().items;
        let standalone: Vec<SeiNode> = list
            .into_iter()
            .filter(|n| n.name_any().starts_with('n'))
            .collect();
        let mut done = true;
        for n in &standalone {
            let status = n.status.clone().unwrap_or_default();
            match node_phase(n) {
                "Failed" if status.plan.is_none() => {
                    retry(&self.nodes, n, &mut self.retried).await;
                    self.tally.retries += 1;
                    done = false;
                }
                "Running"
                    if status.plan.is_none() && status.current_image.as_deref() == Some(final_image) => {}
                _ => done = false,
            }
        }
        if self.config.validators > 0 {
            let d = self.fleets.get("val").await.unwrap();
            let s = serde_json::to_value(&d.status).unwrap();
            if !(s["phase"] == "Ready" || s["phase"] == "Failed") || !s["plan"].is_null() {
                done = false;
            }
        }
        (done, standalone)
    }

    /// The calm after: one operator without failpoints (lookup still off in the negative run) finishes
    /// everything; Failed nodes are retried by annotation, so the end state is every node Running on the last
    /// image. The negative run only has to show the duplicates: it does not wait for every plan to end (with
    /// the lookup off and most first executions failing, that can take long).
    async fn settle(&mut self) {
        if self.version == 1 {
            self.version = 2;
            set_images(&self.nodes, self.config.nodes, self.version).await;
        }
        let final_image = format!("seid:v{}", self.version);
        let _op = Operator::start(
            self.ns.env(),
            self.ns.name(),
            &self.sim,
            &[
                ("SEI_FAILPOINTS", self.blind.as_str()),
                ("SEI_LEADER_ELECT", "false"),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let (done, standalone) = self.settled(&final_image).await;
            if done || (self.config.blind && Instant::now() + Duration::from_secs(230) > deadline) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plans still not finished after the chaos: {:#?}",
                standalone
                    .iter()
                    .map(|n| (
                        n.name_any(),
                        node_phase(n),
                        n.status
                            .as_ref()
                            .and_then(|s| s.plan.as_ref())
                            .map(|p| p.workflow.clone())
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Counts the ids that ran to their end more than once, checks that every Failed plan names its task or
    /// reason, and prints the table.
    async fn report(&self, prefix: &str, started: Instant) -> (u64, String) {
        let log: Vec<Value> = reqwest::get(format!("{}/admin/executions", self.sim.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let duplicates: Vec<&Value> = log
            .iter()
            .filter(|e| e["finished"].as_u64().unwrap_or(0) > 1)
            .collect();
        let node_list = self.nodes.list(&ListParams::default()).await.unwrap().items;
        let fleet_list = self.fleets.list(&ListParams::default()).await.unwrap().items;
        let plans = summaries(&node_list, &fleet_list);
        let mut by_phase: BTreeMap<String, u64> = BTreeMap::new();
        for (object, s) in &plans {
            let phase = s["phase"].as_str().unwrap_or("?").to_owned();
            if phase == "Failed" {
                assert!(
                    s["failedTask"].as_str().is_some_and(|t| !t.is_empty())
                        || s["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "a Failed plan of {object} names neither its task nor a reason: {s}"
                );
            }
            *by_phase.entry(phase).or_default() += 1;
        }
        let (config, tally) = (self.config, &self.tally);
        let mut rows: Vec<(String, String)> =
            vec![("operator lives (kills)".into(), config.kills.to_string())];
        for (p, n) in &tally.crashes {
            rows.push((format!("crashes at failpoint {p}"), n.to_string()));
        }
        let restarts = if tally.control_plane_restarts.is_empty() {
            "none".to_owned()
        } else {
            tally.control_plane_restarts.join(", ")
        };
        let phases: Vec<String> = by_phase.iter().map(|(p, n)| format!("{p} {n}")).collect();
        rows.extend([
            (
                "failpoint crashes, total".into(),
                tally.crashes.values().sum::<u64>().to_string(),
            ),
            ("random SIGKILLs".into(), tally.random_kills.to_string()),
            ("sidecar restarts".into(), tally.sim_restarts.to_string()),
            ("control plane restarted mid-run".into(), restarts),
            (
                "SeiNodes / validators".into(),
                format!("{} / {}", config.nodes, config.validators),
            ),
            (
                "retries of Failed nodes (sei.io/retry)".into(),
                tally.retries.to_string(),
            ),
            (
                "plans finished".into(),
                format!("{} ({})", plans.len(), phases.join(", ")),
            ),
            (
                "sidecar tasks / first executions failed".into(),
                format!("{} ms / {} %", self.task_ms, self.fail_percent),
            ),
            ("task ids executed".into(), log.len().to_string()),
            (
                "ids executed to the end more than once (duplicates)".into(),
                duplicates.len().to_string(),
            ),
            (
                "wall time".into(),
                format!("{:.0} s", started.elapsed().as_secs_f64()),
            ),
        ]);
        let lookup = if config.blind { "OFF" } else { "on" };
        let mut table = format!(
            "chaos run ({prefix}): seed {}, lookup-before-submit {lookup}\n",
            config.seed
        );
        table.push_str("| measure | value |\n|---|---|\n");
        for (measure, value) in rows {
            let _ = writeln!(table, "| {measure} | {value} |");
        }
        for d in duplicates.iter().take(5) {
            let _ = writeln!(table, "duplicate: {d}");
        }
        println!("{table}");
        (u64::try_from(duplicates.len()).unwrap(), table)
    }
}

/// The whole run: lives, then the calm, then the report (duplicates, table); `None` without a cluster.
async fn chaos(prefix: &str, config: &Config) -> Option<(u64, String)> {
    let started = Instant::now();
    let mut run = Run::start(prefix, config).await?;
    // `SEI_CHAOS_CONTROL_PLANE=1` (the heavy command): the API server, then etcd, restarted once each mid-run.
    let control_plane = std::env::var("SEI_CHAOS_CONTROL_PLANE").is_ok_and(|v| v == "1");
    for kill in 0..config.kills {
        run.life().await;
        run.between_lives(kill, control_plane).await;
    }
    run.settle().await;
    Some(run.report(prefix, started).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_kills_at_failpoints_and_sidecar_faults_never_run_an_attempt_twice() {
    let config = Config {
        kills: env_or("SEI_CHAOS_KILLS", 8),
        nodes: env_or("SEI_CHAOS_NODES", 3),
        validators: env_or("SEI_CHAOS_VALIDATORS", 2),
        seed: env_or("SEI_CHAOS_SEED", 11),
        blind: false,
    };
    let Some((duplicates, table)) = chaos("e2e-chaos", &config).await else {
        return;
    };
    assert_eq!(duplicates, 0, "an attempt executed twice:\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_blind_submits_the_chaos_run_finds_duplicate_executions() {
    if std::env::var("SEI_CHAOS_SKIP_NEGATIVE").is_ok() {
        return;
    }
    let config = Config {
        kills: env_or("SEI_CHAOS_KILLS", 30),
        nodes: env_or("SEI_CHAOS_NODES", 3),
        validators: 0,
        seed: env_or("SEI_CHAOS_SEED", 11),
        blind: true,
    };
    let Some((duplicates, table)) = chaos("e2e-chaos-blind", &config).await else {
        return;
    };
    assert!(
        duplicates > 0,
        "with lookup-before-submit off the chaos run must find duplicates:\n{table}"
    );
}

//! # sei-engine: the durable workflow engine
//!
//! Workflows are DAGs of tasks declared in YAML. This crate parses them ([`WorkflowDefinition`]),
//! compiles a definition and its resolved inputs into a [`Plan`] ([`compile`]), and advances a
//! plan with a pure function ([`advance`]) that turns what the operator observed into what it
//! must do next ([`Effect`]). The plan is the journal: it lives in the owning resource's
//! `.status.plan`, and everything needed to continue after a crash is in it.
//!
//! The crate does no I/O, reads no clock and draws no random numbers: time is an argument, the
//! plan id (the seed of idempotency keys and retry jitter) is chosen by the caller, and CEL
//! (`trigger`, workflow `params`, `when`) is evaluated by the `workflows` crate before compiling.
//! It depends on no Kubernetes, async runtime or HTTP crate.
//!
//! ```
//! use sei_engine::{Effect, Event, Inputs, Observation, Registry, Timestamp, WorkflowDefinition, advance, compile};
//! use serde_json::json;
//!
//! let yaml = r#"
//! name: node-update
//! target: SeiNode
//! deadline: 30m
//! params: {image: self.spec.image}
//! tasks:
//!   - {name: statefulset, type: apply-statefulset, params: {image: "${ params.image }"}}
//!   - {name: ready, type: mark-ready, dependsOn: [statefulset], retry: {maxAttempts: 3}}
//! "#;
//! let definition = WorkflowDefinition::from_yaml("node-update.yaml", yaml)?;
//! let registry = Registry::new().with_any_params("apply-statefulset").with_any_params("mark-ready");
//! let now = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z")?;
//! let inputs = Inputs::new(uuid::Uuid::from_u128(1), now).with_param("image", json!("seid:v2"));
//! let mut plan = compile(&definition, &inputs, &registry)?;
//!
//! // First call: start what is ready.
//! let effects = advance(&mut plan, &[], now);
//! let Effect::StartTask { task, params, .. } = &effects[0] else { unreachable!() };
//! assert_eq!((task.task.as_str(), params["image"].as_str()), ("statefulset", Some("seid:v2")));
//!
//! // The operator submitted it under `task.key`, and reports what happened.
//! let done = Observation::of(task, Event::Completed(Default::default()));
//! let effects = advance(&mut plan, &[done], now);
//! assert!(matches!(&effects[0], Effect::StartTask { task, .. } if task.task == "ready"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Type roles
//! - [`WorkflowDefinition`] / [`WorkflowSpec`] / [`TaskSpec`]: the YAML model (also usable as
//!   the `spec` of a `WorkflowTemplate` CRD).
//! - [`TaskTypeRegistry`] / [`Registry`]: task type name -> JSON schema of its params.
//! - [`Inputs`] / [`Guard`]: plan id, `now`, resolved workflow params, evaluated `when` guards,
//!   `traceparent`.
//! - [`compile`] -> [`Plan`], or an [`Error`] naming workflow, source, task and field.
//! - [`Plan`] / [`PlannedTask`] / [`TaskRun`]: the journal (serde camelCase + `JsonSchema`).
//! - [`advance`] + [`Observation`] / [`Event`] in, [`Effect`] / [`TaskRef`] out.
//! - [`PlanSummary`] + [`push_history`]: the bounded history of finished plans.
//!
//! ## Plan lifecycle
//! 1. **Compile**: [`compile`] validates everything checkable up front and returns an `Active`
//!    plan in which no run has started. The operator persists it and ends the reconcile, so
//!    the plan is visible before any side effect.
//! 2. **Advance**: each reconcile calls [`advance`] with the observations of the effects it
//!    performed, performs the new effects and repeats while there is progress, then writes the
//!    plan once (after [`Plan::enforce_size_cap`]) and requeues at the [`Effect::RequeueAt`]
//!    time.
//! 3. **Run**: a ready run (dependencies Succeeded or Skipped, `nextAttemptAt` reached, below
//!    `maxParallel`) is started: `attempt` + 1, `startedAt` = now, [`Effect::StartTask`]. An
//!    accepted start makes it `Running`; it is then polled until it completes or fails. A
//!    failed attempt waits `nextAttemptAt` (exponential, capped, deterministic jitter; see
//!    [`RetryPolicy`]) if its class is in `retryOn`, attempts remain and the retry starts before
//!    the deadline; otherwise the run is `Failed`. An attempt older than `timeout` fails with
//!    class `Timeout` (and is cancelled). A run whose `when` guard was false is recorded
//!    `Skipped` when its dependencies are satisfied.
//! 4. **Stop**: the first of a failed run, the deadline, [`Plan::cancel`] or [`Plan::supersede`]
//!    sets [`Plan::stop`]. No normal run starts after that; pending ones are `Cancelled`;
//!    in-flight ones finish (at the deadline they are cancelled at once).
//! 5. **Finally**: once every normal run is terminal, the `finally` tasks run (not bound by
//!    the deadline, only by their own timeouts), whatever the outcome.
//! 6. **Finish**: when every run is terminal the phase becomes `Succeeded`, `Failed`
//!    (a failed run, the deadline, or a failed finally task) or `Cancelled`, and
//!    [`Effect::PlanFinished`] carries `onSuccess` or `onFailure`. The operator records
//!    [`Plan::summary`] with [`push_history`] and clears `.status.plan`.
//!
//! ## Invariants
//! Each is guarded by the named test (`properties` and `journal` are in `engine/tests/`).
//! - A run starts, or is recorded Skipped, only when all its dependencies (transitively) are
//!   Succeeded or Skipped: `properties::no_task_starts_before_its_dependencies`,
//!   `executor::tests::tasks_declared_before_their_dependencies_still_wait_for_them`,
//!   `executor::tests::an_empty_for_each_task_keeps_the_order_of_the_tasks_around_it`.
//! - Runs in flight never exceed `maxParallel`: `properties::max_parallel_is_never_exceeded`.
//! - `advance` is idempotent (same observations and time twice: no change, no new attempt):
//!   `properties::advance_is_idempotent`.
//! - Writing the *current* journal to JSON and back between any two calls changes nothing:
//!   `properties::crash_resume_reaches_the_same_end_state` (this alone cannot see a rewind; the
//!   delivery contract below is guarded by `durability`).
//! - With lookup-before-submit, crashes and lost status writes at random points between
//!   performing effects and persisting the journal execute no idempotency key twice, every
//!   plan ends within a bounded number of reconciles, and the end state agrees with the task
//!   executor (random DAGs of up to 200 tasks): `durability::rewinds_never_execute_a_key_twice`;
//!   the same simulation with a blind re-submit executes a key twice:
//!   `durability::blind_resubmits_execute_a_failed_key_again`.
//! - Every plan has a deadline ([`DEFAULT_DEADLINE`] when none is declared):
//!   `executor::tests::a_plan_without_a_declared_deadline_gets_the_default_one`,
//!   `journal::v2_journals_without_a_deadline_get_the_default_one_on_read`.
//! - A pause never fails a plan by deadline or timeout; a paused plan yields nothing; a cancel
//!   lifts the pause: `executor::tests::resume_shifts_the_deadline_retries_and_timeouts_by_the_paused_time`,
//!   `executor::tests::a_pause_never_fails_a_plan_by_its_deadline`,
//!   `executor::tests::a_paused_plan_yields_nothing_and_changes_nothing`,
//!   `executor::tests::cancelling_a_paused_plan_lifts_the_pause_so_it_ends`.
//! - No journal over [`MAX_PLAN_BYTES`] is compiled or written: `compile::tests` (`PlanTooLarge`),
//!   `executor::tests::a_plan_over_the_size_cap_fails_at_once_and_the_failure_shrinks_it`.
//! - A finished 100-validator genesis journal with realistic outputs, compacted, is at most
//!   64 KiB: `journal::a_finished_100_validator_genesis_journal_compacts_under_64_kib`;
//!   compaction keeps what runs that can still start read:
//!   `executor::tests::compaction_drops_outputs_nothing_pending_reads_and_settles_uniform_runs`.
//! - Normal runs are all terminal at the deadline, the requeue time never passes it, and a plan
//!   without finally tasks finishes by it: `properties::a_plan_always_ends_by_its_deadline`.
//! - A retry is never scheduled at or after the deadline:
//!   `executor::tests::retries_are_never_scheduled_past_the_deadline`.
//! - Every (lifecycle, event) pair of [`transition`] has a unit test:
//!   `executor::tests::every_transition_has_a_unit_test`.
//! - A failed run fails the plan and the finally tasks still run:
//!   `executor::tests::an_exhausted_task_fails_the_plan_lets_running_tasks_finish_and_runs_finally`.
//! - `PlanFinished` is returned exactly once, and a finished plan yields no effects:
//!   `executor::tests::on_success_is_handed_back_once`.
//! - An active plan always gets a `RequeueAt`: asserted on every call by `common::simulate`
//!   and by `executor::tests::an_active_plan_always_gets_a_requeue_bounded_by_the_deadline`.
//! - Journals of every released schema keep loading and advancing:
//!   `journal::v1_journals_are_migrated_on_read_and_keep_advancing`,
//!   `journal::v2_node_update_fixture_retries_on_time_under_the_next_key`,
//!   `journal::v2_genesis_fixture_resumes_for_each_runs_and_resolves_outputs`; journals newer than
//!   the code are refused: `plan::tests::newer_journals_are_refused`.
//! - A compiled 100-validator genesis plan (1,000 runs) is under 64 KiB of JSON:
//!   `journal::a_100_validator_genesis_plan_fits_the_journal_budget`.
//! - The plan schema is structural, with params and outputs as preserve-unknown objects:
//!   `journal::the_plan_schema_is_structural_with_opaque_params_and_outputs`.
//! - JSON round trips are exact: `journal::json_round_trips_are_exact_at_every_step`.
//! - Retry delays are deterministic and pinned: `retry::tests::jitter_is_deterministic_and_bounded_by_the_base`,
//!   `journal::v2_genesis_fixture_resumes_for_each_runs_and_resolves_outputs`.
//! - Compiling is deterministic: `compile::tests::compiling_is_deterministic`.
//! - The random scenarios reach every outcome, so the properties are not vacuous:
//!   `properties::the_simulation_exercises_every_outcome`.
//!
//! ## Delivery contract
//! Effects are delivered **at least once** and take effect **at most once per attempt key**.
//! The operator performs the effects of a reconcile *before* the one status write that records
//! them; a crash, or a write that loses (HTTP 409), rewinds the journal to the last persisted
//! version and the next reconcile repeats what it had done since. The engine makes a repeat
//! harmless by deriving everything from the journal: the same journal and time give the same
//! effects, and an attempt always has the same key ([`idempotency_key`]).
//!
//! | effect | delivered | how a repeat stays harmless |
//! |---|---|---|
//! | [`Effect::StartTask`] | at least once per attempt (again after every rewind past the start) | **recovery by lookup**: before submitting, a sidecar task asks the sidecar for the key (`GET /v0/tasks/{key}`) and adopts what it finds: running -> [`Event::StartAccepted`], completed -> [`Event::Completed`], failed -> the attempt fails; it submits only on a 404. A blind re-submit is not safe: the sidecar re-runs an id that *failed*. Kubernetes tasks look at the object itself and converge: server-side apply, a create answered 409 is adopted, `replace-pod` deletes only a pod of an older revision (uid and resourceVersion preconditions), so a repeat finds the work done. |
//! | [`Effect::PollTask`] | any number of times | no side effect; observations carry their attempt and stale ones are ignored; `NotFound` for an unacknowledged start re-issues the same key. |
//! | [`Effect::CancelTask`] | at least once, best effort | idempotent at the executor; the journal already records the outcome. A rewound journal re-derives the cancel when it reaches the same timeout or deadline. |
//! | [`Effect::RequeueAt`] | a hint | calling [`advance`] early changes nothing but repeated polls; late, timers fire late (they are journal times). An active, unpaused plan always gets one. |
//! | [`Effect::PlanFinished`] | once per finishing call; again if the write recording the finish is lost | `onSuccess`/`onFailure` set conditions (idempotent); [`push_history`] replaces an entry with the same plan id. |
//!
//! Guarded by `durability::rewinds_never_execute_a_key_twice` (the property, with a sidecar
//! that re-executes failed ids), `durability::blind_resubmits_execute_a_failed_key_again` (the
//! property fails without the lookup), `properties::advance_is_idempotent` (a repeat starts no
//! new attempt) and `executor::tests::on_success_is_handed_back_once`; on the operator's side by
//! the task catalogue's `a_failed_sidecar_task_fails_the_attempt_as_transient_and_a_new_attempt_runs_again`
//! (a repeated start of a failed attempt is not executed again) and the chaos test
//! (`operator/tests/chaos.rs`: kills at the operator's failpoints `drive::after-start`,
//! `drive::after-poll`, `status::before-write`, `status::after-write`, `status::after-spans`,
//! listed in `operator/src/failpoints.rs`, and at random moments; its negative run, with the
//! lookup off through the failpoint `sidecar::skip-submit-lookup`, finds duplicates). Known limit: a start that
//! a rewind erases and that the rewound plan never issues again (it stopped meanwhile) leaves
//! an orphan execution at the executor; it runs once, to its own end.
//!
//! ## Every plan ends
//! - A deadline always applies to the normal tasks: the definition's `deadline`, else
//!   [`DEFAULT_DEADLINE`] (24h). `finally` tasks are bound only by their own `timeout`, which is
//!   [`DEFAULT_FINALLY_TIMEOUT`] (1h) when they declare none
//!   (`compile::tests::a_finally_task_without_a_timeout_gets_the_default_one`).
//! - [`Plan::pause`] freezes a plan; [`Plan::resume`] moves its deadline, retry times and the
//!   timeout clocks of attempts in flight forward by the paused time.
//! - [`Plan::cancel`] records a user's cancel ([`StopCause::Cancelled`] with the user's
//!   message); it also lifts a pause.
//! - [`Plan::enforce_size_cap`] ends a plan whose journal grew over [`MAX_PLAN_BYTES`]
//!   ([`StopCause::JournalTooLarge`]) instead of letting every status write fail.
//!
//! ## Bounded journal
//! [`compile`] refuses a plan over [`MAX_PLAN_BYTES`] of JSON ([`Error::PlanTooLarge`]). Before
//! each status write the operator calls [`Plan::enforce_size_cap`], which first runs
//! [`Plan::compact`]: outputs nothing can read any more and errors of earlier attempts of
//! succeeded runs are dropped, and tasks whose runs all succeeded are settled ([`Settled`]: runs
//! written as bare items, the task keeping its first start and last finish). Compaction drops
//! per-run timestamps of settled tasks, so derive the spans of a reconcile before calling it.
//!
//! ## Zero-value and sentinel semantics
//! In the journal an absent field means:
//! - `schemaVersion`: 1 (the first format; upgraded on read by [`Plan::migrate`]).
//! - `stop`: the plan is not stopping. `finishedAt`: not finished. `failedTask`: nothing failed.
//! - `deadline`: only absent in journals before schema v3; [`Plan::migrate`] sets
//!   `startedAt + DEFAULT_DEADLINE` (a definition without `deadline` compiles to
//!   `startedAt + DEFAULT_DEADLINE`, 24h). `pausedAt`: not paused. `maxParallel`: unbounded. `pollInterval`: 5s ([`DEFAULT_POLL_INTERVAL`]).
//!   `onDrift`: `Queue`. `version`, `digest`: not declared / not computed.
//! - Task `retry`: [`RetryPolicy::default`] (one attempt); inside `retry`, an absent field has
//!   its default. `timeout`: none. `params`: `{}`. `target`: the item for a `forEach` task,
//!   none otherwise. `runs: []`: an empty `forEach` list (satisfied once its dependencies are).
//! - Run `state`: `Pending`. `attempt`: 0 = never started; otherwise the number of the current
//!   or last attempt, and the idempotency key is `UUIDv5(plan id, "<run>/<attempt>")`.
//! - A `Pending` run with `startedAt` is *Starting*: its start was issued but not acknowledged;
//!   it is polled, and a `NotFound` answer re-issues the same attempt (same key).
//!   A `Pending` run with `nextAttemptAt` waits for a retry.
//! - `error` on a `Succeeded` run is the error of an earlier, failed attempt.
//! - `skip: true`: the `when` guard was false; `reason` says why.
//! - Task `settled`: absent = the runs are written in full. Present: every run is in
//!   `settled.state` and has `settled.attempt` unless it records its own `attempt`; runs carry
//!   no timestamps (the task's `settled.startedAt`/`finishedAt` bound them).
//! - An [`Observation`] whose `attempt` is not the run's current attempt (or is 0) is stale and
//!   ignored.
//!
//! ## Concurrency and staleness
//! [`advance`] takes the plan by `&mut` and is meant to be called by one reconcile at a time
//! (the controller serialises reconciles per object, and status writes are guarded by
//! `resourceVersion`). If a write loses (HTTP 409), the next reconcile advances the last
//! persisted journal and repeats effects: a start is recovered by lookup of its idempotency
//! key (see "Delivery contract"), a poll has no side effect and a cancel is best effort.
//! Observations carry the attempt they are about, so late or duplicated ones change nothing.
//! A plan keeps a cached index of its task graph (never serialised, ignored by `==`); mutate
//! plans only through [`advance`], [`Plan::cancel`], [`Plan::supersede`], [`Plan::pause`],
//! [`Plan::resume`], [`Plan::compact`] and [`Plan::enforce_size_cap`].
//!
//! ## References and `forEach`
//! Task params may use `${ params.<name> }` (substituted at compile time), `${ item }` and
//! `${ tasks.<task>.outputs.<key> }` / `${ tasks.<task>[*].outputs.<key> }` (substituted when
//! the run starts; the task must be upstream). A `forEach: <param>` task runs once per item of
//! a list param as `task[item]`; dependencies between tasks over the same list pair up item by
//! item. See the `compile` and `reference` modules for the exact rules.
//!
//! # Owns, and must not
//! Owns the definition model, the compiler (the static [`check`] and [`compile`]), the plan journal and its
//! migrations, the pure executor, retry arithmetic and params validation. Must not talk to Kubernetes or do
//! any I/O, read a clock or draw random numbers (plan ids and `now` come in), or know the operator's kinds,
//! task implementations or workflow names.

#![warn(missing_docs)]

mod compile;
mod definition;
mod executor;
mod plan;
mod reference;
mod registry;
mod retry;
mod schema;
mod time;

pub use compile::{Error, Guard, Inputs, Location, Result, check, compile};
pub use definition::{BackoffSpec, RetrySpec, TaskSpec, WorkflowDefinition, WorkflowSpec};
pub use executor::{
    Effect, Event, EventKind, Lifecycle, Observation, TaskRef, Transition, advance, run_params, transition,
};
pub use plan::{
    DEFAULT_DEADLINE, DEFAULT_FINALLY_TIMEOUT, DEFAULT_POLL_INTERVAL, DriftPolicy, ErrorClass,
    MAX_ERROR_MESSAGE_BYTES, MAX_OUTPUT_BYTES, MAX_PLAN_BYTES, Plan, PlanPhase, PlanSummary, PlannedTask,
    RunView, SCHEMA_VERSION, Settled, Stop, StopCause, TaskError, TaskRun, TaskState, idempotency_key,
    push_history,
};
pub use registry::{Registry, TaskTypeRegistry};
pub use retry::{DEFAULT_RETRY_ON, RetryPolicy};
pub use time::{Duration, TimeError, Timestamp};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::plan::{DriftPolicy, ErrorClass, TaskRun};
use crate::registry::Registry;

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct ConfigParams {
    files: Vec<String>,
    replicas: u32,
}

fn registry() -> Registry {
    Registry::new()
        .with_any_params("t")
        .with_any_params("apply-statefulset")
        .with_params::<ConfigParams>("config")
}

fn def(yaml: &str) -> WorkflowDefinition {
    WorkflowDefinition::from_yaml("test.yaml", yaml).unwrap()
}

fn inputs() -> Inputs {
    Inputs::new(Uuid::from_u128(1), Timestamp::from_unix_millis(1_767_225_600_000))
        .with_param("image", json!("sei:v2"))
        .with_param("nodes", json!(["n0", "n1", "n2"]))
}

fn compile_yaml(yaml: &str) -> Result<Plan> {
    compile(&def(yaml), &inputs(), &registry())
}

fn err(yaml: &str) -> Error {
    compile_yaml(yaml).unwrap_err()
}

/// Asserts the error's location and that its message names workflow, source, task and field.
fn assert_at(error: &Error, task: Option<&str>, field: &str) {
    let at = match error {
        Error::Parse { at, .. }
        | Error::EmptyWorkflow { at }
        | Error::InvalidName { at, .. }
        | Error::DuplicateTask { at, .. }
        | Error::UnknownDependency { at, .. }
        | Error::FinallyDependsOnTask { at, .. }
        | Error::Cycle { at, .. }
        | Error::UnknownTaskType { at, .. }
        | Error::InvalidParams { at, .. }
        | Error::InvalidReference { at, .. }
        | Error::InvalidDuration { at, .. }
        | Error::InvalidValue { at, .. }
        | Error::MissingParam { at, .. }
        | Error::InvalidForEach { at, .. }
        | Error::MissingGuard { at }
        | Error::UnexpectedGuard { at }
        | Error::PlanTooLarge { at, .. } => at,
    };
    assert_eq!(at.workflow, "w", "{error}");
    assert_eq!(at.task.as_deref(), task, "{error}");
    assert_eq!(at.field, field, "{error}");
    let text = error.to_string();
    assert!(text.contains("workflow `w` (test.yaml)"), "{text}");
    if let Some(task) = task {
        assert!(text.contains(&format!("task `{task}`")), "{text}");
    }
    assert!(text.contains(&format!("field `{field}`")), "{text}");
}

#[test]
fn a_valid_definition_compiles_into_an_active_plan() {
    let plan = compile_yaml(
        r#"
name: w
version: "2"
target: SeiNode
deadline: 30m
maxParallel: 2
onDrift: Supersede
params: {image: self.spec.image}
tasks:
  - {name: sts, type: apply-statefulset, params: {image: "${ params.image }", note: "img=${params.image}"}}
  - name: cfg
    type: config
    dependsOn: [sts]
    params: {files: [a], replicas: 1}
    retry: {maxAttempts: 3, backoff: {initial: 1s, max: 10s}}
    timeout: 5m
finally:
  - {name: report, type: t}
onSuccess: {ok: true}
"#,
    )
    .unwrap();
    assert_eq!(plan.schema_version, crate::SCHEMA_VERSION);
    assert_eq!(plan.id, Uuid::from_u128(1));
    assert_eq!((plan.workflow.as_str(), plan.version.as_str()), ("w", "2"));
    assert!(plan.digest.starts_with("sha256:"));
    assert_eq!(plan.phase, PlanPhase::Active);
    assert_eq!(
        plan.deadline,
        Some(inputs().now.saturating_add(Duration::from_secs(1800)))
    );
    assert_eq!(plan.max_parallel, Some(2));
    assert_eq!(plan.on_drift, DriftPolicy::Supersede);
    assert_eq!(
        *plan.tasks[0].params,
        json!({"image": "sei:v2", "note": "img=sei:v2"})
    );
    assert_eq!(plan.tasks[0].retry, None);
    assert_eq!(plan.tasks[1].depends_on, ["sts"]);
    assert_eq!(plan.tasks[1].timeout, Some(Duration::from_secs(300)));
    let retry = plan.tasks[1].retry.as_ref().unwrap();
    assert_eq!(
        (retry.max_attempts, retry.initial, retry.max),
        (3, Duration::from_secs(1), Duration::from_secs(10))
    );
    assert_eq!(plan.finally[0].name, "report");
    assert_eq!(plan.on_success, Some(json!({"ok": true})));
    assert!(
        plan.tasks
            .iter()
            .all(|t| t.runs.len() == 1 && t.runs[0] == TaskRun::default())
    );
}

#[test]
fn compiling_is_deterministic() {
    let yaml = "name: w\ntasks: [{name: a, type: t}, {name: b, type: t, dependsOn: [a]}]";
    assert_eq!(compile_yaml(yaml).unwrap(), compile_yaml(yaml).unwrap());
}

#[test]
fn an_empty_workflow_is_rejected() {
    assert_at(&err("name: w\ntasks: []"), None, "tasks");
}

#[test]
fn duplicate_task_names_are_rejected_across_stages() {
    let e = err("name: w\ntasks: [{name: a, type: t}]\nfinally: [{name: a, type: t}]");
    assert!(matches!(&e, Error::DuplicateTask { name, .. } if name == "a"));
    assert_at(&e, Some("a"), "name");
}

#[test]
fn names_with_reserved_characters_are_rejected() {
    let e = err("name: w\ntasks: [{name: 'a[0]', type: t}]");
    assert!(matches!(e, Error::InvalidName { .. }));
    assert_at(&e, Some("a[0]"), "name");
}

#[test]
fn unknown_dependencies_are_rejected() {
    let e = err("name: w\ntasks: [{name: a, type: t, dependsOn: [zz]}]");
    assert!(matches!(&e, Error::UnknownDependency { dependency, .. } if dependency == "zz"));
    assert_at(&e, Some("a"), "dependsOn");
}

#[test]
fn cycles_are_rejected_and_listed() {
    let e = err(
        "name: w\ntasks: [{name: a, type: t, dependsOn: [c]}, {name: b, type: t, dependsOn: [a]}, \
         {name: c, type: t, dependsOn: [b]}, {name: d, type: t}]",
    );
    let Error::Cycle { cycle, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(cycle, &["a", "c", "b", "a"]);
    assert!(e.to_string().contains("a -> c -> b -> a"), "{e}");
    assert_at(&e, Some("a"), "dependsOn");
    let e = err("name: w\ntasks: [{name: a, type: t, dependsOn: [a]}]");
    assert!(matches!(&e, Error::Cycle { cycle, .. } if cycle == &["a", "a"]));
}

#[test]
fn finally_tasks_may_not_depend_on_normal_tasks() {
    let e = err("name: w\ntasks: [{name: a, type: t}]\nfinally: [{name: f, type: t, dependsOn: [a]}]");
    assert!(matches!(&e, Error::FinallyDependsOnTask { dependency, .. } if dependency == "a"));
    assert_at(&e, Some("f"), "dependsOn");
    let e = err("name: w\ntasks: [{name: a, type: t, dependsOn: [f]}]\nfinally: [{name: f, type: t}]");
    assert!(matches!(e, Error::UnknownDependency { .. }));
}

#[test]
fn unknown_task_types_are_rejected() {
    let e = err("name: w\ntasks: [{name: a, type: nope}]");
    assert!(matches!(&e, Error::UnknownTaskType { task_type, .. } if task_type == "nope"));
    assert_at(&e, Some("a"), "type");
}

#[test]
fn params_failing_the_schema_name_the_json_pointer() {
    let e = err("name: w\ntasks: [{name: a, type: config, params: {files: [1], replicas: 1}}]");
    let Error::InvalidParams {
        pointer, task_type, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((pointer.as_str(), task_type.as_str()), ("/files/0", "config"));
    assert_at(&e, Some("a"), "params/files/0");
    let e = err("name: w\ntasks: [{name: a, type: config, params: {files: []}}]");
    assert_at(&e, Some("a"), "params/replicas");
    let e = err("name: w\ntasks: [{name: a, type: config, params: {files: [], replicas: 1, extra: 1}}]");
    assert_at(&e, Some("a"), "params/extra");
}

#[test]
fn params_are_checked_after_workflow_params_are_substituted() {
    let yaml = "name: w\ntasks: [{name: a, type: config, params: {files: '${ params.list }', replicas: '${ params.n }'}}]";
    let ok = Inputs {
        params: inputs().params,
        ..inputs()
    }
    .with_param("list", json!(["x"]))
    .with_param("n", json!(2));
    let plan = compile(&def(yaml), &ok, &registry()).unwrap();
    assert_eq!(*plan.tasks[0].params, json!({"files": ["x"], "replicas": 2}));
    let bad = ok.with_param("n", json!("two"));
    let e = compile(&def(yaml), &bad, &registry()).unwrap_err();
    assert_at(&e, Some("a"), "params/replicas");
}

#[test]
fn invalid_durations_are_rejected_with_their_field() {
    let e = err("name: w\ndeadline: soon\ntasks: [{name: a, type: t}]");
    assert!(matches!(&e, Error::InvalidDuration { value, .. } if value == "soon"));
    assert_at(&e, None, "deadline");
    assert_at(
        &err("name: w\ntasks: [{name: a, type: t, timeout: 0s}]"),
        Some("a"),
        "timeout",
    );
    assert_at(
        &err("name: w\ntasks: [{name: a, type: t, retry: {backoff: {initial: 5x}}}]"),
        Some("a"),
        "retry.backoff.initial",
    );
    assert_at(
        &err("name: w\npollInterval: x\ntasks: [{name: a, type: t}]"),
        None,
        "pollInterval",
    );
}

#[test]
fn out_of_range_numbers_are_rejected() {
    assert_at(
        &err("name: w\nmaxParallel: 0\ntasks: [{name: a, type: t}]"),
        None,
        "maxParallel",
    );
    let cases = [
        ("{maxAttempts: 0}", "retry.maxAttempts"),
        ("{backoff: {factor: 0.5}}", "retry.backoff.factor"),
        ("{backoff: {initial: 1m, max: 1s}}", "retry.backoff.initial"),
        ("{jitter: 2}", "retry.jitter"),
    ];
    for (retry, field) in cases {
        let e = err(&format!("name: w\ntasks: [{{name: a, type: t, retry: {retry}}}]"));
        assert!(matches!(e, Error::InvalidValue { .. }), "{e}");
        assert_at(&e, Some("a"), field);
    }
}

#[test]
fn declared_params_must_be_resolved() {
    let e = err("name: w\nparams: {missing: self.x}\ntasks: [{name: a, type: t}]");
    assert!(matches!(&e, Error::MissingParam { param, .. } if param == "missing"));
    assert_at(&e, None, "params.missing");
}

#[test]
fn bad_references_are_rejected_with_their_pointer() {
    let cases = [
        (
            "{name: a, type: t, params: {x: '${ params.nope }'}}",
            "a",
            "params/x",
        ),
        (
            "{name: a, type: t, params: {x: '${ params.image.tag }'}}",
            "a",
            "params/x",
        ),
        (
            "{name: a, type: t, params: {x: [ '${ item }' ]}}",
            "a",
            "params/x/0",
        ),
        (
            "{name: a, type: t, params: {x: '${ self.spec.image }'}}",
            "a",
            "params/x",
        ),
        (
            "{name: a, type: t, params: {x: '${ params.image'}}",
            "a",
            "params/x",
        ),
        (
            "{name: a, type: t, params: {x: '${ tasks.zz.outputs.k }'}}",
            "a",
            "params/x",
        ),
        (
            "{name: a, type: t, target: '${ tasks.b.outputs.k }'}",
            "a",
            "target",
        ),
    ];
    for (task, name, field) in cases {
        let e = err(&format!("name: w\ntasks: [{task}, {{name: b, type: t}}]"));
        assert!(matches!(e, Error::InvalidReference { .. }), "{e}");
        assert_at(&e, Some(name), field);
    }
}

#[test]
fn output_references_must_point_upstream() {
    let e = err(
        "name: w\ntasks: [{name: a, type: t}, {name: b, type: t, params: {x: '${ tasks.a.outputs.k }'}}]",
    );
    assert!(e.to_string().contains("not a dependency"), "{e}");
    assert_at(&e, Some("b"), "params/x");
    let ok = "name: w\ntasks: [{name: a, type: t}, {name: m, type: t, dependsOn: [a]}, \
              {name: b, type: t, dependsOn: [m], params: {x: '${ tasks.a.outputs.k.sub }'}}]";
    assert!(compile_yaml(ok).is_ok());
}

#[test]
fn output_references_to_for_each_tasks_pair_by_item_or_use_the_list_form() {
    let base = "name: w\ntasks: [{name: a, type: t, forEach: nodes}, ";
    let paired = format!(
        "{base}{{name: b, type: t, forEach: nodes, dependsOn: [a], params: {{x: '${{ tasks.a.outputs.k }}'}}}}]"
    );
    assert!(compile_yaml(&paired).is_ok());
    let fan_in =
        format!("{base}{{name: b, type: t, dependsOn: [a], params: {{x: '${{ tasks.a[*].outputs.k }}'}}}}]");
    assert!(compile_yaml(&fan_in).is_ok());
    let ambiguous =
        format!("{base}{{name: b, type: t, dependsOn: [a], params: {{x: '${{ tasks.a.outputs.k }}'}}}}]");
    let e = err(&ambiguous);
    assert!(e.to_string().contains("[*]"), "{e}");
    let e = err(
        "name: w\ntasks: [{name: a, type: t}, {name: b, type: t, dependsOn: [a], params: {x: '${ tasks.a[*].outputs.k }'}}]",
    );
    assert!(e.to_string().contains("needs `a` to have `forEach`"), "{e}");
}

#[test]
fn for_each_expands_runs_with_items_as_targets() {
    let plan = compile_yaml(
        "name: w\ntasks: [{name: key, type: t, forEach: nodes, params: {node: '${ item }', img: '${ params.image }'}}, \
         {name: pod, type: t, forEach: nodes, dependsOn: [key], target: '${ item }-0'}, \
         {name: collect, type: t, dependsOn: [key]}]",
    )
    .unwrap();
    let key = &plan.tasks[0];
    assert_eq!(key.for_each.as_deref(), Some("nodes"));
    let items: Vec<_> = key.runs.iter().map(|r| r.item.clone().unwrap()).collect();
    assert_eq!(items, ["n0", "n1", "n2"]);
    assert_eq!(key.run_name(1), "key[n1]");
    assert_eq!(key.run_target(1).as_deref(), Some("n1"));
    assert_eq!(*key.params, json!({"node": "${ item }", "img": "sei:v2"}));
    assert_eq!(plan.tasks[1].run_target(2).as_deref(), Some("n2-0"));
    assert_eq!(plan.tasks[2].runs.len(), 1);
}

#[test]
fn for_each_lists_must_be_unique_scalar_lists() {
    let cases = [
        ("missing", json!(null)),
        ("notlist", json!({"a": 1})),
        ("dups", json!(["a", "a"])),
        ("objects", json!([{"a": 1}])),
        ("brackets", json!(["a[1]"])),
    ];
    for (param, value) in cases {
        let mut inputs = inputs();
        if !value.is_null() {
            inputs = inputs.with_param(param, value);
        }
        let yaml = format!("name: w\ntasks: [{{name: a, type: t, forEach: {param}}}]");
        let e = compile(&def(&yaml), &inputs, &registry()).unwrap_err();
        assert!(matches!(e, Error::InvalidForEach { .. }), "{e}");
        assert_at(&e, Some("a"), "forEach");
    }
    let numbers = inputs().with_param("ordinals", json!([0, 1]));
    let plan = compile(
        &def("name: w\ntasks: [{name: a, type: t, forEach: ordinals}]"),
        &numbers,
        &registry(),
    )
    .unwrap();
    assert_eq!(plan.tasks[0].run_name(1), "a[1]");
    let empty = inputs().with_param("none", json!([]));
    let plan = compile(
        &def("name: w\ntasks: [{name: a, type: t, forEach: none}]"),
        &empty,
        &registry(),
    )
    .unwrap();
    assert!(plan.tasks[0].runs.is_empty());
}

#[test]
fn a_false_when_marks_the_run_to_be_skipped_with_its_reason() {
    let yaml =
        "name: w\ntasks: [{name: a, type: t, when: 'self.x'}, {name: b, type: t, forEach: nodes, when: 'y'}]";
    let inputs = inputs()
        .with_guard("a", Guard::Skip("self.x is false".into()))
        .with_guard("b", Guard::Run)
        .with_guard("b[n1]", Guard::Skip("not n1".into()));
    let plan = compile(&def(yaml), &inputs, &registry()).unwrap();
    let a = &plan.tasks[0].runs[0];
    assert!(a.skip);
    assert_eq!(a.reason.as_deref(), Some("when: self.x is false"));
    let skips: Vec<bool> = plan.tasks[1].runs.iter().map(|r| r.skip).collect();
    assert_eq!(skips, [false, true, false]);
}

#[test]
fn when_decisions_must_match_guarded_tasks() {
    let e = err("name: w\ntasks: [{name: a, type: t, when: 'x'}]");
    assert!(matches!(e, Error::MissingGuard { .. }));
    assert_at(&e, Some("a"), "when");
    let yaml = "name: w\ntasks: [{name: a, type: t}]";
    let e = compile(&def(yaml), &inputs().with_guard("a", Guard::Run), &registry()).unwrap_err();
    assert!(matches!(e, Error::UnexpectedGuard { .. }));
    assert_at(&e, Some("a"), "when");
}

#[test]
fn default_retry_settings_are_not_stored() {
    let plan = compile_yaml(
        "name: w\ntasks: [{name: a, type: t, retry: {maxAttempts: 1, retryOn: [Transient, Timeout]}}]",
    )
    .unwrap();
    assert_eq!(plan.tasks[0].retry, None);
    let plan =
        compile_yaml("name: w\ntasks: [{name: a, type: t, retry: {retryOn: [Conflict, Conflict]}}]").unwrap();
    assert_eq!(
        plan.tasks[0].retry.as_ref().unwrap().retry_on,
        [ErrorClass::Conflict]
    );
}

#[test]
fn parse_errors_carry_the_source_name() {
    let e = WorkflowDefinition::from_yaml("test.yaml", "name: w\ntasks: [{name: a}]").unwrap_err();
    assert!(matches!(e, Error::Parse { .. }));
    assert!(e.to_string().contains("workflow `w` (test.yaml)"), "{e}");
}

#[test]
fn a_plan_over_the_journal_cap_does_not_compile() {
    let blob = "x".repeat(crate::MAX_PLAN_BYTES);
    let e = compile(
        &def("name: w\nparams: {blob: self.blob}\ntasks: [{name: a, type: t, params: {data: \"${ params.blob }\"}}]"),
        &inputs().with_param("blob", json!(blob)),
        &registry(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::PlanTooLarge { bytes, .. } if bytes > crate::MAX_PLAN_BYTES),
        "{e}"
    );
    assert_at(&e, None, "tasks");
    assert!(e.to_string().contains("over the 262144-byte journal cap"), "{e}");
}

#[test]
fn a_finally_task_without_a_timeout_gets_the_default_one() {
    let plan = compile_yaml(
        "name: w\ntasks: [{name: a, type: t}]\nfinally: [{name: f, type: t}, {name: g, type: t, timeout: 5m}]",
    )
    .unwrap();
    assert_eq!(plan.finally[0].timeout, Some(crate::DEFAULT_FINALLY_TIMEOUT));
    assert_eq!(plan.finally[1].timeout, Some(crate::Duration::from_secs(300)));
    assert_eq!(
        plan.tasks[0].timeout, None,
        "normal tasks are bound by the deadline"
    );
}

/// `check`: the static compile, without evaluated params or guards.
mod static_check {
    use super::*;

    fn check_yaml(yaml: &str) -> Result<Plan> {
        check(&def(yaml), &registry())
    }

    #[test]
    fn a_valid_definition_checks_without_params_or_guards() {
        let plan = check_yaml(
            "name: w\nparams: {image: self.spec.image, nodes: self.spec.nodes}\ntasks:\n\
             - {name: a, type: t, when: self.spec.x, params: {image: '${ params.image }'}}\n\
             - {name: b, type: t, forEach: nodes, dependsOn: [a]}\n\
             - {name: c, type: config, dependsOn: [b], params: {files: ['${ tasks.b[*].outputs.f }'], replicas: '${ params.image }'}}\n",
        )
        .unwrap();
        assert_eq!(plan.tasks.len(), 3);
        assert!(
            plan.tasks[1].runs.is_empty(),
            "a forEach task has no runs before its list is known"
        );
        assert_eq!(plan.tasks[0].params["image"], json!("${ params.image }"));
    }

    #[test]
    fn every_static_error_is_found_without_an_object() {
        let cases: &[(&str, &str)] = &[
            ("name: w\ntasks: []", "has no tasks"),
            (
                "name: w\ntasks: [{name: a, type: nope}]",
                "unknown task type `nope`",
            ),
            (
                "name: w\ntasks: [{name: a, type: t}, {name: a, type: t}]",
                "duplicate task name `a`",
            ),
            (
                "name: w\ntasks: [{name: a, type: t, dependsOn: [zz]}]",
                "unknown dependency `zz`",
            ),
            (
                "name: w\ntasks: [{name: a, type: t, dependsOn: [b]}, {name: b, type: t, dependsOn: [a]}]",
                "dependency cycle",
            ),
            (
                "name: w\ndeadline: soon\ntasks: [{name: a, type: t}]",
                "invalid duration `soon`",
            ),
            (
                "name: w\ntasks: [{name: a, type: t, params: {x: '${ params.nope }'}}]",
                "unknown workflow param `nope` (the workflow declares no params)",
            ),
            (
                "name: w\nparams: {a: '1'}\ntasks: [{name: a, type: t, forEach: zz}]",
                "`zz` is not a declared workflow param (declared: a)",
            ),
            (
                "name: w\ntasks: [{name: a, type: config, params: {files: 3, replicas: 1}}]",
                "params do not match",
            ),
            (
                "name: w\ntasks: [{name: a, type: t}, {name: b, type: t, params: {x: '${ tasks.a.outputs.k }'}}]",
                "is not a dependency",
            ),
        ];
        for (yaml, expected) in cases {
            let message = check_yaml(yaml).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{yaml}\n=> {message}\nexpected: {expected}"
            );
        }
    }
}

#[test]
fn the_deadline_may_name_a_param() {
    let yaml = "name: w\nparams: {limit: x}\ndeadline: '${ params.limit }'\ntasks: [{name: a, type: t}]";
    let inputs =
        Inputs::new(Uuid::from_u128(1), Timestamp::from_unix_millis(0)).with_param("limit", json!("2m"));
    let plan = compile(&def(yaml), &inputs, &registry()).unwrap();
    assert_eq!(plan.deadline, Some(Timestamp::from_unix_millis(120_000)));
    let bad =
        Inputs::new(Uuid::from_u128(1), Timestamp::from_unix_millis(0)).with_param("limit", json!("soon"));
    let err = compile(&def(yaml), &bad, &registry()).unwrap_err().to_string();
    assert!(err.contains("field `deadline`: invalid duration `soon`"), "{err}");
    assert!(check(&def(yaml), &registry()).is_ok());
    let err = check(
        &def("name: w\ndeadline: '${ params.nope }'\ntasks: [{name: a, type: t}]"),
        &registry(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown workflow param `nope`"), "{err}");
}

#[test]
fn a_task_type_default_poll_interval_applies_unless_the_task_declares_one() {
    let registry = registry().with_poll_interval("watched", Duration::from_secs(30));
    let registry = registry.with_any_params("watched");
    let plan = compile(
        &def("name: w\npollInterval: 250ms\ntasks:\n  - {name: a, type: watched}\n  - {name: b, type: watched, pollInterval: 5s}\n  - {name: c, type: t}"),
        &inputs(),
        &registry,
    )
    .unwrap();
    let intervals: Vec<Option<Duration>> = plan.tasks.iter().map(|t| t.poll_interval).collect();
    // The type's default beats the plan's 250 ms; the task's own beats the type's; other types keep the plan's.
    assert_eq!(
        intervals,
        [Some(Duration::from_secs(30)), Some(Duration::from_secs(5)), None]
    );
    assert_eq!(plan.poll_interval(), Duration::from_millis(250));
}

//! `sei-operator workflow preview`: the plan a workflow would run against an object now, run nowhere.
//!
//! The same path as a plan's creation (CEL bindings of the object, params, `when` guards, the engine's
//! compile), with a nil plan id and no trace, printed with the plan viewer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use kube::api::Api;
use sei_crds::{SeiNode, SeiNodeDeployment, WorkflowTemplate};
use sei_workflows::{Bindings, Catalog, Workflow};
use serde_json::{Map, Value};

use crate::cli::{PlanTarget, PreviewArgs};

/// Parses `name=value` params (the value as JSON, else as a string).
fn given_params(raw: &[String]) -> anyhow::Result<Map<String, Value>> {
    raw.iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("--param {p:?}: expected NAME=VALUE"))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
            Ok((k.to_owned(), value))
        })
        .collect()
}

/// The workflow named by `spec`: a file, else a WorkflowTemplate of the namespace, else a built-in.
async fn load_workflow(
    spec: &str,
    args: &PreviewArgs,
    client: Option<&kube::Client>,
) -> anyhow::Result<(Workflow, String)> {
    let builtin = Catalog::builtin()?;
    if Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec).with_context(|| format!("reading {spec}"))?;
        let value: Value = serde_yaml::from_str(&text).with_context(|| format!("parsing {spec}"))?;
        let workflow = if value.get("kind").and_then(Value::as_str) == Some("WorkflowTemplate") {
            let mut t: WorkflowTemplate =
                serde_json::from_value(value).with_context(|| format!("{spec}: not a WorkflowTemplate"))?;
            t.metadata.namespace.get_or_insert_with(|| args.namespace.clone());
            crate::templates::template(&t)?.workflow
        } else {
            Workflow::from_yaml(spec, &text)?
        };
        return Ok((workflow, format!("file {spec}")));
    }
    if let Some(client) = client {
        let api: Api<WorkflowTemplate> = Api::namespaced(client.clone(), &args.namespace);
        if let Some(t) = api.get_opt(spec).await.context("reading the WorkflowTemplate")? {
            let source = format!("WorkflowTemplate {}/{spec}", args.namespace);
            return Ok((crate::templates::template(&t)?.workflow, source));
        }
    }
    match builtin.get(spec) {
        Some(w) => Ok((w.clone(), "built-in".into())),
        None => bail!(
            "no workflow {spec:?}: not a file, not a WorkflowTemplate in namespace {}, not a built-in ({})",
            args.namespace,
            builtin.iter().map(Workflow::name).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The derived `node` binding of the object, as its controller computes it.
async fn facts(
    kind: &str,
    object: &Value,
    client: Option<&kube::Client>,
    args: &PreviewArgs,
) -> anyhow::Result<Value> {
    if kind == "SeiNode" {
        let sidecar_default = sei_tasks::platform::PlatformConfig::from_env()
            .map(|p| p.images.sidecar.clone())
            .unwrap_or_default();
        let node: SeiNode =
            serde_json::from_value(object.clone()).context("the object is not a valid SeiNode")?;
        return Ok(crate::node::facts_with(&node, &sidecar_default));
    }
    let deployment: SeiNodeDeployment =
        serde_json::from_value(object.clone()).context("the object is not a valid SeiNodeDeployment")?;
    let mut children = BTreeMap::new();
    if let Some(client) = client {
        let nodes: Api<SeiNode> = Api::namespaced(client.clone(), &args.namespace);
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let selector = format!("{}={name}", sei_crds::labels::DEPLOYMENT);
        for node in nodes
            .list(&kube::api::ListParams::default().labels(&selector))
            .await?
            .items
        {
            let ordinal = node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(sei_crds::labels::DEPLOYMENT_ORDINAL))
                .and_then(|o| o.parse::<i32>().ok());
            if let Some(ordinal) = ordinal {
                children.insert(ordinal, node);
            }
        }
    }
    Ok(crate::deployment::bindings_facts(&deployment, &children))
}

/// `workflow preview`: the rendered preview.
pub async fn preview(args: PreviewArgs) -> anyhow::Result<String> {
    let target = PlanTarget {
        object: args.target.clone(),
        namespace: args.namespace.clone(),
        kubeconfig: args.kubeconfig.clone(),
        file: args.file.clone(),
    };
    let client = if args.file.is_some() {
        None
    } else {
        Some(crate::run::client_for(args.kubeconfig.as_deref()).await?)
    };
    let object = crate::run::read_object(&target).await?;
    let (workflow, source) = load_workflow(&args.workflow, &args, client.as_ref()).await?;
    let registry = sei_tasks::catalog::registry();
    workflow.check(&registry)?;
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind != workflow.definition().spec.target {
        bail!(
            "workflow `{}` targets {}, and {} is a {kind}",
            workflow.name(),
            workflow.definition().spec.target,
            args.target
        );
    }
    let facts = facts(&kind, &object, client.as_ref(), &args).await?;
    let bindings = Bindings::new(&object, &facts).map_err(anyhow::Error::msg)?;
    let given = given_params(&args.params)?;
    let trigger = match workflow.definition().spec.trigger {
        Some(_) => format!("{}", workflow.is_triggered(&bindings)?),
        None => "none (runs on demand: a WorkflowRun)".into(),
    };
    let plan = workflow.instantiate_with(
        &bindings,
        &given,
        uuid::Uuid::nil(),
        crate::clock::now(),
        None,
        &registry,
    )?;
    let mut out = format!(
        "workflow `{}` ({source}, digest {}) against {kind} {}/{}\ntrigger holds now: {trigger}\n",
        workflow.name(),
        plan.digest,
        args.namespace,
        args.target.split('/').nth(1).unwrap_or_default()
    );
    let params = workflow.resolve_params(&bindings, &given)?;
    if !params.is_empty() {
        out.push_str("params:\n");
        for (name, value) in &params {
            let origin = if given.contains_key(name) { "given" } else { "CEL" };
            let _ = writeln!(out, "  {name} = {value} ({origin})");
        }
    }
    out.push_str("\nwould run (nothing was started):\n");
    out.push_str(&crate::viewer::render_plan(&plan));
    out.push_str("task params:\n");
    for task in plan.tasks.iter().chain(&plan.finally) {
        let _ = writeln!(out, "  {}: {}", task.name, task.params);
    }
    Ok(out)
}

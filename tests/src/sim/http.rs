//! The HTTP surface: the sidecar API under `/{namespace}/{name}/v0/...` and the admin API under `/admin/...`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;

use super::exec;
use super::faults::{FaultSpec, NodeRef};
use super::state::{Sim, Status, TASK_TYPES, Task};

type Shared = State<Arc<Sim>>;
type NodePath = Path<(String, String)>;

/// The simulator's routes (behind kube-rbac-proxy's check when [`super::Config::rbac_proxy`] is set).
pub fn router(sim: Arc<Sim>) -> Router {
    let proxy = sim.config.rbac_proxy.clone();
    Router::new()
        .route("/{ns}/{name}/v0/healthz", get(healthz))
        .route("/{ns}/{name}/v0/startupz", get(healthz))
        .route("/{ns}/{name}/v0/livez", get(livez))
        .route("/{ns}/{name}/v0/status", get(status))
        .route("/{ns}/{name}/v0/node-id", get(node_id))
        .route("/{ns}/{name}/v0/tasks", get(list_tasks).post(submit))
        .route("/{ns}/{name}/v0/tasks/{id}", get(get_task).delete(delete_task))
        .route(
            "/admin/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/admin/nodes", get(list_nodes))
        .route("/admin/nodes/{ns}/{name}", get(show_node))
        .route("/admin/nodes/{ns}/{name}/restart", post(restart_node))
        .route("/admin/tasks", get(all_tasks))
        .route("/admin/executions", get(all_executions))
        .route("/admin/rbac-proxy", get(rbac_proxy_decisions))
        .merge(super::ops::admin_routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(sim)
        .layer(axum::middleware::from_fn_with_state(
            proxy,
            super::rbac_proxy::layer,
        ))
}

/// The decisions of the kube-rbac-proxy check, oldest first (`[]` without it).
async fn rbac_proxy_decisions(State(sim): Shared) -> Response {
    let decisions = sim
        .config
        .rbac_proxy
        .as_ref()
        .map(super::rbac_proxy::RbacProxy::decisions)
        .unwrap_or_default();
    Json(decisions).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// With `--require-token`: does the request carry `Bearer <the file's current content>`?
fn token_ok(sim: &Sim, headers: &HeaderMap) -> bool {
    let Some(path) = &sim.config.require_token else {
        return true;
    };
    let expected = match std::fs::read_to_string(path) {
        Ok(t) => t.trim().to_owned(),
        Err(e) => {
            tracing::warn!(error = &e as &dyn std::error::Error, path = %path.display(), "Cannot read the token file");
            return false;
        }
    };
    let got = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    !expected.is_empty() && got.and_then(|g| g.strip_prefix("Bearer ")) == Some(expected.as_str())
}

/// What every sidecar request goes through: the node is created on first use, the request and its
/// `traceparent` are recorded, the token is checked (except on the probes), then the latency and status faults
/// apply.
async fn gate(
    sim: &Sim,
    node: &NodeRef,
    headers: &HeaderMap,
    task_type: Option<&str>,
    authenticated: bool,
) -> Result<(), Response> {
    let tp = traceparent(headers);
    let authorized = !authenticated || token_ok(sim, headers);
    let (delay, forced) = sim.with(|s| {
        let n = s.node(node);
        n.requests += 1;
        if tp.is_some() {
            n.last_traceparent = tp;
        }
        if !authorized {
            n.unauthorized += 1;
            return (std::time::Duration::ZERO, None);
        }
        s.request_faults(node, task_type)
    });
    if !authorized {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized: the bearer token does not match",
        ));
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = forced {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(error(status, format!("injected fault: status {code}")));
    }
    Ok(())
}

async fn healthz(State(sim): Shared, Path((ns, name)): NodePath, headers: HeaderMap) -> Response {
    let node = NodeRef::new(ns, name);
    if let Err(r) = gate(&sim, &node, &headers, None, false).await {
        return r;
    }
    if sim.with(|s| s.node(&node).ready) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
    .into_response()
}

async fn livez(State(sim): Shared, Path((ns, name)): NodePath, headers: HeaderMap) -> Response {
    let node = NodeRef::new(ns, name);
    match gate(&sim, &node, &headers, None, false).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

async fn status(State(sim): Shared, Path((ns, name)): NodePath, headers: HeaderMap) -> Response {
    let node = NodeRef::new(ns, name);
    if let Err(r) = gate(&sim, &node, &headers, None, true).await {
        return r;
    }
    let ready = sim.with(|s| s.node(&node).ready);
    Json(json!({"status": if ready { "Ready" } else { "Initializing" }})).into_response()
}

async fn node_id(State(sim): Shared, Path((ns, name)): NodePath, headers: HeaderMap) -> Response {
    let node = NodeRef::new(ns, name);
    if let Err(r) = gate(&sim, &node, &headers, None, true).await {
        return r;
    }
    match sim.with(|s| s.node(&node).node_id()) {
        Some(id) => Json(json!({"nodeId": id})).into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading config/node_key.json: no node key (generate-identity has not run)",
        ),
    }
}

struct Submission {
    id: Uuid,
    task_type: String,
    params: Value,
}

fn parse_submission(body: &[u8]) -> Result<Submission, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    let task_type = match obj.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return Err("missing task type".to_owned()),
    };
    if !TASK_TYPES.contains(&task_type.as_str()) {
        return Err(format!("unknown task type: {task_type}"));
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => Uuid::new_v4(),
        Some(Value::String(s)) => {
            Uuid::parse_str(s).map_err(|_| format!("invalid task id {s:?}: not a UUID"))?
        }
        Some(other) => return Err(format!("invalid task id {other}: not a UUID")),
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Value::Null,
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err("params must be a JSON object".to_owned()),
    };
    Ok(Submission {
        id,
        task_type,
        params,
    })
}

async fn submit(State(sim): Shared, Path((ns, name)): NodePath, headers: HeaderMap, body: Bytes) -> Response {
    let node = NodeRef::new(ns, name);
    let parsed = parse_submission(&body);
    let task_type = parsed.as_ref().ok().map(|s| s.task_type.clone());
    if let Err(r) = gate(&sim, &node, &headers, task_type.as_deref(), true).await {
        return r;
    }
    let sub = match parsed {
        Ok(sub) => sub,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let tp = traceparent(&headers);
    let id = sub.id;
    let (run, epoch) = sim.with(|s| {
        let n = s.node(&node);
        let epoch = n.epoch;
        let seq = n.next_seq();
        let now = SystemTime::now();
        let run = match n.tasks.get_mut(&id) {
            // Idempotent: a running or completed id is acknowledged and left alone.
            Some(t) if t.status != Status::Failed => {
                if tp.is_some() {
                    t.last_traceparent.clone_from(&tp);
                }
                None
            }
            Some(t) => {
                t.run += 1;
                t.status = Status::Running;
                t.result = None;
                t.error = None;
                t.completed_at = None;
                t.submitted_at = now;
                t.seq = seq;
                if tp.is_some() {
                    t.last_traceparent.clone_from(&tp);
                }
                Some(t.run)
            }
            None => {
                n.tasks.insert(
                    id,
                    Task {
                        task_type: sub.task_type.clone(),
                        status: Status::Running,
                        run: 1,
                        params: sub.params,
                        result: None,
                        error: None,
                        submitted_at: now,
                        completed_at: None,
                        seq,
                        last_traceparent: tp,
                    },
                );
                Some(1)
            }
        };
        if run.is_some() {
            *n.executions.entry(id).or_default() += 1;
            n.types.insert(id, sub.task_type.clone());
        }
        (run, epoch)
    });
    if let Some(run) = run {
        tracing::info!(node = %node, task.id = %id, task.kind = %sub.task_type, run, "Task started");
        exec::spawn(Arc::clone(&sim), node, id, run, epoch);
    }
    (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
}

async fn list_tasks(State(sim): Shared, Path((ns, name)): NodePath, headers: HeaderMap) -> Response {
    let node = NodeRef::new(ns, name);
    if let Err(r) = gate(&sim, &node, &headers, None, true).await {
        return r;
    }
    let tasks = sim.with(|s| {
        let n = s.node(&node);
        let mut tasks: Vec<(&Uuid, &Task)> = n.tasks.iter().collect();
        tasks.sort_by_key(|(_, t)| std::cmp::Reverse(t.seq));
        tasks
            .into_iter()
            .take(100)
            .map(|(id, t)| t.to_json(*id))
            .collect::<Vec<_>>()
    });
    Json(tasks).into_response()
}

/// Resolves the task of a `/v0/tasks/{id}` request and runs the gate with its type.
async fn task_gate(sim: &Sim, node: &NodeRef, headers: &HeaderMap, id: &str) -> Result<Uuid, Response> {
    let parsed = Uuid::parse_str(id).ok();
    let task_type =
        parsed.and_then(|id| sim.with(|s| s.nodes.get(node)?.tasks.get(&id).map(|t| t.task_type.clone())));
    gate(sim, node, headers, task_type.as_deref(), true).await?;
    parsed.ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid task id {id:?}: not a UUID"),
        )
    })
}

async fn get_task(
    State(sim): Shared,
    Path((ns, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let node = NodeRef::new(ns, name);
    let id = match task_gate(&sim, &node, &headers, &id).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let tp = traceparent(&headers);
    let found = sim.with(|s| {
        let t = s.node(&node).tasks.get_mut(&id)?;
        if tp.is_some() {
            t.last_traceparent = tp;
        }
        Some(t.to_json(id))
    });
    match found {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, "task not found"),
    }
}

async fn delete_task(
    State(sim): Shared,
    Path((ns, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let node = NodeRef::new(ns, name);
    let id = match task_gate(&sim, &node, &headers, &id).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    // Removing the record cancels a running execution: it finds no current task when it finishes.
    match sim.with(|s| s.node(&node).tasks.remove(&id)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "task not found"),
    }
}

async fn list_faults(State(sim): Shared) -> Response {
    Json(sim.with(|s| {
        s.faults
            .iter()
            .map(super::faults::Fault::to_spec)
            .collect::<Vec<_>>()
    }))
    .into_response()
}

async fn add_faults(State(sim): Shared, body: Bytes) -> Response {
    let specs: Vec<FaultSpec> = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Array(_)) => match serde_json::from_value(v) {
            Ok(specs) => specs,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault list: {e}")),
        },
        Ok(v) => match serde_json::from_value(v) {
            Ok(spec) => vec![spec],
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    // Check them all before installing any.
    if let Some(e) = specs.iter().find_map(|s| s.clone().into_fault(0).err()) {
        return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e:#}"));
    }
    let installed = sim.with(|s| {
        specs
            .into_iter()
            .filter_map(|spec| s.add_fault(spec).ok())
            .collect::<Vec<_>>()
    });
    tracing::info!(faults = installed.len(), "Faults installed");
    (StatusCode::CREATED, Json(installed)).into_response()
}

async fn clear_faults(State(sim): Shared) -> Response {
    sim.with(|s| s.faults.clear());
    tracing::info!("Faults cleared");
    StatusCode::NO_CONTENT.into_response()
}

async fn list_nodes(State(sim): Shared) -> Response {
    Json(sim.with(|s| s.nodes.iter().map(|(r, n)| n.to_json(r)).collect::<Vec<_>>())).into_response()
}

async fn show_node(State(sim): Shared, Path((ns, name)): NodePath) -> Response {
    let node = NodeRef::new(ns, name);
    match sim.with(|s| s.nodes.get(&node).map(|n| n.to_json(&node))) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("node {node} has not been used yet"),
        ),
    }
}

async fn restart_node(State(sim): Shared, Path((ns, name)): NodePath) -> Response {
    let node = NodeRef::new(ns, name);
    let view = sim.with(|s| {
        let n = s.node(&node);
        n.restart();
        n.to_json(&node)
    });
    tracing::info!(node = %node, "Sidecar restarted");
    Json(view).into_response()
}

/// The execution log, across restarts: per node and task id ever submitted, its type, how many times it was
/// executed and how many of those ran to their end. What the durability tests count duplicates from.
async fn all_executions(State(sim): Shared) -> Response {
    let log = sim.with(|s| {
        let mut all = Vec::new();
        for (r, n) in &s.nodes {
            for (id, count) in &n.executions {
                all.push(json!({
                    "namespace": r.namespace,
                    "name": r.name,
                    "id": id,
                    "type": n.types.get(id),
                    "executions": count,
                    "finished": n.finished.get(id).copied().unwrap_or(0),
                }));
            }
        }
        all
    });
    Json(log).into_response()
}

async fn all_tasks(State(sim): Shared) -> Response {
    let tasks = sim.with(|s| {
        let mut all = Vec::new();
        for (r, n) in &s.nodes {
            let mut tasks: Vec<(&Uuid, &Task)> = n.tasks.iter().collect();
            tasks.sort_by_key(|(_, t)| std::cmp::Reverse(t.seq));
            all.extend(tasks.into_iter().map(|(id, t)| n.admin_task(r, *id, t)));
        }
        all
    });
    Json(tasks).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_are_checked_like_the_sidecar_does() {
        let ok = parse_submission(br#"{"type":"mark-ready"}"#).unwrap();
        assert_eq!(ok.task_type, "mark-ready");
        assert!(ok.params.is_null());
        for (body, want) in [
            (&b"{"[..], "invalid JSON"),
            (br#"{"id":"x","type":"mark-ready"}"#, "not a UUID"),
            (br#"{"params":{}}"#, "missing task type"),
            (
                br#"{"type":"launch-rockets"}"#,
                "unknown task type: launch-rockets",
            ),
            (br#"{"type":"mark-ready","params":[1]}"#, "params must be"),
        ] {
            let err = parse_submission(body).err().unwrap();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}

//! The HTTP client for the node sidecar (`seictl serve`), reference spec section 5.
//!
//! One [`Client`] (one shared connection pool) serves every node; [`Client::node`] resolves a node's base URL from
//! the platform's URL template and returns a cheap [`NodeClient`] for the calls:
//!
//! | call | request | success |
//! |---|---|---|
//! | [`NodeClient::submit`] | `POST /v0/tasks` | 201/202 `{"id"}` |
//! | [`NodeClient::task`] | `GET /v0/tasks/{id}` | 200 [`TaskResult`] (404 = [`ErrorClass::NotFound`]) |
//! | [`NodeClient::tasks`] | `GET /v0/tasks` | 200 `[TaskResult]` (newest first) |
//! | [`NodeClient::cancel`] | `DELETE /v0/tasks/{id}` | 204 |
//! | [`NodeClient::healthz`] | `GET /v0/healthz` | 200 = `true`, 503 = `false` |
//! | [`NodeClient::node_id`] | `GET /v0/node-id` | 200 `{"nodeId"}` |
//!
//! Every call carries `Authorization: Bearer <token>` when the service-account token file exists (a missing file
//! means no header), the caller's `traceparent` when one is set, and a per-call timeout. The token is read once
//! and cached; a 401 re-reads the file and retries the call once. Errors are classified by [`Error::class`]:
//! transport failures, timeouts, 408/429 and 5xx are [`ErrorClass::Transient`], and so is a 403 from
//! kube-rbac-proxy ([`Error::Forbidden`]: missing RBAC, a configuration error logged as a warning that heals
//! when the rule is granted); a rejected submission (400) and a token refused twice are
//! [`ErrorClass::Terminal`], an unknown task id is [`ErrorClass::NotFound`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The address of a node's sidecar when the platform does not configure one: the pod's stable DNS name behind
/// its headless Service.
pub const DEFAULT_URL_TEMPLATE: &str = "http://{name}-0.{name}.{namespace}.svc.cluster.local:{port}";
/// The port of the sidecar (kube-rbac-proxy in front of `seictl serve`).
pub const DEFAULT_PORT: u16 = 8443;
/// Where Kubernetes mounts the pod's service-account token.
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The per-call timeout when the platform does not configure one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The W3C trace-context header.
pub const TRACEPARENT: &str = "traceparent";

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the client reaches sidecars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The base URL of a node's sidecar, with the placeholders `{name}`, `{namespace}` and `{port}`.
    pub url_template: String,
    /// The value of `{port}`.
    pub port: u16,
    /// The bearer token file; `None` sends no `Authorization` header at all.
    pub token_path: Option<PathBuf>,
    /// The timeout of every call (connect, request and response body together).
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url_template: DEFAULT_URL_TEMPLATE.to_owned(),
            port: DEFAULT_PORT,
            token_path: Some(PathBuf::from(DEFAULT_TOKEN_PATH)),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the engine should do about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Try again later: the sidecar is unreachable, slow or failing.
    Transient,
    /// Retrying the same call cannot succeed.
    Terminal,
    /// The sidecar does not know the task (yet): resubmit or keep waiting.
    NotFound,
}

/// A failed sidecar call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL template is not a usable `http(s)` URL once its placeholders are filled in.
    #[error("invalid sidecar url template {template:?}: {reason}")]
    InvalidTemplate {
        /// The template as configured.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("failed to build the sidecar http client")]
    BuildClient(#[source] reqwest::Error),
    /// The token file exists but cannot be read.
    #[error("failed to read the sidecar bearer token from {}", path.display())]
    ReadToken {
        /// The token file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// No connection could be made (refused, DNS, reset).
    #[error("failed to connect to the sidecar at {url}")]
    Connect {
        /// The request URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The call did not finish within the configured timeout.
    #[error("sidecar call {url} timed out after {}", humanize(*timeout))]
    Timeout {
        /// The request URL.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// Any other transport failure (the connection broke while sending or receiving).
    #[error("sidecar call {url} failed")]
    Transport {
        /// The request URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The sidecar refused the submission (400): bad params, unknown task type, invalid id.
    #[error("sidecar rejected task {task_type}: {message}")]
    Rejected {
        /// The task type submitted.
        task_type: String,
        /// The sidecar's `error` message.
        message: String,
    },
    /// The sidecar does not know this task id (404).
    #[error("sidecar at {url} does not know task {id}")]
    TaskNotFound {
        /// The request URL.
        url: String,
        /// The task id.
        id: Uuid,
    },
    /// The sidecar (or its proxy) refused the bearer token, also after re-reading it (401).
    #[error("sidecar at {url} refused the bearer token")]
    Unauthorized {
        /// The request URL.
        url: String,
    },
    /// The proxy in front of the sidecar (kube-rbac-proxy) authenticated the operator but refused access (403):
    /// its ServiceAccount lacks the RBAC the proxy's SubjectAccessReview checks. A configuration error that
    /// heals when the rule is granted, so it is transient (no attempt is consumed) and logged as a warning.
    #[error(
        "sidecar at {url} refused access (403 from kube-rbac-proxy): grant the operator's ServiceAccount \
         get/create/delete on seinodetasks.sei.io (deploy/rbac.yaml); the proxy said: {message}"
    )]
    Forbidden {
        /// The request URL.
        url: String,
        /// The proxy's answer (the start of the body).
        message: String,
    },
    /// A status the call does not expect; 5xx, 408 and 429 are transient, the rest terminal.
    #[error("sidecar call {url} answered {status}: {message}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The sidecar's `error` message, or the start of the body.
        message: String,
    },
    /// The reply did not parse (for example an HTML page from a proxy in between).
    #[error("failed to decode the sidecar's reply from {url}")]
    Decode {
        /// The request URL.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The write gate is closed (this operator replica is no longer the leader): nothing was sent.
    #[error("sidecar call {url} not sent: this replica may not write (leader lease not renewed in time)")]
    Fenced {
        /// The request URL.
        url: String,
    },
}

impl Error {
    /// What the caller should do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            // An unreadable token file, a broken connection, a slow or failing sidecar and a garbled reply (a
            // proxy in between) can all heal; the plan's deadline bounds the retries.
            Self::ReadToken { .. }
            | Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::Decode { .. }
            | Self::Forbidden { .. }
            | Self::Fenced { .. } => ErrorClass::Transient,
            Self::Status { status, .. } if is_transient_status(*status) => ErrorClass::Transient,
            Self::InvalidTemplate { .. }
            | Self::BuildClient(_)
            | Self::Rejected { .. }
            | Self::Unauthorized { .. }
            | Self::Status { .. } => ErrorClass::Terminal,
            Self::TaskNotFound { .. } => ErrorClass::NotFound,
        }
    }

    /// The HTTP status the sidecar answered, when the call got that far.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Rejected { .. } => Some(400),
            Self::TaskNotFound { .. } => Some(404),
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            _ => None,
        }
    }
}

fn is_transient_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

fn humanize(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A task submission: `POST /v0/tasks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitTask {
    /// The idempotency key: resubmitting a running or completed id is a no-op, a failed one runs again.
    pub id: Uuid,
    /// The task type, e.g. `mark-ready`.
    #[serde(rename = "type")]
    pub task_type: String,
    /// The task's camelCase params; `null` is left out of the request.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
}

impl SubmitTask {
    /// A submission of `task_type` with `params` under `id`.
    pub fn new(id: Uuid, task_type: impl Into<String>, params: serde_json::Value) -> Self {
        Self {
            id,
            task_type: task_type.into(),
            params,
        }
    }
}

/// The state of a task on the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Still executing.
    Running,
    /// Finished successfully; `result` may hold its output.
    Completed,
    /// Finished with an error; resubmitting the same id runs it again.
    Failed,
}

/// A task as the sidecar reports it: `GET /v0/tasks/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// The task id.
    pub id: Uuid,
    /// The task type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Running, completed or failed.
    pub status: TaskStatus,
    /// How many times the sidecar executed this id (1, then +1 per resubmission after a failure).
    #[serde(default)]
    pub run: u32,
    /// The params the task was submitted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
    /// The task's output (on success, and on failure for tasks with diagnostics such as `config-validate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the task was (last) submitted, RFC 3339.
    pub submitted_at: String,
    /// When the task finished, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl TaskResult {
    /// True once the task completed or failed.
    pub fn is_finished(&self) -> bool {
        self.status != TaskStatus::Running
    }
}

#[derive(Deserialize)]
struct SubmitReply {
    id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeIdReply {
    node_id: String,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: String,
}

/// The sidecar client shared by every node: one connection pool, one cached token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: Config,
    token: Mutex<CachedToken>,
    write_gate: Option<WriteGate>,
}

/// Answers whether calls with an effect (submit, cancel) may be sent now; see [`Client::with_write_gate`].
pub type WriteGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// The token file's content as last read.
#[derive(Clone)]
enum CachedToken {
    NotRead,
    /// The file does not exist (or is empty): no `Authorization` header.
    Absent,
    Present(String),
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`; fails when the URL template is unusable.
    pub fn new(config: Config) -> Result<Self> {
        check_template(&config.url_template)?;
        let http = reqwest::Client::builder()
            // Sidecars are cluster-internal: a proxy from the environment would be wrong for them.
            .no_proxy()
            .timeout(config.timeout)
            .build()
            .map_err(Error::BuildClient)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                token: Mutex::new(CachedToken::NotRead),
                write_gate: None,
            }),
        })
    }

    /// The same client, refusing every call with an effect (`POST`, `DELETE`) while `gate` answers false, with
    /// [`Error::Fenced`] (transient) and without sending anything: the operator's leader fence.
    #[must_use]
    pub fn with_write_gate(self, gate: WriteGate) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                config: inner.config.clone(),
                token: Mutex::new(CachedToken::NotRead),
                write_gate: Some(gate),
            }),
        }
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The base URL of the sidecar of node `name` in `namespace` (no trailing slash).
    pub fn base_url(&self, namespace: &str, name: &str) -> String {
        render_url_template(
            &self.inner.config.url_template,
            namespace,
            name,
            self.inner.config.port,
        )
    }

    /// The calls to one node's sidecar.
    pub fn node(&self, namespace: &str, name: &str) -> NodeClient {
        NodeClient {
            client: self.clone(),
            base: self.base_url(namespace, name),
            traceparent: None,
        }
    }

    async fn token(&self, reload: bool) -> Result<Option<String>> {
        let Some(path) = self.inner.config.token_path.as_deref() else {
            return Ok(None);
        };
        if !reload {
            match self.lock_token().clone() {
                CachedToken::NotRead => {}
                CachedToken::Absent => return Ok(None),
                CachedToken::Present(token) => return Ok(Some(token)),
            }
        }
        let token = read_token(path).await?;
        *self.lock_token() = token.clone().map_or(CachedToken::Absent, CachedToken::Present);
        Ok(token)
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, CachedToken> {
        // The cache holds plain data: a panic elsewhere cannot leave it half-written.
        self.inner.token.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A 403 becomes [`Error::Forbidden`], logged at warn level: it needs an administrator, not a retry budget.
fn forbidden(url: &str, reply: Reply) -> Result<Reply> {
    if reply.status != StatusCode::FORBIDDEN {
        return Ok(reply);
    }
    let error = Error::Forbidden {
        url: url.to_owned(),
        message: error_message(&reply.body),
    };
    tracing::warn!(
        error = &error as &dyn std::error::Error,
        "Sidecar access denied: RBAC configuration error"
    );
    Err(error)
}

async fn read_token(path: &Path) -> Result<Option<String>> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => {
            let token = text.trim();
            Ok((!token.is_empty()).then(|| token.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::ReadToken {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The base URL of a node's sidecar: `template` with `{namespace}`, `{name}` and `{port}` filled in, without a
/// trailing slash. The one renderer of the URL template (the client and the platform configuration use it).
pub fn render_url_template(template: &str, namespace: &str, name: &str, port: u16) -> String {
    template
        .replace("{namespace}", namespace)
        .replace("{name}", name)
        .replace("{port}", &port.to_string())
        .trim_end_matches('/')
        .to_owned()
}

/// Why `template` is not a usable URL template: an unknown placeholder, or not an `http(s)` base URL once its
/// placeholders are filled in.
pub fn check_url_template(template: &str) -> std::result::Result<(), String> {
    let rendered = render_url_template(template, "namespace", "name", DEFAULT_PORT);
    if let Some(start) = rendered.find(['{', '}']) {
        let rest = &rendered[start..];
        let end = rest.find('}').map_or(rest.len(), |e| e + 1);
        return Err(format!(
            "unknown placeholder {} (known: {{name}}, {{namespace}}, {{port}})",
            &rest[..end]
        ));
    }
    let url =
        reqwest::Url::parse(&rendered).map_err(|e| format!("{template:?} is not a URL template: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {} is not http or https", url.scheme()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a query or fragment cannot be part of a base URL".to_owned());
    }
    Ok(())
}

fn check_template(template: &str) -> Result<()> {
    check_url_template(template).map_err(|reason| Error::InvalidTemplate {
        template: template.to_owned(),
        reason,
    })
}

/// The calls to one node's sidecar. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeClient {
    client: Client,
    base: String,
    traceparent: Option<String>,
}

impl NodeClient {
    /// The same node, with every call carrying this W3C `traceparent` header (`None` removes it).
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.map(str::to_owned);
        self
    }

    /// The node's sidecar base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Submits a task and returns the id the sidecar acknowledged.
    ///
    /// Idempotent by id: a running or completed id is a no-op, a failed one runs again (the sidecar's `run`
    /// counter goes up). A 400 is [`Error::Rejected`] (terminal) with the sidecar's message.
    pub async fn submit(&self, task: &SubmitTask) -> Result<Uuid> {
        let url = format!("{}/v0/tasks", self.base);
        let body = serde_json::to_vec(task).map_err(|source| Error::Decode {
            url: url.clone(),
            source,
        })?;
        let reply = self.call(Method::POST, &url, Some(body)).await?;
        match reply.status {
            StatusCode::OK | StatusCode::CREATED | StatusCode::ACCEPTED => {
                let ack: SubmitReply = decode(&url, &reply.body)?;
                tracing::debug!(task.id = %ack.id, task.kind = %task.task_type, "Sidecar task submitted");
                Ok(ack.id)
            }
            StatusCode::BAD_REQUEST => Err(Error::Rejected {
                task_type: task.task_type.clone(),
                message: error_message(&reply.body),
            }),
            status => Err(status_error(url, status, &reply.body)),
        }
    }

    /// The task's current state; an id the sidecar does not know is [`Error::TaskNotFound`] (class
    /// [`ErrorClass::NotFound`]).
    pub async fn task(&self, id: Uuid) -> Result<TaskResult> {
        let url = format!("{}/v0/tasks/{id}", self.base);
        let reply = self.call(Method::GET, &url, None).await?;
        match reply.status {
            StatusCode::OK => decode(&url, &reply.body),
            StatusCode::NOT_FOUND => Err(Error::TaskNotFound { url, id }),
            status => Err(status_error(url, status, &reply.body)),
        }
    }

    /// The sidecar's most recent tasks (at most 100, newest first).
    pub async fn tasks(&self) -> Result<Vec<TaskResult>> {
        let url = format!("{}/v0/tasks", self.base);
        let reply = self.call(Method::GET, &url, None).await?;
        match reply.status {
            StatusCode::OK => decode(&url, &reply.body),
            status => Err(status_error(url, status, &reply.body)),
        }
    }

    /// Cancels (and forgets) a task; an unknown id is [`Error::TaskNotFound`].
    pub async fn cancel(&self, id: Uuid) -> Result<()> {
        let url = format!("{}/v0/tasks/{id}", self.base);
        let reply = self.call(Method::DELETE, &url, None).await?;
        match reply.status {
            StatusCode::OK | StatusCode::NO_CONTENT => Ok(()),
            StatusCode::NOT_FOUND => Err(Error::TaskNotFound { url, id }),
            status => Err(status_error(url, status, &reply.body)),
        }
    }

    /// Whether the sidecar is ready (a `mark-ready` task succeeded): 200 = `true`, 503 = `false`.
    pub async fn healthz(&self) -> Result<bool> {
        let url = format!("{}/v0/healthz", self.base);
        let reply = self.call(Method::GET, &url, None).await?;
        match reply.status {
            StatusCode::OK => Ok(true),
            StatusCode::SERVICE_UNAVAILABLE => Ok(false),
            status => Err(status_error(url, status, &reply.body)),
        }
    }

    /// The node's Tendermint node id (40 hex characters). The sidecar answers 500 until the node key exists,
    /// which is [`ErrorClass::Transient`].
    pub async fn node_id(&self) -> Result<String> {
        let url = format!("{}/v0/node-id", self.base);
        let reply = self.call(Method::GET, &url, None).await?;
        match reply.status {
            StatusCode::OK => decode::<NodeIdReply>(&url, &reply.body).map(|r| r.node_id),
            status => Err(status_error(url, status, &reply.body)),
        }
    }

    /// Sends one request; on 401 re-reads the token and sends it once more.
    async fn call(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        if method != Method::GET
            && let Some(gate) = &self.client.inner.write_gate
            && !gate()
        {
            return Err(Error::Fenced { url: url.to_owned() });
        }
        let token = self.client.token(false).await?;
        let reply = self
            .send(method.clone(), url, body.clone(), token.as_deref())
            .await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return forbidden(url, reply);
        }
        tracing::debug!(url, "Sidecar refused the bearer token; re-reading it");
        let fresh = self.client.token(true).await?;
        let reply = self.send(method, url, body, fresh.as_deref()).await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized { url: url.to_owned() });
        }
        forbidden(url, reply)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<Reply> {
        let mut request = self.client.inner.http.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(tp) = &self.traceparent {
            request = request.header(TRACEPARENT, tp);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                Error::Timeout {
                    url: url.to_owned(),
                    timeout: self.client.inner.config.timeout,
                }
            } else if source.is_connect() {
                Error::Connect {
                    url: url.to_owned(),
                    source,
                }
            } else {
                Error::Transport {
                    url: url.to_owned(),
                    source,
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        Ok(Reply {
            status,
            body: body.to_vec(),
        })
    }
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        url: url.to_owned(),
        source,
    })
}

/// The sidecar's `{"error": …}` message, else the start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(reply) = serde_json::from_slice::<ErrorReply>(body) {
        return reply.error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    text.chars().take(256).collect()
}

fn status_error(url: String, status: StatusCode, body: &[u8]) -> Error {
    Error::Status {
        url,
        status: status.as_u16(),
        message: error_message(body),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn client(template: &str) -> Client {
        Client::new(Config {
            url_template: template.to_owned(),
            ..Config::default()
        })
        .unwrap()
    }

    #[test]
    fn default_template_resolves_to_the_pods_stable_dns_name() {
        let c = client(DEFAULT_URL_TEMPLATE);
        assert_eq!(
            c.base_url("sei", "val-0"),
            "http://val-0-0.val-0.sei.svc.cluster.local:8443"
        );
    }

    #[test]
    fn simulator_template_resolves_to_a_path_prefix() {
        let c = client("http://127.0.0.1:7777/{namespace}/{name}/");
        assert_eq!(c.node("ns", "n").base_url(), "http://127.0.0.1:7777/ns/n");
    }

    #[test]
    fn unknown_placeholders_and_bad_urls_are_rejected_at_construction() {
        for bad in [
            "http://{node}.svc",
            "not a url",
            "ftp://{name}",
            "http://h/{name}?x=1",
        ] {
            let err = Client::new(Config {
                url_template: bad.to_owned(),
                ..Config::default()
            })
            .unwrap_err();
            assert!(matches!(err, Error::InvalidTemplate { .. }), "{bad}: {err}");
            assert_eq!(err.class(), ErrorClass::Terminal);
        }
    }

    #[test]
    fn submission_serialises_as_the_sidecar_expects() {
        let id = Uuid::nil();
        let task = SubmitTask::new(id, "configure-genesis", json!({"expectedGenesisHash": "ab"}));
        assert_eq!(
            serde_json::to_value(&task).unwrap(),
            json!({"id": id, "type": "configure-genesis", "params": {"expectedGenesisHash": "ab"}})
        );
        let bare = SubmitTask::new(id, "mark-ready", serde_json::Value::Null);
        assert_eq!(
            serde_json::to_value(&bare).unwrap(),
            json!({"id": id, "type": "mark-ready"})
        );
    }

    #[test]
    fn task_result_parses_the_spec_shape() {
        let id = Uuid::new_v4();
        let done: TaskResult = serde_json::from_value(json!({
            "id": id, "type": "assemble-and-upload-genesis", "status": "completed", "run": 2,
            "params": {"nodes": ["a"]}, "result": {"genesisHash": "00"},
            "submittedAt": "2026-01-01T00:00:00Z", "completedAt": "2026-01-01T00:00:01Z"
        }))
        .unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
        assert_eq!(done.run, 2);
        assert!(done.is_finished());
        assert_eq!(done.result, Some(json!({"genesisHash": "00"})));
        let running: TaskResult = serde_json::from_value(json!({
            "id": id, "type": "mark-ready", "status": "running", "run": 1, "submittedAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert!(!running.is_finished());
        assert_eq!(running.error, None);
        let round = serde_json::to_value(&done).unwrap();
        assert_eq!(round["submittedAt"], "2026-01-01T00:00:00Z");
        assert_eq!(round["type"], "assemble-and-upload-genesis");
    }

    #[test]
    fn statuses_are_classified() {
        let status = |status| Error::Status {
            url: String::new(),
            status,
            message: String::new(),
        };
        for s in [500, 502, 503, 504, 408, 429] {
            assert_eq!(status(s).class(), ErrorClass::Transient, "{s}");
        }
        for s in [403, 405, 409, 418] {
            assert_eq!(status(s).class(), ErrorClass::Terminal, "{s}");
        }
        let rejected = Error::Rejected {
            task_type: "x".into(),
            message: "unknown task type".into(),
        };
        assert_eq!(rejected.class(), ErrorClass::Terminal);
        assert!(rejected.to_string().contains("unknown task type"));
        assert_eq!(
            Error::Unauthorized { url: String::new() }.class(),
            ErrorClass::Terminal
        );
        // Missing RBAC for the proxy's access check: a configuration error that heals once granted.
        let forbidden = Error::Forbidden {
            url: "http://n".into(),
            message: "Forbidden (user=system:serviceaccount:sei-system:sei-operator, verb=create)".into(),
        };
        assert_eq!(forbidden.class(), ErrorClass::Transient);
        assert_eq!(forbidden.status(), Some(403));
        let text = forbidden.to_string();
        assert!(
            text.contains("seinodetasks.sei.io")
                && text.contains("deploy/rbac.yaml")
                && text.contains("verb=create"),
            "{text}"
        );
        assert_eq!(
            Error::TaskNotFound {
                url: String::new(),
                id: Uuid::nil()
            }
            .class(),
            ErrorClass::NotFound
        );
        assert_eq!(
            Error::Timeout {
                url: String::new(),
                timeout: DEFAULT_TIMEOUT
            }
            .class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn error_message_prefers_the_sidecars_error_field() {
        assert_eq!(
            error_message(br#"{"error":"unknown task type: x"}"#),
            "unknown task type: x"
        );
        assert_eq!(
            error_message(b"  <html>bad gateway</html> "),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_message(b""), "(empty body)");
    }

    #[tokio::test]
    async fn a_missing_token_file_means_no_token_and_a_present_one_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("sei-sidecar-token-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let c = Client::new(Config {
            token_path: Some(path.clone()),
            ..Config::default()
        })
        .unwrap();
        assert_eq!(c.token(false).await.unwrap(), None);
        std::fs::write(&path, "abc\n").unwrap();
        // Cached until a reload is asked for (after a 401).
        assert_eq!(c.token(false).await.unwrap(), None);
        assert_eq!(c.token(true).await.unwrap().as_deref(), Some("abc"));
        std::fs::write(&path, "def").unwrap();
        assert_eq!(c.token(false).await.unwrap().as_deref(), Some("abc"));
        assert_eq!(c.token(true).await.unwrap().as_deref(), Some("def"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

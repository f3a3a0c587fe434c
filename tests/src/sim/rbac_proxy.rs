//! kube-rbac-proxy in front of the simulated sidecars: what a node pod's proxy does with every request
//! (reference sections 4.4 and 5.1), against a real API server.
//!
//! For each sidecar request except the probes (`/v0/healthz`, `/v0/startupz`, `/v0/livez`, `/v0/metrics`, which
//! the real proxy lets through with `--ignore-paths`):
//! 1. the bearer token is sent to the API server in a **TokenReview**; no token, or one the server does not
//!    authenticate, is answered 401 `Unauthorized`;
//! 2. the user it names is checked with a **SubjectAccessReview** on `seinodetasks.sei.io`, namespace and name
//!    of the node, verb from the HTTP method (GET get, POST create, DELETE delete), as the node's
//!    `<node>-rbac-proxy-config` ConfigMap says; not allowed is answered 403 `Forbidden (user=..., verb=...,
//!    resource=seinodetasks, subresource=)`, as kube-rbac-proxy words it.
//!
//! The client it uses is the identity of the node pod's ServiceAccount: that identity needs `create` on
//! `tokenreviews` and `subjectaccessreviews` (ClusterRole `sei-node-rbac-proxy` in deploy/rbac.yaml), or the
//! reviews themselves are refused and every request is answered 500, as the real proxy does. Every decision is
//! kept for `GET /admin/rbac-proxy`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use serde::Serialize;

/// The paths kube-rbac-proxy lets through unauthenticated (`--ignore-paths`).
const IGNORED: [&str; 4] = ["/v0/healthz", "/v0/startupz", "/v0/livez", "/v0/metrics"];

/// One request the proxy decided on.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The node's namespace.
    pub namespace: String,
    /// The node.
    pub name: String,
    /// The SubjectAccessReview verb.
    pub verb: String,
    /// The authenticated user (`None`: authentication failed).
    pub user: Option<String>,
    /// The HTTP status the proxy answered with (200 = passed on to the sidecar).
    pub status: u16,
}

/// The proxy: an API-server client with the node pod's identity, and the decisions taken so far.
#[derive(Clone)]
pub struct RbacProxy {
    client: kube::Client,
    decisions: Arc<Mutex<Vec<Decision>>>,
}

impl std::fmt::Debug for RbacProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbacProxy").finish_non_exhaustive()
    }
}

impl RbacProxy {
    /// A proxy that reviews with `client` (the node pod ServiceAccount's identity).
    #[must_use]
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            decisions: Arc::default(),
        }
    }

    /// A proxy whose identity is the kubeconfig at `path`.
    pub async fn from_kubeconfig(path: &std::path::Path) -> anyhow::Result<Self> {
        let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(Self::new(kube::Client::try_from(config)?))
    }

    /// Every decision so far, oldest first.
    #[must_use]
    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions.lock().map(|d| d.clone()).unwrap_or_default()
    }

    fn record(&self, decision: Decision) {
        if let Ok(mut d) = self.decisions.lock() {
            d.push(decision);
        }
    }

    /// Authenticates and authorizes one request to the sidecar of `namespace/name`: `Ok(user)` to pass it on,
    /// `Err(response)` to answer it.
    async fn check(
        &self,
        method: &Method,
        token: Option<&str>,
        namespace: &str,
        name: &str,
    ) -> Result<String, Response> {
        let verb = match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "unknown",
        };
        let mut decision = Decision {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            verb: verb.to_owned(),
            user: None,
            status: 401,
        };
        let outcome = self.review(verb, token, namespace, name, &mut decision).await;
        decision.status = match &outcome {
            Ok(_) => 200,
            Err(r) => r.status().as_u16(),
        };
        self.record(decision);
        outcome
    }

    async fn review(
        &self,
        verb: &str,
        token: Option<&str>,
        namespace: &str,
        name: &str,
        decision: &mut Decision,
    ) -> Result<String, Response> {
        let unauthorized = || (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        let Some(token) = token else {
            return Err(unauthorized());
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| internal("TokenReview", &e))?;
        let status = reviewed.status.unwrap_or_default();
        let user = match status.user {
            Some(user) if status.authenticated == Some(true) => user,
            _ => return Err(unauthorized()),
        };
        let username = user.username.clone().unwrap_or_default();
        decision.user = Some(username.clone());
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra.map(|e| e.into_iter().collect::<BTreeMap<_, _>>()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("sei.io".to_owned()),
                    resource: Some("seinodetasks".to_owned()),
                    namespace: Some(namespace.to_owned()),
                    name: Some(name.to_owned()),
                    verb: Some(verb.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(|e| internal("SubjectAccessReview", &e))?;
        if answer.status.is_some_and(|s| s.allowed) {
            Ok(username)
        } else {
            Err((
                StatusCode::FORBIDDEN,
                format!("Forbidden (user={username}, verb={verb}, resource=seinodetasks, subresource=)"),
            )
                .into_response())
        }
    }
}

fn internal(what: &str, e: &kube::Error) -> Response {
    tracing::warn!(
        error = e as &dyn std::error::Error,
        "kube-rbac-proxy: the {what} failed"
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Internal Server Error: {what} failed: {e}"),
    )
        .into_response()
}

/// The middleware: sidecar paths `/{ns}/{name}/v0/...` go through [`RbacProxy::check`] (except the ignored
/// probe paths); the admin API and everything else pass.
pub(super) async fn layer(State(proxy): State<Option<RbacProxy>>, request: Request, next: Next) -> Response {
    let Some(proxy) = proxy else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let (Some(namespace), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return next.run(request).await;
    };
    let rest = format!("/{rest}");
    if namespace == "admin" || !rest.starts_with("/v0/") || IGNORED.contains(&rest.as_str()) {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    match proxy
        .check(request.method(), token.as_deref(), namespace, name)
        .await
    {
        Ok(_user) => next.run(request).await,
        Err(response) => response,
    }
}

//! The validating admission webhook for WorkflowTemplates: `kubectl apply` of a template that does not compile
//! is refused with the compiler's message (the task and field named), by the same check as the `Valid`
//! condition ([`crate::templates::check`]).
//!
//! Served over HTTPS (the API server only calls webhooks over TLS) with the certificate and key in
//! `--webhook-cert-dir` (`tls.crt`, `tls.key`, reloaded at start only), on every replica (not only the leader):
//! admission must not wait for an election. `POST /validate-workflowtemplate` takes and returns an
//! `admission.k8s.io/v1` AdmissionReview. A deleted or status-only request is always allowed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Json;
use axum::Router;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sei_crds::WorkflowTemplate;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::templates::Catalogs;

/// Path of the WorkflowTemplate webhook.
pub const TEMPLATE_PATH: &str = "/validate-workflowtemplate";

/// What the webhook checks against.
pub struct Checker {
    /// The base catalogue (built-ins and files), which `overrides` must name.
    pub catalogs: Arc<Catalogs>,
    /// Every task type.
    pub registry: sei_tasks::task::Registry,
}

impl Checker {
    /// The answer to one review.
    pub fn review(&self, review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(r) => r,
            Err(e) => return AdmissionResponse::invalid(e.to_string()).into_review(),
        };
        let response = AdmissionResponse::from(&request);
        if matches!(request.operation, Operation::Delete | Operation::Connect)
            || request.sub_resource.is_some()
        {
            return response.into_review();
        }
        let Some(object) = request.object.as_ref() else {
            return response.into_review();
        };
        let template: WorkflowTemplate = match serde_json::to_value(object).and_then(serde_json::from_value) {
            Ok(t) => t,
            Err(e) => {
                return response
                    .deny(format!("not a WorkflowTemplate: {e}"))
                    .into_review();
            }
        };
        match crate::templates::check(&template, self.catalogs.base(), &self.registry) {
            Ok(_) => response.into_review(),
            Err(e) => {
                tracing::info!(template = %crate::templates::source_name(&template), error = %e, "Refused a WorkflowTemplate at admission");
                response.deny(e.to_string()).into_review()
            }
        }
    }
}

fn tls_config(cert_dir: &Path) -> anyhow::Result<ServerConfig> {
    let cert_file = cert_dir.join("tls.crt");
    let key_file = cert_dir.join("tls.key");
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_file.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
    ServerConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the webhook certificate and key do not match")
}

/// Serves the webhook on `addr` until `shutdown` resolves. Fails at once when the certificate cannot be read.
pub async fn serve(
    addr: SocketAddr,
    cert_dir: std::path::PathBuf,
    checker: Arc<Checker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = ()>> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&cert_dir)?));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the webhook address {addr}"))?;
    let app = Router::new().route(
        TEMPLATE_PATH,
        post(move |Json(review): Json<AdmissionReview<DynamicObject>>| {
            let checker = Arc::clone(&checker);
            async move { Json(checker.review(review)) }
        }),
    );
    tracing::info!(%addr, path = TEMPLATE_PATH, "Serving the WorkflowTemplate admission webhook");
    Ok(async move {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = &e as &dyn std::error::Error, "Accepting a webhook connection failed");
                        continue;
                    }
                },
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(error = &e as &dyn std::error::Error, %peer, "Webhook TLS handshake failed");
                        return;
                    }
                };
                let service = TowerToHyperService::new(app);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(error = &e as &dyn std::error::Error, %peer, "Webhook connection ended with an error");
                }
            });
        }
    })
}

//! The reconcile error type.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status write lost an optimistic-concurrency race (409): requeue at once.
    #[error("the object changed while it was reconciled (resourceVersion conflict)")]
    Conflict,
    /// An API call failed.
    #[error("kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// (De)serialising status failed.
    #[error("status does not (de)serialise: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The CEL bindings could not be built.
    #[error("CEL bindings: {0}")]
    Cel(String),
    /// A workflow trigger failed to evaluate.
    #[error(transparent)]
    Workflow(sei_workflows::Error),
    /// The finalizer helper failed (adding/removing the finalizer, or the inner reconcile).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics and events.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Kube(_) => "kube",
            Self::Serialize(_) => "serialize",
            Self::Cel(_) | Self::Workflow(_) => "workflow",
            Self::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => "finalizer",
            },
        }
    }
}

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
    /// This replica may no longer write: its leader lease could not be renewed within the renew deadline
    /// (another replica may hold it now). Nothing was written.
    #[error("not the leader any more: writes are fenced")]
    Fenced,
}

impl Error {
    /// A short label for metrics and events.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Fenced => "fenced",
            Self::Kube(_) => "kube",
            Self::Serialize(_) => "serialize",
            Self::Cel(_) | Self::Workflow(_) => "workflow",
            Self::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                kube::runtime::finalizer::Error::AddFinalizer(e)
                | kube::runtime::finalizer::Error::RemoveFinalizer(e)
                    if is_conflict(e) =>
                {
                    "conflict"
                }
                _ => "finalizer",
            },
        }
    }

    /// Whether the reconcile lost an optimistic-concurrency race (a 409 on the status write, or on the
    /// finalizer's own patch), seen through the finalizer wrapper: such a reconcile is retried at once.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        self.category() == "conflict"
    }

    /// The requeue for a failed reconcile: at once after a conflict (the next reconcile reads the fresher
    /// object; DESIGN.md section 3), after 5 s otherwise.
    #[must_use]
    pub fn requeue(&self) -> std::time::Duration {
        if self.is_conflict() {
            std::time::Duration::from_millis(10)
        } else {
            std::time::Duration::from_secs(5)
        }
    }
}

/// What both controllers' `error_policy` does: count the error (and a conflict on its own), log it (a lost
/// write race only at debug), and requeue per [`Error::requeue`].
pub fn policy(
    kind: &str,
    error: &Error,
    metrics: &crate::metrics::Metrics,
) -> kube::runtime::controller::Action {
    metrics.reconcile_error(kind, error.category());
    if error.is_conflict() {
        tracing::debug!(
            error = error as &dyn std::error::Error,
            kind,
            "Reconcile lost a write race; retrying at once"
        );
    } else {
        tracing::warn!(error = error as &dyn std::error::Error, kind, "Reconcile failed");
    }
    kube::runtime::controller::Action::requeue(error.requeue())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::finalizer::Error as FinalizerError;

    fn api_409() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("the object has been modified", "Conflict")
                .with_code(409)
                .boxed(),
        )
    }

    #[test]
    fn conflicts_are_seen_through_the_finalizer_wrapper_and_requeue_at_once() {
        let wrapped = Error::Finalizer(Box::new(FinalizerError::ApplyFailed(Error::Conflict)));
        assert!(wrapped.is_conflict());
        assert_eq!(wrapped.requeue(), std::time::Duration::from_millis(10));
        let patch = Error::Finalizer(Box::new(FinalizerError::AddFinalizer(api_409())));
        assert!(patch.is_conflict());
        let other = Error::Finalizer(Box::new(FinalizerError::ApplyFailed(Error::Cel("x".into()))));
        assert!(!other.is_conflict());
        assert_eq!(other.requeue(), std::time::Duration::from_secs(5));
        assert!(!Error::Fenced.is_conflict());
    }
}

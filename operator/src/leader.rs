//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's timing and a write fence.
//!
//! Only the holder reconciles. The holder tries to renew every `retry` (default 2 s); a standby takes the
//! lease once it has not been renewed for `duration` (default 15 s). Every write of the Lease carries the
//! resourceVersion it read, so two candidates never both win.
//!
//! **Fencing.** Holding the Lease object is not enough: a holder that is paused (SIGSTOP, a long GC-like stall,
//! a partition) resumes believing it leads while a standby already took over. So every write this replica
//! makes (to the API server through the client layer of `run`, and to sidecars through the sidecar client's
//! write gate) first asks the [`Fence`], which is open only until `renew_deadline` (default 10 s, shorter than
//! `duration`) after the *sending* of the last successful renewal, measured on the monotonic clock. A standby
//! can take over no earlier than `duration` after that renewal, so the old holder's writes stop before a new
//! holder's can start. When the deadline passes without a renewal, the replica gives leadership up for good:
//! its in-flight reconciles are dropped and the process exits non-zero (Kubernetes restarts it as a standby).
//!
//! Why not a crate: kube-lease-manager (the maintained option for kube 5) renews once at `duration - grace`
//! in whole seconds and reports losses on a watch channel after the fact; it has no renew-deadline/retry
//! split and nothing a write can ask synchronously ("may I still write now?"), which is the fence we need.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

/// Whether this replica may write now; see the module docs. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Fence(Arc<FenceState>);

#[derive(Debug)]
struct FenceState {
    /// `None`: never closes (no leader election).
    base: Option<Instant>,
    /// Milliseconds after `base` until which writes are allowed (0: closed).
    open_until_ms: AtomicU64,
}

impl Fence {
    /// A fence that is always open (leader election disabled: this replica is the only one).
    #[must_use]
    pub fn always_open() -> Self {
        Self(Arc::new(FenceState {
            base: None,
            open_until_ms: AtomicU64::new(0),
        }))
    }

    /// A fence that is closed until the first successful [`Fence::renewed`].
    #[must_use]
    pub fn closed() -> Self {
        Self(Arc::new(FenceState {
            base: Some(Instant::now()),
            open_until_ms: AtomicU64::new(0),
        }))
    }

    /// A renewal sent at `sent` succeeded: writes are allowed until `sent + renew_deadline`.
    pub fn renewed(&self, sent: Instant, renew_deadline: Duration) {
        if let Some(base) = self.0.base {
            let until = sent.saturating_duration_since(base) + renew_deadline;
            let ms = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
            self.0.open_until_ms.fetch_max(ms, Ordering::SeqCst);
        }
    }

    /// Closes the fence for good (leadership given up).
    pub fn close(&self) {
        if self.0.base.is_some() {
            self.0.open_until_ms.store(0, Ordering::SeqCst);
        }
    }

    /// Whether a write may be sent now; a refused one is counted in `metrics` (`sei_fenced_writes_total`).
    /// What both fenced clients (the API client's layer, the sidecar client's write gate) ask.
    pub fn permits_write(&self, metrics: &crate::metrics::Metrics) -> bool {
        let open = self.is_open();
        if !open {
            metrics.fenced();
        }
        open
    }

    /// Whether a write may be sent now.
    #[must_use]
    pub fn is_open(&self) -> bool {
        let Some(base) = self.0.base else { return true };
        let now = u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.0.open_until_ms.load(Ordering::SeqCst)
    }
}

/// client-go's leader-election timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// A lease not renewed for this long may be taken over by a standby (client-go `LeaseDuration`, 15 s).
    pub duration: Duration,
    /// The holder stops writing, and gives leadership up, when it could not renew for this long
    /// (`RenewDeadline`, 10 s; must be shorter than `duration`).
    pub renew_deadline: Duration,
    /// How often the holder renews and a standby retries (`RetryPeriod`, 2 s; shorter than `renew_deadline`).
    pub retry: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// Checks `retry < renew_deadline < duration`, naming the flags.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.duration {
            return Err(format!(
                "--lease-renew-deadline ({:?}) must be shorter than --lease-duration ({:?}): the holder must stop \
                 writing before a standby may take over",
                self.renew_deadline, self.duration
            ));
        }
        if self.retry >= self.renew_deadline || self.retry.is_zero() {
            return Err(format!(
                "--lease-retry-period ({:?}) must be above zero and shorter than --lease-renew-deadline ({:?})",
                self.retry, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// Lease-based leader election settings.
#[derive(Clone, Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// Durations.
    pub timings: Timings,
    /// Open while this replica holds a lease renewed within the renew deadline.
    pub fence: Fence,
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    /// An elector for lease `namespace/name` as `identity`.
    #[must_use]
    /// An elector for lease `namespace/name` as `identity`, opening `fence` while it holds the lease. The
    /// client's writes are fenced too: the Lease path is exempt (see `run::client`).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
        fence: Fence,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            fence,
        }
    }

    /// Tries to acquire the lease every retry period until it holds it (`true`) or `stopped` resolves first
    /// (`false`).
    pub async fn acquire(&self, stopped: impl Future<Output = ()>) -> bool {
        tokio::pin!(stopped);
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "Lease check failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.timings.retry) => {}
                () = &mut stopped => return false,
            }
        }
    }

    /// Renews the lease every retry period; returns why leadership is lost: another replica holds the lease,
    /// or no renewal succeeded within the renew deadline (client-go semantics). The caller stops on SIGTERM
    /// by dropping this future.
    pub async fn hold(&self) -> String {
        let mut last_success = Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry).await;
            // Checked before trying: after a stall (SIGSTOP) longer than the deadline, a renewal that would
            // succeed now cannot undo that others may have acted meanwhile.
            if last_success.elapsed() >= self.timings.renew_deadline {
                return format!(
                    "the lease was not renewed for {:?} (renew deadline {:?})",
                    last_success.elapsed(),
                    self.timings.renew_deadline
                );
            }
            let sent = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => last_success = sent,
                Ok(false) => return "another replica holds the lease".to_owned(),
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    since_last_renewal = ?last_success.elapsed(),
                    "Renewing the lease failed"
                ),
            }
        }
    }

    /// This candidate's identity.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timings.duration.as_secs().max(1)).ok(),
            acquire_time: acquire.or_else(|| Some(micro_now())),
            renew_time: Some(micro_now()),
            lease_transitions: transitions,
            ..LeaseSpec::default()
        }
    }

    /// Acquires or renews the lease; `Ok(true)` while this candidate holds it, and then the fence is open
    /// until the renew deadline after this call began.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let sent = Instant::now();
        let held = self.acquire_or_renew().await?;
        if held {
            self.fence.renewed(sent, self.timings.renew_deadline);
        }
        Ok(held)
    }

    async fn acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, Some(0))),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_for =
            Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
        let expired = match (&spec.renew_time, spec.holder_identity.as_deref()) {
            (_, None | Some("")) | (None, _) => true,
            (Some(renewed), _) => {
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed.0);
                age.as_secs_f64() > held_for.as_secs_f64()
            }
        };
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquire = if mine { spec.acquire_time.clone() } else { None };
        lease.spec = Some(self.spec(acquire, Some(transitions)));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on graceful shutdown) so a standby takes over at once.
    pub async fn release(&self) {
        self.fence.close();
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!(error = &e as &dyn std::error::Error, "Releasing the lease failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_opens_for_the_renew_deadline_after_the_renewal_was_sent() {
        let fence = Fence::closed();
        assert!(!fence.is_open(), "closed until the first renewal");
        fence.renewed(Instant::now(), Duration::from_secs(60));
        assert!(fence.is_open());
        // Once the deadline after the renewal passed (e.g. during a SIGSTOP), the fence is closed.
        let stale = Fence::closed();
        stale.renewed(Instant::now(), Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!stale.is_open());
        fence.close();
        assert!(!fence.is_open());
        assert!(Fence::always_open().is_open());
    }

    #[test]
    fn timings_must_let_the_holder_stop_before_a_standby_can_take_over() {
        assert_eq!(Timings::default().validate(), Ok(()));
        let bad = Timings {
            renew_deadline: Duration::from_secs(15),
            ..Timings::default()
        };
        assert!(bad.validate().unwrap_err().contains("--lease-renew-deadline"));
        let bad = Timings {
            retry: Duration::from_secs(10),
            ..Timings::default()
        };
        assert!(bad.validate().unwrap_err().contains("--lease-retry-period"));
    }
}

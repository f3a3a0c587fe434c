//! Condition types, reasons and helpers shared by both resources.
//!
//! Conditions follow the Kubernetes convention (`metav1.Condition`): a list keyed by `type`, each entry
//! stamped with the `observedGeneration` it was computed for. Once set, a condition is never removed; "off" is
//! expressed as `False` with a stable reason. Use [`set_condition`] to update a list: it keeps
//! `lastTransitionTime` when the status did not change and reports whether anything changed, so the caller
//! can skip a status write that would change nothing.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `status` of a [`Condition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell.
    Unknown,
}

impl ConditionStatus {
    /// The wire form: `"True"`, `"False"` or `"Unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

impl std::fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds a condition whose `lastTransitionTime` is `now` ([`set_condition`] keeps the previous time when the
/// status is unchanged).
pub fn new_condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Inserts or updates the condition of `condition.type_` in `conditions`.
///
/// # Guarantees
/// - When a condition of that type exists and its `status` is unchanged, its `lastTransitionTime` is kept and
///   only `reason`, `message` and `observedGeneration` are updated.
/// - When the status changed, the whole condition is replaced (`lastTransitionTime` = the one passed in).
/// - A new type is appended, so the order of existing entries is stable.
/// - Returns `true` when the list changed, `false` when it was already up to date.
pub fn set_condition(conditions: &mut Vec<Condition>, condition: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        None => {
            conditions.push(condition);
            true
        }
        Some(existing) if existing.status != condition.status => {
            *existing = condition;
            true
        }
        Some(existing) => {
            let changed = existing.reason != condition.reason
                || existing.message != condition.message
                || existing.observed_generation != condition.observed_generation;
            existing.reason = condition.reason;
            existing.message = condition.message;
            existing.observed_generation = condition.observed_generation;
            changed
        }
    }
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `true` when the condition of the given type is present with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

// ---- SeiNode condition types (reference 1.1.4) ----

/// SeiNode and SeiNodeDeployment: mirrors `spec.paused` (True/[`reasons::PAUSED`], False/[`reasons::NOT_PAUSED`]).
pub const PAUSED: &str = "Paused";
/// SeiNode: state-sync witnesses are resolved (True/`Ready`, False/`NoSyncersConfigured` or `NotApplicable`,
/// Unknown/`SyncerSourceError`).
pub const STATE_SYNC_READY: &str = "StateSyncReady";
/// SeiNode: the sidecar answers `/v0/healthz` with 200 (True/`Ready`, False/`NotReady`, Unknown/`Unreachable`).
pub const SIDECAR_READY: &str = "SidecarReady";
/// SeiNode: an update plan is running (True/`UpdateStarted`, False/`UpdateComplete` or `UpdateFailed`).
pub const NODE_UPDATE_IN_PROGRESS: &str = "NodeUpdateInProgress";
/// SeiNode: the imported PVC of `spec.dataVolume.import` is usable (`PVCValidated`, `PVCNotReady`,
/// `PVCInvalid`).
pub const IMPORT_PVC_READY: &str = "ImportPVCReady";
/// SeiNode: the signing-key Secret is valid (`SigningKeyValidated`, `SigningKeyNotReady`, `SigningKeyInvalid`).
pub const SIGNING_KEY_READY: &str = "SigningKeyReady";
/// SeiNode: the node-key Secret is valid (`NodeKeyValidated`, `NodeKeyNotReady`, `NodeKeyInvalid`).
pub const NODE_KEY_READY: &str = "NodeKeyReady";
/// SeiNode: the operator keyring Secret is valid (`OperatorKeyringValidated`, `OperatorKeyringNotReady`,
/// `OperatorKeyringInvalid`).
pub const OPERATOR_KEYRING_READY: &str = "OperatorKeyringReady";
/// SeiNode: the peer list written into the node's config (`persistent_peers`) by the init workflow or
/// `node-peers`: True/[`reasons::PEERS_WRITTEN`], message [`PEERS_MESSAGE_PREFIX`] + the comma-joined list (what
/// the `node-peers` trigger compares `status.resolvedPeers` against). A condition rather than a status field, so
/// that the schema of the SeiNode CRD stays as it is.
pub const PEERS_CONFIGURED: &str = "PeersConfigured";
/// SeiNode: the StatefulSet last applied (True/[`reasons::APPLIED`], message [`TEMPLATE_MESSAGE_PREFIX`] + the
/// digest of the rendered StatefulSet, replicas left out): what the `node-reconfigure` trigger compares the
/// spec's rendering against.
pub const STATEFULSET_APPLIED: &str = "StatefulSetApplied";
/// The message of [`STATEFULSET_APPLIED`] before the digest.
pub const TEMPLATE_MESSAGE_PREFIX: &str = "template ";
/// The message of [`PEERS_CONFIGURED`] before the peer list.
pub const PEERS_MESSAGE_PREFIX: &str = "persistent_peers = ";

// ---- SeiNodeDeployment condition types (reference 1.2 / 1.5) ----

/// SeiNodeDeployment: the genesis ceremony finished (True/`Complete`, latched; False/`InProgress`,
/// `CeremonyFailed` or `NotStarted`).
pub const GENESIS_CEREMONY_COMPLETE: &str = "GenesisCeremonyComplete";
/// SeiNode and SeiNodeDeployment: a plan is active (True/`PlanStarted`; False/`PlanComplete`, `PlanFailed` or
/// `NotStarted`).
pub const PLAN_IN_PROGRESS: &str = "PlanInProgress";
/// SeiNodeDeployment: all children are Running (True/`AllNodesReady`; False/`NodesFailed`,
/// `NodesInitializing` or `Pending`).
pub const NODES_READY: &str = "NodesReady";
/// SeiNodeDeployment: children run an older image than the template (True/`ImageRolling`,
/// False/`AllUpToDate`).
pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";

/// Stable CamelCase condition reasons used by the controllers.
pub mod reasons {
    /// `Paused` is True.
    pub const PAUSED: &str = "Paused";
    /// `StatefulSetApplied` is True.
    pub const APPLIED: &str = "Applied";
    /// `PeersConfigured` is True: a workflow wrote the peer list into the node's config.
    pub const PEERS_WRITTEN: &str = "PeersWritten";
    /// `Paused` is False.
    pub const NOT_PAUSED: &str = "NotPaused";
    /// Generic positive reason (`SidecarReady`, `StateSyncReady`).
    pub const READY: &str = "Ready";
    /// The sidecar answered 503.
    pub const NOT_READY: &str = "NotReady";
    /// The sidecar could not be reached.
    pub const UNREACHABLE: &str = "Unreachable";
    /// Fewer than two state-sync witnesses are known.
    pub const NO_SYNCERS_CONFIGURED: &str = "NoSyncersConfigured";
    /// Reading the state-sync witness source failed.
    pub const SYNCER_SOURCE_ERROR: &str = "SyncerSourceError";
    /// The node has no snapshot source, state sync does not apply.
    pub const NOT_APPLICABLE: &str = "NotApplicable";
    /// An update plan was built.
    pub const UPDATE_STARTED: &str = "UpdateStarted";
    /// An update plan succeeded.
    pub const UPDATE_COMPLETE: &str = "UpdateComplete";
    /// An update plan failed.
    pub const UPDATE_FAILED: &str = "UpdateFailed";
    /// A plan was built.
    pub const PLAN_STARTED: &str = "PlanStarted";
    /// A plan succeeded.
    pub const PLAN_COMPLETE: &str = "PlanComplete";
    /// A plan failed.
    pub const PLAN_FAILED: &str = "PlanFailed";
    /// Nothing started yet (seed value of several conditions).
    pub const NOT_STARTED: &str = "NotStarted";
    /// The genesis ceremony plan is running.
    pub const IN_PROGRESS: &str = "InProgress";
    /// The genesis ceremony finished.
    pub const COMPLETE: &str = "Complete";
    /// The genesis ceremony plan failed.
    pub const CEREMONY_FAILED: &str = "CeremonyFailed";
    /// Every child is Running.
    pub const ALL_NODES_READY: &str = "AllNodesReady";
    /// At least one child Failed.
    pub const NODES_FAILED: &str = "NodesFailed";
    /// Children are still initialising.
    pub const NODES_INITIALIZING: &str = "NodesInitializing";
    /// No child exists yet.
    pub const PENDING: &str = "Pending";
    /// Some children run an older image.
    pub const IMAGE_ROLLING: &str = "ImageRolling";
    /// Every child runs the template image.
    pub const ALL_UP_TO_DATE: &str = "AllUpToDate";
    /// Outcome of a validation task (see [`validation`]): the object is valid.
    pub const VALIDATED: &str = "Validated";
    /// Outcome of a validation task (see [`validation`]): the object is malformed (terminal).
    pub const INVALID: &str = "Invalid";

    /// The reason of a validation condition as the reference names it (1.1.4): the subject, then the outcome
    /// ([`VALIDATED`], [`NOT_READY`] or [`INVALID`]). The subject is `PVC` for `ImportPVCReady`, else the
    /// condition type without `Ready`: `PVCValidated`, `SigningKeyNotReady`, `OperatorKeyringInvalid`, ...
    #[must_use]
    pub fn validation(condition_type: &str, outcome: &str) -> String {
        let subject = if condition_type == super::IMPORT_PVC_READY {
            "PVC"
        } else {
            condition_type.strip_suffix("Ready").unwrap_or(condition_type)
        };
        format!("{subject}{outcome}")
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_last_transition_time() {
        let mut list = Vec::new();
        assert!(set_condition(
            &mut list,
            new_condition(
                PAUSED,
                ConditionStatus::False,
                reasons::NOT_PAUSED,
                "",
                Some(1),
                at(10)
            )
        ));
        assert!(!set_condition(
            &mut list,
            new_condition(
                PAUSED,
                ConditionStatus::False,
                reasons::NOT_PAUSED,
                "",
                Some(1),
                at(20)
            )
        ));
        assert_eq!(list[0].last_transition_time, at(10));
        assert!(set_condition(
            &mut list,
            new_condition(
                PAUSED,
                ConditionStatus::False,
                reasons::NOT_PAUSED,
                "again",
                Some(2),
                at(30)
            )
        ));
        assert_eq!(list[0].last_transition_time, at(10));
        assert_eq!(list[0].observed_generation, Some(2));
        assert_eq!(list[0].message, "again");
    }

    #[test]
    fn validation_reasons_are_the_reference_s() {
        assert_eq!(
            reasons::validation(IMPORT_PVC_READY, reasons::VALIDATED),
            "PVCValidated"
        );
        assert_eq!(
            reasons::validation(IMPORT_PVC_READY, reasons::NOT_READY),
            "PVCNotReady"
        );
        assert_eq!(
            reasons::validation(SIGNING_KEY_READY, reasons::INVALID),
            "SigningKeyInvalid"
        );
        assert_eq!(
            reasons::validation(NODE_KEY_READY, reasons::VALIDATED),
            "NodeKeyValidated"
        );
        assert_eq!(
            reasons::validation(OPERATOR_KEYRING_READY, reasons::NOT_READY),
            "OperatorKeyringNotReady"
        );
    }

    #[test]
    fn changed_status_moves_last_transition_time() {
        let mut list = Vec::new();
        set_condition(
            &mut list,
            new_condition(PAUSED, false.into(), reasons::NOT_PAUSED, "", None, at(10)),
        );
        set_condition(
            &mut list,
            new_condition(SIDECAR_READY, true.into(), reasons::READY, "", None, at(10)),
        );
        assert!(set_condition(
            &mut list,
            new_condition(PAUSED, true.into(), reasons::PAUSED, "", None, at(20))
        ));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].type_, PAUSED);
        assert_eq!(list[0].last_transition_time, at(20));
        assert!(is_condition_true(&list, PAUSED));
        assert!(!is_condition_true(&list, NODES_READY));
        assert_eq!(
            find_condition(&list, SIDECAR_READY).map(|c| c.reason.as_str()),
            Some("Ready")
        );
    }
}

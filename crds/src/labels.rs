//! Well-known label, annotation and finalizer keys (reference section 1.6).
//!
//! Every object the operator creates for a node carries [`NODE`], [`ROLE`] and, when the chain id is known,
//! [`CHAIN`]. Children of a [`SeiNodeDeployment`](crate::SeiNodeDeployment) also carry [`DEPLOYMENT`] and
//! [`DEPLOYMENT_ORDINAL`].

/// Label on the pod template, StatefulSet, Service, PVC and ConfigMap of a node; the **only** key in the
/// StatefulSet and Service selectors. Value: the SeiNode name.
pub const NODE: &str = "sei.io/node";
/// Label with the chain id (`spec.chainId`), set when the chain id is not empty.
pub const CHAIN: &str = "sei.io/chain";
/// Label with the node's role, see [`Mode::role`](crate::Mode::role): `validator`, `archive`, `replayer`,
/// `seed` or `node` (full node).
pub const ROLE: &str = "sei.io/role";
/// SeiNode **annotation** (opt-in, value `"true"`) mirrored as a pod label: the pod asks for a dedicated
/// Kubernetes node (anti-affinity against every other `sei.io/node` pod).
pub const DEDICATED_NODE: &str = "sei.io/dedicated-node";
/// Pod label (`"true"`) when `snapshotGeneration.tendermint.publish` is set on a full node or archive.
pub const SNAPSHOT_PUBLISH: &str = "sei.io/snapshot-publish";
/// Label on the SeiNodes of a SeiNodeDeployment (and their pods); value: the deployment name. The
/// deployment's internal Service selects on it.
pub const DEPLOYMENT: &str = "sei.io/nodedeployment";
/// Label with a child's ordinal inside its SeiNodeDeployment (`"0"`, `"1"`, ...).
pub const DEPLOYMENT_ORDINAL: &str = "sei.io/nodedeployment-ordinal";
/// Label on auxiliary objects (for example the bootstrap Job and Service, value `bootstrap`).
pub const COMPONENT: &str = "sei.io/component";
/// Annotation on objects managed on behalf of a fleet (value: the managing controller, e.g.
/// `seinodedeployment`).
pub const MANAGED_BY: &str = "sei.io/managed-by";
/// Pod template annotation (`"true"`) that keeps Karpenter from disrupting node pods.
pub const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

/// Value of [`COMPONENT`] on bootstrap objects.
pub const COMPONENT_BOOTSTRAP: &str = "bootstrap";
/// Value of [`MANAGED_BY`] on objects managed by the SeiNodeDeployment controller.
pub const MANAGED_BY_DEPLOYMENT: &str = "seinodedeployment";

/// Finalizer the SeiNode controller puts on every SeiNode (`<plural>.<group>`).
pub const SEINODE_FINALIZER: &str = "seinodes.sei.io";
/// Finalizer the SeiNodeDeployment controller puts on every SeiNodeDeployment (`<plural>.<group>`).
pub const SEINODEDEPLOYMENT_FINALIZER: &str = "seinodedeployments.sei.io";

/// Annotation a user sets to the id of an object's active plan (SeiNode or SeiNodeDeployment) to cancel it: no new task starts, tasks in
/// flight finish, the `finally` tasks run, the plan ends `Cancelled` (Event `PlanCancelled`). Naming the plan id
/// makes the request apply to that plan only, never to one started later.
pub const CANCEL_PLAN: &str = "sei.io/cancel-plan";
/// Annotation a user sets to any new value to retry a `Failed` SeiNode: the node goes back to `Pending` and its
/// init workflow runs again (Event `RetryRequested`). The value handled last is `status.observedRetry`.
pub const RETRY: &str = "sei.io/retry";

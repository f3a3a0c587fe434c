//! Command-line interface. Every flag of `run` is also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The Sei node operator: runs SeiNodes and SeiNodeDeployments on Kubernetes through declarative,
/// checkpointed workflows.
#[derive(Debug, Parser)]
#[command(name = "sei-operator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers.
    ///
    /// Platform settings (images, scheduling, storage, sidecar access) come from SEI_* environment variables,
    /// optionally layered over the YAML file named by SEI_CONTROLLER_CONFIG; all problems are reported at
    /// once at startup.
    Run(Box<RunArgs>),
    /// Inspect workflow definitions.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Read the plan of a SeiNode or SeiNodeDeployment (also as `kubectl sei plan ...`).
    #[command(subcommand)]
    Plan(PlanCommand),
}

/// `plan` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// The active plan as a tree (state, attempts, durations, errors), then the history of finished plans.
    Show(PlanTarget),
    /// The active plan's DAG (else the last finished plan's is not kept: only its summary).
    Graph {
        /// What to read.
        #[command(flatten)]
        target: PlanTarget,
        /// Output format.
        #[arg(long, default_value = "dot", value_parser = ["dot", "mermaid"])]
        format: String,
    },
}

/// Which object's plan to read.
#[derive(Debug, clap::Args)]
pub struct PlanTarget {
    /// `seinode/<name>` (or `snode/`, `sn/`) or `seinodedeployment/<name>` (or `snd/`).
    pub object: String,
    /// Namespace of the object.
    #[arg(short, long, env = "SEI_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Kubeconfig file (in-cluster configuration when absent).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Read the object from a YAML or JSON file instead of the cluster (`-` for stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// `workflow` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// List the built-in workflows (and those of --dir), in trigger priority order.
    List {
        /// A directory of extra workflow YAML files.
        #[arg(long, env = "SEI_WORKFLOWS_DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the plan a workflow would run against an object now, without running anything: its tasks in
    /// order, the ones its `when` guards skip and why, and the resolved params.
    Preview(PreviewArgs),
    /// Validate workflow files (flat definitions or WorkflowTemplate manifests, several documents per file
    /// allowed) without an object: YAML shape, target kind, CEL syntax and variables, task types, params
    /// against their schemas, references to params and task outputs, dependencies and cycles, durations,
    /// retry settings, and a template's `overrides`. The same check as the admission webhook.
    Validate {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `workflow preview` arguments.
#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    /// A workflow file (flat definition or WorkflowTemplate manifest), or the name of a WorkflowTemplate in
    /// the namespace, or of a built-in workflow.
    pub workflow: String,
    /// The object: `seinode/<name>` (`snode/`, `sn/`) or `seinodedeployment/<name>` (`snd/`).
    #[arg(long)]
    pub target: String,
    /// A param value, as a WorkflowRun's `spec.params` would give it: `name=value` (value as JSON, else a
    /// string). Repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Namespace of the object (and of the template).
    #[arg(short, long, env = "SEI_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Kubeconfig file (in-cluster configuration when absent).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Read the object from a YAML or JSON file instead of the cluster (`-` for stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// `run` flags.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "SEI_NAMESPACE")]
    pub namespace: Option<String>,
    /// Objects reconciled at once, per controller.
    #[arg(long, env = "SEI_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Elect a leader through a Lease, so that only one replica reconciles.
    #[arg(long, env = "SEI_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "SEI_LEASE_NAME", default_value = "sei-operator-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (default: --namespace, else the pod's namespace, else `default`).
    #[arg(long, env = "SEI_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// A lease not renewed for this long is taken over by a standby (client-go's LeaseDuration).
    #[arg(long, env = "SEI_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// The leader stops every write and gives leadership up (exiting non-zero) when it could not renew the
    /// lease for this long; shorter than --lease-duration, so it stops before a standby can take over.
    #[arg(long, env = "SEI_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_renew_deadline: Duration,
    /// How often the leader renews and a standby retries; shorter than --lease-renew-deadline.
    #[arg(long, env = "SEI_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease_retry_period: Duration,
    /// This replica's identity in the Lease (default: hostname-pid).
    #[arg(long, env = "SEI_IDENTITY")]
    pub identity: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SEI_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "SEI_LOG", default_value = "info")]
    pub log: String,
    /// Log format: text or json.
    #[arg(long, env = "SEI_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// OTLP/gRPC endpoint for traces (none: no export).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// A directory of extra workflow YAML files, loaded after the built-in ones.
    #[arg(long, env = "SEI_WORKFLOWS_DIR")]
    pub workflows_dir: Option<PathBuf>,
    /// Address of the WorkflowTemplate admission webhook (HTTPS, `POST /validate-workflowtemplate`); not
    /// served when absent. Needs --webhook-cert-dir.
    #[arg(long, env = "SEI_WEBHOOK_ADDR", requires = "webhook_cert_dir")]
    pub webhook_addr: Option<SocketAddr>,
    /// Directory holding the webhook's serving certificate and key, `tls.crt` and `tls.key` (PEM).
    #[arg(long, env = "SEI_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Watch WorkflowTemplates and WorkflowRuns (their CRDs must be installed).
    #[arg(long, env = "SEI_WORKFLOW_API", default_value_t = true, action = clap::ArgAction::Set)]
    pub workflow_api: bool,
    /// TESTS ONLY: crash injection, `name=action;...` (see operator/src/failpoints.rs for the points). Never
    /// set in production.
    #[arg(long, env = "SEI_FAILPOINTS", hide_short_help = true)]
    pub failpoints: Option<String>,
}

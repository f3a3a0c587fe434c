//! Platform configuration: the cluster-specific settings the resource generators and the operator use
//! (reference section 6, DESIGN.md section 5 item 11).
//!
//! Every setting is an environment variable `SEI_*`; the same settings may also come from a YAML file whose path
//! is `SEI_CONTROLLER_CONFIG` (the upstream `FileConfig` schema, plus a `sidecar` section). A variable that is set
//! (and not empty) wins over the file; an empty variable counts as unset. [`PlatformConfig::from_sources`] checks
//! everything and reports **every** missing or malformed setting at once ([`ConfigErrors`], one per line, each
//! naming the variable, and the file key when the value came from the file); the binary prints that and exits
//! non-zero.
//!
//! # Loading
//! The two sources are layered by [figment]: the file (its YAML provider), then the variables over it (a small
//! provider over the lookup function, placing each variable at its file key, so loading stays pure). The merged
//! layers are extracted into serde structs of the file's shape whose leaves never fail to deserialise (a leaf
//! keeps either its text or why it is not a scalar), so one bad value cannot hide another; each setting is then
//! checked, and figment's metadata says which layer its value came from, which names the source in the error.
//! Unknown file keys are the keys the structs collect with `#[serde(flatten)]`.
//!
//! Differences from upstream, on purpose:
//! - Nothing is required. The operator must also run on a local test cluster with a single kwok node and no
//!   Karpenter, so scheduling settings (node pools, toleration key, service account) are optional: a mode whose
//!   node pool is unset gets no node affinity and no toleration (also seed: upstream refused to render), and an
//!   unset service account means the namespace's `default`. An unset storage class omits `storageClassName`
//!   (the cluster default class).
//! - Settings nothing uses (gateway, `resultExport`) are not read; a `resultExport` section in the file is
//!   tolerated and ignored. Any other unknown file key is an error (it is most likely a typo).
//! - The default sidecar image is optional ([`DEFAULT_SIDECAR_IMAGE`]); kube-rbac-proxy and cosmos-exporter are
//!   optional: without their image the container is not rendered. Without the proxy the sidecar is reached on its
//!   own port, unauthenticated (see [`PlatformConfig::sidecar_port_for`]); that is meant for test clusters and
//!   must be chosen explicitly: the operator refuses to start without the proxy unless
//!   `SEI_SIDECAR_ALLOW_UNAUTHENTICATED=true` ([`PlatformConfig::check_sidecar_authentication`]).
//! - Snapshot and genesis buckets are optional; unset, the sidecar gets no `SEI_*_BUCKET`/`SEI_*_REGION` env.
//!   A bucket without its region (or the reverse) is an error.
//!
//! | variable | file key | default |
//! |---|---|---|
//! | `SEI_NODEPOOL_NAME` | `scheduling.nodepoolName` | unset (full nodes and replayers) |
//! | `SEI_NODEPOOL_ARCHIVE` | `scheduling.nodepoolArchive` | unset |
//! | `SEI_NODEPOOL_VALIDATOR` | `scheduling.nodepoolValidator` | unset |
//! | `SEI_NODEPOOL_SEED` | `scheduling.nodepoolSeed` | unset |
//! | `SEI_TOLERATION_KEY` | `scheduling.tolerationKey` | unset (no toleration) |
//! | `SEI_SERVICE_ACCOUNT` | `scheduling.serviceAccount` | unset (namespace default) |
//! | `SEI_STORAGE_CLASS_PERF` | `storage.classPerf` | unset (validator, full node, replayer) |
//! | `SEI_STORAGE_CLASS_DEFAULT` | `storage.classDefault` | unset (seed) |
//! | `SEI_STORAGE_CLASS_ARCHIVE` | `storage.classArchive` | unset (archive) |
//! | `SEI_STORAGE_SIZE_DEFAULT` | `storage.sizeDefault` | `2000Gi` |
//! | `SEI_STORAGE_SIZE_ARCHIVE` | `storage.sizeArchive` | `40Ti` |
//! | `SEI_STORAGE_SIZE_SEED` | `storage.sizeSeed` | `20Gi` |
//! | `SEI_RESOURCE_CPU_<ROLE>` | `resources.<role>.cpuRequest` | validator 16, node 32, replayer 32, archive 64, seed 1 |
//! | `SEI_RESOURCE_MEM_<ROLE>` | `resources.<role>.memory` | validator 128Gi, node 256Gi, replayer 256Gi, archive 512Gi, seed 2Gi |
//! | `SEI_SNAPSHOT_BUCKET`, `SEI_SNAPSHOT_REGION` | `snapshot.bucket`, `snapshot.region` | unset |
//! | `SEI_GENESIS_BUCKET`, `SEI_GENESIS_REGION` | `genesis.bucket`, `genesis.region` | unset |
//! | `SEI_SIDECAR_IMAGE` | `images.sidecar` | [`DEFAULT_SIDECAR_IMAGE`] |
//! | `SEI_KUBE_RBAC_PROXY_IMAGE` | `images.kubeRBACProxy` | unset (no proxy) |
//! | `SEI_COSMOS_EXPORTER_IMAGE` | `images.cosmosExporter` | unset (no exporter) |
//! | `SEI_SIDECAR_URL_TEMPLATE` | `sidecar.urlTemplate` | [`DEFAULT_SIDECAR_URL_TEMPLATE`] |
//! | `SEI_SIDECAR_TIMEOUT` | `sidecar.timeout` | `10s` (humantime) |
//! | `SEI_SIDECAR_TOKEN_PATH` | `sidecar.tokenPath` | the pod's service-account token |
//! | `SEI_SIDECAR_ALLOW_UNAUTHENTICATED` | `sidecar.allowUnauthenticated` | `false` (`true` allows no proxy) |
//! | `SEI_STATE_SYNC_SYNCERS` | `stateSync.syncers` | none; env form `chain=host:port,host:port;chain2=...` |
//!
//! `<ROLE>` is `VALIDATOR`, `NODE` (full nodes), `REPLAYER`, `ARCHIVE` or `SEED`; the file uses the lowercase
//! role names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format as _, Yaml};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sei_crds::{Mode, SeiNode};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

use crate::resources::quantity;
use crate::sidecar;

/// The variable holding the path of the optional YAML configuration file.
pub const CONFIG_FILE_VAR: &str = "SEI_CONTROLLER_CONFIG";
/// The sidecar image used when neither the node nor the platform names one.
pub const DEFAULT_SIDECAR_IMAGE: &str = "ghcr.io/sei-protocol/seictl:v0.0.68";
/// How the operator addresses a node's sidecar: the pod's stable DNS name behind its headless Service.
pub const DEFAULT_SIDECAR_URL_TEMPLATE: &str = sidecar::DEFAULT_URL_TEMPLATE;
/// The port kube-rbac-proxy listens on in front of the sidecar (port name `api`).
pub const RBAC_PROXY_PORT: u16 = 8443;
/// Default data volume size of validators, full nodes and replayers.
pub const DEFAULT_SIZE_DEFAULT: &str = "2000Gi";
/// Default data volume size of archives.
pub const DEFAULT_SIZE_ARCHIVE: &str = "40Ti";
/// Default data volume size of seeds.
pub const DEFAULT_SIZE_SEED: &str = "20Gi";

/// Everything cluster-specific the generators and the operator need. [`Default`] is the configuration of an
/// empty environment (every default of the module table).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlatformConfig {
    /// Where node pods run.
    pub scheduling: Scheduling,
    /// Storage classes and sizes of data volumes.
    pub storage: Storage,
    /// seid resources per role.
    pub resources: RoleResources,
    /// The snapshot bucket the sidecar restores from (`SEI_SNAPSHOT_*`).
    pub snapshot: ObjectStore,
    /// The genesis bucket the sidecar exchanges ceremony artifacts through (`SEI_GENESIS_*`).
    pub genesis: ObjectStore,
    /// Container images.
    pub images: Images,
    /// How the operator reaches sidecars.
    pub sidecar: SidecarAccess,
    /// State-sync RPC witnesses per chain id (`host:port`), used when a node's snapshot names none.
    pub state_sync_syncers: BTreeMap<String, Vec<String>>,
}

/// Scheduling settings. Every field is optional (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scheduling {
    /// Karpenter node pool of full nodes and replayers.
    pub nodepool_name: Option<String>,
    /// Node pool of archives.
    pub nodepool_archive: Option<String>,
    /// Node pool of validators.
    pub nodepool_validator: Option<String>,
    /// Node pool of seeds.
    pub nodepool_seed: Option<String>,
    /// Taint key of the node pools; node pods tolerate `<key>=<pool>:NoSchedule`.
    pub toleration_key: Option<String>,
    /// Service account of node pods (unset: the namespace's `default`).
    pub service_account: Option<String>,
}

impl Scheduling {
    /// The node pool for `mode`, if configured.
    pub fn nodepool_for(&self, mode: Mode) -> Option<&str> {
        match mode {
            Mode::FullNode | Mode::Replayer => self.nodepool_name.as_deref(),
            Mode::Archive => self.nodepool_archive.as_deref(),
            Mode::Validator => self.nodepool_validator.as_deref(),
            Mode::Seed => self.nodepool_seed.as_deref(),
        }
    }
}

/// Storage classes and sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Storage {
    /// Class of validators, full nodes and replayers (unset: cluster default).
    pub class_perf: Option<String>,
    /// Class of seeds.
    pub class_default: Option<String>,
    /// Class of archives.
    pub class_archive: Option<String>,
    /// Size of validators, full nodes and replayers.
    pub size_default: Quantity,
    /// Size of archives.
    pub size_archive: Quantity,
    /// Size of seeds.
    pub size_seed: Quantity,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            class_perf: None,
            class_default: None,
            class_archive: None,
            size_default: Quantity(DEFAULT_SIZE_DEFAULT.to_owned()),
            size_archive: Quantity(DEFAULT_SIZE_ARCHIVE.to_owned()),
            size_seed: Quantity(DEFAULT_SIZE_SEED.to_owned()),
        }
    }
}

impl Storage {
    /// The storage class for `mode` (`None`: omit `storageClassName`).
    pub fn class_for(&self, mode: Mode) -> Option<&str> {
        match mode {
            Mode::FullNode | Mode::Replayer | Mode::Validator => self.class_perf.as_deref(),
            Mode::Archive => self.class_archive.as_deref(),
            Mode::Seed => self.class_default.as_deref(),
        }
    }

    /// The data volume size for `mode` (also the minimum capacity of an imported PVC).
    pub fn size_for(&self, mode: Mode) -> &Quantity {
        match mode {
            Mode::FullNode | Mode::Replayer | Mode::Validator => &self.size_default,
            Mode::Archive => &self.size_archive,
            Mode::Seed => &self.size_seed,
        }
    }
}

/// seid's CPU request and memory (request = limit; no CPU limit) for one role.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: Quantity,
    /// Memory request and limit.
    pub memory: Quantity,
}

impl Resources {
    fn new(cpu: &str, memory: &str) -> Self {
        Self {
            cpu_request: Quantity(cpu.to_owned()),
            memory: Quantity(memory.to_owned()),
        }
    }
}

/// seid resources per role (`sei.io/role`).
#[derive(Clone, Debug, PartialEq)]
pub struct RoleResources {
    /// Validators (default 16 CPU / 128Gi).
    pub validator: Resources,
    /// Full nodes (default 32 / 256Gi).
    pub node: Resources,
    /// Replayers (default 32 / 256Gi).
    pub replayer: Resources,
    /// Archives (default 64 / 512Gi).
    pub archive: Resources,
    /// Seeds (default 1 / 2Gi).
    pub seed: Resources,
}

impl Default for RoleResources {
    fn default() -> Self {
        Self {
            validator: Resources::new("16", "128Gi"),
            node: Resources::new("32", "256Gi"),
            replayer: Resources::new("32", "256Gi"),
            archive: Resources::new("64", "512Gi"),
            seed: Resources::new("1", "2Gi"),
        }
    }
}

impl RoleResources {
    /// The resources of `mode`.
    pub fn for_mode(&self, mode: Mode) -> &Resources {
        match mode {
            Mode::FullNode => &self.node,
            Mode::Archive => &self.archive,
            Mode::Replayer => &self.replayer,
            Mode::Validator => &self.validator,
            Mode::Seed => &self.seed,
        }
    }

    fn for_mode_mut(&mut self, mode: Mode) -> &mut Resources {
        match mode {
            Mode::FullNode => &mut self.node,
            Mode::Archive => &mut self.archive,
            Mode::Replayer => &mut self.replayer,
            Mode::Validator => &mut self.validator,
            Mode::Seed => &mut self.seed,
        }
    }
}

/// An object-store bucket and its region; both set or both unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStore {
    /// Bucket name.
    pub bucket: Option<String>,
    /// Region of the bucket.
    pub region: Option<String>,
}

/// Container images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// Sidecar image when the node does not set `spec.sidecar.image`.
    pub sidecar: String,
    /// kube-rbac-proxy; `None` renders no proxy and exposes the sidecar port directly.
    pub kube_rbac_proxy: Option<String>,
    /// cosmos-exporter; `None` renders no exporter.
    pub cosmos_exporter: Option<String>,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            sidecar: DEFAULT_SIDECAR_IMAGE.to_owned(),
            kube_rbac_proxy: None,
            cosmos_exporter: None,
        }
    }
}

/// How the operator reaches sidecars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarAccess {
    /// Base URL of a node's sidecar with the placeholders `{name}`, `{namespace}` and `{port}`.
    pub url_template: String,
    /// Timeout of each sidecar call.
    pub timeout: Duration,
    /// Bearer token file (a missing file means no `Authorization` header, see [`crate::sidecar`]).
    pub token_path: PathBuf,
    /// Whether sidecars may be reached without kube-rbac-proxy (no authentication): test clusters only.
    pub allow_unauthenticated: bool,
}

impl Default for SidecarAccess {
    fn default() -> Self {
        Self {
            url_template: DEFAULT_SIDECAR_URL_TEMPLATE.to_owned(),
            timeout: sidecar::DEFAULT_TIMEOUT,
            token_path: PathBuf::from(sidecar::DEFAULT_TOKEN_PATH),
            allow_unauthenticated: false,
        }
    }
}

impl PlatformConfig {
    /// Reads the process environment and, when `SEI_CONTROLLER_CONFIG` names one, the YAML file. An unreadable
    /// file is reported like any other malformed setting (under `SEI_CONTROLLER_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigErrors> {
        let env = |name: &str| std::env::var(name).ok();
        match env(CONFIG_FILE_VAR).filter(|p| !p.trim().is_empty()) {
            None => Self::from_sources(env, None),
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => Self::from_sources(env, Some(&text)),
                Err(e) => {
                    // Still report every other problem, as if the file were empty.
                    let mut errors = match Self::from_sources(env, None) {
                        Ok(_) => ConfigErrors(Vec::new()),
                        Err(errors) => errors,
                    };
                    errors.0.insert(
                        0,
                        ConfigError {
                            variable: CONFIG_FILE_VAR.to_owned(),
                            file_key: None,
                            message: format!("cannot read {path}: {e}"),
                        },
                    );
                    Err(errors)
                }
            },
        }
    }

    /// Builds the configuration from an environment lookup and the text of the optional YAML file (pure: the
    /// caller reads both). Variables win over file keys; empty values count as unset. Every problem is
    /// collected before returning.
    pub fn from_sources(
        env: impl Fn(&str) -> Option<String>,
        file: Option<&str>,
    ) -> Result<Self, ConfigErrors> {
        Loader::new(&env, file).load()
    }

    /// The port the operator uses to reach `node`'s sidecar (the `{port}` of the URL template, and the port the
    /// headless Service exposes for it): kube-rbac-proxy's 8443 when the proxy is rendered, else the node's own
    /// sidecar port (`spec.sidecar.port`, 7777 when unset or out of range).
    pub fn sidecar_port_for(&self, node: &SeiNode) -> u16 {
        if self.renders_rbac_proxy() {
            RBAC_PROXY_PORT
        } else {
            node_sidecar_port(node)
        }
    }

    /// The base URL of `node`'s sidecar: the URL template with its name, namespace (empty when unset) and
    /// [`sidecar_port_for`](Self::sidecar_port_for).
    pub fn sidecar_url_for(&self, node: &SeiNode) -> String {
        sidecar::render_url_template(
            &self.sidecar.url_template,
            node.metadata.namespace.as_deref().unwrap_or_default(),
            node.metadata.name.as_deref().unwrap_or_default(),
            self.sidecar_port_for(node),
        )
    }

    /// The sidecar client's configuration. Its single `port` is 8443 with the proxy, else the default sidecar
    /// port 7777: a node with another `spec.sidecar.port` and no proxy needs [`sidecar_port_for`](Self::sidecar_port_for).
    pub fn sidecar_client_config(&self) -> sidecar::Config {
        sidecar::Config {
            url_template: self.sidecar.url_template.clone(),
            port: if self.renders_rbac_proxy() {
                RBAC_PROXY_PORT
            } else {
                sei_crds::ports::SIDECAR
            },
            token_path: Some(self.sidecar.token_path.clone()),
            timeout: self.sidecar.timeout,
        }
    }

    /// Whether node pods get a kube-rbac-proxy container (its image is configured).
    pub fn renders_rbac_proxy(&self) -> bool {
        self.images.kube_rbac_proxy.is_some()
    }

    /// Secure by default: without kube-rbac-proxy every node's sidecar would accept anyone's tasks, so the
    /// operator starts only when the proxy is configured or that is explicitly allowed (test clusters, the
    /// demo). The error names both settings.
    pub fn check_sidecar_authentication(&self) -> Result<(), ConfigErrors> {
        if self.renders_rbac_proxy() || self.sidecar.allow_unauthenticated {
            return Ok(());
        }
        Err(ConfigErrors(vec![ConfigError {
            variable: "SEI_KUBE_RBAC_PROXY_IMAGE".to_owned(),
            file_key: None,
            message: "unset, so node sidecars would be reached without authentication; set it (images.kubeRBACProxy \
                      in the config file) to put kube-rbac-proxy in front of every sidecar, or, on a test cluster \
                      only, set SEI_SIDECAR_ALLOW_UNAUTHENTICATED=true (sidecar.allowUnauthenticated)"
                .to_owned(),
        }]))
    }
}

/// `spec.sidecar.port` as a port number (7777 when out of range; the generators refuse such a spec).
pub(crate) fn node_sidecar_port(node: &SeiNode) -> u16 {
    u16::try_from(node.spec.sidecar_port())
        .ok()
        .filter(|p| *p != 0)
        .unwrap_or(sei_crds::ports::SIDECAR)
}

/// One missing or malformed setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable of the setting.
    pub variable: String,
    /// The file key, when the bad value came from the file.
    pub file_key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)?;
        if let Some(key) = &self.file_key {
            write!(f, " (from {key} in the {CONFIG_FILE_VAR} file)")?;
        }
        Ok(())
    }
}

/// Every problem found in the configuration; `Display` prints one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Every scalar setting: its environment variable and its file key. The loader's only table: variable names are
/// not derived from file keys (upstream's names are irregular: `SEI_NODEPOOL_NAME` is `scheduling.nodepoolName`).
const SETTINGS: &[(&str, &str)] = &[
    ("SEI_NODEPOOL_NAME", "scheduling.nodepoolName"),
    ("SEI_NODEPOOL_ARCHIVE", "scheduling.nodepoolArchive"),
    ("SEI_NODEPOOL_VALIDATOR", "scheduling.nodepoolValidator"),
    ("SEI_NODEPOOL_SEED", "scheduling.nodepoolSeed"),
    ("SEI_TOLERATION_KEY", "scheduling.tolerationKey"),
    ("SEI_SERVICE_ACCOUNT", "scheduling.serviceAccount"),
    ("SEI_STORAGE_CLASS_PERF", "storage.classPerf"),
    ("SEI_STORAGE_CLASS_DEFAULT", "storage.classDefault"),
    ("SEI_STORAGE_CLASS_ARCHIVE", "storage.classArchive"),
    ("SEI_STORAGE_SIZE_DEFAULT", "storage.sizeDefault"),
    ("SEI_STORAGE_SIZE_ARCHIVE", "storage.sizeArchive"),
    ("SEI_STORAGE_SIZE_SEED", "storage.sizeSeed"),
    ("SEI_RESOURCE_CPU_VALIDATOR", "resources.validator.cpuRequest"),
    ("SEI_RESOURCE_MEM_VALIDATOR", "resources.validator.memory"),
    ("SEI_RESOURCE_CPU_NODE", "resources.node.cpuRequest"),
    ("SEI_RESOURCE_MEM_NODE", "resources.node.memory"),
    ("SEI_RESOURCE_CPU_REPLAYER", "resources.replayer.cpuRequest"),
    ("SEI_RESOURCE_MEM_REPLAYER", "resources.replayer.memory"),
    ("SEI_RESOURCE_CPU_ARCHIVE", "resources.archive.cpuRequest"),
    ("SEI_RESOURCE_MEM_ARCHIVE", "resources.archive.memory"),
    ("SEI_RESOURCE_CPU_SEED", "resources.seed.cpuRequest"),
    ("SEI_RESOURCE_MEM_SEED", "resources.seed.memory"),
    ("SEI_SNAPSHOT_BUCKET", "snapshot.bucket"),
    ("SEI_SNAPSHOT_REGION", "snapshot.region"),
    ("SEI_GENESIS_BUCKET", "genesis.bucket"),
    ("SEI_GENESIS_REGION", "genesis.region"),
    ("SEI_SIDECAR_IMAGE", "images.sidecar"),
    ("SEI_KUBE_RBAC_PROXY_IMAGE", "images.kubeRBACProxy"),
    ("SEI_COSMOS_EXPORTER_IMAGE", "images.cosmosExporter"),
    ("SEI_SIDECAR_URL_TEMPLATE", "sidecar.urlTemplate"),
    ("SEI_SIDECAR_TIMEOUT", "sidecar.timeout"),
    ("SEI_SIDECAR_TOKEN_PATH", "sidecar.tokenPath"),
    (
        "SEI_SIDECAR_ALLOW_UNAUTHENTICATED",
        "sidecar.allowUnauthenticated",
    ),
    ("SEI_STATE_SYNC_SYNCERS", "stateSync.syncers"),
];

/// The variable of the setting at file key `key`.
fn variable_of(key: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|(_, k)| *k == key)
        .map_or(CONFIG_FILE_VAR, |(variable, _)| variable)
}

/// The name of the environment layer in figment's metadata.
const FROM_ENV: &str = "environment variables";

/// The environment layer: every set, non-empty variable of [`SETTINGS`] at its file key. A figment provider over
/// a lookup function, so that [`PlatformConfig::from_sources`] stays pure (figment's own `Env` reads the process).
struct Variables<'a, F>(&'a F);

impl<F: Fn(&str) -> Option<String>> figment::Provider for Variables<'_, F> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(FROM_ENV).interpolater(|_, keys| variable_of(&keys.join(".")).to_owned())
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (variable, key) in SETTINGS {
            if let Some(value) = (self.0)(variable).filter(|v| !v.trim().is_empty()) {
                insert(
                    &mut dict,
                    key,
                    figment::value::Value::from(value.trim().to_owned()),
                );
            }
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// Sets the dotted `key` of `dict` to `value`, creating the dictionaries on the way.
fn insert(dict: &mut figment::value::Dict, key: &str, value: figment::value::Value) {
    use figment::value::{Dict, Value as V};
    match key.split_once('.') {
        None => {
            dict.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_owned())
                .or_insert_with(|| V::from(Dict::new()));
            if let V::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// A scalar setting as read: its text (a string, number or boolean as written, trimmed; empty means unset), or
/// why it is not one. Deserialising never fails, so that one bad value does not hide the others.
#[derive(Debug, Default)]
struct Raw(Option<Result<String, String>>);

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(match Json::deserialize(deserializer)? {
            Json::Null => None,
            Json::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()).map(Ok),
            Json::Number(n) => Some(Ok(n.to_string())),
            Json::Bool(b) => Some(Ok(b.to_string())),
            Json::Array(_) | Json::Object(_) => Some(Err("expected a string".to_owned())),
        }))
    }
}

/// A section of the file: absent, a mapping of its keys, or something else (an error).
#[derive(Debug, Default)]
enum Section<T> {
    #[default]
    Absent,
    Keys(T),
    NotMapping,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Json::deserialize(deserializer)? {
            Json::Null => Ok(Self::Absent),
            map @ Json::Object(_) => T::deserialize(map).map(Self::Keys).map_err(D::Error::custom),
            _ => Ok(Self::NotMapping),
        }
    }
}

impl<T: Default> Section<T> {
    fn keys(&self) -> Option<&T> {
        match self {
            Self::Keys(keys) => Some(keys),
            Self::Absent | Self::NotMapping => None,
        }
    }
}

/// Keys a section does not know, kept to report them (most likely typos).
type Unknown = BTreeMap<String, Json>;

/// The configuration as layered (file, then variables over it): the file's shape, every value as read.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Layers {
    scheduling: Section<SchedulingKeys>,
    storage: Section<StorageKeys>,
    resources: Section<ResourcesKeys>,
    snapshot: Section<StoreKeys>,
    genesis: Section<StoreKeys>,
    images: Section<ImagesKeys>,
    sidecar: Section<SidecarKeys>,
    state_sync: Section<StateSyncKeys>,
    /// Upstream's result export: nothing uses it (accepted, ignored).
    #[allow(dead_code, reason = "accepted and ignored")]
    result_export: Option<Json>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SchedulingKeys {
    nodepool_name: Raw,
    nodepool_archive: Raw,
    nodepool_validator: Raw,
    nodepool_seed: Raw,
    toleration_key: Raw,
    service_account: Raw,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StorageKeys {
    class_perf: Raw,
    class_default: Raw,
    class_archive: Raw,
    size_default: Raw,
    size_archive: Raw,
    size_seed: Raw,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourcesKeys {
    validator: Section<RoleKeys>,
    node: Section<RoleKeys>,
    replayer: Section<RoleKeys>,
    archive: Section<RoleKeys>,
    seed: Section<RoleKeys>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl ResourcesKeys {
    fn role(&self, mode: Mode) -> &Section<RoleKeys> {
        match mode {
            Mode::Validator => &self.validator,
            Mode::FullNode => &self.node,
            Mode::Replayer => &self.replayer,
            Mode::Archive => &self.archive,
            Mode::Seed => &self.seed,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RoleKeys {
    cpu_request: Raw,
    memory: Raw,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoreKeys {
    bucket: Raw,
    region: Raw,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ImagesKeys {
    sidecar: Raw,
    #[serde(rename = "kubeRBACProxy")]
    kube_rbac_proxy: Raw,
    cosmos_exporter: Raw,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct SidecarKeys {
    url_template: Raw,
    timeout: Raw,
    token_path: Raw,
    allow_unauthenticated: Raw,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StateSyncKeys {
    /// The env form `chain=host:port,host:port;chain2=...` or the file's mapping of chain id to a list.
    syncers: Option<Json>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The roles of `resources.<role>`, with their modes.
const ROLES: [(Mode, &str); 5] = [
    (Mode::Validator, "validator"),
    (Mode::FullNode, "node"),
    (Mode::Replayer, "replayer"),
    (Mode::Archive, "archive"),
    (Mode::Seed, "seed"),
];

/// Loads the layers and checks every setting, collecting every problem.
struct Loader {
    figment: Figment,
    errors: Vec<ConfigError>,
}

impl Loader {
    fn new(env: &impl Fn(&str) -> Option<String>, file: Option<&str>) -> Self {
        let mut loader = Self {
            figment: Figment::new(),
            errors: Vec::new(),
        };
        if let Some(text) = file
            && loader.check_file(text)
        {
            loader.figment = loader.figment.merge(Yaml::string(text));
        }
        loader.figment = std::mem::take(&mut loader.figment).merge(Variables(env));
        loader
    }

    fn error(&mut self, variable: &str, file_key: Option<&str>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            variable: variable.to_owned(),
            file_key: file_key.map(str::to_owned),
            message: message.into(),
        });
    }

    /// Whether the file is a YAML mapping (or empty), reporting its unknown keys and sections that are not
    /// mappings. Only the file can have those: variables are placed at known keys.
    fn check_file(&mut self, text: &str) -> bool {
        match serde_yaml::from_str::<serde_yaml::Value>(text) {
            Err(e) => {
                self.error(CONFIG_FILE_VAR, None, format!("the file is not valid YAML: {e}"));
                return false;
            }
            Ok(serde_yaml::Value::Mapping(_) | serde_yaml::Value::Null) => {}
            Ok(_) => {
                self.error(CONFIG_FILE_VAR, None, "the file must hold a YAML mapping");
                return false;
            }
        }
        match Figment::from(Yaml::string(text)).extract::<Layers>() {
            Ok(layers) => {
                for problem in shape_problems(&layers) {
                    self.error(CONFIG_FILE_VAR, None, problem);
                }
                true
            }
            Err(e) => {
                self.error(CONFIG_FILE_VAR, None, e.to_string());
                false
            }
        }
    }

    /// The file key of `key` when its value came from the file (`None`: from a variable).
    fn file_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        match self.figment.find_metadata(key) {
            Some(metadata) if metadata.name != FROM_ENV => Some(key),
            _ => None,
        }
    }

    /// The value of the setting at `key`, if set and accepted by `check` (which returns a reason on failure).
    fn checked(
        &mut self,
        raw: &Raw,
        key: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let variable = variable_of(key);
        let file_key = self.file_key(key);
        let result = match &raw.0 {
            None => return None,
            Some(Ok(value)) => check(value).map(|()| value.clone()),
            Some(Err(message)) => Err(message.clone()),
        };
        result
            .map_err(|message| self.error(variable, file_key, message))
            .ok()
    }

    fn quantity(&mut self, raw: &Raw, key: &str, default: &Quantity) -> Quantity {
        let value = self.checked(raw, key, |v| match quantity::parse(v) {
            Ok(q) if q.is_zero() => Err(format!("quantity {v:?} must be greater than zero")),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        });
        value.map_or_else(|| default.clone(), Quantity)
    }

    fn load(mut self) -> Result<PlatformConfig, ConfigErrors> {
        let layers = match self.figment.extract::<Layers>() {
            Ok(layers) => layers,
            Err(e) => {
                self.error(CONFIG_FILE_VAR, None, e.to_string());
                Layers::default()
            }
        };
        let cfg = PlatformConfig {
            scheduling: self.scheduling(layers.scheduling.keys()),
            storage: self.storage(layers.storage.keys()),
            resources: self.resources(layers.resources.keys()),
            snapshot: self.object_store(layers.snapshot.keys(), "snapshot"),
            genesis: self.object_store(layers.genesis.keys(), "genesis"),
            images: self.images(layers.images.keys()),
            sidecar: self.sidecar(layers.sidecar.keys()),
            state_sync_syncers: self.syncers(layers.state_sync.keys().and_then(|s| s.syncers.as_ref())),
        };
        if self.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    fn scheduling(&mut self, keys: Option<&SchedulingKeys>) -> Scheduling {
        let Some(k) = keys else {
            return Scheduling::default();
        };
        Scheduling {
            nodepool_name: self.checked(&k.nodepool_name, "scheduling.nodepoolName", label_value),
            nodepool_archive: self.checked(&k.nodepool_archive, "scheduling.nodepoolArchive", label_value),
            nodepool_validator: self.checked(
                &k.nodepool_validator,
                "scheduling.nodepoolValidator",
                label_value,
            ),
            nodepool_seed: self.checked(&k.nodepool_seed, "scheduling.nodepoolSeed", label_value),
            toleration_key: self.checked(&k.toleration_key, "scheduling.tolerationKey", qualified_name),
            service_account: self.checked(&k.service_account, "scheduling.serviceAccount", dns_subdomain),
        }
    }

    fn storage(&mut self, keys: Option<&StorageKeys>) -> Storage {
        let defaults = Storage::default();
        let Some(k) = keys else { return defaults };
        Storage {
            class_perf: self.checked(&k.class_perf, "storage.classPerf", dns_subdomain),
            class_default: self.checked(&k.class_default, "storage.classDefault", dns_subdomain),
            class_archive: self.checked(&k.class_archive, "storage.classArchive", dns_subdomain),
            size_default: self.quantity(&k.size_default, "storage.sizeDefault", &defaults.size_default),
            size_archive: self.quantity(&k.size_archive, "storage.sizeArchive", &defaults.size_archive),
            size_seed: self.quantity(&k.size_seed, "storage.sizeSeed", &defaults.size_seed),
        }
    }

    fn resources(&mut self, keys: Option<&ResourcesKeys>) -> RoleResources {
        let mut resources = RoleResources::default();
        let Some(k) = keys else { return resources };
        for (mode, role) in ROLES {
            let Some(keys) = k.role(mode).keys() else {
                continue;
            };
            let current = resources.for_mode(mode).clone();
            *resources.for_mode_mut(mode) = Resources {
                cpu_request: self.quantity(
                    &keys.cpu_request,
                    &format!("resources.{role}.cpuRequest"),
                    &current.cpu_request,
                ),
                memory: self.quantity(&keys.memory, &format!("resources.{role}.memory"), &current.memory),
            };
        }
        resources
    }

    fn object_store(&mut self, keys: Option<&StoreKeys>, section: &str) -> ObjectStore {
        let Some(k) = keys else {
            return ObjectStore::default();
        };
        let (bucket_key, region_key) = (format!("{section}.bucket"), format!("{section}.region"));
        let (bucket_var, region_var) = (variable_of(&bucket_key), variable_of(&region_key));
        let bucket = self.checked(&k.bucket, &bucket_key, no_whitespace);
        let region = self.checked(&k.region, &region_key, no_whitespace);
        match (&bucket, &region) {
            (Some(_), None) if !self.has_error(region_var) => {
                self.error(region_var, None, format!("required when {bucket_var} is set"));
            }
            (None, Some(_)) if !self.has_error(bucket_var) => {
                self.error(bucket_var, None, format!("required when {region_var} is set"));
            }
            _ => {}
        }
        ObjectStore { bucket, region }
    }

    fn images(&mut self, keys: Option<&ImagesKeys>) -> Images {
        let defaults = Images::default();
        let Some(k) = keys else { return defaults };
        Images {
            sidecar: self
                .checked(&k.sidecar, "images.sidecar", image_ref)
                .unwrap_or(defaults.sidecar),
            kube_rbac_proxy: self.checked(&k.kube_rbac_proxy, "images.kubeRBACProxy", image_ref),
            cosmos_exporter: self.checked(&k.cosmos_exporter, "images.cosmosExporter", image_ref),
        }
    }

    fn sidecar(&mut self, keys: Option<&SidecarKeys>) -> SidecarAccess {
        let defaults = SidecarAccess::default();
        let Some(k) = keys else { return defaults };
        SidecarAccess {
            url_template: self
                .checked(&k.url_template, "sidecar.urlTemplate", url_template)
                .unwrap_or(defaults.url_template),
            timeout: self
                .checked(&k.timeout, "sidecar.timeout", |v| timeout(v).map(drop))
                .and_then(|t| timeout(&t).ok())
                .unwrap_or(defaults.timeout),
            token_path: self
                .checked(&k.token_path, "sidecar.tokenPath", absolute_path)
                .map_or(defaults.token_path, PathBuf::from),
            allow_unauthenticated: self
                .checked(&k.allow_unauthenticated, "sidecar.allowUnauthenticated", boolean)
                .is_some_and(|v| v == "true"),
        }
    }

    fn has_error(&self, variable: &str) -> bool {
        self.errors.iter().any(|e| e.variable == variable)
    }

    fn syncers(&mut self, value: Option<&Json>) -> BTreeMap<String, Vec<String>> {
        const KEY: &str = "stateSync.syncers";
        let file_key = self.file_key(KEY);
        let (out, mut problems) = match value {
            None | Some(Json::Null) => return BTreeMap::new(),
            Some(Json::String(text)) if file_key.is_none() => parse_syncers(text),
            Some(Json::Object(map)) => syncers_of_map(map),
            Some(_) => (
                BTreeMap::new(),
                vec!["expected a mapping of chain id to host:port lists".to_owned()],
            ),
        };
        for (chain, servers) in &out {
            if dns_label(chain).is_err() {
                problems.push(format!("chain id {chain:?} is not a DNS label"));
            }
            for server in servers {
                if let Err(e) = host_port(server) {
                    problems.push(format!("chain {chain}: {e}"));
                }
            }
        }
        for problem in problems {
            self.error(variable_of(KEY), file_key, problem);
        }
        out
    }
}

/// The file's unknown keys and sections that are not mappings.
fn shape_problems(layers: &Layers) -> Vec<String> {
    fn unknown(problems: &mut Vec<String>, prefix: &str, keys: &Unknown) {
        problems.extend(keys.keys().map(|key| format!("unknown key {prefix}{key}")));
    }
    fn section<T>(
        problems: &mut Vec<String>,
        name: &str,
        section: &Section<T>,
        keys: impl Fn(&T) -> &Unknown,
    ) {
        match section {
            Section::Absent => {}
            Section::NotMapping => problems.push(format!("{name} must be a mapping")),
            Section::Keys(k) => unknown(problems, &format!("{name}."), keys(k)),
        }
    }
    let mut problems = Vec::new();
    unknown(&mut problems, "", &layers.unknown);
    section(&mut problems, "scheduling", &layers.scheduling, |k| &k.unknown);
    section(&mut problems, "storage", &layers.storage, |k| &k.unknown);
    section(&mut problems, "resources", &layers.resources, |k| &k.unknown);
    if let Section::Keys(resources) = &layers.resources {
        for (mode, role) in ROLES {
            section(
                &mut problems,
                &format!("resources.{role}"),
                resources.role(mode),
                |k| &k.unknown,
            );
        }
    }
    section(&mut problems, "snapshot", &layers.snapshot, |k| &k.unknown);
    section(&mut problems, "genesis", &layers.genesis, |k| &k.unknown);
    section(&mut problems, "images", &layers.images, |k| &k.unknown);
    section(&mut problems, "sidecar", &layers.sidecar, |k| &k.unknown);
    section(&mut problems, "stateSync", &layers.state_sync, |k| &k.unknown);
    problems
}

/// The env form `chain=host:port,host:port;chain2=...`, and its problems.
fn parse_syncers(text: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((chain, list)) = entry.split_once('=') else {
            problems.push(format!("entry {entry:?} is not chain=host:port,host:port"));
            continue;
        };
        let servers = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        out.insert(chain.trim().to_owned(), servers);
    }
    (out, problems)
}

/// The file form, a mapping of chain id to a list of `host:port`, and its problems.
fn syncers_of_map(map: &serde_json::Map<String, Json>) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (chain, list) in map {
        let servers = match list {
            Json::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or(()))
                .collect::<Result<Vec<_>, ()>>(),
            _ => Err(()),
        };
        match servers {
            Ok(servers) => {
                out.insert(chain.clone(), servers);
            }
            Err(()) => problems.push(format!("{chain} must map to a list of host:port strings")),
        }
    }
    (out, problems)
}

fn timeout(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => Err(format!("timeout {value:?} must be greater than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("invalid duration {value:?} ({e}); use e.g. 10s or 1m30s")),
    }
}

fn no_whitespace(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_whitespace) {
        Err(format!("{value:?} must not contain whitespace"))
    } else {
        Ok(())
    }
}

fn image_ref(value: &str) -> Result<(), String> {
    no_whitespace(value).map_err(|_| format!("image {value:?} must not contain whitespace"))
}

fn boolean(value: &str) -> Result<(), String> {
    match value {
        "true" | "false" => Ok(()),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

fn absolute_path(value: &str) -> Result<(), String> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(format!("{value:?} is not an absolute path"))
    }
}

/// A Kubernetes label value (`karpenter.sh/nodepool` values, toleration values).
fn label_value(value: &str) -> Result<(), String> {
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid label value (at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric)"
        ))
    }
}

/// A lowercase RFC 1123 label.
fn dns_label(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a lowercase RFC 1123 label"))
    }
}

/// A lowercase RFC 1123 subdomain (service account and storage class names).
fn dns_subdomain(value: &str) -> Result<(), String> {
    if value.len() <= 253 && value.split('.').all(|part| dns_label(part).is_ok()) {
        Ok(())
    } else {
        Err(format!("{value:?} is not a lowercase RFC 1123 subdomain"))
    }
}

/// A qualified name as used for label and taint keys: `[prefix/]name`.
fn qualified_name(value: &str) -> Result<(), String> {
    let (prefix, name) = value.rsplit_once('/').unwrap_or(("", value));
    let name_ok = label_value(name).is_ok() && !name.is_empty();
    let prefix_ok = prefix.is_empty() || dns_subdomain(prefix).is_ok();
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid taint key ([dns-prefix/]name)"))
    }
}

fn host_port(value: &str) -> Result<(), String> {
    let bad = || format!("{value:?} is not a bare host:port");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty() && !host.contains(|c: char| c.is_whitespace() || "/,:".contains(c));
    if port_ok && host_ok { Ok(()) } else { Err(bad()) }
}

fn url_template(value: &str) -> Result<(), String> {
    sidecar::check_url_template(value)
}

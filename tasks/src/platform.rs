//! Platform configuration: the cluster-specific settings the resource generators and the operator use
//! (reference section 6, DESIGN.md section 5 item 11).
//!
//! Every setting is an environment variable `SEI_*`; the same settings may also come from a YAML file whose path
//! is `SEI_CONTROLLER_CONFIG` (the upstream `FileConfig` schema, plus a `sidecar` section). A variable that is set
//! (and not empty) wins over the file; an empty variable counts as unset. [`PlatformConfig::from_sources`] checks
//! everything and reports **every** missing or malformed setting at once ([`ConfigErrors`], one per line, each
//! naming the variable); the binary prints that and exits non-zero.
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

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sei_crds::{Mode, SeiNode};
use serde_yaml::Value;

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
        let mut reader = Reader {
            env: &env,
            file: Value::Null,
            errors: Vec::new(),
        };
        if let Some(text) = file {
            reader.load_file(text);
        }
        let cfg = reader.read();
        if reader.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(reader.errors))
        }
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

/// A raw value and where it came from.
struct Raw {
    value: String,
    file_key: Option<String>,
}

/// File sections and their keys; `resultExport` is an upstream section nothing uses (accepted, ignored).
const FILE_SCHEMA: &[(&str, &[&str])] = &[
    (
        "scheduling",
        &[
            "nodepoolName",
            "nodepoolArchive",
            "nodepoolValidator",
            "nodepoolSeed",
            "tolerationKey",
            "serviceAccount",
        ],
    ),
    (
        "storage",
        &[
            "classPerf",
            "classDefault",
            "classArchive",
            "sizeDefault",
            "sizeArchive",
            "sizeSeed",
        ],
    ),
    ("resources", &["validator", "node", "replayer", "archive", "seed"]),
    ("snapshot", &["bucket", "region"]),
    ("genesis", &["bucket", "region"]),
    ("images", &["sidecar", "kubeRBACProxy", "cosmosExporter"]),
    (
        "sidecar",
        &["urlTemplate", "timeout", "tokenPath", "allowUnauthenticated"],
    ),
    ("stateSync", &["syncers"]),
    ("resultExport", &[]),
];

/// The roles of `resources.<role>`, with their modes and variable suffixes.
const ROLES: [(Mode, &str, &str); 5] = [
    (Mode::Validator, "validator", "VALIDATOR"),
    (Mode::FullNode, "node", "NODE"),
    (Mode::Replayer, "replayer", "REPLAYER"),
    (Mode::Archive, "archive", "ARCHIVE"),
    (Mode::Seed, "seed", "SEED"),
];

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    env: &'a F,
    file: Value,
    errors: Vec<ConfigError>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn error(&mut self, variable: &str, file_key: Option<&str>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            variable: variable.to_owned(),
            file_key: file_key.map(str::to_owned),
            message: message.into(),
        });
    }

    fn load_file(&mut self, text: &str) {
        let value: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.error(CONFIG_FILE_VAR, None, format!("the file is not valid YAML: {e}"));
                return;
            }
        };
        match &value {
            Value::Null => {}
            Value::Mapping(map) => {
                for (key, section) in map {
                    let Some(key) = key.as_str() else {
                        self.error(CONFIG_FILE_VAR, None, format!("non-string key {key:?}"));
                        continue;
                    };
                    match FILE_SCHEMA.iter().find(|(name, _)| *name == key) {
                        None => self.error(CONFIG_FILE_VAR, None, format!("unknown key {key}")),
                        Some((_, [])) => {}
                        Some((_, fields)) => self.check_section(key, section, fields),
                    }
                }
            }
            _ => self.error(CONFIG_FILE_VAR, None, "the file must hold a YAML mapping"),
        }
        self.file = value;
    }

    fn check_section(&mut self, section: &str, value: &Value, fields: &[&str]) {
        match value {
            Value::Null => {}
            Value::Mapping(map) => {
                for key in map.keys() {
                    match key.as_str() {
                        Some(k) if fields.contains(&k) => {}
                        _ => self.error(
                            CONFIG_FILE_VAR,
                            None,
                            format!("unknown key {section}.{}", display_key(key)),
                        ),
                    }
                }
            }
            _ => self.error(CONFIG_FILE_VAR, None, format!("{section} must be a mapping")),
        }
    }

    /// The file value at a dotted path, or `None`.
    fn file_value(&self, path: &str) -> Option<&Value> {
        path.split('.')
            .try_fold(&self.file, |v, k| v.get(k))
            .filter(|v| !v.is_null())
    }

    /// The raw string of a scalar setting: env (non-empty) wins, then the file.
    fn raw(&mut self, variable: &str, file_key: &str) -> Option<Raw> {
        if let Some(value) = (self.env)(variable).filter(|v| !v.trim().is_empty()) {
            return Some(Raw {
                value: value.trim().to_owned(),
                file_key: None,
            });
        }
        let value = match self.file_value(file_key)? {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                self.error(variable, Some(file_key), "expected a string");
                return None;
            }
        };
        (!value.is_empty()).then(|| Raw {
            value,
            file_key: Some(file_key.to_owned()),
        })
    }

    /// A setting checked by `check` (which returns a reason on failure).
    fn checked(
        &mut self,
        variable: &str,
        file_key: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let raw = self.raw(variable, file_key)?;
        match check(&raw.value) {
            Ok(()) => Some(raw.value),
            Err(message) => {
                self.error(variable, raw.file_key.as_deref(), message);
                None
            }
        }
    }

    fn quantity(&mut self, variable: &str, file_key: &str, default: &Quantity) -> Quantity {
        let value = self.checked(variable, file_key, |v| match quantity::parse(v) {
            Ok(q) if q.is_zero() => Err(format!("quantity {v:?} must be greater than zero")),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        });
        value.map_or_else(|| default.clone(), Quantity)
    }

    fn read(&mut self) -> PlatformConfig {
        let mut cfg = PlatformConfig::default();

        let s = &mut cfg.scheduling;
        s.nodepool_name = self.checked("SEI_NODEPOOL_NAME", "scheduling.nodepoolName", label_value);
        s.nodepool_archive = self.checked("SEI_NODEPOOL_ARCHIVE", "scheduling.nodepoolArchive", label_value);
        s.nodepool_validator = self.checked(
            "SEI_NODEPOOL_VALIDATOR",
            "scheduling.nodepoolValidator",
            label_value,
        );
        s.nodepool_seed = self.checked("SEI_NODEPOOL_SEED", "scheduling.nodepoolSeed", label_value);
        s.toleration_key = self.checked("SEI_TOLERATION_KEY", "scheduling.tolerationKey", qualified_name);
        s.service_account = self.checked("SEI_SERVICE_ACCOUNT", "scheduling.serviceAccount", dns_subdomain);

        let st = &mut cfg.storage;
        st.class_perf = self.checked("SEI_STORAGE_CLASS_PERF", "storage.classPerf", dns_subdomain);
        st.class_default = self.checked("SEI_STORAGE_CLASS_DEFAULT", "storage.classDefault", dns_subdomain);
        st.class_archive = self.checked("SEI_STORAGE_CLASS_ARCHIVE", "storage.classArchive", dns_subdomain);
        st.size_default = self.quantity(
            "SEI_STORAGE_SIZE_DEFAULT",
            "storage.sizeDefault",
            &st.size_default,
        );
        st.size_archive = self.quantity(
            "SEI_STORAGE_SIZE_ARCHIVE",
            "storage.sizeArchive",
            &st.size_archive,
        );
        st.size_seed = self.quantity("SEI_STORAGE_SIZE_SEED", "storage.sizeSeed", &st.size_seed);

        for (mode, role, suffix) in ROLES {
            if !matches!(
                self.file_value(&format!("resources.{role}")),
                None | Some(Value::Mapping(_))
            ) {
                self.error(
                    CONFIG_FILE_VAR,
                    None,
                    format!("resources.{role} must be a mapping"),
                );
            }
            let current = cfg.resources.for_mode(mode).clone();
            let cpu = self.quantity(
                &format!("SEI_RESOURCE_CPU_{suffix}"),
                &format!("resources.{role}.cpuRequest"),
                &current.cpu_request,
            );
            let memory = self.quantity(
                &format!("SEI_RESOURCE_MEM_{suffix}"),
                &format!("resources.{role}.memory"),
                &current.memory,
            );
            *cfg.resources.for_mode_mut(mode) = Resources {
                cpu_request: cpu,
                memory,
            };
        }

        cfg.snapshot = self.object_store("SNAPSHOT", "snapshot");
        cfg.genesis = self.object_store("GENESIS", "genesis");

        if let Some(image) = self.checked("SEI_SIDECAR_IMAGE", "images.sidecar", image_ref) {
            cfg.images.sidecar = image;
        }
        cfg.images.kube_rbac_proxy =
            self.checked("SEI_KUBE_RBAC_PROXY_IMAGE", "images.kubeRBACProxy", image_ref);
        cfg.images.cosmos_exporter =
            self.checked("SEI_COSMOS_EXPORTER_IMAGE", "images.cosmosExporter", image_ref);

        if let Some(t) = self.checked("SEI_SIDECAR_URL_TEMPLATE", "sidecar.urlTemplate", url_template) {
            cfg.sidecar.url_template = t;
        }
        if let Some(t) = self.checked("SEI_SIDECAR_TIMEOUT", "sidecar.timeout", |v| timeout(v).map(drop)) {
            cfg.sidecar.timeout = timeout(&t).unwrap_or(sidecar::DEFAULT_TIMEOUT);
        }
        if let Some(p) = self.checked("SEI_SIDECAR_TOKEN_PATH", "sidecar.tokenPath", absolute_path) {
            cfg.sidecar.token_path = PathBuf::from(p);
        }
        cfg.sidecar.allow_unauthenticated = self
            .checked(
                "SEI_SIDECAR_ALLOW_UNAUTHENTICATED",
                "sidecar.allowUnauthenticated",
                boolean,
            )
            .is_some_and(|v| v == "true");

        cfg.state_sync_syncers = self.syncers();
        cfg
    }

    fn object_store(&mut self, upper: &str, section: &str) -> ObjectStore {
        let bucket_var = format!("SEI_{upper}_BUCKET");
        let region_var = format!("SEI_{upper}_REGION");
        let bucket = self.checked(&bucket_var, &format!("{section}.bucket"), no_whitespace);
        let region = self.checked(&region_var, &format!("{section}.region"), no_whitespace);
        match (&bucket, &region) {
            (Some(_), None) if !self.has_error(&region_var) => {
                self.error(&region_var, None, format!("required when {bucket_var} is set"));
            }
            (None, Some(_)) if !self.has_error(&bucket_var) => {
                self.error(&bucket_var, None, format!("required when {region_var} is set"));
            }
            _ => {}
        }
        ObjectStore { bucket, region }
    }

    fn has_error(&self, variable: &str) -> bool {
        self.errors.iter().any(|e| e.variable == variable)
    }

    fn syncers(&mut self) -> BTreeMap<String, Vec<String>> {
        const VAR: &str = "SEI_STATE_SYNC_SYNCERS";
        const KEY: &str = "stateSync.syncers";
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        let from_file;
        if let Some(text) = (self.env)(VAR).filter(|v| !v.trim().is_empty()) {
            from_file = None;
            for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
                let Some((chain, list)) = entry.split_once('=') else {
                    problems.push(format!("entry {entry:?} is not chain=host:port,host:port"));
                    continue;
                };
                let servers: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                out.insert(chain.trim().to_owned(), servers);
            }
        } else {
            from_file = Some(KEY);
            match self.file_value(KEY) {
                None => return out,
                Some(Value::Mapping(map)) => {
                    for (chain, list) in map {
                        let servers = match list {
                            Value::Sequence(items) => items
                                .iter()
                                .map(|i| i.as_str().map(str::to_owned).ok_or(()))
                                .collect::<Result<Vec<_>, ()>>(),
                            _ => Err(()),
                        };
                        match (chain.as_str(), servers) {
                            (Some(chain), Ok(servers)) => {
                                out.insert(chain.to_owned(), servers);
                            }
                            _ => problems.push(format!(
                                "{} must map to a list of host:port strings",
                                display_key(chain)
                            )),
                        }
                    }
                }
                Some(_) => problems.push("expected a mapping of chain id to host:port lists".to_owned()),
            }
        }
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
            self.error(VAR, from_file, problem);
        }
        out
    }
}

fn display_key(key: &Value) -> String {
    key.as_str().map_or_else(|| format!("{key:?}"), str::to_owned)
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

//! No secret material where it does not belong. A validator with a signing key, a node key and an operator
//! keyring (with its passphrase), each in its own Secret of fresh random bytes, is initialised by one operator
//! process (JSON logs, the deployed format, at the default level) and updated to a new image by a second one (text
//! logs, at debug level). Then every place an operator writes to is searched for each key's bytes, their
//! base64 and hex, each Secret file's base64 (what the API carries) and the passphrase: the SeiNode (spec,
//! status, annotations), the Events of the namespace, the ConfigMaps and the StatefulSet, both logs, and the
//! spans of the namespace in Jaeger. Zero hits; the Secrets themselves are searched the same way as a control
//! (every needle is found there, so the encodings searched are the ones that would leak).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use sei_crds::SeiNode;
use serde_json::{Value, json};

use common::{Operator, Sim, in_phase, seinode, setup};

const WAIT: Duration = Duration::from_secs(90);

/// `n` random bytes (UUID v4s: 122 random bits each, enough for a needle nothing else contains).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

/// Standard base64, as Kubernetes writes Secret data.
fn b64(bytes: &[u8]) -> String {
    serde_json::to_value(ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What must not leak, each with a label.
struct Material {
    needles: Vec<(String, Vec<u8>)>,
    secrets: Vec<Secret>,
}

impl Material {
    fn new() -> Self {
        let mut needles = Vec::new();
        let mut secrets = Vec::new();
        let mut key = |label: &str, bytes: &[u8]| {
            needles.push((format!("{label} bytes"), bytes.to_vec()));
            needles.push((format!("{label} base64"), b64(bytes).into_bytes()));
            needles.push((format!("{label} hex"), hex(bytes).into_bytes()));
        };
        // Ed25519 keys as Tendermint writes them: 64 bytes (seed + public key), base64 in JSON.
        let signing = random_bytes(64);
        let node = random_bytes(64);
        let info = random_bytes(96);
        key("signing key", &signing);
        key("node key", &node);
        key("keyring entry", &info);
        let passphrase = hex(&random_bytes(24));
        needles.push(("passphrase".to_owned(), passphrase.clone().into_bytes()));
        needles.push((
            "passphrase base64 (Secret data)".to_owned(),
            b64(passphrase.as_bytes()).into_bytes(),
        ));

        let pub_key = |k: &[u8]| json!({"type": "tendermint/PubKeyEd25519", "value": b64(&k[32..])});
        let priv_key = |k: &[u8]| json!({"type": "tendermint/PrivKeyEd25519", "value": b64(k)});
        let signing_file = json!({
            "address": hex(&signing[32..52]).to_uppercase(),
            "pub_key": pub_key(&signing),
            "priv_key": priv_key(&signing),
        })
        .to_string();
        let node_file = json!({"priv_key": priv_key(&node)}).to_string();
        for (label, file) in [("signing key file", &signing_file), ("node key file", &node_file)] {
            needles.push((
                format!("{label} base64 (Secret data)"),
                b64(file.as_bytes()).into_bytes(),
            ));
        }
        needles.push((
            "keyring entry base64 (Secret data)".to_owned(),
            b64(&info).into_bytes(),
        ));

        let secret = |name: &str, data: Vec<(&str, Vec<u8>)>| -> Secret {
            Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                data: Some(
                    data.into_iter()
                        .map(|(k, v)| (k.to_owned(), ByteString(v)))
                        .collect(),
                ),
                ..Default::default()
            }
        };
        secrets.push(secret(
            "val-signing",
            vec![("priv_validator_key.json", signing_file.into_bytes())],
        ));
        secrets.push(secret(
            "val-node-key",
            vec![("node_key.json", node_file.into_bytes())],
        ));
        secrets.push(secret(
            "val-keyring",
            vec![
                ("node_admin.info", info),
                (
                    &format!("{}.address", hex(&random_bytes(20))),
                    b"node_admin".to_vec(),
                ),
            ],
        ));
        secrets.push(secret(
            "val-keyring-pass",
            vec![("passphrase", passphrase.into_bytes())],
        ));
        Self { needles, secrets }
    }

    /// The labels of the needles found in `haystack`.
    fn found_in(&self, haystack: &[u8]) -> Vec<&str> {
        self.needles
            .iter()
            .filter(|(_, needle)| haystack.windows(needle.len()).any(|w| w == needle.as_slice()))
            .map(|(label, _)| label.as_str())
            .collect()
    }
}

fn validator(image: &str) -> Value {
    json!({
        "chainId": "atlantic-2",
        "image": image,
        "validator": {
            "signingKey": {"secret": {"secretName": "val-signing"}},
            "nodeKey": {"secret": {"secretName": "val-node-key"}},
            "operatorKeyring": {"secret": {
                "secretName": "val-keyring",
                "keyName": "node_admin",
                "passphraseSecretRef": {"secretName": "val-keyring-pass", "key": "passphrase"},
            }},
        },
    })
}

/// Every span Jaeger holds for `trace_ids` and for the namespace's reconciles, as JSON text.
async fn spans(jaeger: &str, namespace: &str, trace_ids: &[String]) -> (usize, String) {
    let mut count = 0;
    let mut text = String::new();
    let client = reqwest::Client::new();
    for id in trace_ids {
        let body: Value = common::eventually(
            &format!("trace {id} in Jaeger"),
            Duration::from_secs(30),
            || async {
                let resp = client
                    .get(format!("{jaeger}/api/traces/{id}"))
                    .send()
                    .await
                    .ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let body: Value = resp.json().await.ok()?;
                body["data"][0]["spans"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty())
                    .then_some(body)
            },
        )
        .await;
        count += body["data"][0]["spans"].as_array().map_or(0, Vec::len);
        text.push_str(&body.to_string());
    }
    let tags = json!({"k8s.namespace.name": namespace}).to_string();
    let search = reqwest::Url::parse_with_params(
        &format!("{jaeger}/api/traces"),
        [
            ("service", "sei-operator"),
            ("tags", tags.as_str()),
            ("limit", "500"),
            ("lookback", "1h"),
        ],
    )
    .unwrap();
    if let Ok(resp) = client.get(search).send().await
        && let Ok(body) = resp.json::<Value>().await
    {
        for t in body["data"].as_array().into_iter().flatten() {
            count += t["spans"].as_array().map_or(0, Vec::len);
        }
        text.push_str(&body.to_string());
    }
    (count, text)
}

/// The validator after its init and an image update, and the two operators' logs (JSON, then text).
struct Lifecycle {
    node: SeiNode,
    json_log: String,
    text_log: String,
}

/// Initialises the validator with one operator (JSON logs, as deployed, default level) and updates its image
/// with another (text logs, debug level).
async fn init_and_update(ns: &sei_tests::TestNamespace) -> Lifecycle {
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let otlp = ns.env().otlp_endpoint.clone();
    let common_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("SEI_LEADER_ELECT", "false"),
    ];
    let nodes = ns.api::<SeiNode>();

    // ---- Initialised by an operator logging JSON (as deployed), at the default level.
    let mut json_op = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[
            common_env[0],
            common_env[1],
            ("SEI_LOG_FORMAT", "json"),
            ("SEI_LOG", "info"),
        ],
    );
    nodes
        .create(&PostParams::default(), &seinode("val", &validator("seid:v1")))
        .await
        .unwrap();
    let running = sei_tests::wait_for(&nodes, "val", in_phase("Running"), WAIT).await;
    assert!(running.is_ok(), "{running:?}\n{}", json_op.log());
    json_op.terminate(Duration::from_secs(10));
    let json_log = json_op.log();

    // ---- Updated by an operator logging text, at debug level.
    let mut text_op = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[
            common_env[0],
            common_env[1],
            ("SEI_LOG_FORMAT", "text"),
            (
                "SEI_LOG",
                "debug,hyper=info,hyper_util=info,h2=info,tower=info,rustls=info",
            ),
        ],
    );
    nodes
        .patch(
            "val",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "seid:v2"}})),
        )
        .await
        .unwrap();
    let updated = sei_tests::wait_for(
        &nodes,
        "val",
        |n: Option<&SeiNode>| {
            n.is_some_and(|n| {
                common::phase(n) == "Running"
                    && common::status_json(n)["currentImage"] == "seid:v2"
                    && common::status_json(n)["plan"].is_null()
            })
        },
        WAIT,
    )
    .await;
    assert!(updated.is_ok(), "{updated:?}\n{}", text_op.log());
    let node = updated.unwrap();
    text_op.terminate(Duration::from_secs(10));
    Lifecycle {
        node,
        json_log,
        text_log: text_op.log(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stay_out_of_status_events_logs_and_spans() {
    let Some(ns) = setup("secrets").await else { return };
    let material = Material::new();
    for s in &material.secrets {
        ns.api::<Secret>()
            .create(&PostParams::default(), s)
            .await
            .unwrap();
    }
    let Lifecycle {
        node,
        json_log,
        text_log,
    } = init_and_update(&ns).await;

    // ---- Search.
    let history: Vec<String> = common::status_json(&node)["planHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().replace('-', ""))
        .collect();
    assert!(history.len() >= 2, "an init and an update plan: {history:?}");
    let events = ns.api::<Event>().list(&ListParams::default()).await.unwrap();
    let events_v1: kube::Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let events_v1 = events_v1.list(&ListParams::default()).await.unwrap();
    let config_maps = ns.api::<ConfigMap>().list(&ListParams::default()).await.unwrap();
    let statefulsets = ns
        .api::<StatefulSet>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let (span_count, span_text) = spans(&ns.env().jaeger_query_url, ns.name(), &history).await;
    let places: Vec<(&str, Vec<u8>)> = vec![
        (
            "the SeiNode (spec, status, metadata)",
            serde_json::to_vec(&node).unwrap(),
        ),
        ("the Events (core/v1)", serde_json::to_vec(&events).unwrap()),
        (
            "the Events (events.k8s.io/v1)",
            serde_json::to_vec(&events_v1).unwrap(),
        ),
        ("the ConfigMaps", serde_json::to_vec(&config_maps).unwrap()),
        ("the StatefulSets", serde_json::to_vec(&statefulsets).unwrap()),
        ("the operator's JSON log", json_log.clone().into_bytes()),
        ("the operator's text log", text_log.clone().into_bytes()),
        ("the spans in Jaeger", span_text.into_bytes()),
    ];
    // The searches are not vacuous.
    assert!(
        !events.items.is_empty() || !events_v1.items.is_empty(),
        "the operator recorded Events"
    );
    assert!(
        json_log.lines().count() > 5 && json_log.trim_start().starts_with('{'),
        "a JSON log:\n{json_log}"
    );
    assert!(
        text_log.lines().count() > 20 && !text_log.trim_start().starts_with('{'),
        "a debug text log"
    );
    assert!(span_count > 10, "spans of both plans were found ({span_count})");
    let control: Vec<u8> =
        serde_json::to_vec(&ns.api::<Secret>().list(&ListParams::default()).await.unwrap()).unwrap();
    let visible = material.found_in(&control);
    for (label, _) in &material.needles {
        if label.ends_with("(Secret data)") {
            assert!(
                visible.contains(&label.as_str()),
                "control: {label} is in the Secrets as read from the API"
            );
        }
    }

    let mut leaks = Vec::new();
    for (place, haystack) in &places {
        for label in material.found_in(haystack) {
            leaks.push(format!("{label} in {place}"));
        }
    }
    eprintln!(
        "searched {} needles in {} places ({} spans, {} + {} log lines, {} + {} events): {} hits",
        material.needles.len(),
        places.len(),
        span_count,
        json_log.lines().count(),
        text_log.lines().count(),
        events.items.len(),
        events_v1.items.len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "secret material leaked:\n{}", leaks.join("\n"));
}

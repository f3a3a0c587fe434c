//! Node keys and the genesis artifacts exchanged through the bucket directory.
//!
//! Bucket layout (as the real sidecar's S3 bucket, all under `<chainId>/`):
//! `<chainId>/<node>/gentx.json`, `<chainId>/<node>/identity.json`, `<chainId>/genesis.json`,
//! `<chainId>/peers.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail, ensure};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::faults::NodeRef;

/// The domain-separation prefix of the node-key seed; see [`node_key`].
pub const NODE_KEY_SEED_PREFIX: &str = "sei-sidecar-sim/node-key/v1";

/// The node's ed25519 key, derived from (namespace, name):
/// `seed = SHA-256("sei-sidecar-sim/node-key/v1" 0x00 namespace 0x00 name)`.
///
/// Deterministic on purpose: the real sidecar keeps `node_key.json` on the node's data volume, so a node's id
/// survives restarts of its pod; the simulator keeps its state in memory, and deriving the key makes a node's id
/// survive a restart of the simulator too (after `generate-identity` runs again). The key is a real ed25519 key
/// (gentxs are signed with it and the assembler verifies the signatures); it is not secret, which a simulator
/// does not need.
pub fn node_key(node: &NodeRef) -> SigningKey {
    let mut h = Sha256::new();
    h.update(NODE_KEY_SEED_PREFIX.as_bytes());
    h.update([0]);
    h.update(node.namespace.as_bytes());
    h.update([0]);
    h.update(node.name.as_bytes());
    SigningKey::from_bytes(&h.finalize().into())
}

/// The Tendermint node id: hex(SHA-256(ed25519 public key)[..20]), 40 hex characters.
pub fn node_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..20])
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The peer address of `name` in `namespace`, as the real assembler writes it.
pub fn peer_address(node_id: &str, namespace: &str, name: &str) -> String {
    format!("{node_id}@{name}-0.{name}.{namespace}.svc.cluster.local:26656")
}

/// A gentx: one `MsgCreateValidator` for the node, signed with its key.
pub fn gentx(key: &SigningKey, chain_id: &str, moniker: &str, staking: &str, balance: &str) -> Value {
    let body = json!({
        "messages": [{
            "@type": "/cosmos.staking.v1beta1.MsgCreateValidator",
            "description": {"moniker": moniker},
            "validator_address": node_id(&key.verifying_key()),
            "pubkey": {"@type": "/cosmos.crypto.ed25519.PubKey", "key": hex::encode(key.verifying_key().as_bytes())},
            "value": {"amount": staking},
        }],
        "memo": format!("chain-id={chain_id}"),
    });
    let signature = key.sign(&sign_bytes(chain_id, &body));
    json!({
        "body": body,
        "accountBalance": balance,
        "signatures": [hex::encode(signature.to_bytes())],
    })
}

fn sign_bytes(chain_id: &str, body: &Value) -> Vec<u8> {
    // serde_json writes object keys in sorted order (no preserve_order feature): a canonical encoding.
    let mut bytes = chain_id.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(body.to_string().as_bytes());
    bytes
}

/// Checks that a gentx holds exactly one `MsgCreateValidator` signed by `node_id`'s key; returns the message.
pub fn verify_gentx(gentx: &Value, chain_id: &str, node_id_want: &str) -> anyhow::Result<Value> {
    let body = &gentx["body"];
    let msgs = body["messages"]
        .as_array()
        .ok_or_else(|| anyhow!("gentx has no messages"))?;
    let creates: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["@type"] == "/cosmos.staking.v1beta1.MsgCreateValidator")
        .collect();
    ensure!(
        creates.len() == 1,
        "gentx has {} MsgCreateValidator messages, want exactly 1",
        creates.len()
    );
    let msg = creates[0];
    let pubkey_hex = msg["pubkey"]["key"]
        .as_str()
        .ok_or_else(|| anyhow!("gentx has no pubkey"))?;
    let pubkey: [u8; 32] = hex::decode(pubkey_hex)?
        .try_into()
        .map_err(|_| anyhow!("pubkey is not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&pubkey)?;
    let got = node_id(&key);
    ensure!(
        got == node_id_want,
        "gentx is signed by node {got}, identity.json says {node_id_want}"
    );
    let sig_hex = gentx["signatures"][0]
        .as_str()
        .ok_or_else(|| anyhow!("gentx is not signed"))?;
    let sig: [u8; 64] = hex::decode(sig_hex)?
        .try_into()
        .map_err(|_| anyhow!("signature is not 64 bytes"))?;
    key.verify(&sign_bytes(chain_id, body), &Signature::from_bytes(&sig))
        .context("gentx signature does not verify")?;
    Ok(msg.clone())
}

/// The identity document uploaded next to the gentx.
pub fn identity(key: &SigningKey) -> Value {
    json!({
        "node_key": {"pub_key": {"type": "tendermint/PubKeyEd25519", "value": hex::encode(key.verifying_key().as_bytes())}},
        "node_id": node_id(&key.verifying_key()),
    })
}

/// The bucket directory standing in for the genesis bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    root: PathBuf,
}

impl Bucket {
    /// A bucket rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key` (`<chainId>/...`); refuses keys that would leave the bucket.
    pub fn path(&self, key: &str) -> anyhow::Result<PathBuf> {
        ensure!(
            !key.is_empty()
                && key
                    .split('/')
                    .all(|part| !part.is_empty() && part != "." && part != ".."),
            "bucket key {key:?} is not a relative path of plain names"
        );
        Ok(self.root.join(key))
    }

    /// True when `key` exists.
    pub fn exists(&self, key: &str) -> anyhow::Result<bool> {
        Ok(self.path(key)?.is_file())
    }

    /// The bytes of `key`, `None` when absent.
    pub fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The JSON document at `key`, `None` when absent.
    pub fn get_json(&self, key: &str) -> anyhow::Result<Option<Value>> {
        self.get(key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).with_context(|| format!("parsing bucket object {key}"))
            })
            .transpose()
    }

    /// Writes `key` atomically (temp file + rename), so a reader never sees half an object.
    pub fn put(&self, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path(key)?;
        let dir = path
            .parent()
            .ok_or_else(|| anyhow!("bucket key {key:?} has no parent"))?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".{}.tmp-{}", uuid::Uuid::new_v4(), std::process::id()));
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming into {}", path.display()))?;
        Ok(())
    }

    /// Writes a JSON document (pretty-printed) and returns the bytes written.
    pub fn put_json(&self, key: &str, value: &Value) -> anyhow::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(value)?;
        bytes.push(b'\n');
        self.put(key, &bytes)?;
        Ok(bytes)
    }
}

/// What the assembler needs to know.
#[derive(Clone, Debug)]
pub struct Assembly {
    /// The chain.
    pub chain_id: String,
    /// The namespace of the validators (for peer addresses).
    pub namespace: String,
    /// The validators' node names, in order.
    pub nodes: Vec<String>,
    /// The balance of every validator's genesis account when its gentx does not say.
    pub account_balance: Option<String>,
    /// Extra genesis accounts, copied as given.
    pub accounts: Value,
    /// Dotted-path overrides of `app_state`.
    pub overrides: Value,
}

/// The nodes whose gentx or identity is not in the bucket yet.
pub fn missing_artifacts(bucket: &Bucket, a: &Assembly) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    for node in &a.nodes {
        let chain = &a.chain_id;
        if !bucket.exists(&format!("{chain}/{node}/gentx.json"))?
            || !bucket.exists(&format!("{chain}/{node}/identity.json"))?
        {
            missing.push(node.clone());
        }
    }
    Ok(missing)
}

/// Builds and uploads `genesis.json` and `peers.json` from every node's artifacts; returns the genesis hash.
/// An existing `genesis.json` is kept (as the real sidecar's marker does) and its hash returned.
pub fn assemble(bucket: &Bucket, a: &Assembly, genesis_time: &str) -> anyhow::Result<String> {
    let chain = &a.chain_id;
    let mut validators = Vec::new();
    let mut gen_txs = Vec::new();
    let mut balances = Vec::new();
    let mut peers = Vec::new();
    for node in &a.nodes {
        let identity = bucket
            .get_json(&format!("{chain}/{node}/identity.json"))?
            .ok_or_else(|| anyhow!("{chain}/{node}/identity.json vanished"))?;
        let id = identity["node_id"]
            .as_str()
            .ok_or_else(|| anyhow!("{chain}/{node}/identity.json has no node_id"))?
            .to_owned();
        let gentx = bucket
            .get_json(&format!("{chain}/{node}/gentx.json"))?
            .ok_or_else(|| anyhow!("{chain}/{node}/gentx.json vanished"))?;
        let msg = verify_gentx(&gentx, chain, &id).with_context(|| format!("gentx of {node}"))?;
        let balance = gentx["accountBalance"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| a.account_balance.clone());
        balances.push(json!({"address": id, "node": node, "coins": balance}));
        validators.push(json!({
            "address": id,
            "name": node,
            "pub_key": msg["pubkey"],
            "power": msg["value"]["amount"],
        }));
        gen_txs.push(gentx);
        peers.push(peer_address(&id, &a.namespace, node));
    }
    let genesis_key = format!("{chain}/genesis.json");
    let bytes = if let Some(existing) = bucket.get(&genesis_key)? {
        existing
    } else {
        let mut app_state = json!({
            "auth": {"accounts": a.accounts},
            "bank": {"balances": balances},
            "genutil": {"gen_txs": gen_txs},
        });
        apply_overrides(&mut app_state, &a.overrides)?;
        let genesis = json!({
            "genesis_time": genesis_time,
            "chain_id": chain,
            "initial_height": "1",
            "validators": validators,
            "app_state": app_state,
        });
        bucket.put_json(&genesis_key, &genesis)?
    };
    bucket.put_json(&format!("{chain}/peers.json"), &json!(peers))?;
    Ok(sha256_hex(&bytes))
}

/// Sets each `"a.b.c": value` of `overrides` inside `app_state`, creating objects on the way.
fn apply_overrides(app_state: &mut Value, overrides: &Value) -> anyhow::Result<()> {
    let Some(map) = overrides.as_object() else {
        if overrides.is_null() {
            return Ok(());
        }
        bail!("overrides must be an object of dotted paths");
    };
    for (path, value) in map {
        let mut at = &mut *app_state;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let obj = at
                .as_object_mut()
                .ok_or_else(|| anyhow!("override {path}: {part} is not in an object"))?;
            if i + 1 == parts.len() {
                obj.insert((*part).to_owned(), value.clone());
                break;
            }
            at = obj.entry((*part).to_owned()).or_insert_with(|| json!({}));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_40_hex_and_stable_per_node() {
        let a = node_key(&NodeRef::new("ns", "a"));
        let id = node_id(&a.verifying_key());
        assert_eq!(id.len(), 40);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, node_id(&node_key(&NodeRef::new("ns", "a")).verifying_key()));
        assert_ne!(id, node_id(&node_key(&NodeRef::new("ns2", "a")).verifying_key()));
    }

    #[test]
    fn gentx_verifies_with_its_own_key_only() {
        let a = node_key(&NodeRef::new("ns", "a"));
        let b = node_key(&NodeRef::new("ns", "b"));
        let tx = gentx(&a, "chain", "a", "10usei", "100usei");
        verify_gentx(&tx, "chain", &node_id(&a.verifying_key())).unwrap();
        assert!(verify_gentx(&tx, "chain", &node_id(&b.verifying_key())).is_err());
        assert!(verify_gentx(&tx, "other-chain", &node_id(&a.verifying_key())).is_err());
    }

    #[test]
    fn bucket_keys_cannot_escape() {
        let bucket = Bucket::new("/tmp/x");
        assert!(bucket.path("../etc/passwd").is_err());
        assert!(bucket.path("c//x").is_err());
        assert!(bucket.path("c/n/gentx.json").is_ok());
    }

    #[test]
    fn overrides_set_dotted_paths() {
        let mut s = json!({"staking": {"params": {"x": 1}}});
        apply_overrides(
            &mut s,
            &json!({"staking.params.unbonding_time": "1s", "new.k": 2}),
        )
        .unwrap();
        assert_eq!(s["staking"]["params"]["unbonding_time"], "1s");
        assert_eq!(s["staking"]["params"]["x"], 1);
        assert_eq!(s["new"]["k"], 2);
    }
}

//! The RBAC of `deploy/rbac.yaml` is enough: the operator, authenticated as that ServiceAccount (a real token
//! from the TokenRequest API), takes a node from created to Running and deletes it with its PVC.

#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use sei_crds::SeiNode;
use serde_json::{Value, json};

use common::{Operator, Sim, setup};

/// deploy/rbac.yaml, moved into namespace `ns` (cluster-scoped names get the namespace as suffix).
fn rbac_objects(ns: &str) -> Vec<(ApiResource, bool, Value)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml")).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), obj["apiVersion"].as_str().unwrap().to_owned()),
        };
        let (plural, namespaced) = match kind.as_str() {
            "ServiceAccount" => ("serviceaccounts", true),
            "ClusterRole" => ("clusterroles", false),
            "ClusterRoleBinding" => ("clusterrolebindings", false),
            "Role" => ("roles", true),
            "RoleBinding" => ("rolebindings", true),
            other => panic!("unexpected kind {other} in deploy/rbac.yaml"),
        };
        if namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        } else {
            obj["metadata"]["name"] = json!(format!("{}-{ns}", obj["metadata"]["name"].as_str().unwrap()));
        }
        if kind == "ClusterRoleBinding" {
            obj["roleRef"]["name"] = json!(format!("{}-{ns}", obj["roleRef"]["name"].as_str().unwrap()));
        }
        // (`obj["subjects"]` would insert a null field into objects that have none.)
        for subject in obj
            .get_mut("subjects")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            subject["namespace"] = json!(ns);
        }
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, &kind), plural);
        out.push((ar, namespaced, obj));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_rbac_is_enough_to_run_a_node_from_created_to_deleted() {
    let Some(ns) = setup("rbac").await else { return };
    let admin = ns.client();
    let objects = rbac_objects(ns.name());
    for (ar, namespaced, obj) in &objects {
        let api: Api<DynamicObject> = if *namespaced {
            Api::namespaced_with(admin.clone(), ns.name(), ar)
        } else {
            Api::all_with(admin.clone(), ar)
        };
        let name = obj["metadata"]["name"].as_str().unwrap();
        api.patch(name, &PatchParams::apply("sei-tests").force(), &Patch::Apply(obj))
            .await
            .unwrap();
    }
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns.name())
        .create_token_request(
            "sei-operator",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let mut kubeconfig: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&ns.env().kubeconfig).unwrap()).unwrap();
    kubeconfig["users"] = json!([{"name": "admin", "user": {"token": token}}]);
    let path = std::env::temp_dir().join(format!("sei-rbac-{}.kubeconfig", ns.name()));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();

    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let op = Operator::start(
        ns.env(),
        ns.name(),
        &sim,
        &[("KUBECONFIG", path.to_str().unwrap())],
    );
    let nodes = ns.api::<SeiNode>();
    let node: SeiNode = serde_json::from_value(json!({
        "apiVersion": "sei.io/v1alpha1", "kind": "SeiNode", "metadata": {"name": "rpc"},
        "spec": {"chainId": "atlantic-2", "image": "seid:v1", "fullNode": {}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let running = sei_tests::wait_for(
        &nodes,
        "rpc",
        |n: Option<&SeiNode>| {
            n.and_then(|n| n.status.as_ref())
                .and_then(|s| s.phase)
                .is_some_and(|p| p.as_str() == "Running")
        },
        Duration::from_secs(60),
    )
    .await;
    assert!(running.is_ok(), "{running:?}\n{}", op.log());
    nodes.delete("rpc", &DeleteParams::default()).await.unwrap();
    for _ in 0..100 {
        if nodes.get_opt("rpc").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        nodes.get_opt("rpc").await.unwrap().is_none(),
        "the finalizer was released\n{}",
        op.log()
    );
    let pvc = ns
        .api::<PersistentVolumeClaim>()
        .get_opt("data-rpc")
        .await
        .unwrap();
    assert!(
        pvc.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the data PVC is deleted"
    );
    assert!(
        !op.log().to_lowercase().contains("forbidden"),
        "no API call was forbidden:\n{}",
        op.log()
    );

    for (ar, namespaced, obj) in &objects {
        if !namespaced {
            let api: Api<DynamicObject> = Api::all_with(admin.clone(), ar);
            let _ = api
                .delete(
                    obj["metadata"]["name"].as_str().unwrap(),
                    &DeleteParams::default(),
                )
                .await;
        }
    }
    let _ = std::fs::remove_file(&path);
}

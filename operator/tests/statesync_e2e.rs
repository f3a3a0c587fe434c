//! End-to-end, the state-sync witness gate (reference 3.4): a node with a snapshot source and fewer than two
//! witnesses does not start its init (condition `StateSyncReady` False/`NoSyncersConfigured` saying how to fix
//! it, Event `StateSyncBlocked`); once `spec.snapshot.rpcServers` declares two, the init runs and
//! `configure-state-sync` gets the witnesses, the trust period and the backfill blocks. Runs in its own
//! namespace against the local cluster.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use kube::api::{Patch, PatchParams, PostParams};
use sei_crds::SeiNode;
use serde_json::json;

use common::{Operator, Sim, eventually, in_phase, seinode, setup};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_sync_node_waits_for_two_witnesses_then_passes_them_to_the_sidecar() {
    let Some(ns) = setup("e2e-statesync").await else {
        return;
    };
    let sim = Sim::start(Duration::from_millis(50), vec![]).await;
    let nodes = ns.api::<SeiNode>();
    let _op = Operator::start(ns.env(), ns.name(), &sim, &[]);
    let spec = json!({"chainId": "pacific-1", "image": "seid:v1",
                      "fullNode": {"snapshot": {"stateSync": {}, "trustPeriod": "168h0m0s", "backfillBlocks": 10}}});
    nodes
        .create(&PostParams::default(), &seinode("ss", &spec))
        .await
        .unwrap();

    let blocked = eventually("StateSyncReady False/NoSyncersConfigured", WAIT, || async {
        let n = nodes.get_opt("ss").await.ok().flatten()?;
        let c = n.status.as_ref()?.condition("StateSyncReady")?.clone();
        (c.status == "False" && c.reason == "NoSyncersConfigured").then_some((n, c))
    })
    .await;
    assert!(
        blocked.1.message.contains("spec.snapshot.rpcServers"),
        "{}",
        blocked.1.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = nodes.get("ss").await.unwrap();
    let s = n.status.as_ref().unwrap();
    assert!(
        s.plan.is_none() && s.plan_history.is_empty(),
        "no init while blocked: {s:?}"
    );
    assert!(
        sim.node_tasks(ns.name(), "ss").await.is_empty(),
        "the sidecar was told nothing"
    );

    nodes
        .patch(
            "ss",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"fullNode": {"snapshot": {"rpcServers": ["rpc-b:26657", "rpc-a:26657"]}}}}),
            ),
        )
        .await
        .unwrap();
    let n = eventually("ss Running", WAIT, || async {
        let n = nodes.get_opt("ss").await.ok().flatten()?;
        in_phase("Running")(Some(&n)).then_some(n)
    })
    .await;
    let c = n.status.as_ref().unwrap().condition("StateSyncReady").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Ready"));
    let tasks = sim.node_tasks(ns.name(), "ss").await;
    let sync = tasks
        .iter()
        .find(|t| t["type"] == "configure-state-sync")
        .unwrap_or_else(|| panic!("no configure-state-sync in {tasks:?}"));
    assert_eq!(
        sync["params"]["rpcServers"],
        json!(["rpc-a:26657", "rpc-b:26657"]),
        "{sync}"
    );
    // 168h as the CRD's duration type writes it (a Go duration seictl parses).
    assert_eq!(sync["params"]["trustPeriod"], "604800s", "{sync}");
    assert_eq!(sync["params"]["backfillBlocks"], 10, "{sync}");
}

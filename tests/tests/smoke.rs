//! Smoke tests of the local control plane itself: if these fail, nothing else that needs the cluster can pass.
//! (a) a StatefulSet with a PVC gets a Running, Ready pod (apiserver + controller-manager + scheduler + kwok +
//! the hostPath provisioner); (b) spans exported over OTLP show up in Jaeger's query API with the parent link;
//! (c) the apiserver rejects a custom resource that violates its CRD schema, naming the field.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn statefulset_with_pvc_gets_a_ready_pod() {
    let Some(ns) = sei_tests::test_namespace("smoke-sts").await else {
        return;
    };
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "main",
                    "image": "registry.invalid/web:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                }]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }],
        },
    }))
    .unwrap();
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();

    let pods = ns.api::<Pod>();
    let pod = sei_tests::wait_for(
        &pods,
        "web-0",
        |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(
        pod.spec.unwrap().node_name.as_deref(),
        Some("kwok-node-0"),
        "scheduled on the kwok node"
    );

    let pvc = sei_tests::wait_for(
        &ns.api::<PersistentVolumeClaim>(),
        "data-web-0",
        |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref()).and_then(|s| s.phase.as_deref()) == Some("Bound")
        },
        WAIT,
    )
    .await
    .unwrap();
    assert!(
        pvc.spec.unwrap().volume_name.is_some_and(|v| !v.is_empty()),
        "the PVC names its bound volume"
    );

    let ready = sei_tests::wait_for(
        &ns.api::<StatefulSet>(),
        "web",
        |s: Option<&StatefulSet>| s.and_then(|s| s.status.as_ref()).and_then(|s| s.ready_replicas) == Some(1),
        WAIT,
    )
    .await;
    assert!(
        ready.is_ok(),
        "the StatefulSet reports 1 ready replica: {ready:?}"
    );
}

// The simple span processor blocks on export; tonic needs another worker to drive the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_reach_jaeger_with_parent_link() {
    let Some((env, _client)) = sei_tests::cluster().await else {
        return;
    };
    let service = format!("sei-smoke-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(env.otlp_endpoint.clone())
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("smoke");
    let (trace_id, parent_id) = {
        let parent = tracer.start("plan");
        let cx = Context::current_with_span(parent);
        let mut child = tracer.start_with_context("task", &cx);
        opentelemetry::trace::Span::set_attribute(&mut child, KeyValue::new("task.kind", "smoke"));
        opentelemetry::trace::Span::end(&mut child);
        let sc = cx.span().span_context().clone();
        cx.span().end();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    };
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();

    // Jaeger batches (200 ms) before the trace is queryable: poll.
    let url = format!("{}/api/traces/{trace_id}", env.jaeger_query_url);
    let http = reqwest::Client::new();
    let mut spans = Vec::new();
    for _ in 0..60 {
        if let Ok(resp) = http.get(&url).send().await
            && resp.status().is_success()
        {
            let body: Value = resp.json().await.unwrap();
            spans = body["data"][0]["spans"].as_array().cloned().unwrap_or_default();
            if spans.len() == 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        spans.len(),
        2,
        "both spans of trace {trace_id} are in Jaeger: {spans:#?}"
    );
    let by_name = |n: &str| spans.iter().find(|s| s["operationName"] == n).cloned().unwrap();
    let (plan, task) = (by_name("plan"), by_name("task"));
    assert_eq!(plan["spanID"], parent_id.as_str());
    assert!(
        plan["references"].as_array().is_none_or(Vec::is_empty),
        "the parent is a root span"
    );
    assert_eq!(task["references"][0]["refType"], "CHILD_OF");
    assert_eq!(
        task["references"][0]["spanID"],
        parent_id.as_str(),
        "the child links to its parent"
    );
    assert!(
        task["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "task.kind" && t["value"] == "smoke")
    );
}

#[tokio::test]
async fn apiserver_rejects_a_resource_violating_its_crd_schema() {
    let Some(ns) = sei_tests::test_namespace("smoke-crd").await else {
        return;
    };
    let crds = Api::<CustomResourceDefinition>::all(ns.client());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.sei.io"},
        "spec": {
            "group": "smoke.sei.io",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}},
                        "x-kubernetes-validations": [{"rule": "self.size != 7", "message": "spec.size must not be 7"}],
                    }},
                }},
            }],
        },
    }))
    .unwrap();
    crds.patch(
        "widgets.smoke.sei.io",
        &PatchParams::apply("sei-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    sei_tests::wait_for(&crds, "widgets.smoke.sei.io", sei_tests::crd_established(), WAIT)
        .await
        .unwrap();

    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("smoke.sei.io", "v1", "Widget"), "widgets");
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &ar);
    let widget = |name: &str, size: Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "smoke.sei.io/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"size": size},
        }))
        .unwrap()
    };
    // Discovery of a new CRD can lag its Established condition by a moment: retry the valid create.
    let mut created = None;
    for _ in 0..40 {
        match api.create(&PostParams::default(), &widget("ok", json!(3))).await {
            Ok(w) => {
                created = Some(w);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    assert!(created.is_some(), "a valid Widget is accepted");

    for (name, size, field, why) in [
        ("big", json!(11), "spec.size", "maximum"),
        ("text", json!("three"), "spec.size", "type"),
        ("seven", json!(7), "spec.size must not be 7", "CEL rule"),
    ] {
        let err = api
            .create(&PostParams::default(), &widget(name, size))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("expected an API error for {name}, got {err:?}")
        };
        assert_eq!(status.code, 422, "{why}: {status:?}");
        assert!(
            status.message.contains(field),
            "{why}: the error names {field}: {}",
            status.message
        );
    }
    crds.delete("widgets.smoke.sei.io", &kube::api::DeleteParams::default())
        .await
        .unwrap();
}

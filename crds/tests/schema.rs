//! The generated schemas are structural and carry what `kubectl explain`, printers and the apiserver's CEL
//! cost checks need.

// An integration-test crate: helpers outside `#[test]` functions fail the test by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

fn crd_json(kind: &str) -> Value {
    let crd = sei_crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    serde_json::to_value(crd).unwrap()
}

fn root_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

/// Every schema node with its JSON path (`.spec.validator.signingKey`, `.spec.peers[]`, `.x{}` for maps).
fn walk<'a>(node: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.to_owned(), node));
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, &format!("{path}{{}}"), out);
    }
}

fn nodes(kind: &str) -> Vec<(String, Value)> {
    let crd = crd_json(kind);
    let mut out = Vec::new();
    walk(root_schema(&crd), "", &mut out);
    out.into_iter().map(|(p, v)| (p, v.clone())).collect()
}

const KINDS: [&str; 2] = ["SeiNode", "SeiNodeDeployment"];

fn preserves_unknown(node: &Value) -> bool {
    node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

#[test]
fn every_schema_node_has_a_type_unless_it_preserves_unknown_fields() {
    for kind in KINDS {
        for (path, node) in nodes(kind) {
            let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            assert!(
                node.get("type").is_some() || preserves_unknown(&node) || int_or_string,
                "{kind} {path}: no type"
            );
            if node.get("nullable").is_some() {
                assert!(node.get("type").is_some(), "{kind} {path}: nullable without type");
            }
        }
    }
}

#[test]
fn schemas_use_no_constructs_that_kubernetes_rejects() {
    for kind in KINDS {
        let text = serde_json::to_string(root_schema(&crd_json(kind))).unwrap();
        for forbidden in [
            "\"$ref\"",
            "\"oneOf\"",
            "\"anyOf\"",
            "\"allOf\"",
            "\"const\"",
            "\"$schema\"",
            "\"definitions\"",
        ] {
            assert!(!text.contains(forbidden), "{kind}: schema contains {forbidden}");
        }
    }
}

#[test]
fn journal_params_and_outputs_preserve_unknown_fields_and_nothing_else_does() {
    for kind in KINDS {
        let all = nodes(kind);
        let get = |p: &str| {
            all.iter()
                .find(|(path, _)| path == p)
                .map(|(_, n)| n.clone())
                .unwrap()
        };
        assert_eq!(
            get(".status.plan")["type"],
            "object",
            "{kind}: status.plan is the typed journal"
        );
        assert_eq!(
            get(".status.planHistory")["maxItems"],
            10,
            "{kind}: planHistory is bounded"
        );
        let opaque: Vec<&str> = all
            .iter()
            .filter(|(_, n)| preserves_unknown(n))
            .map(|(p, _)| p.as_str())
            .collect();
        assert!(
            opaque.iter().any(|p| p.ends_with(".params")),
            "{kind}: task params are opaque: {opaque:?}"
        );
        assert!(
            opaque.iter().any(|p| p.ends_with(".outputs")),
            "{kind}: task outputs are opaque: {opaque:?}"
        );
        for path in opaque {
            assert!(
                path.starts_with(".status.plan.") || path == ".spec.genesis.overrides{}",
                "{kind} {path}: unexpected preserve-unknown-fields"
            );
        }
    }
}

#[test]
fn schemas_only_use_formats_the_apiserver_knows() {
    const KNOWN: [&str; 6] = ["int32", "int64", "double", "float", "date-time", "uuid"];
    for kind in KINDS {
        for (path, node) in nodes(kind) {
            if let Some(format) = node.get("format").and_then(Value::as_str) {
                assert!(KNOWN.contains(&format), "{kind} {path}: format {format}");
            }
        }
    }
}

#[test]
fn every_spec_and_status_field_has_a_description_for_kubectl_explain() {
    for kind in KINDS {
        for (path, node) in nodes(kind) {
            let is_field = path.starts_with(".spec") || path.starts_with(".status");
            let is_container = path.ends_with("[]") || path.ends_with("{}");
            // Kubernetes' own types (resources) document themselves.
            let upstream = path.contains(".resources.") || path.contains(".conditions[].");
            if is_field && !is_container && !upstream {
                let described = node
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.is_empty());
                assert!(described, "{kind} {path}: no description");
            }
        }
    }
}

#[test]
fn every_cel_rule_has_a_message_and_is_not_inside_an_unkeyed_list_when_it_uses_old_self() {
    for kind in KINDS {
        for (path, node) in nodes(kind) {
            let Some(rules) = node.get("x-kubernetes-validations").and_then(Value::as_array) else {
                continue;
            };
            for rule in rules {
                let text = rule["rule"].as_str().unwrap();
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{kind} {path}: {text}"
                );
                if text.contains("oldSelf") {
                    assert!(
                        !path.contains("[]"),
                        "{kind} {path}: transition rule inside a list: {text}"
                    );
                }
            }
        }
    }
}

#[test]
fn spec_lists_and_maps_are_bounded_for_cel_cost_estimation() {
    for kind in KINDS {
        for (path, node) in nodes(kind) {
            if !path.starts_with(".spec") || path.contains(".resources") {
                continue;
            }
            match node.get("type").and_then(Value::as_str) {
                Some("array") => assert!(
                    node.get("maxItems").is_some(),
                    "{kind} {path}: array without maxItems"
                ),
                Some("object") if node.get("additionalProperties").is_some() => {
                    assert!(
                        node.get("maxProperties").is_some(),
                        "{kind} {path}: map without maxProperties"
                    );
                }
                Some("string") if !path.ends_with("{}") => {
                    assert!(
                        node.get("maxLength").is_some() || node.get("enum").is_some(),
                        "{kind} {path}: maxLength"
                    );
                }
                _ => {}
            }
        }
    }
}

#[test]
fn conditions_and_children_are_list_maps() {
    let node = nodes("SeiNode");
    let snd = nodes("SeiNodeDeployment");
    let find = |all: &[(String, Value)], p: &str| all.iter().find(|(path, _)| path == p).unwrap().1.clone();
    for (all, path, key) in [
        (&node, ".status.conditions", "type"),
        (&snd, ".status.conditions", "type"),
        (&snd, ".status.nodes", "name"),
        (&snd, ".spec.genesis.accounts", "address"),
    ] {
        let n = find(all, path);
        assert_eq!(n["x-kubernetes-list-type"], "map", "{path}");
        assert_eq!(
            n["x-kubernetes-list-map-keys"],
            serde_json::json!([key]),
            "{path}"
        );
    }
}

#[test]
fn defaults_match_the_contract() {
    let node = nodes("SeiNode");
    let snd = nodes("SeiNodeDeployment");
    let default = |all: &[(String, Value)], p: &str| {
        all.iter()
            .find(|(path, _)| path == p)
            .unwrap_or_else(|| panic!("{p}"))
            .1["default"]
            .clone()
    };
    assert_eq!(default(&node, ".spec.sidecar.port"), 7777);
    assert_eq!(
        default(&node, ".spec.validator.operatorKeyring.secret.keyName"),
        "node_admin"
    );
    assert_eq!(default(&snd, ".spec.replicas"), 1);
    assert_eq!(default(&snd, ".spec.deletionPolicy"), "Delete");
    assert_eq!(default(&snd, ".spec.updateStrategy.maxUnavailable"), 1);
    assert_eq!(default(&snd, ".spec.updateStrategy.type"), "RollingUpdate");
    assert_eq!(default(&snd, ".spec.genesis.maxCeremonyDuration"), "15m");
    assert_eq!(
        default(&snd, ".spec.genesis.stakingAmount"),
        sei_crds::DEFAULT_STAKING_AMOUNT
    );
    assert_eq!(
        default(&snd, ".spec.genesis.accountBalance"),
        sei_crds::DEFAULT_ACCOUNT_BALANCE
    );
    assert_eq!(default(&snd, ".spec.template.spec.sidecar.port"), 7777);
}

#[test]
fn names_printer_columns_and_status_subresource() {
    for (kind, plural, short, columns) in [
        (
            "SeiNode",
            "seinodes",
            "snode",
            vec!["Phase", "Image", "Chain", "StatefulSet", "Age"],
        ),
        (
            "SeiNodeDeployment",
            "seinodedeployments",
            "snd",
            vec![
                "Phase",
                "Ready",
                "Replicas",
                "Up-to-date",
                "Image",
                "Paused",
                "Age",
            ],
        ),
    ] {
        let crd = crd_json(kind);
        assert_eq!(crd["metadata"]["name"], format!("{plural}.sei.io"));
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!([short]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(
            version["subresources"]["status"].is_object(),
            "{kind}: status subresource"
        );
        let names: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, columns, "{kind}");
    }
}

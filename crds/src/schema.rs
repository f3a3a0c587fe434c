//! Hand-written schema fragments and validation patterns shared by the resource types.

use schemars::{Schema, SchemaGenerator, json_schema};

/// DNS-1123 label (`sei.io/chain` values, namespaces).
pub(crate) const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// DNS-1123 subdomain (Secret and PVC names).
pub(crate) const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key inside a Secret's `data`.
pub(crate) const SECRET_DATA_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// A Go `time.Duration` string such as `15m`, `1h30m` or `9999h0m0s`.
pub(crate) const GO_DURATION: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// One Cosmos coin, e.g. `10000000usei`.
pub(crate) const COIN: &str = r"^[0-9]+[a-zA-Z][a-zA-Z0-9/:._-]{2,127}$";
/// A comma-separated list of Cosmos coins, e.g. `100usei,5uusdc`.
pub(crate) const COINS: &str =
    r"^[0-9]+[a-zA-Z][a-zA-Z0-9/:._-]{2,127}(,[0-9]+[a-zA-Z][a-zA-Z0-9/:._-]{2,127})*$";
/// A bech32 Sei account address (`sei1...`, 20- or 32-byte payloads).
pub(crate) const SEI_ADDRESS: &str = "^sei1[02-9ac-hj-np-z]{38,58}$";
/// A Tendermint peer `<40 hex node id>@<host>:<port>`.
pub(crate) const PEER_ADDRESS: &str = r"^[0-9a-f]{40}@[^\s@,]+:[0-9]{1,5}$";
/// A bare `host:port` (no scheme, no path).
pub(crate) const HOST_PORT: &str = r"^[^\s:/,]+:[0-9]{1,5}$";
/// An operator key name inside the keyring.
pub(crate) const KEY_NAME: &str = "^[a-zA-Z0-9_-]+$";

/// A map from dotted keys to arbitrary JSON values.
pub(crate) fn json_value_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 128,
        "additionalProperties": {
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// A Go duration string.
pub(crate) fn go_duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "pattern": GO_DURATION,
    })
}

/// `genesis.maxCeremonyDuration`: a Go duration defaulting to `15m`.
pub(crate) fn ceremony_duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "pattern": GO_DURATION,
        "default": crate::DEFAULT_MAX_CEREMONY_DURATION,
    })
}

// Unit enums with a default are written by hand: the derived schema of a documented unit enum next to a
// `default` loses variants in kube's structural rewrite.

/// `spec.deletionPolicy`.
pub(crate) fn deletion_policy(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["Delete", "Retain"],
        "default": "Delete",
    })
}

/// `spec.updateStrategy.type`.
pub(crate) fn update_strategy_type(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["RollingUpdate"],
        "default": "RollingUpdate",
    })
}

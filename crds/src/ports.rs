//! Well-known container ports of a Sei node (sei-config defaults, reference section 0).

/// EVM JSON-RPC over HTTP.
pub const EVM_RPC: u16 = 8545;
/// EVM JSON-RPC over WebSocket.
pub const EVM_WS: u16 = 8546;
/// Cosmos gRPC.
pub const GRPC: u16 = 9090;
/// Cosmos REST (LCD).
pub const REST: u16 = 1317;
/// Tendermint P2P.
pub const P2P: u16 = 26656;
/// Tendermint RPC.
pub const RPC: u16 = 26657;
/// Prometheus metrics of seid.
pub const METRICS: u16 = 26660;
/// Default port of the sidecar (`seictl serve`), see `spec.sidecar.port`.
pub const SIDECAR: u16 = 7777;

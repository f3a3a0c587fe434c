//! sei-tasks (see DESIGN.md section 2).

pub mod platform;
pub mod resources;
pub mod sidecar;

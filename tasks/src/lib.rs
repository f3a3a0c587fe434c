//! sei-tasks (see DESIGN.md section 2).

pub mod catalog;
pub mod peers;
pub mod platform;
pub mod resources;
pub mod sidecar;
pub mod task;

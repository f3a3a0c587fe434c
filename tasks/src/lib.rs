//! sei-tasks (see DESIGN.md section 2).

pub mod sidecar;

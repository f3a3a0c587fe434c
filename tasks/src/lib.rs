//! sei-tasks (see DESIGN.md section 2).

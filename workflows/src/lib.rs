//! sei-workflows (see DESIGN.md section 2).

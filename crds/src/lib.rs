//! sei-crds (see DESIGN.md section 2).

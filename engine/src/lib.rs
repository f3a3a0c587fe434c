//! sei-engine (see DESIGN.md section 2).

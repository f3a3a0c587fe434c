//! sei-observability (see DESIGN.md section 2).

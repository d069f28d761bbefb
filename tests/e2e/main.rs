//! End-to-end tests, one binary so the workspace is linked once; one module per area.

mod capabilities;
mod google;
mod languages;
mod pipeline;
mod runtime;

//! End-to-end tests, one binary so the workspace is linked once; one module per area.

mod capabilities;
mod change_stream_replicas;
mod change_streams;
mod google;
mod google_host;
mod instances;
mod languages;
mod leases;
mod limits;
mod operator;
mod ops;
mod pipeline;
mod pubsub_front;
mod restore;
mod rollout;
mod runtime;
mod seed;
mod shards;
mod tables;
mod views;
mod webhook;

//! Shared harness for the end-to-end tests: locating built plugins, free loopback ports, and
//! real services (Redis, Google emulators, ...) started for a test and stopped afterwards.

pub mod harness;

//! Benchmarks run by the `bench` binary: `cargo run --release -p conformance --bin bench -- NAME …`.

mod args;
pub mod bfd;
pub mod chaos;
pub mod codec;
pub mod fib;
pub mod kube_api;
pub mod latency;
pub mod mesh;
pub mod nodestatus;
pub mod routeserver;
pub mod sessions;
pub mod verify;

//! `bench NAME [ARGS…]`: runs one of the benchmarks of `conformance::bench`.

use std::alloc::System;
use std::process::ExitCode;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts allocations so benchmarks can report bytes allocated per item.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        eprintln!(
            "usage: bench bfd|chaos|codec|fib|kube-api|latency|mesh|nodestatus|routeserver|sessions|verify [ARGS…]"
        );
        return ExitCode::from(2);
    };
    let result = match name.as_str() {
        "bfd" => conformance::bench::bfd::run(rest),
        "chaos" => conformance::bench::chaos::run(rest),
        "codec" => conformance::bench::codec::run(rest),
        "fib" => conformance::bench::fib::run(rest),
        "kube-api" => conformance::bench::kube_api::run(rest),
        "latency" => conformance::bench::latency::run(rest),
        "nodestatus" => conformance::bench::nodestatus::run(rest),
        "routeserver" => conformance::bench::routeserver::run(rest),
        "sessions" => conformance::bench::sessions::run(rest),
        "mesh" => conformance::bench::mesh::run(rest),
        "verify" => conformance::bench::verify::run(rest),
        other => Err(format!(
            "unknown benchmark {other:?}; known: bfd, chaos, codec, fib, kube-api, latency, mesh, nodestatus, routeserver, sessions, verify"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

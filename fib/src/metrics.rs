//! Prometheus metrics of a FIB writer, registered in a registry the daemon passes in.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::error::FibError;

/// What an operator graphs: routes installed per family, operations (rate = ops/s),
/// errors by errno, resyncs, repairs, queue depth and the time of the last full reconcile.
///
/// Cloning shares the same counters.
#[derive(Clone, Debug)]
pub struct FibMetrics {
    /// `fib_routes_installed{family="ipv4|ipv6"}`: our routes in the kernel table.
    pub routes_installed: IntGaugeVec,
    /// `fib_operations_total{op="install|remove|lookup|retire"}`: messages written
    /// (`retire`: a route of a replaced protocol removed).
    pub operations: IntCounterVec,
    /// `fib_errors_total{errno="ENETUNREACH",…}`: operations the kernel refused.
    pub errors: IntCounterVec,
    /// `fib_resyncs_total`: full dumps and re-diffs (start, overrun, link changes).
    pub resyncs: IntCounter,
    /// `fib_repairs_total`: our routes put back after someone else changed or deleted them.
    pub repairs: IntCounter,
    /// `fib_queue_depth`: prefixes waiting to be written.
    pub queue_depth: IntGauge,
    /// `fib_last_reconcile_timestamp_seconds`: Unix time the last full reconcile finished.
    pub last_reconcile: IntGauge,
    /// `fib_predecessor_routes`: routes of the replaced protocols (`FibConfig::replaces`)
    /// still in the kernel table.
    pub predecessor_routes: IntGauge,
}

impl FibMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, FibError> {
        let m = FibMetrics {
            routes_installed: IntGaugeVec::new(
                Opts::new("fib_routes_installed", "Routes of ours in the kernel table"),
                &["family"],
            )?,
            operations: IntCounterVec::new(Opts::new("fib_operations_total", "Netlink operations written"), &["op"])?,
            errors: IntCounterVec::new(
                Opts::new("fib_errors_total", "Operations refused by the kernel, by errno"),
                &["errno"],
            )?,
            resyncs: IntCounter::new("fib_resyncs_total", "Full table dumps and re-diffs")?,
            repairs: IntCounter::new("fib_repairs_total", "Routes of ours restored after an external change")?,
            queue_depth: IntGauge::new("fib_queue_depth", "Prefixes waiting to be written")?,
            last_reconcile: IntGauge::new(
                "fib_last_reconcile_timestamp_seconds",
                "Unix time of the last full reconcile",
            )?,
            predecessor_routes: IntGauge::new(
                "fib_predecessor_routes",
                "Routes of the speaker taken over (replaced protocols) still in the kernel table",
            )?,
        };
        registry.register(Box::new(m.routes_installed.clone()))?;
        registry.register(Box::new(m.operations.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.resyncs.clone()))?;
        registry.register(Box::new(m.repairs.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.last_reconcile.clone()))?;
        registry.register(Box::new(m.predecessor_routes.clone()))?;
        Ok(m)
    }

    /// Metrics in a private registry, for callers that do not export them.
    pub fn unregistered() -> Self {
        // Registering fresh collectors in a fresh registry cannot collide.
        Self::register(&Registry::new()).expect("fresh registry accepts distinct metric names")
    }
}

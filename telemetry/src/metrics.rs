//! Defining Prometheus metrics on a registry, one line each, the same way
//! in every strata process.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets of step and build durations, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only a duplicate or malformed name fails; callers define constant
    // names once, and their unit tests register them all.
    r.expect("valid, unique metric definitions")
}

/// Registers metrics on one registry.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
}

impl Metrics {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        must(self.registry.register(Box::new(c.clone())));
        c
    }

    /// A counter.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(must(IntCounter::new(name, help)))
    }

    /// A gauge.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(must(IntGauge::new(name, help)))
    }

    /// A counter with one label, every value in `values` present (at 0)
    /// from the start so rates and dashboards work before the first event.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        label: &str,
        values: &[&str],
    ) -> IntCounterVec {
        let c = self.add(must(IntCounterVec::new(Opts::new(name, help), &[label])));
        for v in values {
            c.with_label_values(&[v]);
        }
        c
    }

    /// A histogram of durations in seconds ([`DURATION_BUCKETS`]).
    pub fn durations(&self, name: &str, help: &str) -> Histogram {
        self.add(must(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
        )))
    }
}

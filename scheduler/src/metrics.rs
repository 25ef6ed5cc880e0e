//! The scheduler's Prometheus metrics (served on `/metrics` by
//! `strata-telemetry`). The names are a contract: the Grafana dashboard
//! in `deploy/grafana/` and the chart's autoscaler query them.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

/// Every metric of a scheduler.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Where they are registered.
    pub registry: Registry,
    /// Jobs waiting for a worker slot.
    pub queue_depth: IntGauge,
    /// Jobs running on workers.
    pub jobs_running: IntGauge,
    /// Workers connected.
    pub workers_connected: IntGauge,
    /// Finished builds by outcome (`succeeded`, `failed`, `cancelled`).
    pub builds: IntCounterVec,
    /// Finished steps by status (`cached`, `executed`, `failed`).
    pub steps: IntCounterVec,
    /// Cache lookups by result (`hit`, `miss`).
    pub cache_lookups: IntCounterVec,
    /// Whole builds, start to end.
    pub build_duration: Histogram,
    /// Executed steps, queued to done.
    pub step_duration: Histogram,
    /// Context bytes clients uploaded.
    pub context_bytes: IntCounter,
}

impl Metrics {
    /// Creates and registers them.
    pub fn new() -> Self {
        let m = strata_telemetry::metrics::Metrics::new();
        Self {
            queue_depth: m.gauge(
                "strata_scheduler_queue_depth",
                "Jobs waiting for a worker slot.",
            ),
            jobs_running: m.gauge("strata_scheduler_jobs_running", "Jobs running on workers."),
            workers_connected: m.gauge(
                "strata_scheduler_workers_connected",
                "Workers connected to this scheduler.",
            ),
            builds: m.counter_vec(
                "strata_scheduler_builds_total",
                "Finished builds by outcome.",
                "outcome",
                &["succeeded", "failed", "cancelled"],
            ),
            steps: m.counter_vec(
                "strata_scheduler_steps_total",
                "Finished steps by status.",
                "status",
                &["cached", "executed", "failed"],
            ),
            cache_lookups: m.counter_vec(
                "strata_scheduler_cache_lookups_total",
                "Layer cache lookups by result.",
                "result",
                &["hit", "miss"],
            ),
            build_duration: m.durations(
                "strata_scheduler_build_duration_seconds",
                "Build durations, start to end.",
            ),
            step_duration: m.durations(
                "strata_scheduler_step_duration_seconds",
                "Executed step durations, queued to done.",
            ),
            context_bytes: m.counter(
                "strata_scheduler_context_bytes_received_total",
                "Build context bytes received from clients.",
            ),
            registry: m.registry,
        }
    }

    /// Sets the gauges from the pool's (queued, running, workers).
    pub fn set_load(&self, (queued, running, workers): (usize, usize, usize)) {
        self.queue_depth.set(queued as i64);
        self.jobs_running.set(running as i64);
        self.workers_connected.set(workers as i64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder as _;

    #[test]
    fn every_metric_is_exposed_from_the_start() {
        let m = Metrics::new();
        m.steps.with_label_values(&["cached"]).inc();
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for name in [
            "strata_scheduler_queue_depth",
            "strata_scheduler_jobs_running",
            "strata_scheduler_workers_connected",
            "strata_scheduler_builds_total{outcome=\"failed\"} 0",
            "strata_scheduler_steps_total{status=\"cached\"} 1",
            "strata_scheduler_cache_lookups_total{result=\"miss\"} 0",
            "strata_scheduler_build_duration_seconds_bucket",
            "strata_scheduler_step_duration_seconds_count",
            "strata_scheduler_context_bytes_received_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}

//! What the agent did, as Prometheus metrics (served on `/metrics` by
//! `strata-telemetry`) that the heartbeats also report. The names are a
//! contract: the Grafana dashboard in `deploy/grafana/` queries them.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets of step durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// The agent's counters.
#[derive(Debug, Clone)]
pub struct AgentStats {
    /// Where they are registered.
    pub registry: Registry,
    /// Jobs running now.
    pub jobs_running: IntGauge,
    /// Jobs run to a result, by outcome (`succeeded`, `failed`).
    pub jobs: IntCounterVec,
    /// Step durations, accepted to result.
    pub step_duration: Histogram,
    /// Blobs downloaded (from the scheduler or the shared store).
    pub blobs_fetched: IntCounter,
    /// Bytes of those blobs.
    pub bytes_fetched: IntCounter,
    /// Bytes of layers and cache archives uploaded.
    pub bytes_uploaded: IntCounter,
    /// Free space in the state directory.
    pub free_disk: IntGauge,
    /// 1 while a session with the scheduler is up (readiness).
    pub connected: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only a duplicate or malformed name fails; the names are constants
    // and the unit test below registers them all.
    r.expect("valid, unique metric definitions")
}

impl AgentStats {
    /// Creates and registers them.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            reg(Box::new(g.clone()));
            g
        };
        let jobs = must(IntCounterVec::new(
            Opts::new(
                "strata_worker_jobs_total",
                "Jobs run to a result, by outcome.",
            ),
            &["outcome"],
        ));
        reg(Box::new(jobs.clone()));
        for o in ["succeeded", "failed"] {
            jobs.with_label_values(&[o]);
        }
        let step_duration = must(Histogram::with_opts(
            HistogramOpts::new(
                "strata_worker_step_duration_seconds",
                "Job durations, accepted to result.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        ));
        reg(Box::new(step_duration.clone()));
        Self {
            jobs_running: gauge("strata_worker_jobs_running", "Jobs running now."),
            jobs,
            step_duration,
            blobs_fetched: counter(
                "strata_worker_blobs_downloaded_total",
                "Blobs downloaded from the farm's store.",
            ),
            bytes_fetched: counter(
                "strata_worker_bytes_downloaded_total",
                "Bytes of blobs downloaded from the farm's store.",
            ),
            bytes_uploaded: counter(
                "strata_worker_bytes_uploaded_total",
                "Bytes of layers and cache archives uploaded.",
            ),
            free_disk: gauge(
                "strata_worker_free_disk_bytes",
                "Free space in the worker's state directory.",
            ),
            connected: gauge(
                "strata_worker_connected",
                "1 while registered with the scheduler.",
            ),
            registry,
        }
    }

    /// Jobs run to a result, any outcome.
    pub fn jobs_completed(&self) -> u64 {
        ["succeeded", "failed"]
            .iter()
            .map(|o| self.jobs.with_label_values(&[o]).get())
            .sum()
    }
}

impl Default for AgentStats {
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
        let s = AgentStats::new();
        s.jobs.with_label_values(&["failed"]).inc();
        assert_eq!(s.jobs_completed(), 1);
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&s.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for name in [
            "strata_worker_jobs_running 0",
            "strata_worker_jobs_total{outcome=\"succeeded\"} 0",
            "strata_worker_step_duration_seconds_bucket",
            "strata_worker_blobs_downloaded_total 0",
            "strata_worker_bytes_downloaded_total 0",
            "strata_worker_bytes_uploaded_total 0",
            "strata_worker_free_disk_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}

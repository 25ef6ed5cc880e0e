//! What the agent did, as Prometheus metrics (served on `/metrics` by
//! `strata-telemetry`) that the heartbeats also report. The names are a
//! contract: the Grafana dashboard in `deploy/grafana/` queries them.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

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

impl AgentStats {
    /// Creates and registers them.
    pub fn new() -> Self {
        let m = strata_telemetry::metrics::Metrics::new();
        Self {
            jobs_running: m.gauge("strata_worker_jobs_running", "Jobs running now."),
            jobs: m.counter_vec(
                "strata_worker_jobs_total",
                "Jobs run to a result, by outcome.",
                "outcome",
                &["succeeded", "failed"],
            ),
            step_duration: m.durations(
                "strata_worker_step_duration_seconds",
                "Job durations, accepted to result.",
            ),
            blobs_fetched: m.counter(
                "strata_worker_blobs_downloaded_total",
                "Blobs downloaded from the farm's store.",
            ),
            bytes_fetched: m.counter(
                "strata_worker_bytes_downloaded_total",
                "Bytes of blobs downloaded from the farm's store.",
            ),
            bytes_uploaded: m.counter(
                "strata_worker_bytes_uploaded_total",
                "Bytes of layers and cache archives uploaded.",
            ),
            free_disk: m.gauge(
                "strata_worker_free_disk_bytes",
                "Free space in the worker's state directory.",
            ),
            connected: m.gauge(
                "strata_worker_connected",
                "1 while registered with the scheduler.",
            ),
            registry: m.registry,
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
            "strata_worker_connected 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}

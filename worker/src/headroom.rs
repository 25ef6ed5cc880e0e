//! Spare CPU for work that can wait.
//!
//! A committed layer is unpacked on the worker that made it, and the steps
//! built on it start there at once. Its blob (compressed and hashed) and
//! its upload are needed later: by another worker, by the image, by a later
//! build. Made at once they take CPU from the steps that just started, and
//! on a machine whose CPUs those steps keep busy every CPU second the
//! builder spends is about half a second longer for the steps (the
//! benchmark's case 1; a scheduling priority does not keep the two apart,
//! BENCHMARKS.md). So that work waits for [`idle_cpu`]: until the machine
//! has had a CPU's worth of idle time over a short window, until no step
//! runs on the worker, until someone waits for the layer (the scheduler
//! says so), or for at most a bound.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long one look at the CPUs lasts.
pub const WINDOW: Duration = Duration::from_millis(100);

/// Layers smaller than this (uncompressed) are packed and uploaded at
/// once: they cost little CPU, and the step's end waits on them more
/// often than not.
pub const SMALL_LAYER: u64 = 4 << 20;

/// Idle and total CPU time (in ticks, all CPUs together) from the first
/// line of `/proc/stat`.
pub(crate) fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice],
    // the guest times being counted in user and nice already.
    let counted = ticks.len().min(8);
    if counted < 5 {
        return None;
    }
    let total = ticks[..counted].iter().sum();
    Some((ticks[3] + ticks[4], total))
}

/// Idle CPUs (1.0 = one whole CPU) between two `cpu_times` readings on
/// a machine of `cpus` CPUs.
pub(crate) fn idle_cpus(before: (u64, u64), after: (u64, u64), cpus: usize) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64 * cpus as f64
}

/// How long work that can wait waits for spare CPU, and what counts as
/// spare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defer {
    /// The longest wait; zero does the work at once.
    pub bound: Duration,
    /// Idle CPUs (1.0 = one whole CPU) the machine must have had over a
    /// [`WINDOW`].
    pub idle_cpus: f64,
}

impl Default for Defer {
    /// Ten seconds at most; one idle CPU, or half of a machine's only one.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            bound: Duration::from_secs(10),
            idle_cpus: if cpus > 1 { 1.0 } else { 0.5 },
        }
    }
}

/// Why [`idle_cpu`] stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// A CPU's worth was idle over the last window (or the machine's CPU
    /// times cannot be read: nothing to wait for).
    Idle,
    /// No step runs on this worker.
    NoSteps,
    /// Someone waits for the work (`hurry` resolved).
    Hurried,
    /// The bound passed.
    Bound,
}

/// Waits, at most `defer.bound`, until the machine has had
/// `defer.idle_cpus` of idle time over a [`WINDOW`], `steps_running` says
/// no step runs here, or `hurry` resolves.
pub async fn idle_cpu(
    defer: Defer,
    steps_running: impl Fn() -> bool,
    hurry: impl Future<Output = ()>,
) -> Waited {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bound = defer.bound;
    let read = || {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(cpu_times)
    };
    let until = Instant::now() + bound;
    tokio::pin!(hurry);
    let Some(mut before) = read() else {
        return Waited::Idle;
    };
    // A look first: the steps that will run on the work's layer are
    // assigned only once the worker has reported it, a few milliseconds
    // from now.
    loop {
        let now = Instant::now();
        if now >= until {
            return Waited::Bound;
        }
        tokio::select! {
            () = &mut hurry => return Waited::Hurried,
            () = tokio::time::sleep(WINDOW.min(until - now)) => {}
        }
        if !steps_running() {
            return Waited::NoSteps;
        }
        let Some(after) = read() else {
            return Waited::Idle;
        };
        if idle_cpus(before, after, cpus) >= defer.idle_cpus {
            return Waited::Idle;
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_read_the_machine_line() {
        let stat = "cpu  100 5 50 800 20 1 2 3 7 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n";
        assert_eq!(cpu_times(stat), Some((820, 981)));
        assert_eq!(cpu_times("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(cpu_times("cpu 1 2 x 4 5\n"), None);
        assert_eq!(cpu_times(""), None);
    }

    #[test]
    fn idle_cpus_scale_to_the_machine() {
        // Two CPUs, 200 ticks, half of them idle: one CPU's worth.
        assert_eq!(idle_cpus((0, 0), (100, 200), 2), 1.0);
        assert_eq!(idle_cpus((100, 200), (110, 400), 2), 0.1);
        assert_eq!(idle_cpus((5, 5), (5, 5), 2), 0.0);
    }

    #[tokio::test]
    async fn idle_cpu_stops_for_no_steps_and_for_a_hurry() {
        // No machine has a thousand idle CPUs: only the other reasons
        // end these waits.
        let long = Defer {
            bound: Duration::from_secs(60),
            idle_cpus: 1000.0,
        };
        let w = idle_cpu(long, || false, std::future::pending()).await;
        assert_eq!(w, Waited::NoSteps);
        let w = idle_cpu(long, || true, async {}).await;
        assert_eq!(w, Waited::Hurried);
        let short = Defer {
            bound: Duration::from_millis(250),
            ..long
        };
        let w = idle_cpu(short, || true, std::future::pending()).await;
        assert_eq!(w, Waited::Bound);
        // Asking for no idle time at all: the first look ends the wait.
        let any = Defer {
            idle_cpus: 0.0,
            ..long
        };
        let w = idle_cpu(any, || true, std::future::pending()).await;
        assert_eq!(w, Waited::Idle);
    }
}

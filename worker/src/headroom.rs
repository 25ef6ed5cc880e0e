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

/// Layers smaller than this (their tar; their blob where it is made
/// with the commit, from a plain snapshot) are packed and uploaded at
/// once: they cost little CPU, and the step's end waits on them more
/// often than not.
pub const SMALL_LAYER: u64 = 4 << 20;

/// The machine's CPU time so far, from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Idle and iowait ticks, all CPUs together.
    idle: u64,
    /// All ticks, all CPUs together.
    total: u64,
    /// Online CPUs (the `cpuN` lines).
    cpus: usize,
}

/// Reads [`CpuTimes`] from the text of `/proc/stat`.
pub(crate) fn cpu_times(stat: &str) -> Option<CpuTimes> {
    let mut lines = stat.lines();
    let mut fields = lines.next()?.split_whitespace();
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
    let cpus = lines
        .take_while(|l| l.starts_with("cpu"))
        .filter(|l| l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(CpuTimes {
        idle: ticks[3] + ticks[4],
        total: ticks[..counted].iter().sum(),
        cpus: cpus.max(1),
    })
}

/// Idle CPUs (1.0 = one whole CPU) between two readings.
pub(crate) fn idle_cpus(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    after.idle.saturating_sub(before.idle) as f64 / total as f64 * after.cpus as f64
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
        if idle_cpus(before, after) >= defer.idle_cpus {
            return Waited::Idle;
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_read_the_machine_line_and_count_the_cpus() {
        let stat = "cpu  100 5 50 800 20 1 2 3 7 0\ncpu0 50 2 25 400 10 0 1 1 0 0\ncpu1 50 3 25 400 10 1 1 2 7 0\nintr 5\n";
        let t = cpu_times(stat).expect("read");
        assert_eq!((t.idle, t.total, t.cpus), (820, 981, 2));
        assert_eq!(cpu_times("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(cpu_times("cpu 1 2 x 4 5\n"), None);
        assert_eq!(cpu_times(""), None);
        assert!(cpu_times(&std::fs::read_to_string("/proc/stat").expect("/proc/stat")).is_some());
    }

    #[test]
    fn idle_cpus_scale_to_the_machine() {
        let at = |idle, total| CpuTimes {
            idle,
            total,
            cpus: 2,
        };
        // Two CPUs, 200 ticks, half of them idle: one CPU's worth.
        assert_eq!(idle_cpus(at(0, 0), at(100, 200)), 1.0);
        assert_eq!(idle_cpus(at(100, 200), at(110, 400)), 0.1);
        assert_eq!(idle_cpus(at(5, 5), at(5, 5)), 0.0);
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

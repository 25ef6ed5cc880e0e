//! What the event stream has told us so far: the plan, each step's state,
//! and log output reassembled into lines.

use crate::format;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_event::Event;

/// The state of one step as far as the client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// Not started.
    Pending,
    /// Waiting for a worker.
    Queued,
    /// Running, since this elapsed build time.
    Running(Duration),
    /// Satisfied from the cache.
    Cached,
    /// Finished after this long.
    Done(Duration),
    /// Failed with this message.
    Failed(String),
    /// Cancelled.
    Cancelled,
}

/// The client's model of one build, fed event by event.
#[derive(Debug)]
pub struct BuildView {
    /// The build id (from the events).
    pub build_id: String,
    /// The plan's steps, in plan order (empty until `BuildStarted`).
    pub steps: Vec<pb::StepPlan>,
    /// State of each step, parallel to `steps`.
    pub states: Vec<StepState>,
    /// Last lines of each step's log (at most [`BuildView::KEEP_LINES`]).
    pub recent_logs: Vec<Vec<String>>,
    index: HashMap<String, usize>,
    partial: HashMap<String, Vec<u8>>,
    first: Option<prost_types::Timestamp>,
    start: Instant,
    last_elapsed: Duration,
}

impl Default for BuildView {
    fn default() -> Self {
        Self {
            build_id: String::new(),
            steps: Vec::new(),
            states: Vec::new(),
            recent_logs: Vec::new(),
            index: HashMap::new(),
            partial: HashMap::new(),
            first: None,
            start: Instant::now(),
            last_elapsed: Duration::ZERO,
        }
    }
}

impl BuildView {
    /// Log lines kept per step for the live view.
    pub const KEEP_LINES: usize = 6;

    /// Build time of an event: its timestamp relative to the first event's,
    /// so a replay shows the original timings; the local clock when the
    /// scheduler sent no timestamps.
    pub fn elapsed(&mut self, ev: &pb::BuildEvent) -> Duration {
        let d = match (&self.first, &ev.timestamp) {
            (Some(f), Some(t)) => {
                let nanos = (i128::from(t.seconds) - i128::from(f.seconds)) * 1_000_000_000
                    + i128::from(t.nanos)
                    - i128::from(f.nanos);
                Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
            }
            _ => self.start.elapsed(),
        };
        self.last_elapsed = d;
        d
    }

    /// Build time of the latest event (for client messages).
    pub fn last_elapsed(&self) -> Duration {
        self.last_elapsed
    }

    /// Time since the view was created, by the local clock.
    pub fn wall(&self) -> Duration {
        self.start.elapsed()
    }

    /// Position of a step in the plan, 0-based.
    pub fn position(&self, step_id: &str) -> Option<usize> {
        self.index.get(step_id).copied()
    }

    /// The number shown for a step: its 1-based plan position, or `?`.
    pub fn number(&self, step_id: &str) -> String {
        self.position(step_id)
            .map_or_else(|| "?".to_string(), |i| (i + 1).to_string())
    }

    /// `[n/N] INSTRUCTION` for a step (the first line of a multi-line
    /// instruction), or the step id for steps not in the plan.
    pub fn label(&self, step_id: &str) -> String {
        match self.position(step_id) {
            Some(i) => {
                let instruction = self.steps[i].instruction.lines().next().unwrap_or_default();
                format!("[{}/{}] {instruction}", i + 1, self.steps.len())
            }
            None => step_id.to_string(),
        }
    }

    /// The instruction of a step, if it is in the plan.
    pub fn instruction(&self, step_id: &str) -> Option<&str> {
        self.position(step_id)
            .map(|i| self.steps[i].instruction.as_str())
    }

    /// Updates states from an event; returns the complete log lines a
    /// `StepLog` event finished (partial lines are kept for later).
    pub fn apply(&mut self, ev: &pb::BuildEvent) -> Vec<String> {
        if self.first.is_none() {
            self.first = ev.timestamp;
        }
        if self.build_id.is_empty() {
            self.build_id.clone_from(&ev.build_id);
        }
        let now = self.elapsed(ev);
        let mut lines = Vec::new();
        let Some(event) = &ev.event else {
            return lines;
        };
        match event {
            Event::BuildStarted(s) => {
                if let Some(plan) = &s.plan {
                    self.steps.clone_from(&plan.steps);
                    self.states = vec![StepState::Pending; self.steps.len()];
                    self.recent_logs = vec![Vec::new(); self.steps.len()];
                    self.index = self
                        .steps
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.step_id.clone(), i))
                        .collect();
                }
            }
            Event::StepQueued(s) => self.set(&s.step_id, StepState::Queued),
            Event::StepStarted(s) => self.set(&s.step_id, StepState::Running(now)),
            Event::StepCached(s) => self.set(&s.step_id, StepState::Cached),
            Event::StepDone(s) => {
                self.set(
                    &s.step_id,
                    StepState::Done(format::duration(s.duration.as_ref())),
                );
            }
            Event::StepFailed(s) if !s.will_retry => {
                self.set(&s.step_id, StepState::Failed(s.message.clone()));
            }
            Event::StepCancelled(s) => self.set(&s.step_id, StepState::Cancelled),
            Event::StepLog(l) => {
                if let Some(chunk) = &l.chunk {
                    lines = self.log(&l.step_id, &chunk.data);
                }
            }
            _ => {}
        }
        lines
    }

    fn set(&mut self, step_id: &str, state: StepState) {
        if let Some(i) = self.position(step_id) {
            self.states[i] = state;
        }
    }

    fn log(&mut self, step_id: &str, data: &[u8]) -> Vec<String> {
        let buf = self.partial.entry(step_id.to_string()).or_default();
        buf.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            lines.push(clean_line(&line[..nl]));
        }
        self.remember(step_id, &lines);
        lines
    }

    /// Takes the unterminated last line of a step's log, if any.
    pub fn take_partial(&mut self, step_id: &str) -> Option<String> {
        let buf = self.partial.remove(step_id)?;
        if buf.is_empty() {
            return None;
        }
        let line = clean_line(&buf);
        self.remember(step_id, std::slice::from_ref(&line));
        Some(line)
    }

    fn remember(&mut self, step_id: &str, lines: &[String]) {
        if let Some(i) = self.position(step_id) {
            let recent = &mut self.recent_logs[i];
            recent.extend(lines.iter().cloned());
            let extra = recent.len().saturating_sub(Self::KEEP_LINES);
            recent.drain(..extra);
        }
    }

    /// Steps finished (cached or done) and in the plan.
    pub fn completed(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, StepState::Cached | StepState::Done(_)))
            .count()
    }
}

/// A log line as text: invalid UTF-8 replaced, a trailing `\r` dropped, and
/// only the last of several `\r`-separated redraws kept.
fn clean_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches('\r');
    text.rsplit('\r').next().unwrap_or_default().to_string()
}

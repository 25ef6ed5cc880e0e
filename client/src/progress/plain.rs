//! `--progress plain`: one line per event, prefixed by the build time and
//! the step number, as BuildKit's plain output.

use super::{BuildView, Renderer};
use crate::format;
use std::collections::HashSet;
use std::io::{self, Write};
use std::time::Duration;
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_event::Event;

/// Writes plain progress lines to `W`.
#[derive(Debug)]
pub struct PlainRenderer<W: Write> {
    out: W,
    view: BuildView,
    /// Steps whose `[n/N] INSTRUCTION` header was printed.
    announced: HashSet<String>,
}

impl<W: Write> PlainRenderer<W> {
    /// A renderer writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            view: BuildView::default(),
            announced: HashSet::new(),
        }
    }

    /// The writer back (tests read what was rendered).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn line(&mut self, at: Duration, text: &str) -> io::Result<()> {
        writeln!(self.out, "{:>6.1}s {text}", at.as_secs_f64())
    }

    fn step_line(&mut self, at: Duration, step_id: &str, text: &str) -> io::Result<()> {
        let n = self.view.number(step_id);
        self.line(at, &format!("#{n} {text}"))
    }

    fn announce(&mut self, at: Duration, step_id: &str) -> io::Result<()> {
        if self.announced.insert(step_id.to_string()) {
            let label = self.view.label(step_id);
            self.step_line(at, step_id, &label)?;
        }
        Ok(())
    }

    fn flush_partial(&mut self, at: Duration, step_id: &str) -> io::Result<()> {
        if let Some(line) = self.view.take_partial(step_id) {
            self.step_line(at, step_id, &line)?;
        }
        Ok(())
    }
}

impl<W: Write + Send> Renderer for PlainRenderer<W> {
    fn event(&mut self, ev: &pb::BuildEvent) -> io::Result<()> {
        let lines = self.view.apply(ev);
        let at = self.view.last_elapsed();
        let Some(event) = &ev.event else {
            return Ok(());
        };
        match event {
            Event::BuildStarted(s) => {
                let n = s.plan.as_ref().map_or(0, |p| p.steps.len());
                self.line(
                    at,
                    &format!(
                        "build {}: {n} step{}",
                        ev.build_id,
                        if n == 1 { "" } else { "s" }
                    ),
                )?;
            }
            Event::StepQueued(q) if q.attempt > 1 => {
                let text = format!("retrying (attempt {}): {}", q.attempt, q.reason);
                self.step_line(at, &q.step_id, &text)?;
            }
            // Queued again at no cost in attempts, or waiting for another
            // build's run of the step: the reason says which.
            Event::StepQueued(q) if !q.reason.is_empty() => {
                self.step_line(at, &q.step_id, &q.reason)?;
            }
            Event::StepQueued(_) => {}
            Event::StepStarted(s) => {
                self.announce(at, &s.step_id)?;
            }
            // Bare phase changes are noise in a log; transfers and
            // messages are worth a line.
            Event::StepProgress(p) if p.message.is_empty() && p.total == 0 => {
                self.announce(at, &p.step_id)?;
            }
            Event::StepProgress(p) => {
                self.announce(at, &p.step_id)?;
                let phase = phase_name(p.phase());
                let mut text = phase.to_string();
                if !p.message.is_empty() {
                    text = format!("{text} {}", p.message);
                }
                if p.total > 0 {
                    let sizes = format!(
                        " {}/{}",
                        format::human_size(p.current),
                        format::human_size(p.total)
                    );
                    text.push_str(&sizes);
                }
                self.step_line(at, &p.step_id, &text)?;
            }
            Event::StepLog(l) => {
                self.announce(at, &l.step_id)?;
                for line in lines {
                    self.step_line(at, &l.step_id, &line)?;
                }
            }
            Event::StepCached(c) => {
                self.announce(at, &c.step_id)?;
                self.step_line(at, &c.step_id, "CACHED")?;
            }
            Event::StepDone(d) => {
                self.announce(at, &d.step_id)?;
                self.flush_partial(at, &d.step_id)?;
                let took = format::seconds(format::duration(d.duration.as_ref()));
                self.step_line(at, &d.step_id, &format!("DONE {took}"))?;
            }
            Event::StepFailed(f) => {
                self.announce(at, &f.step_id)?;
                self.flush_partial(at, &f.step_id)?;
                let retry = if f.will_retry { " (will retry)" } else { "" };
                self.step_line(at, &f.step_id, &format!("ERROR: {}{retry}", f.message))?;
            }
            Event::StepCancelled(c) => {
                if self.announced.contains(&c.step_id) {
                    self.flush_partial(at, &c.step_id)?;
                    self.step_line(at, &c.step_id, "CANCELED")?;
                }
            }
            Event::Warning(w) => {
                let mut text = format!("WARNING: {}: {}", w.code, w.message);
                if let Some(loc) = &w.location
                    && loc.start_line > 0
                {
                    text.push_str(&format!(" ({}:{})", loc.file, loc.start_line));
                }
                self.line(at, &text)?;
            }
            Event::OutputProgress(o) => {
                let mut text = format!("output {}: {}", o.output_index, o.phase);
                if !o.digest.is_empty() {
                    text.push_str(&format!(" {}", o.digest));
                }
                if o.done {
                    text.push_str(" done");
                }
                self.line(at, &text)?;
            }
            Event::BuildFinished(_) => {}
            Event::BuildFailed(f) => {
                if let Some(e) = &f.error
                    && !e.step_id.is_empty()
                {
                    self.flush_partial(at, &e.step_id)?;
                }
            }
        }
        self.out.flush()
    }

    fn message(&mut self, line: &str) -> io::Result<()> {
        let at = self.view.wall().max(self.view.last_elapsed());
        self.line(at, line)?;
        self.out.flush()
    }

    fn view(&self) -> &BuildView {
        &self.view
    }
}

/// A step phase in words.
pub(crate) fn phase_name(phase: strata_proto::common::v1::StepPhase) -> &'static str {
    use strata_proto::common::v1::StepPhase;
    match phase {
        StepPhase::Unspecified => "working",
        StepPhase::Preparing => "preparing",
        StepPhase::Executing => "executing",
        StepPhase::Snapshotting => "snapshotting",
        StepPhase::Uploading => "uploading",
    }
}

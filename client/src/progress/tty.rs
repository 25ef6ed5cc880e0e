//! `--progress tty`: a live view redrawn in place with ANSI escapes, like
//! BuildKit's: a header, one line per started step with its state or a
//! running timer, and the last lines of each running step's log.

use super::{BuildView, Renderer, StepState};
use crate::format;
use std::io::{self, Write};
use std::time::{Duration, Instant};
use strata_proto::build::v1 as pb;

/// Redraws at most this often, however fast events arrive.
const MIN_REDRAW: Duration = Duration::from_millis(100);

/// The live renderer, writing to a terminal `W`.
#[derive(Debug)]
pub struct TtyRenderer<W: Write> {
    out: W,
    view: BuildView,
    /// Lines drawn last time (to move the cursor back over them).
    drawn: usize,
    last_draw: Option<Instant>,
    width: usize,
    height: usize,
    done: bool,
}

impl<W: Write> TtyRenderer<W> {
    /// A renderer drawing on `out`, sized from the controlling terminal.
    pub fn new(out: W) -> Self {
        let (height, width) = terminal_size().unwrap_or((24, 80));
        Self {
            out,
            view: BuildView::default(),
            drawn: 0,
            last_draw: None,
            width,
            height,
            done: false,
        }
    }

    /// The writer back (tests read what was drawn).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn lines(&self) -> Vec<String> {
        let v = &self.view;
        let elapsed = if self.done {
            v.last_elapsed()
        } else {
            v.wall().max(v.last_elapsed())
        };
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({}/{}){}",
            elapsed.as_secs_f64(),
            v.completed(),
            v.steps.len(),
            if self.done { " FINISHED" } else { "" }
        )];
        for (i, state) in v.states.iter().enumerate() {
            let label = v.label(&v.steps[i].step_id);
            let status = match state {
                StepState::Pending | StepState::Queued => continue,
                StepState::Running(since) => format::seconds(elapsed.saturating_sub(*since)),
                StepState::Cached => "CACHED".to_string(),
                StepState::Done(d) => format!("DONE {}", format::seconds(*d)),
                StepState::Failed(_) => "ERROR".to_string(),
                StepState::Cancelled => "CANCELED".to_string(),
            };
            lines.push(self.fit(&format!(" => {label}"), &status));
            if matches!(state, StepState::Running(_)) && !self.done {
                for log in &v.recent_logs[i] {
                    lines.push(self.cut(&format!(" => => {log}")));
                }
            }
        }
        // Keep the view within the screen: drop the oldest step lines.
        let room = self.height.saturating_sub(1).max(2);
        if lines.len() > room {
            let extra = lines.len() - room;
            lines.drain(1..=extra);
        }
        lines
    }

    /// `left` and `right` on one line of the terminal width.
    fn fit(&self, left: &str, right: &str) -> String {
        let right_len = right.chars().count();
        let avail = self.width.saturating_sub(right_len + 2).max(10);
        let left = format::truncate(left, avail);
        let pad = self
            .width
            .saturating_sub(left.chars().count() + right_len)
            .max(1);
        format!("{left}{}{right}", " ".repeat(pad))
    }

    fn cut(&self, s: &str) -> String {
        // Control characters would move the cursor and break the redraw.
        let s: String = s.chars().filter(|c| !c.is_control()).collect();
        format::truncate(&s, self.width.saturating_sub(1))
    }

    fn draw(&mut self, force: bool) -> io::Result<()> {
        if !force && self.last_draw.is_some_and(|t| t.elapsed() < MIN_REDRAW) {
            return Ok(());
        }
        self.last_draw = Some(Instant::now());
        let lines = self.lines();
        let mut buf = String::new();
        if self.drawn > 0 {
            buf.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for line in &lines {
            buf.push_str("\r\x1b[2K");
            buf.push_str(line);
            buf.push('\n');
        }
        buf.push_str("\x1b[J");
        self.drawn = lines.len();
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()
    }

    /// Removes the live area so a message can be printed above it.
    fn clear(&mut self) -> io::Result<()> {
        if self.drawn > 0 {
            write!(self.out, "\x1b[{}A\r\x1b[J", self.drawn)?;
            self.drawn = 0;
        }
        Ok(())
    }
}

impl<W: Write + Send> Renderer for TtyRenderer<W> {
    fn event(&mut self, ev: &pb::BuildEvent) -> io::Result<()> {
        self.view.apply(ev);
        let terminal = matches!(
            ev.event,
            Some(pb::build_event::Event::BuildFinished(_) | pb::build_event::Event::BuildFailed(_))
        );
        self.draw(terminal)
    }

    fn message(&mut self, line: &str) -> io::Result<()> {
        self.clear()?;
        writeln!(self.out, "{line}")?;
        if !self.done && !self.view.steps.is_empty() {
            self.draw(true)
        } else {
            self.out.flush()
        }
    }

    fn tick(&mut self) -> io::Result<()> {
        if !self.done && !self.view.steps.is_empty() {
            self.draw(false)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        if self.view.steps.is_empty() {
            return Ok(());
        }
        self.draw(true)?;
        // The final state stays on screen; later output goes below it.
        self.drawn = 0;
        Ok(())
    }

    fn view(&self) -> &BuildView {
        &self.view
    }
}

/// (rows, columns) of the controlling terminal, from `stty size`.
fn terminal_size() -> Option<(usize, usize)> {
    let cols = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|n| n.parse::<usize>().ok());
    let rows = it.next()??;
    let stty_cols = it.next()??;
    let cols = cols.unwrap_or(stty_cols);
    (rows > 0 && cols > 0).then_some((rows, cols))
}

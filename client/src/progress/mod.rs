//! Rendering a build's event stream: `plain` (one line per event), `tty`
//! (a live, redrawn view like BuildKit's), `json` (one object per event) and
//! `quiet` (nothing). Shared by `strata build` and `strata logs`.

mod failure;
mod json;
mod plain;
mod tty;
mod view;

pub use failure::{error_summary, failure_report};
pub use json::{JsonRenderer, event_json};
pub use plain::PlainRenderer;
pub use tty::TtyRenderer;
pub use view::{BuildView, StepState};

use clap::ValueEnum;
use std::io::{self, IsTerminal as _};
use strata_proto::build::v1 as pb;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `tty` when stderr is a terminal, else `plain`.
    Auto,
    /// A live view redrawn in place.
    Tty,
    /// One timestamped, step-prefixed line per event.
    Plain,
    /// One JSON object per event, on stdout.
    Json,
    /// Nothing but the image ID at the end.
    Quiet,
}

impl Mode {
    /// `Auto` resolved against whether stderr is a terminal.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if io::stderr().is_terminal() => Self::Tty,
            Self::Auto => Self::Plain,
            m => m,
        }
    }
}

/// Something that shows build events as they arrive.
pub trait Renderer: Send {
    /// Shows one event.
    fn event(&mut self, ev: &pb::BuildEvent) -> io::Result<()>;
    /// Shows a client-side message ("context: ...", "writing image ...").
    fn message(&mut self, line: &str) -> io::Result<()>;
    /// Called periodically so running timers can move (tty only).
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Draws the final state; no more events follow.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// What the renderer knows about the build so far.
    fn view(&self) -> &BuildView;
}

/// Shows nothing (`--progress quiet`) but still tracks the build.
#[derive(Debug, Default)]
pub struct QuietRenderer {
    view: BuildView,
}

impl Renderer for QuietRenderer {
    fn event(&mut self, ev: &pb::BuildEvent) -> io::Result<()> {
        self.view.apply(ev);
        Ok(())
    }
    fn message(&mut self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn view(&self) -> &BuildView {
        &self.view
    }
}

/// The renderer for a (resolved) mode, writing progress to stderr and JSON
/// to stdout.
pub fn renderer(mode: Mode) -> Box<dyn Renderer> {
    match mode.resolve() {
        Mode::Tty => Box::new(TtyRenderer::new(io::stderr())),
        Mode::Auto | Mode::Plain => Box::new(PlainRenderer::new(io::stderr())),
        Mode::Json => Box::new(JsonRenderer::new(io::stdout())),
        Mode::Quiet => Box::new(QuietRenderer::default()),
    }
}

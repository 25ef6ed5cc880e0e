//! What a failed build prints: the failing step, the tail of its log, the
//! Dockerfile lines around it, then `failed to solve: ...` (BuildKit's
//! layout).

use super::BuildView;
use std::fmt::Write as _;
use strata_proto::build::v1 as pb;

/// The one-line error for a failed build, e.g. `failed to solve: process
/// "/bin/sh -c exit 3" did not complete successfully: exit code: 3`.
pub fn error_summary(status: pb::BuildStatus, error: Option<&pb::BuildError>) -> String {
    let Some(e) = error else {
        return if status == pb::BuildStatus::Cancelled {
            "build cancelled".to_string()
        } else {
            "failed to solve: the build failed without an error message".to_string()
        };
    };
    if status == pb::BuildStatus::Cancelled || e.code() == pb::ErrorCode::Cancelled {
        // "build cancelled" says it all; a more specific reason is kept.
        let why = e.message.trim_start_matches("build ");
        return if why.is_empty() || why == "cancelled" {
            "build cancelled".to_string()
        } else {
            format!("build cancelled: {why}")
        };
    }
    let mut msg = if e.message.is_empty() {
        "the build failed".to_string()
    } else {
        e.message.clone()
    };
    if let Some(code) = e.exit_code
        && !msg.contains("exit code")
    {
        let _ = write!(msg, ": exit code: {code}");
    } else if let Some(sig) = e.signal
        && !msg.contains("signal")
    {
        let _ = write!(msg, ": killed by signal {sig}");
    }
    format!("failed to solve: {msg}")
}

/// The multi-line report printed before the error line: the failing step
/// and its log tail between `------` rules, then the Dockerfile location
/// with the offending lines marked when the Dockerfile text is at hand.
pub fn failure_report(
    view: &BuildView,
    error: &pb::BuildError,
    dockerfile: Option<&[u8]>,
) -> String {
    let mut out = String::new();
    if !error.step_id.is_empty() {
        let instruction = if error.instruction.is_empty() {
            view.instruction(&error.step_id)
                .unwrap_or_default()
                .to_string()
        } else {
            error.instruction.clone()
        };
        // The plan's numbering, as in the progress lines (stage names
        // would repeat what the instruction's position already says).
        let bracket = view
            .position(&error.step_id)
            .map_or_else(String::new, |i| format!("{}/{}", i + 1, view.steps.len()));
        let first = instruction.lines().next().unwrap_or_default();
        let _ = writeln!(out, "------");
        if bracket.is_empty() {
            let _ = writeln!(out, " > {first} (step {}):", error.step_id);
        } else {
            let _ = writeln!(out, " > [{bracket}] {first} (step {}):", error.step_id);
        }
        let tail = String::from_utf8_lossy(&error.log_tail);
        for line in tail.lines() {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "------");
    }
    if let Some(loc) = &error.location
        && loc.start_line > 0
    {
        let file = if loc.file.is_empty() {
            "Dockerfile"
        } else {
            &loc.file
        };
        let end = loc.end_line.max(loc.start_line);
        if end > loc.start_line {
            let _ = writeln!(out, "{file}:{}-{end}", loc.start_line);
        } else {
            let _ = writeln!(out, "{file}:{}", loc.start_line);
        }
        if let Some(text) = dockerfile {
            out.push_str(&snippet(text, loc.start_line, end));
        }
    }
    if let Some(code) = error.exit_code {
        let _ = writeln!(out, "exit code: {code}");
    }
    out
}

/// Up to four lines before the failing range, the range marked `>>>`.
fn snippet(text: &[u8], start: u32, end: u32) -> String {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().collect();
    let start = start as usize;
    let end = (end as usize).min(lines.len());
    if start == 0 || start > lines.len() {
        return String::new();
    }
    let mut out = String::from("--------------------\n");
    for n in start.saturating_sub(4).max(1)..=end {
        let mark = if n >= start { ">>>" } else { "   " };
        let _ = writeln!(out, " {n:>3} | {mark} {}", lines[n - 1]);
    }
    out.push_str("--------------------\n");
    out
}

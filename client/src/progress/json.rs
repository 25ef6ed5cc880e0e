//! `--progress json`: one JSON object per event, one per line, on stdout.

use super::{BuildView, Renderer};
use crate::format;
use serde_json::{Value, json};
use std::io::{self, Write};
use strata_proto::build::v1 as pb;
use strata_proto::build::v1::build_event::Event;
use strata_proto::common::v1 as common;

/// Writes one JSON line per event to `W`.
#[derive(Debug)]
pub struct JsonRenderer<W: Write> {
    out: W,
    view: BuildView,
}

impl<W: Write> JsonRenderer<W> {
    /// A renderer writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            view: BuildView::default(),
        }
    }

    /// The writer back (tests read what was rendered).
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Renderer for JsonRenderer<W> {
    fn event(&mut self, ev: &pb::BuildEvent) -> io::Result<()> {
        self.view.apply(ev);
        writeln!(self.out, "{}", event_json(ev))?;
        self.out.flush()
    }

    fn message(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.out, "{}", json!({"type": "message", "message": line}))?;
        self.out.flush()
    }

    fn view(&self) -> &BuildView {
        &self.view
    }
}

/// `STEP_PHASE_EXECUTING` → `executing`.
fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn layer_json(l: Option<&common::Layer>) -> Value {
    match l {
        Some(l) => {
            let blob = l.blob.clone().unwrap_or_default();
            json!({
                "digest": blob.digest,
                "diff_id": l.diff_id,
                "size": blob.size,
                "media_type": blob.media_type,
            })
        }
        None => Value::Null,
    }
}

fn location_json(l: Option<&common::SourceLocation>) -> Value {
    l.map_or(
        Value::Null,
        |l| json!({"file": l.file, "start_line": l.start_line, "end_line": l.end_line}),
    )
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON form of one event: `build_id`, `sequence`, `time` (RFC 3339),
/// `type` (the event's snake_case name), `step_id` where there is one, and
/// the payload's fields. Log bytes are UTF-8 text (invalid bytes replaced).
pub fn event_json(ev: &pb::BuildEvent) -> Value {
    let (ty, payload) = match &ev.event {
        None => ("unknown", json!({})),
        Some(Event::BuildStarted(s)) => {
            let plan = s.plan.clone().unwrap_or_default();
            let steps: Vec<Value> = plan
                .steps
                .iter()
                .map(|st| {
                    json!({
                        "step_id": st.step_id,
                        "instruction": st.instruction,
                        "display_name": st.display_name,
                        "stage_index": st.stage_index,
                        "stage_name": st.stage_name,
                        "index_in_stage": st.index_in_stage,
                        "depends_on": st.depends_on,
                        "metadata_only": st.metadata_only,
                        "location": location_json(st.location.as_ref()),
                    })
                })
                .collect();
            (
                "build_started",
                json!({"dockerfile_path": plan.dockerfile_path, "target": plan.target, "steps": steps, "tags": s.tags}),
            )
        }
        Some(Event::StepQueued(q)) => (
            "step_queued",
            json!({"step_id": q.step_id, "attempt": q.attempt, "reason": q.reason, "cache_key": q.cache_key}),
        ),
        Some(Event::StepStarted(s)) => (
            "step_started",
            json!({"step_id": s.step_id, "worker_id": s.worker_id, "job_id": s.job_id, "attempt": s.attempt}),
        ),
        Some(Event::StepProgress(p)) => (
            "step_progress",
            json!({
                "step_id": p.step_id,
                "job_id": p.job_id,
                "phase": enum_word(p.phase().as_str_name(), "STEP_PHASE_"),
                "current": p.current,
                "total": p.total,
                "message": p.message,
            }),
        ),
        Some(Event::StepCached(c)) => (
            "step_cached",
            json!({
                "step_id": c.step_id,
                "cache_key": c.cache_key,
                "layer": layer_json(c.layer.as_ref()),
                "source_build_id": c.source_build_id,
                "source_worker_id": c.source_worker_id,
            }),
        ),
        Some(Event::StepDone(d)) => (
            "step_done",
            json!({
                "step_id": d.step_id,
                "worker_id": d.worker_id,
                "job_id": d.job_id,
                "attempt": d.attempt,
                "duration_seconds": format::duration(d.duration.as_ref()).as_secs_f64(),
                "layer": layer_json(d.layer.as_ref()),
                "cache_key": d.cache_key,
            }),
        ),
        Some(Event::StepFailed(f)) => (
            "step_failed",
            json!({
                "step_id": f.step_id,
                "worker_id": f.worker_id,
                "job_id": f.job_id,
                "attempt": f.attempt,
                "exit_code": f.exit_code,
                "signal": f.signal,
                "message": f.message,
                "log_tail": lossy(&f.log_tail),
                "will_retry": f.will_retry,
                "code": if f.code == 0 { String::new() } else { enum_word(f.code().as_str_name(), "ERROR_CODE_") },
                "duration_seconds": format::duration(f.duration.as_ref()).as_secs_f64(),
            }),
        ),
        Some(Event::StepCancelled(c)) => (
            "step_cancelled",
            json!({"step_id": c.step_id, "reason": c.reason}),
        ),
        Some(Event::StepLog(l)) => {
            let chunk = l.chunk.clone().unwrap_or_default();
            (
                "step_log",
                json!({
                    "step_id": l.step_id,
                    "job_id": l.job_id,
                    "attempt": l.attempt,
                    "stream": enum_word(chunk.stream().as_str_name(), "LOG_STREAM_"),
                    "data": lossy(&chunk.data),
                }),
            )
        }
        Some(Event::Warning(w)) => (
            "warning",
            json!({
                "step_id": w.step_id,
                "code": w.code,
                "message": w.message,
                "detail": w.detail,
                "location": location_json(w.location.as_ref()),
                "url": w.url,
            }),
        ),
        Some(Event::OutputProgress(o)) => (
            "output_progress",
            json!({
                "output_index": o.output_index,
                "output_type": enum_word(o.r#type().as_str_name(), "OUTPUT_TYPE_"),
                "phase": o.phase,
                "digest": o.digest,
                "current": o.current,
                "total": o.total,
                "done": o.done,
            }),
        ),
        Some(Event::BuildFinished(f)) => {
            let r = f.result.clone().unwrap_or_default();
            (
                "build_finished",
                json!({
                    "status": enum_word(f.status().as_str_name(), "BUILD_STATUS_"),
                    "manifest_digest": r.manifest_digest,
                    "config_digest": r.config_digest,
                    "tags": r.tags,
                    "duration_seconds": format::duration(r.total_duration.as_ref()).as_secs_f64(),
                }),
            )
        }
        Some(Event::BuildFailed(f)) => {
            let e = f.error.clone().unwrap_or_default();
            (
                "build_failed",
                json!({
                    "status": enum_word(f.status().as_str_name(), "BUILD_STATUS_"),
                    "step_id": e.step_id,
                    "error": {
                        "code": enum_word(e.code().as_str_name(), "ERROR_CODE_"),
                        "message": e.message,
                        "instruction": e.instruction,
                        "stage_name": e.stage_name,
                        "location": location_json(e.location.as_ref()),
                        "exit_code": e.exit_code,
                        "signal": e.signal,
                        "log_tail": lossy(&e.log_tail),
                    },
                    "steps": f.steps.iter().map(|o| json!({
                        "step_id": o.step_id,
                        "status": enum_word(o.status().as_str_name(), "STEP_STATUS_"),
                        "worker_id": o.worker_id,
                        "attempts": o.attempts,
                    })).collect::<Vec<_>>(),
                }),
            )
        }
    };
    let mut out = json!({
        "build_id": ev.build_id,
        "sequence": ev.sequence,
        "type": ty,
    });
    if let Some(t) = &ev.timestamp {
        out["time"] = Value::String(format::rfc3339(t.seconds));
    }
    if let (Value::Object(o), Value::Object(p)) = (&mut out, payload) {
        o.extend(p);
    }
    out
}

//! A layer step and its cache key: what the key covers (the parent's key,
//! the instruction, the environment a RUN sees, the ARGs it used, the
//! files and stages and images it reads, the platform).

use super::dispatch::Planner;
use super::instr::StageBuild;
use super::{Action, HistoryItem, ImageRef, PlanError, Platform, Step, StepKind};
use crate::instructions::Instruction;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;

impl Planner<'_> {
    /// The manifest digest `reference` resolves to, for a cache key
    /// (`unresolved` when planning without a resolver).
    pub(super) fn image_digest(
        &self,
        reference: &ImageRef,
        platform: &Platform,
        flag: &str,
        line: usize,
    ) -> Result<String, PlanError> {
        let resolved = self
            .resolver
            .resolve(reference, platform)
            .map_err(|e| PlanError::at(line, format!("{flag}={reference}: {e}")))?;
        Ok(resolved.map_or_else(|| "unresolved".to_string(), |b| b.digest))
    }

    /// Adds a layer step on top of the stage's current filesystem.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_step(
        &mut self,
        st: &mut StageBuild,
        kind: StepKind,
        ins: &Instruction,
        action: Action,
        args_used: BTreeMap<String, String>,
        mut reads: Vec<usize>,
        images: Vec<String>,
        created_by: String,
    ) -> Result<String, PlanError> {
        reads.sort_unstable();
        reads.dedup();
        st.step_count += 1;
        let id = format!("s{}-{}", st.index, st.step_count);
        let mut depends_on: Vec<String> = st.parent.iter().cloned().collect();
        let mut read_keys = Vec::new();
        for j in &reads {
            let r = self.results.get(j).ok_or_else(|| {
                PlanError::at(
                    ins.start_line,
                    format!("stage {} is read before it is built", self.stage_label(*j)),
                )
            })?;
            if let Some(last) = &r.last_step
                && !depends_on.contains(last)
            {
                depends_on.push(last.clone());
            }
            read_keys.push(r.result_key.clone());
        }
        let exec = st.exec();
        let held: usize = exec.env.iter().map(|e| e.len()).sum::<usize>()
            + match &action {
                Action::Run { argv, .. } => argv.iter().map(String::len).sum(),
                _ => 0,
            };
        self.spend(held, ins.start_line)?;
        // Proxy settings reach the run but never the cache key (BuildKit).
        let keyed_action = match &action {
            Action::Run { proxy_env, .. } if !proxy_env.is_empty() => {
                let mut a = action.clone();
                if let Action::Run { proxy_env, .. } = &mut a {
                    proxy_env.clear();
                }
                Cow::Owned(a)
            }
            _ => Cow::Borrowed(&action),
        };
        let env_digest = self_env_digest(st, kind);
        let key_input = KeyInput {
            v: 1,
            parent: &st.parent_key,
            kind,
            action: keyed_action.as_ref(),
            env: env_digest.as_deref(),
            user: &exec.user,
            workdir: (kind == StepKind::Run).then_some(exec.workdir.as_str()),
            shell: (kind == StepKind::Run).then_some(exec.shell.as_slice()),
            args: &args_used,
            reads: &read_keys,
            images: &images,
            platform: &st.platform,
        };
        let cache_key = hash_json(&key_input);
        // A step rebuilt for --no-cache(-filter) may make a different
        // layer: whatever builds on it or reads it is rebuilt too.
        let no_cache = st.no_cache
            || depends_on.iter().any(|d| {
                self.steps
                    .iter()
                    .rev()
                    .find(|s| &s.id == d)
                    .is_some_and(|s| s.no_cache)
            });
        let step = Step {
            id: id.clone(),
            stage: st.index,
            kind,
            instruction: ins.original.trim().to_string(),
            line: ins.start_line,
            depends_on,
            parent: st.parent.clone(),
            reads_stages: reads,
            created_by: created_by.clone(),
            exec,
            action,
            args_used,
            cache_key: cache_key.clone(),
            no_cache,
        };
        self.steps.push(step);
        st.history.push(HistoryItem {
            created_by,
            empty_layer: false,
            step: Some(id.clone()),
            change: None,
            line: ins.start_line,
        });
        st.parent = Some(id.clone());
        st.parent_key = cache_key;
        Ok(id)
    }
}

/// Everything a step's cache key covers.
#[derive(Serialize)]
struct KeyInput<'a> {
    v: u32,
    parent: &'a str,
    kind: StepKind,
    action: &'a Action,
    env: Option<&'a str>,
    user: &'a str,
    workdir: Option<&'a str>,
    shell: Option<&'a [String]>,
    args: &'a BTreeMap<String, String>,
    reads: &'a [String],
    /// Manifest digests of the images the step reads (`COPY --from=image`,
    /// `RUN --mount from=image`): a moved tag is a new key. Left out when
    /// empty, so keys of steps that read no image are what they were.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    images: &'a [String],
    platform: &'a Platform,
}

/// The environment's digest, for RUN steps only: COPY, ADD and WORKDIR do
/// not see the environment except through what was already expanded.
fn self_env_digest(st: &StageBuild, kind: StepKind) -> Option<String> {
    (kind == StepKind::Run).then(|| st.env.rendered().digest.clone())
}

/// Streams `value`'s JSON into SHA-256 without building the document.
fn hash_json<T: Serialize>(value: &T) -> String {
    struct HashWriter(Sha256);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Sha256::new());
    // Serialising plain data into a sink that cannot fail cannot fail.
    let _ = serde_json::to_writer(&mut w, value);
    format!("sha256:{}", hex::encode(w.0.finalize()))
}

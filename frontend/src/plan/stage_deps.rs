//! Which stages a build needs and in what order: each stage's base (an
//! earlier stage, an image or scratch), the stages its instructions read
//! (`COPY --from`, `RUN --mount from=`), the target and what it reaches.

use super::dispatch::{BaseSpec, Planner, Source, StageSpec};
use super::stages::StagedFile;
use super::{ImageRef, PlanError, PlanWarning, Platform};
use crate::instructions::{Command, Instruction, parse_mount, suggest};
use std::collections::{BTreeMap, BTreeSet};

impl Planner<'_> {
    /// Resolves `--from=X` for a stage: an earlier stage by index or name,
    /// otherwise an image reference.
    pub(crate) fn resolve_from(
        &self,
        what: &str,
        flag: &str,
        current: usize,
        line: usize,
    ) -> Result<Source, PlanError> {
        let here = self.stage_label(current);
        let check = |j: usize| -> Result<Source, PlanError> {
            if j == current {
                return Err(PlanError::at(
                    line,
                    format!(
                        "{flag}={what} refers to its own stage {here}: a stage cannot read from itself"
                    ),
                ));
            }
            if j > current {
                return Err(PlanError::at(
                    line,
                    format!(
                        "{flag}={what} refers to stage {}, which is defined after stage {here}: a stage can only use stages defined before it",
                        self.stage_label(j)
                    ),
                ));
            }
            Ok(Source::Stage(j))
        };
        if let Ok(index) = what.parse::<usize>() {
            if index >= self.specs.len() {
                return Err(PlanError::at(
                    line,
                    format!(
                        "{flag}={what}: invalid stage index {index}; the Dockerfile has {} stages",
                        self.specs.len()
                    ),
                ));
            }
            return check(index);
        }
        let lower = what.to_ascii_lowercase();
        if let Some(j) = self
            .specs
            .iter()
            .rposition(|s| !s.name.is_empty() && s.name == lower)
        {
            return check(j);
        }
        let bare = !what.contains([':', '/', '@', '.']);
        if bare {
            let names = self
                .specs
                .iter()
                .map(|s| s.name.as_str())
                .filter(|n| !n.is_empty());
            if let Some(near) = suggest(what, names) {
                return Err(PlanError::at(
                    line,
                    format!(
                        "{flag}={what}: no stage named \"{what}\" (did you mean \"{near}\"?); to use an image, give a full reference such as {what}:latest"
                    ),
                ));
            }
        }
        ImageRef::parse(what)
            .map(Source::Image)
            .map_err(|e| PlanError::at(line, format!("{flag}={what}: not a stage name and {e}")))
    }

    pub(crate) fn stage_label(&self, index: usize) -> String {
        match self.specs.get(index) {
            Some(s) if !s.name.is_empty() => format!("\"{}\"", s.name),
            _ => format!("{index}"),
        }
    }

    pub(super) fn resolve_stage_bases(&mut self, file: StagedFile) -> Result<(), PlanError> {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in file.stages.into_iter().enumerate() {
            let line = raw.line;
            let expanded = self
                .lexer
                .process_word(&raw.from.base, &self.global_args)
                .map_err(|e| PlanError::at(line, e.to_string()))?;
            let base_text = expanded.value;
            if base_text.is_empty() {
                return Err(PlanError::at(
                    line,
                    format!("base name ({}) should not be blank", raw.from.base),
                ));
            }
            let platform = if raw.from.platform.is_empty() {
                self.opts.platform.clone()
            } else {
                let p = self.expand(&raw.from.platform, &self.global_args, line)?;
                if p.is_empty() {
                    return Err(PlanError::at(
                        line,
                        format!("empty platform value from expression {}", raw.from.platform),
                    ));
                }
                Platform::parse(&p).map_err(|e| PlanError::at(line, e))?
            };
            let base = if base_text.eq_ignore_ascii_case("scratch") {
                BaseSpec::Scratch
            } else if let Some(&j) = names.get(&base_text) {
                BaseSpec::Stage(j)
            } else if base_text.eq_ignore_ascii_case(&raw.from.name) && !raw.from.name.is_empty() {
                return Err(PlanError::at(
                    line,
                    format!("stage \"{}\" is built FROM itself", raw.from.name),
                ));
            } else {
                BaseSpec::Image(
                    ImageRef::parse(&base_text)
                        .map_err(|e| PlanError::at(line, format!("FROM {base_text}: {e}")))?,
                )
            };
            let name = raw.from.name.clone();
            if !name.is_empty()
                && let Some(prev) = names.insert(name.clone(), i)
            {
                self.warnings.push(PlanWarning {
                        message: format!("duplicate stage name \"{name}\" (first defined on line {}); the later one is used", self.specs[prev].raw.line),
                        line,
                    });
            }
            let instructions = raw.instructions.clone();
            self.specs.push(StageSpec {
                raw,
                name,
                base_text,
                base,
                platform,
                instructions,
                deps: BTreeSet::new(),
                triggers_added: false,
                resolved: None,
            });
        }
        // A FROM naming a stage defined later is an error, not an image.
        for (i, spec) in self.specs.iter().enumerate() {
            if let BaseSpec::Image(_) = spec.base
                && let Some(j) = self
                    .specs
                    .iter()
                    .position(|s| !s.name.is_empty() && s.name == spec.base_text)
                && j > i
            {
                return Err(PlanError::at(
                    spec.raw.line,
                    format!(
                        "FROM {} refers to a stage defined later (line {}): a stage can only be built on stages before it",
                        spec.base_text, self.specs[j].raw.line
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Stage dependencies of one instruction (COPY --from, RUN --mount from=).
    pub(super) fn instruction_deps(
        &self,
        ins: &Instruction,
        current: usize,
    ) -> Result<Vec<usize>, PlanError> {
        let mut deps = Vec::new();
        match &ins.command {
            Command::Copy(c) if !c.from.is_empty() => {
                let expanded = self
                    .lexer
                    .process_word(&c.from, &Vec::<(String, String)>::new());
                if expanded.map(|e| e.value) != Ok(c.from.clone()) {
                    return Err(PlanError::at(
                        ins.start_line,
                        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    ));
                }
                if let Source::Stage(j) =
                    self.resolve_from(&c.from, "--from", current, ins.start_line)?
                {
                    deps.push(j);
                }
            }
            Command::Run(r) => {
                for m in &r.mounts {
                    let mount = parse_mount(m, &mut |v| Ok(v.to_string()))
                        .map_err(|e| PlanError::at(ins.start_line, e))?;
                    if !mount.from.is_empty()
                        && let Source::Stage(j) =
                            self.resolve_from(&mount.from, "--mount from", current, ins.start_line)?
                    {
                        deps.push(j);
                    }
                }
            }
            _ => {}
        }
        Ok(deps)
    }

    pub(super) fn target_index(&self) -> Result<usize, PlanError> {
        let Some(target) = &self.opts.target else {
            return Ok(self.specs.len() - 1);
        };
        let lower = target.to_ascii_lowercase();
        if let Some(i) = self.specs.iter().rposition(|s| s.name == lower) {
            return Ok(i);
        }
        let names = self
            .specs
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !n.is_empty());
        let mut msg = format!("target stage \"{target}\" could not be found");
        if let Some(near) = suggest(target, names) {
            msg.push_str(&format!(" (did you mean \"{near}\"?)"));
        }
        Err(PlanError::at(0, msg))
    }

    pub(super) fn reachable(&self, target: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !seen.insert(i) {
                continue;
            }
            let spec = &self.specs[i];
            if let BaseSpec::Stage(j) = spec.base {
                todo.push(j);
            }
            todo.extend(spec.deps.iter().copied());
        }
        seen
    }
}

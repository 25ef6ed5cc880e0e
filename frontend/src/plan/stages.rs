//! Splits typed instructions into the global ARGs and the stages.

use super::PlanError;
use crate::Limits;
use crate::instructions::{ArgDef, Command, From, Instruction};
use crate::parser::ParsedDockerfile;

/// A stage as written: its FROM and the instructions after it.
#[derive(Debug, Clone)]
pub(crate) struct RawStage {
    pub from: From,
    pub line: usize,
    pub instructions: Vec<Instruction>,
}

/// The Dockerfile split at its FROMs.
#[derive(Debug, Clone)]
pub(crate) struct StagedFile {
    /// ARGs before the first FROM, with their lines.
    pub meta_args: Vec<(Vec<ArgDef>, usize)>,
    pub stages: Vec<RawStage>,
}

pub(crate) fn split_stages(
    parsed: &ParsedDockerfile,
    limits: &Limits,
) -> Result<StagedFile, PlanError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<RawStage> = Vec::new();
    for node in &parsed.nodes {
        let ins =
            Instruction::from_node(node).map_err(|e| PlanError::at(e.start_line, e.message))?;
        match ins.command {
            Command::From(from) => {
                if stages.len() >= limits.max_stages {
                    return Err(PlanError::at(
                        ins.start_line,
                        format!("more than the limit of {} stages", limits.max_stages),
                    ));
                }
                stages.push(RawStage {
                    from,
                    line: ins.start_line,
                    instructions: Vec::new(),
                });
            }
            Command::Arg(defs) if stages.is_empty() => meta_args.push((defs, ins.start_line)),
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(ins),
                None => {
                    return Err(PlanError::at(
                        ins.start_line,
                        format!(
                            "{} instruction before the first FROM: a Dockerfile must start with FROM (only ARG may come before it)",
                            node.value.to_ascii_uppercase()
                        ),
                    ));
                }
            },
        }
    }
    if stages.is_empty() {
        let line = parsed.nodes.last().map_or(0, |n| n.start_line);
        return Err(PlanError::at(
            line,
            "no FROM instruction: the Dockerfile contains no stages to build",
        ));
    }
    Ok(StagedFile { meta_args, stages })
}

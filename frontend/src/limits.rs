//! Bounds on hostile input, enforced by the parser and the planner.

/// Size limits applied to a Dockerfile and its build.
///
/// The defaults are far above anything a real Dockerfile needs and low
/// enough that a hostile one cannot exhaust a scheduler's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted Dockerfile, in bytes.
    pub max_dockerfile_bytes: usize,
    /// Longest physical line, in bytes.
    pub max_line_bytes: usize,
    /// Longest logical instruction (continuations joined), in bytes.
    pub max_instruction_bytes: usize,
    /// Most instructions in one Dockerfile.
    pub max_instructions: usize,
    /// Most stages in one Dockerfile.
    pub max_stages: usize,
    /// Most bytes the plan's expanded values may add up to (each step's
    /// environment and arguments, ENV and LABEL values): a few lines of
    /// `ENV A=$A$A` double a value each time.
    pub max_plan_bytes: usize,
    /// Largest build context (the sum of its file sizes), in bytes.
    pub max_context_bytes: u64,
    /// Most entries (files, directories, links) in a build context.
    pub max_context_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_dockerfile_bytes: 4 << 20,
            max_line_bytes: 1 << 20,
            max_instruction_bytes: 2 << 20,
            max_instructions: 20_000,
            max_stages: 1_000,
            max_plan_bytes: 64 << 20,
            max_context_bytes: 32 << 30,
            max_context_entries: 1_000_000,
        }
    }
}

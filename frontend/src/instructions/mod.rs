//! Typed instructions: raw parser nodes checked and shaped per instruction,
//! with flags validated (BuildKit's `instructions` package).

mod duration;
mod flags;
mod mount;

pub use duration::{format_go_duration, parse_go_duration};
pub use mount::{CacheSharing, Mount, MountType, parse_mount};

use crate::parser::{self, Node};
use flags::Flags;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Every instruction keyword Docker knows, upper-case.
pub const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// An instruction that could not be typed, with its line range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct InstructionError {
    /// What is wrong.
    pub message: String,
    /// First line of the instruction (1-based).
    pub start_line: usize,
    /// Last line of the instruction (1-based).
    pub end_line: usize,
}

/// A `key=value` pair of ENV or LABEL, before expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Key as written.
    pub key: String,
    /// Value as written (quotes kept until expansion).
    pub value: String,
    /// Written in the legacy `ENV key value` form.
    pub legacy: bool,
}

/// One name of an ARG instruction with its optional default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgDef {
    /// The argument name.
    pub key: String,
    /// Default value as written, `None` for a bare `ARG name`.
    pub value: Option<String>,
}

/// A file written inline with a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineFile {
    /// The heredoc delimiter, used as file name.
    pub name: String,
    /// The body.
    pub data: String,
    /// `<<-`: strip leading tabs.
    pub chomp: bool,
    /// Expand variables in the body (the delimiter was not quoted).
    pub expand: bool,
}

/// The command line of RUN, CMD and ENTRYPOINT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLine {
    /// Exec form: the argv; shell form: one string.
    pub args: Vec<String>,
    /// Heredoc bodies for RUN.
    pub files: Vec<InlineFile>,
    /// Shell form: run through the image's SHELL.
    pub prepend_shell: bool,
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    /// The base as written (image reference, stage name or `scratch`).
    pub base: String,
    /// Stage name, lower-cased; empty when unnamed.
    pub name: String,
    /// `--platform` as written.
    pub platform: String,
}

/// `RUN` with its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// `--mount` values as written (parsed and expanded when planning).
    pub mounts: Vec<String>,
    /// `--network=default|none|host`.
    pub network: String,
    /// `--security=sandbox|insecure`.
    pub security: String,
}

/// Sources and destination of COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesAndDest {
    /// Paths (or URLs for ADD) as written.
    pub sources: Vec<String>,
    /// Inline heredoc sources.
    pub contents: Vec<InlineFile>,
    /// Destination as written.
    pub dest: String,
}

/// `COPY` and `ADD`; `from`, `parents` only for COPY, `checksum`, `unpack`,
/// `keep_git_dir` only for ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// What to copy where.
    pub paths: SourcesAndDest,
    /// `--from=stage|index|image`.
    pub from: String,
    /// `--chown=user:group`.
    pub chown: String,
    /// `--chmod=mode`.
    pub chmod: String,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude=pattern`, repeatable.
    pub exclude: Vec<String>,
    /// ADD `--checksum=sha256:...`.
    pub checksum: String,
    /// ADD `--unpack=bool`.
    pub unpack: Option<bool>,
    /// ADD `--keep-git-dir=bool`.
    pub keep_git_dir: Option<bool>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    /// Nanoseconds between checks (0 = default).
    pub interval: i64,
    /// Nanoseconds before a check times out.
    pub timeout: i64,
    /// Start period in nanoseconds.
    pub start_period: i64,
    /// Interval during the start period in nanoseconds.
    pub start_interval: i64,
    /// Failures before unhealthy.
    pub retries: i64,
}

/// A typed instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "instruction", rename_all = "lowercase")]
pub enum Command {
    /// `FROM`.
    From(From),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL` (exec form only).
    Shell(Vec<String>),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `MAINTAINER` (deprecated).
    Maintainer(String),
    /// `EXPOSE`.
    Expose(Vec<String>),
    /// `ADD`.
    Add(Copy),
    /// `COPY`.
    Copy(Copy),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `USER`.
    User(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `ARG`.
    Arg(Vec<ArgDef>),
    /// `ONBUILD` with the trigger expression.
    Onbuild(String),
    /// `STOPSIGNAL`.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
}

/// A typed instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The instruction.
    pub command: Command,
    /// The logical source line (continuations joined).
    pub original: String,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line (1-based).
    pub end_line: usize,
}

/// Suggests the closest of `candidates` to `word` (edit distance at most 2).
pub fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = levenshtein(&word, &c.to_ascii_lowercase());
        if d <= 2 && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    best.map(|(c, _)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

mod parse;
pub use parse::parse_instruction;

impl Instruction {
    /// Types one parser node.
    pub fn from_node(node: &Node) -> Result<Self, InstructionError> {
        parse_instruction(node).map_err(|message| InstructionError {
            message,
            start_line: node.start_line,
            end_line: node.end_line,
        })
    }
}

/// Re-exported so callers of [`parse_instruction`] can reach the parser.
pub use parser::Heredoc;

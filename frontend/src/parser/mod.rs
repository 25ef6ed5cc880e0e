//! The raw Dockerfile parser: bytes to a tree of instruction nodes.
//!
//! This is a port of BuildKit's `frontend/dockerfile/parser`: parser
//! directives, line continuations (with comments and blank lines inside
//! them), per-instruction argument rules, exec-form JSON with the shell-form
//! fallback, builder flags and heredocs. No variable is expanded here; the
//! [`Node::dump`] output is byte-for-byte BuildKit's, which the conformance
//! vectors check.

mod directives;
mod heredoc;
mod line_parsers;
mod quote;
mod split_command;

pub use directives::Directives;
pub use heredoc::{Heredoc, chomp_heredoc_content, parse_heredoc};
pub use quote::go_quote;

use crate::limits::Limits;
use thiserror::Error;

/// The default escape token, overridable with `# escape=`.
pub const DEFAULT_ESCAPE: char = '\\';

/// A parse failure, with the 1-based line range it was found on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ParseError {
    /// What was wrong, in BuildKit's wording where BuildKit has one.
    pub message: String,
    /// First line of the offending instruction (1-based; 0 when unknown).
    pub start_line: usize,
    /// Last line of the offending instruction (1-based).
    pub end_line: usize,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>, start_line: usize, end_line: usize) -> Self {
        Self {
            message: message.into(),
            start_line,
            end_line: end_line.max(start_line),
        }
    }
}

/// One argument of an instruction node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A plain string argument.
    Value(String),
    /// A nested instruction (`ONBUILD RUN ...`).
    Sub(Box<Node>),
}

/// One instruction of a Dockerfile, before expansion and typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword as written (`RUN`, `copy`, ...).
    pub value: String,
    /// Builder flags (`--from=builder`) with quotes and escapes removed.
    pub flags: Vec<String>,
    /// The arguments, shaped by the instruction's line parser.
    pub args: Vec<Arg>,
    /// The arguments were given in exec (JSON array) form.
    pub json: bool,
    /// Heredoc bodies attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line, continuations joined, as handed to the line parser.
    pub original: String,
    /// First physical line (1-based).
    pub start_line: usize,
    /// Last physical line (1-based), heredoc bodies included.
    pub end_line: usize,
    /// Comment lines directly above the instruction.
    pub prev_comment: Vec<String>,
}

impl Node {
    fn new(value: &str, original: &str) -> Self {
        Self {
            value: value.to_string(),
            flags: Vec::new(),
            args: Vec::new(),
            json: false,
            heredocs: Vec::new(),
            original: original.to_string(),
            start_line: 0,
            end_line: 0,
            prev_comment: Vec::new(),
        }
    }

    /// The lower-cased instruction keyword.
    pub fn keyword(&self) -> String {
        self.value.to_ascii_lowercase()
    }

    /// Plain-string arguments; a nested instruction contributes its keyword
    /// followed by its own arguments, as BuildKit's `nodeArgs` does.
    pub fn string_args(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            match arg {
                Arg::Value(v) => out.push(v.clone()),
                Arg::Sub(node) => {
                    out.push(node.value.clone());
                    out.extend(node.string_args());
                }
            }
        }
        out
    }

    /// BuildKit's S-expression dump of this node (without the surrounding
    /// parentheses), used by the conformance vectors.
    pub fn dump(&self) -> String {
        let mut s = self.value.to_lowercase();
        if !self.flags.is_empty() {
            s.push_str(" [");
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&quoted.join(" "));
            s.push(']');
        }
        for arg in &self.args {
            s.push(' ');
            match arg {
                Arg::Value(v) => s.push_str(&go_quote(v)),
                Arg::Sub(node) => {
                    s.push('(');
                    s.push_str(&node.dump());
                    s.push(')');
                }
            }
        }
        s.trim().to_string()
    }
}

/// A non-fatal finding of the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// One-line description.
    pub message: String,
    /// The line it refers to (1-based).
    pub line: usize,
}

/// The result of parsing a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDockerfile {
    /// Instructions in file order.
    pub nodes: Vec<Node>,
    /// The escape token in force (`\` or `` ` ``).
    pub escape: char,
    /// Parser directives that were given (`syntax`, `escape`, `check`).
    pub directives: Vec<(String, String)>,
    /// Non-fatal findings, such as empty continuation lines.
    pub warnings: Vec<Warning>,
}

impl ParsedDockerfile {
    /// BuildKit's dump of the whole file: one `(instruction ...)` per line.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for node in &self.nodes {
            s.push('(');
            s.push_str(&node.dump());
            s.push_str(")\n");
        }
        s.trim().to_string()
    }
}

/// Splits `data` into lines that keep their `\n` (BuildKit's `scanLines`).
fn split_lines_keep_ends(data: &str) -> impl Iterator<Item = &str> {
    data.split_inclusive('\n')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn is_empty_continuation_line(line: &str) -> bool {
    trim_newline(line).trim_start().is_empty()
}

/// Parses a Dockerfile with the default limits.
pub fn parse(data: &[u8]) -> Result<ParsedDockerfile, ParseError> {
    parse_with_limits(data, &Limits::default())
}

/// Parses a Dockerfile, enforcing `limits` on its size and line lengths.
pub fn parse_with_limits(data: &[u8], limits: &Limits) -> Result<ParsedDockerfile, ParseError> {
    if data.len() > limits.max_dockerfile_bytes {
        return Err(ParseError::new(
            format!(
                "Dockerfile is {} bytes, more than the limit of {} bytes",
                data.len(),
                limits.max_dockerfile_bytes
            ),
            0,
            0,
        ));
    }
    let data = data.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(data);
    let text = match std::str::from_utf8(data) {
        Ok(t) => t,
        Err(e) => {
            let line = data[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            return Err(ParseError::new(
                "invalid UTF-8 in Dockerfile; save it as UTF-8",
                line,
                line,
            ));
        }
    };
    Parser::new(limits).run(text)
}

struct Parser<'l> {
    limits: &'l Limits,
    directives: Directives,
    current_line: usize,
    warnings: Vec<Warning>,
}

impl<'l> Parser<'l> {
    fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            directives: Directives::default(),
            current_line: 0,
            warnings: Vec::new(),
        }
    }

    /// Trims the line ending, optionally leading whitespace, feeds the
    /// directive parser and blanks comments (BuildKit's `processLine`).
    fn process_line<'a>(
        &mut self,
        raw: &'a str,
        strip_left: bool,
    ) -> Result<(&'a str, bool), ParseError> {
        let line_no = self.current_line + 1;
        if raw.len() > self.limits.max_line_bytes {
            return Err(ParseError::new(
                format!(
                    "line is {} bytes, more than the limit of {} bytes",
                    raw.len(),
                    self.limits.max_line_bytes
                ),
                line_no,
                line_no,
            ));
        }
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        let directive = self
            .directives
            .parse_line(token)
            .map_err(|m| ParseError::new(m, line_no, line_no))?;
        let stripped = if is_comment(token) { "" } else { token };
        Ok((stripped, directive))
    }

    fn run(mut self, text: &str) -> Result<ParsedDockerfile, ParseError> {
        let mut lines = split_lines_keep_ends(text).peekable();
        let mut nodes: Vec<Node> = Vec::new();
        let mut comments: Vec<String> = Vec::new();

        while let Some(raw) = lines.next() {
            if is_comment(raw) {
                let comment = raw.trim_start()[1..].trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            let (processed, was_directive) = self.process_line(raw, true)?;
            if was_directive {
                comments.pop();
            }
            self.current_line += 1;
            let start_line = self.current_line;
            let (first, mut end_of_line) = trim_continuation(processed, self.directives.escape());
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut buf = String::from(first);
            let mut has_empty_continuation = false;
            while !end_of_line {
                let Some(raw) = lines.next() else { break };
                let (processed, _) = self.process_line(raw, false)?;
                self.current_line += 1;
                if is_comment(raw) {
                    continue;
                }
                if is_empty_continuation_line(processed) {
                    has_empty_continuation = true;
                    continue;
                }
                let (part, eol) = trim_continuation(processed, self.directives.escape());
                end_of_line = eol;
                buf.push_str(part);
                if buf.len() > self.limits.max_instruction_bytes {
                    return Err(ParseError::new(
                        format!(
                            "instruction is longer than the limit of {} bytes",
                            self.limits.max_instruction_bytes
                        ),
                        start_line,
                        self.current_line,
                    ));
                }
            }
            if has_empty_continuation {
                self.warnings.push(Warning {
                    message: format!("Empty continuation line found in: {buf}"),
                    line: self.current_line,
                });
            }

            let mut child = line_parsers::node_from_line(&buf, self.directives.escape(), 0)
                .map_err(|m| ParseError::new(m, start_line, self.current_line))?;
            child.prev_comment = std::mem::take(&mut comments);

            if can_contain_heredoc(&child) && buf.contains("<<") {
                let docs = heredoc::heredocs_from_line(&buf)
                    .map_err(|m| ParseError::new(m, start_line, self.current_line))?;
                for mut doc in docs {
                    let mut content = std::mem::take(&mut doc.content);
                    let mut terminated = false;
                    for raw in lines.by_ref() {
                        self.current_line += 1;
                        let mut candidate = trim_newline(raw);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(raw);
                        if content.len() > self.limits.max_dockerfile_bytes {
                            break;
                        }
                    }
                    if !terminated {
                        return Err(ParseError::new(
                            format!("unterminated heredoc: no line `{}` ends it", doc.name),
                            start_line,
                            self.current_line,
                        ));
                    }
                    doc.content = content;
                    child.heredocs.push(doc);
                }
            }
            child.start_line = start_line;
            child.end_line = self.current_line;
            nodes.push(child);
            if nodes.len() > self.limits.max_instructions {
                return Err(ParseError::new(
                    format!(
                        "Dockerfile has more than the limit of {} instructions",
                        self.limits.max_instructions
                    ),
                    start_line,
                    self.current_line,
                ));
            }
        }

        if nodes.is_empty() {
            return Err(ParseError::new(
                "file with no instructions",
                self.current_line,
                self.current_line,
            ));
        }
        Ok(ParsedDockerfile {
            nodes,
            escape: self.directives.escape(),
            directives: self.directives.seen().to_vec(),
            warnings: self.warnings,
        })
    }
}

/// Instructions whose arguments may introduce heredocs.
fn can_contain_heredoc(node: &Node) -> bool {
    let mut node = node;
    if node.keyword() == "onbuild"
        && let Some(Arg::Sub(sub)) = node.args.first()
    {
        node = sub;
    }
    matches!(node.keyword().as_str(), "add" | "copy" | "run") && !node.json
}

/// Removes a trailing line-continuation escape. Returns the remaining text
/// and whether the logical line ends here.
///
/// BuildKit uses the regex `([^E])E[ \t]*$|^E[ \t]*$` (E the escape token):
/// an escape preceded by another escape does not continue the line.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (line, true);
    };
    match before.chars().next_back() {
        None => ("", false),
        Some(c) if c == escape => (line, true),
        Some(_) => (before, false),
    }
}

#[cfg(test)]
mod tests;

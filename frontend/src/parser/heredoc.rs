//! Heredocs: `RUN <<EOF`, `COPY <<EOF /dest`, `<<-` and quoted delimiters.

use crate::shell::Lexer;

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF`).
    pub name: String,
    /// File descriptor prefix (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// Whether variables in the body are expanded (delimiter not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the delimiter.
    pub chomp: bool,
    /// The body, each line with its newline.
    pub content: String,
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// Parses one word as a heredoc introducer (`[n]<<[-]WORD`); `Ok(None)` when
/// the word is not one.
pub fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, String> {
    let digits_end = src
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(src.len(), |(i, _)| i);
    let Some(after) = src[digits_end..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    let rest = after.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd = src[..digits_end].parse::<u32>().unwrap_or(0);
    let env = no_env();
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let words = lexer
        .raw_quotes(false)
        .process_words(rest, &env)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = lexer
        .raw_quotes(true)
        .process_words(rest, &env)
        .map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |w: &str| w.chars().filter(|&c| c == '\'' || c == '"').count();
    let word = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&word) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name: word,
        file_descriptor: fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

/// Every heredoc introduced on a logical line, in order.
pub(super) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let env = no_env();
    let words = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true)
        .process_words(line, &env)
        .unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Strips leading tabs from every line of a `<<-` body.
pub fn chomp_heredoc_content(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

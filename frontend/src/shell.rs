//! BuildKit's shell-word lexer, used to expand variables in Dockerfile
//! instructions.
//!
//! This is a port of `frontend/dockerfile/shell/lex.go` (moby/buildkit
//! 73ed6825) with its unix semantics: `$VAR`, `${VAR}`, `${VAR:-w}`,
//! `${VAR-w}`, `${VAR:+w}`, `${VAR+w}`, `${VAR:?w}`, `${VAR?w}`,
//! `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`, `${VAR%%pat}`,
//! `${VAR/pat/repl}` and `${VAR//pat/repl}`, single and double quotes, and a
//! configurable escape character. Quirks of the Go code that are observable
//! (the words buffer shared between nesting levels, a leading byte order
//! mark being dropped, Go regexp semantics of patterns, `$0` in
//! replacements) are reproduced on purpose, so results equal BuildKit's.
//!
//! Unlike BuildKit, expansion is bounded: `${...}` nesting depth, the length
//! of every intermediate and final result, the bytes produced in total and
//! the work spent on pattern matching all have limits (see the `DEFAULT_*`
//! constants and [`Lexer`]'s builder methods) that produce a [`ShellError`]
//! instead of exhausting the stack, memory or CPU. Input is a `&str` and is
//! processed by `char`, so no input can split a multibyte character.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::hash::BuildHasher;
use std::sync::OnceLock;

#[cfg(test)]
mod tests;

/// Default bound on how deeply `${...}` expressions may nest.
pub const DEFAULT_MAX_NESTING: usize = 64;
/// Default bound, in bytes, on any expansion result (final or intermediate).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Default bound, in bytes, on everything produced while expanding one word,
/// counting intermediate results that are copied or discarded.
pub const DEFAULT_MAX_TOTAL_BYTES: usize = 64 << 20;
/// Default bound on pattern-matching steps spent on one word.
pub const DEFAULT_MAX_MATCH_STEPS: u64 = 1 << 26;

/// Looks up variables during expansion.
pub trait VarLookup {
    /// The value of `name`, or `None` when it is not set. Names are
    /// case-sensitive (unix semantics).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl<S: BuildHasher> VarLookup for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl VarLookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An ordered environment list; the last occurrence of a name wins, as in
/// Docker's `KEY=value` lists.
impl VarLookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Same as the slice implementation: the last occurrence wins.
impl VarLookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<T: VarLookup + ?Sized> VarLookup for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub value: String,
    /// Variables that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not set.
    pub unmatched: BTreeSet<String>,
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// An error BuildKit reports too; the Display text is BuildKit's,
    /// e.g. `failed to process "${x": syntax error: missing '}'`.
    #[error("failed to process {}: {message}", GoQuoted(.word))]
    Process {
        /// The word being expanded.
        word: String,
        /// BuildKit's message, without the `failed to process` prefix.
        message: String,
    },
    /// `${...}` nested deeper than [`Lexer::max_nesting`] allows.
    #[error("variable expansion: ${{...}} nested deeper than the limit of {limit} levels")]
    NestingTooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// A result grew beyond [`Lexer::max_output_bytes`].
    #[error("variable expansion: result longer than the limit of {limit} bytes")]
    OutputTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// All results together grew beyond [`Lexer::max_total_bytes`].
    #[error("variable expansion: results add up to more than the limit of {limit} bytes")]
    TotalOutputTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// Pattern matching took more than [`Lexer::max_match_steps`] steps.
    #[error("variable expansion: pattern matching exceeds the limit of {limit} steps")]
    MatchTooExpensive {
        /// The configured limit.
        limit: u64,
    },
}

/// BuildKit's shell-word lexer (`shell.Lex`), configured by builder methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
    max_nesting: usize,
    max_output_bytes: usize,
    max_total_bytes: usize,
    max_match_steps: u64,
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` `` in Dockerfiles) as escape
    /// character, with BuildKit's default options and this crate's default
    /// limits.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
            max_nesting: DEFAULT_MAX_NESTING,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_match_steps: DEFAULT_MAX_MATCH_STEPS,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// BuildKit `SkipProcessQuotes`: quotes are ordinary characters.
    pub fn skip_process_quotes(mut self, yes: bool) -> Self {
        self.skip_process_quotes = yes;
        self
    }

    /// BuildKit `SkipUnsetEnv`: references to unset variables are kept as
    /// written (`$X`, `${X}`, `${X:-w}`, ...) instead of being expanded.
    pub fn skip_unset_env(mut self, yes: bool) -> Self {
        self.skip_unset_env = yes;
        self
    }

    /// BuildKit `RawQuotes`: quote characters are kept in the result.
    pub fn raw_quotes(mut self, yes: bool) -> Self {
        self.raw_quotes = yes;
        self
    }

    /// BuildKit `RawEscapes`: escape characters are kept in the result.
    pub fn raw_escapes(mut self, yes: bool) -> Self {
        self.raw_escapes = yes;
        self
    }

    /// Bound on `${...}` nesting depth (not in BuildKit).
    pub fn max_nesting(mut self, limit: usize) -> Self {
        self.max_nesting = limit;
        self
    }

    /// Bound, in bytes, on every result and intermediate result (not in
    /// BuildKit). Set above 1 MiB, this lets through some huge patterns
    /// that BuildKit rejects because of Go's regexp size limit.
    pub fn max_output_bytes(mut self, limit: usize) -> Self {
        self.max_output_bytes = limit;
        self
    }

    /// Bound, in bytes, on everything produced while expanding one word,
    /// including intermediate results that are later copied or discarded
    /// (`${UNSET:+$BIG}`), so that a word cannot make expansion copy a
    /// large value over and over (not in BuildKit).
    pub fn max_total_bytes(mut self, limit: usize) -> Self {
        self.max_total_bytes = limit;
        self
    }

    /// Bound on the steps pattern matching may take for one word (not in
    /// BuildKit, whose matching is equally costly but unbounded).
    pub fn max_match_steps(mut self, limit: u64) -> Self {
        self.max_match_steps = limit;
        self
    }

    /// BuildKit `ProcessWordWithMatches`: expands one word, and reports which
    /// variables were found and which were not.
    pub fn process_word(&self, word: &str, env: &dyn VarLookup) -> Result<Expansion, ShellError> {
        let mut sw = ShellWord::new(self, word, env);
        let (value, _) = sw.process(word)?;
        Ok(Expansion {
            value,
            matched: sw.matched,
            unmatched: sw.unmatched,
        })
    }

    /// BuildKit `ProcessWords`: expands one word, then splits it on
    /// unquoted white space (after expansion, so `$X` holding `a b` gives
    /// two words).
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn VarLookup,
    ) -> Result<Vec<String>, ShellError> {
        let mut sw = ShellWord::new(self, word, env);
        Ok(sw.process(word)?.1)
    }
}

impl Default for Lexer {
    /// A lexer with the default escape character `\`.
    fn default() -> Self {
        Self::new('\\')
    }
}

/// Internal failure: a BuildKit message still to be wrapped with the word,
/// or a limit error that is reported as is.
enum Fail {
    Msg(String),
    Limit(ShellError),
}

fn msg<T>(text: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Msg(text.into()))
}

/// Go turns `EOF` (-1) into U+FFFD when it formats it as a rune.
fn rune_or_eof(ch: Option<char>) -> char {
    ch.unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Port of `shellWord`: the state of expanding one word.
struct ShellWord<'a> {
    lex: &'a Lexer,
    src: &'a str,
    pos: usize,
    env: &'a dyn VarLookup,
    raw_escapes: bool,
    // Shared by all nesting levels, like Go's `sw.wordsBuffer`: an inner
    // `${...}` resets it, which drops the current partial word of the
    // outer level. ProcessWords results depend on this.
    words_buf: String,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    depth: usize,
    produced: usize,
    steps: u64,
}

impl<'a> ShellWord<'a> {
    fn new(lex: &'a Lexer, src: &'a str, env: &'a dyn VarLookup) -> Self {
        Self {
            lex,
            src,
            // text/scanner discards a byte order mark at the very start.
            pos: if src.starts_with('\u{feff}') { 3 } else { 0 },
            env,
            raw_escapes: lex.raw_escapes,
            words_buf: String::new(),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
            produced: 0,
            steps: 0,
        }
    }

    fn process(&mut self, word: &str) -> Result<(String, Vec<String>), ShellError> {
        match self.process_stop_on(None, self.lex.raw_escapes) {
            Ok(r) => Ok(r),
            Err(Fail::Msg(message)) => Err(ShellError::Process {
                word: word.to_owned(),
                message,
            }),
            Err(Fail::Limit(e)) => Err(e),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..).and_then(|s| s.chars().next())
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn check_len(&self, buf: &str) -> Result<(), Fail> {
        if buf.len() > self.lex.max_output_bytes {
            return Err(Fail::Limit(ShellError::OutputTooLong {
                limit: self.lex.max_output_bytes,
            }));
        }
        Ok(())
    }

    /// Counts `bytes` towards the total produced for this word.
    fn charge(&mut self, bytes: usize) -> Result<(), Fail> {
        self.produced = self.produced.saturating_add(bytes);
        if self.produced > self.lex.max_total_bytes {
            return Err(Fail::Limit(ShellError::TotalOutputTooLong {
                limit: self.lex.max_total_bytes,
            }));
        }
        Ok(())
    }

    fn push_str(&mut self, buf: &mut String, s: &str) -> Result<(), Fail> {
        buf.push_str(s);
        self.charge(s.len())?;
        self.check_len(buf)
    }

    fn push(&mut self, buf: &mut String, ch: char) -> Result<(), Fail> {
        buf.push(ch);
        self.charge(ch.len_utf8())?;
        self.check_len(buf)
    }

    /// Processes up to (and consuming) `stop`, or to the end when `None`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.stop_on(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        self.words_buf.clear();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish(&mut self.words_buf)));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if quotes => Some(self.process_single_quote()?),
                '"' if quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                self.push_str(&mut result, &tmp)?;
                if ch == '$' {
                    words.add_string(&mut self.words_buf, &tmp);
                } else {
                    words.add_raw_string(&mut self.words_buf, &tmp);
                }
                continue;
            }
            self.next();
            let mut ch = ch;
            if ch == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(&mut self.words_buf, ch);
                    self.push(&mut result, ch)?;
                }
                // An escape at the very end is dropped.
                let Some(escaped) = self.next() else { break };
                ch = escaped;
                words.add_raw_char(&mut self.words_buf, ch);
            } else {
                words.add_char(&mut self.words_buf, ch);
            }
            self.push(&mut result, ch)?;
        }
        if let Some(stop) = stop {
            return msg(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish(&mut self.words_buf)))
    }

    fn process_single_quote(&mut self) -> Result<String, Fail> {
        // Everything up to the next ' is literal; ' cannot be escaped.
        let mut result = String::new();
        self.next();
        if self.lex.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return msg(
                        "unexpected end of statement while looking for matching single-quote",
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => self.push(&mut result, ch)?,
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        self.next();
        if self.lex.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return msg(
                        "unexpected end of statement while looking for matching double-quote",
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    self.push_str(&mut result, &value)?;
                }
                Some(mut ch) => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            self.push(&mut result, ch)?;
                        }
                        match self.peek() {
                            // The escape is dropped; the loop then fails on EOF.
                            None => continue,
                            // Only these can be escaped; elsewhere the escape
                            // character stays (and with raw escapes, doubles).
                            Some(next) if next == '"' || next == '$' || next == self.lex.escape => {
                                self.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    self.push(&mut result, ch)?;
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, Fail> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v.to_owned(),
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return msg("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return msg("syntax error: bad substitution"),
            Some(_) => {}
        }
        if self.depth >= self.lex.max_nesting {
            return Err(Fail::Limit(ShellError::NestingTooDeep {
                limit: self.lex.max_nesting,
            }));
        }
        self.depth += 1;
        let r = self.process_braced();
        self.depth -= 1;
        r
    }

    /// The part of `${...}` after the opening brace.
    fn process_braced(&mut self) -> Result<String, Fail> {
        let name = self.process_name();
        let first = self.next();
        let mut chs = rune_or_eof(first).to_string();
        let skip_unset = self.lex.skip_unset_env;
        match first {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v.to_owned(),
                None if skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = first == Some(':');
                let op = if null_is_unset {
                    let op = self.next();
                    chs.push(rune_or_eof(op));
                    op
                } else {
                    first
                };
                let raw_escapes = matches!(op, Some('#' | '%'));
                if null_is_unset && raw_escapes {
                    return msg(format!("unsupported modifier ({chs}) in substitution"));
                }
                let word = self.sub_word('}', raw_escapes, "syntax error: missing '}'")?;
                let value = self.get_env(&name);
                if skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = null_is_unset && value == Some("");
                match op {
                    Some('-') if value.is_none() || empty => Ok(word),
                    Some('-') => Ok(value.unwrap_or_default().to_owned()),
                    Some('+') if value.is_none() || empty => Ok(String::new()),
                    Some('+') => Ok(word),
                    Some('?') if value.is_none() || empty => {
                        let message = if !word.is_empty() {
                            word.as_str()
                        } else if value.is_none() {
                            "is not allowed to be unset"
                        } else {
                            "is not allowed to be empty"
                        };
                        msg(format!("{name}: {message}"))
                    }
                    Some('?') => Ok(value.unwrap_or_default().to_owned()),
                    Some(op @ ('%' | '#')) => {
                        // One % or # is the shortest match, a doubled one the longest.
                        let (pattern, greedy) = match word.strip_prefix(op) {
                            Some(rest) => (rest, true),
                            None => (word.as_str(), false),
                        };
                        let value = value.unwrap_or_default();
                        if op == '%' {
                            self.trim_suffix(pattern, value, greedy)
                        } else {
                            self.trim_prefix(pattern, value, greedy)
                        }
                    }
                    _ => msg(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = self.sub_word('/', true, "syntax error: missing '/' in ${}")?;
                let replacement = self.sub_word('}', true, "syntax error: missing '}'")?;
                let value = self.get_env(&name);
                if skip_unset && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let value = value.unwrap_or_default();
                let re = Pattern::compile(&pattern, true, false).or_else(|e| {
                    msg(format!("invalid pattern ({pattern}) in substitution: {e}"))
                })?;
                if replace_all {
                    return self.replace_all(&re, value, &replacement);
                }
                Ok(match self.find(&re, value, 0)? {
                    Some((start, end)) => {
                        let mut out = String::new();
                        self.push_str(&mut out, slice(value, 0, start))?;
                        self.push_str(&mut out, &replacement)?;
                        self.push_str(&mut out, slice(value, end, value.len()))?;
                        out
                    }
                    None => value.to_owned(),
                })
            }
            _ => msg(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    /// A nested word of `${...}` ending at `stop`. Any BuildKit error met at
    /// the end of the input becomes `eof_message`.
    fn sub_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
        eof_message: &str,
    ) -> Result<String, Fail> {
        match self.process_stop_on(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(Fail::Msg(_)) if self.peek().is_none() => msg(eof_message),
            Err(e) => Err(e),
        }
    }

    fn process_name(&mut self) -> String {
        // A name is alphanumeric or _; one starting with a digit is all
        // digits (a positional parameter); special parameters are one char.
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && go_is_digit(ch) {
                while let Some(d) = self.peek().filter(|&c| go_is_digit(c)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !go_is_letter(ch) && !go_is_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_owned();
        }
        self.next();
        let mut result = "<<".to_owned();
        while let Some(ch) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            self.next();
            result.push(ch);
        }
        result
    }

    fn get_env(&mut self, name: &str) -> Option<&'a str> {
        let value = self.env.lookup(name);
        let set = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !set.contains(name) {
            set.insert(name.to_owned());
        }
        value
    }

    fn trim_prefix(&mut self, pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
        let re = Pattern::compile(pattern, greedy, true)
            .or_else(|e| msg(format!("invalid pattern ({pattern}) in substitution: {e}")))?;
        Ok(match self.find(&re, value, 0)? {
            Some((_, end)) => slice(value, end, value.len()).to_owned(),
            None => value.to_owned(),
        })
    }

    fn trim_suffix(&mut self, pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
        // Regexps cannot find the shortest rightmost match, so BuildKit
        // reverses pattern and value and trims a prefix instead.
        self.charge(2 * value.len() + pattern.len())?;
        let reversed: String = value.chars().rev().collect();
        let trimmed = self.trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
        Ok(trimmed.chars().rev().collect())
    }

    fn find(
        &mut self,
        re: &Pattern,
        text: &str,
        from: usize,
    ) -> Result<Option<(usize, usize)>, Fail> {
        let budget = self.lex.max_match_steps.saturating_sub(self.steps);
        let (found, used) = re.find(text, from, budget);
        self.steps = self.steps.saturating_add(used);
        if self.steps > self.lex.max_match_steps {
            return Err(Fail::Limit(ShellError::MatchTooExpensive {
                limit: self.lex.max_match_steps,
            }));
        }
        Ok(found)
    }

    /// Port of Go's `Regexp.ReplaceAllString`, including its handling of
    /// empty matches and `$` templates in the replacement.
    fn replace_all(&mut self, re: &Pattern, text: &str, template: &str) -> Result<String, Fail> {
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = self.find(re, text, search)? else {
                break;
            };
            self.push_str(&mut out, slice(text, last_end, start))?;
            // No replacement for an empty match right after a previous match.
            if end > last_end || start == 0 {
                let before = out.len();
                expand_template(&mut out, template, slice(text, start, end));
                self.charge(out.len() - before)?;
                self.check_len(&out)?;
            }
            last_end = end;
            let width = text
                .get(search..)
                .and_then(|s| s.chars().next())
                .map_or(0, char::len_utf8);
            if search + width > end {
                search += width;
            } else if search + 1 > end {
                search += 1;
            } else {
                search = end;
            }
        }
        self.push_str(&mut out, slice(text, last_end, text.len()))?;
        Ok(out)
    }
}

/// `text[start..end]`, empty instead of panicking on a bad range (callers
/// only pass char boundaries).
fn slice(text: &str, start: usize, end: usize) -> &str {
    text.get(start..end).unwrap_or_default()
}

/// Port of `wordsStruct`; the buffer is passed in because it is shared.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if !go_is_space(ch) {
            self.add_raw_char(buf, ch);
        } else if self.in_word && !buf.is_empty() {
            self.words.push(std::mem::take(buf));
            self.in_word = false;
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for ch in s.chars() {
            self.add_char(buf, ch);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

/// Reverses a pattern but keeps `\x` escapes in order (`a\*c` -> `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = chars.clone();
    let n = chars.len();
    let mut i = 0;
    while i < n {
        let out_idx = n - 1 - i;
        if chars[i] == '\\' && i + 1 < n {
            out[out_idx - 1] = '\\';
            out[out_idx] = chars[i + 1];
            i += 2;
        } else {
            out[out_idx] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// Go's `Regexp.Expand` for a regexp without groups: `$0`/`${0}` is the
/// match, `$$` a dollar, other valid references are empty, malformed ones
/// literal.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match extract_reference(rest) {
            Some((num, after)) => {
                if num == Some(0) {
                    out.push_str(matched);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Go's `extract`: a group reference after `$`, as (group number if
/// numeric, remaining template).
fn extract_reference(s: &str) -> Option<(Option<u64>, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !go_is_letter(c) && !go_is_digit(c) && c != '_')
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let (name, mut rest) = body.split_at(end);
    if brace {
        rest = rest.strip_prefix('}')?;
    }
    let mut num = Some(0u64);
    for b in name.bytes() {
        num = match num {
            Some(n) if b.is_ascii_digit() && n < 100_000_000 => Some(n * 10 + u64::from(b - b'0')),
            _ => None,
        };
    }
    if name.len() > 1 && name.starts_with('0') {
        num = None;
    }
    Some((num, rest))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Lit(char),
    /// `?`: any character but a newline (Go's `.`).
    Any,
    /// `*`: `.*` when greedy, `.*?` otherwise.
    Star,
}

#[derive(Debug, Clone, Copy)]
enum Inst {
    Lit(char, usize),
    AnyNotNl(usize),
    Split(usize, usize),
    Match,
}

/// A shell pattern as BuildKit's `convertShellPatternToRegex` turns it into
/// a Go regexp, matched with Go's leftmost-first semantics by a Pike VM
/// (linear in text length times pattern length, like Go's).
#[derive(Debug)]
struct Pattern {
    anchored: bool,
    /// The pattern when it has no wildcards.
    literal: Option<String>,
    prog: Vec<Inst>,
}

impl Pattern {
    fn compile(pattern: &str, greedy: bool, anchored: bool) -> Result<Pattern, String> {
        let mut chars = pattern
            .strip_prefix('\u{feff}')
            .unwrap_or(pattern)
            .chars()
            .peekable();
        let mut atoms = Vec::new();
        while let Some(tok) = chars.next() {
            atoms.push(match tok {
                '*' => Atom::Star,
                '?' => Atom::Any,
                '\\' => {
                    // \} and \/ keep } and / from ending ${...}; the escape
                    // is not part of the pattern.
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(c @ ('*' | '?' | '\\')) => Atom::Lit(c),
                        other => return Err(format!("invalid escape '\\{}'", rune_or_eof(other))),
                    }
                }
                c => Atom::Lit(c),
            });
        }
        let literal = atoms
            .iter()
            .map(|a| match a {
                Atom::Lit(c) => Some(*c),
                _ => None,
            })
            .collect();
        let mut prog = Vec::with_capacity(atoms.len() * 2 + 1);
        for atom in &atoms {
            let pc = prog.len();
            match atom {
                Atom::Lit(c) => prog.push(Inst::Lit(*c, pc + 1)),
                Atom::Any => prog.push(Inst::AnyNotNl(pc + 1)),
                Atom::Star => {
                    let (more, done) = (pc + 1, pc + 2);
                    prog.push(if greedy {
                        Inst::Split(more, done)
                    } else {
                        Inst::Split(done, more)
                    });
                    prog.push(Inst::AnyNotNl(pc));
                }
            }
        }
        prog.push(Inst::Match);
        Ok(Pattern {
            anchored,
            literal,
            prog,
        })
    }

    /// The leftmost-first match at or after byte `from`, and the steps used.
    /// Gives up (reporting more steps than `budget`) when over budget.
    fn find(&self, text: &str, from: usize, budget: u64) -> (Option<(usize, usize)>, u64) {
        let Some(hay) = text.get(from..) else {
            return (None, 0);
        };
        if let Some(lit) = &self.literal {
            let found = if self.anchored {
                (from == 0 && hay.starts_with(lit.as_str())).then_some(0)
            } else {
                hay.find(lit.as_str())
            };
            let scanned = found.map_or(hay.len(), |i| i + lit.len());
            return (
                found.map(|i| (from + i, from + i + lit.len())),
                scanned as u64 + 1,
            );
        }
        let n = self.prog.len();
        let mut clist = ThreadList::new(n);
        let mut nlist = ThreadList::new(n);
        let mut stack = Vec::new();
        // Setting up the queues costs as much as visiting every instruction.
        let mut steps = 2 * n as u64;
        let mut matched = None;
        let mut pos = from;
        loop {
            if clist.threads.is_empty() && (matched.is_some() || (self.anchored && pos != 0)) {
                break;
            }
            if matched.is_none() && (!self.anchored || pos == 0) {
                steps += self.add(&mut clist, 0, pos, &mut stack);
            }
            let ch = text.get(pos..).and_then(|s| s.chars().next());
            let next_pos = pos + ch.map_or(0, char::len_utf8);
            for i in 0..clist.threads.len() {
                let (pc, start) = clist.threads[i];
                steps += 1;
                let out = match (self.prog[pc], ch) {
                    (Inst::Match, _) => {
                        // Leftmost-first: lower-priority threads are dropped.
                        matched = Some((start, pos));
                        break;
                    }
                    (Inst::Lit(want, out), Some(c)) if c == want => out,
                    (Inst::AnyNotNl(out), Some(c)) if c != '\n' => out,
                    _ => continue,
                };
                steps += self.add(&mut nlist, out, start, &mut stack);
            }
            if steps > budget {
                return (None, steps);
            }
            clist.clear();
            if ch.is_none() {
                break;
            }
            pos = next_pos;
            std::mem::swap(&mut clist, &mut nlist);
        }
        (matched, steps)
    }

    /// Adds the thread at `pc` and everything reachable without consuming
    /// input, in priority order; returns the steps taken.
    fn add(&self, list: &mut ThreadList, pc: usize, start: usize, stack: &mut Vec<usize>) -> u64 {
        let mut steps = 0;
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if !list.mark(pc) {
                continue;
            }
            steps += 1;
            match self.prog[pc] {
                Inst::Split(first, second) => {
                    stack.push(second);
                    stack.push(first);
                }
                _ => list.threads.push((pc, start)),
            }
        }
        steps
    }
}

/// A Pike VM run queue: threads as (pc, match start), with each pc at most
/// once per step.
struct ThreadList {
    seen: Vec<u32>,
    generation: u32,
    threads: Vec<(usize, usize)>,
}

impl ThreadList {
    fn new(n: usize) -> Self {
        Self {
            seen: vec![0; n],
            generation: 1,
            threads: Vec::new(),
        }
    }

    /// Marks `pc` as queued; false when it already was.
    fn mark(&mut self, pc: usize) -> bool {
        match self.seen.get_mut(pc) {
            Some(g) if *g != self.generation => {
                *g = self.generation;
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        self.threads.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.seen.iter_mut().for_each(|g| *g = 0);
            self.generation = 1;
        }
    }
}

/// Go's `unicode.IsSpace`.
fn go_is_space(ch: char) -> bool {
    matches!(
        ch,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// Go's `unicode.IsLetter`.
fn go_is_letter(ch: char) -> bool {
    static TABLE: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    in_table(TABLE.get_or_init(|| decode_ranges(LETTER)), ch)
}

/// Go's `unicode.IsDigit`.
fn go_is_digit(ch: char) -> bool {
    static TABLE: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    if ch.is_ascii() {
        return ch.is_ascii_digit();
    }
    in_table(TABLE.get_or_init(|| decode_ranges(DIGIT)), ch)
}

/// Go's `strconv.IsPrint`.
fn go_is_print(ch: char) -> bool {
    static TABLE: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    if ch.is_ascii() {
        return (' '..='~').contains(&ch);
    }
    !in_table(TABLE.get_or_init(|| decode_ranges(NOT_PRINT)), ch)
}

fn in_table(ranges: &[(u32, u32)], ch: char) -> bool {
    let c = u32::from(ch);
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Decodes a table below: base-36 numbers alternating between the gap from
/// the previous range's end and the length of the range minus one.
fn decode_ranges(table: &str) -> Vec<(u32, u32)> {
    let nums: Vec<u32> = table
        .split_ascii_whitespace()
        .map(|t| u32::from_str_radix(t, 36).unwrap_or(0))
        .collect();
    let mut prev = 0u32;
    nums.chunks_exact(2)
        .map(|pair| {
            let lo = prev.saturating_add(pair[0]);
            prev = lo.saturating_add(pair[1]);
            (lo, prev)
        })
        .collect()
}

/// Formats a string as Go's `%q` (`strconv.Quote`) does.
struct GoQuoted<'a>(&'a str);

impl fmt::Display for GoQuoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for ch in self.0.chars() {
            let code = u32::from(ch);
            match ch {
                '"' | '\\' => write!(f, "\\{ch}")?,
                _ if go_is_print(ch) => f.write_char(ch)?,
                '\u{7}' => f.write_str("\\a")?,
                '\u{8}' => f.write_str("\\b")?,
                '\u{c}' => f.write_str("\\f")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\u{b}' => f.write_str("\\v")?,
                _ if code < 0x20 || code == 0x7f => write!(f, "\\x{code:02x}")?,
                _ if code < 0x10000 => write!(f, "\\u{code:04x}")?,
                _ => write!(f, "\\U{code:08x}")?,
            }
        }
        f.write_char('"')
    }
}

// Tables generated from Go 1.26's unicode and strconv packages.
/// Non-ASCII ranges of Go `unicode.IsLetter` (category L), Unicode 15.0.0, 657 ranges.
const LETTER: &str = "4q 0 b 0 5 0 6 m 2 u 2 cp 5 b f 4 8 0 2 0 3m 4 2 1 3 3 2 0 7 0 2 2 2 \
    0 2 j 2 2a 2 3u 9 4l 2 11 3 0 7 14 20 q 5 3 1a 16 10 1 2 2q 2 0 g 1 8 1 b 2 3 0 h 0 2 t u 2g \
    c 0 p w a 1 5 0 6 l 5 0 a 0 4 0 o o 8 a 6 n 2 5 i 15 1n 1h 4 0 j 0 8 9 g f 5 7 3 1 3 l 2 6 2 \
    0 4 3 4 0 h 0 e 1 2 2 f 1 b 0 9 5 5 1 3 l 2 6 2 1 2 1 2 1 w 3 2 0 k 2 h 8 2 2 2 l 2 6 2 1 2 \
    4 4 0 j 0 g 1 o 0 c 7 3 1 3 l 2 6 2 1 2 4 4 0 v 1 2 2 g 0 i 0 2 5 4 2 2 3 4 1 2 0 2 1 4 1 4 \
    2 4 b n 0 1h 7 2 2 2 m 2 f 4 0 r 2 3 0 3 1 v 0 5 7 2 2 2 m 2 9 2 4 4 0 w 1 2 1 g 1 i 8 2 2 2 \
    14 3 0 h 0 6 2 9 2 p 5 6 h 4 n 2 8 2 0 3 6 1n 1b 2 1 d 6 1n 1 2 0 2 4 2 n 2 0 2 9 2 1 a 0 3 \
    4 2 0 m 3 x 0 1s 7 2 z s 4 38 16 l 0 h 5 5 3 4 0 4 1 8 2 5 c d 0 i 11 2 0 6 0 3 16 2 98 2 3 \
    3 6 2 0 2 3 3 14 2 3 3 w 2 3 3 6 2 0 2 3 3 e 2 1k 2 3 3 1u 12 f h 2d 3 5 4 h7 3 g 2 p 6 22 7 \
    7 8 h e i f h f c 2 2 g 1f 10 0 5 0 1w 2g 8 4 3 x 2 0 6 1x b u 1e t 3 4 c 17 5 p 1j m a 1g \
    2b 0 2m 1a i 7 1j t e 1 b 17 r z 16 2 b z 3 8 8 16 3 2 16 3 2 5 2 1 4 0 6 5b 1t 7p 3 5 3 11 \
    3 5 3 7 2 0 2 0 2 0 2 u 3 1g 2 6 2 0 4 2 2 6 4 3 3 5 5 c 6 2 2 6 39 0 e 0 h c 2u 0 5 0 3 9 2 \
    0 4 4 7 0 2 0 2 0 2 3 2 a 3 3 6 4 5 0 1h 1 22k 6c 7 3 4 1 d 11 2 0 6 0 3 1j 8 0 h m a 6 2 6 \
    2 6 2 6 2 6 2 6 2 6 2 6 29 0 d2 1 17 4 6 1 5 2d 7 2 2 2h 2 3 6 16 2 2l i v 1d f e9 533 1t \
    h3g 1w 19 3 7g 4 f b 1 l 1a h u 3 1x 1e 8 3 2u 3 1r 6 1 2 0 2 4 p f 2 2 2 3 2 m u 1f f 1d 1r \
    5 4 0 2 1 c r b m q s 8 1a t 0 h 4 2 9 b 4 2 14 o 2 2 7 l m 4 0 4 1d 2 0 4 1 3 4 3 0 2 0 p 2 \
    3 a 8 2 d 5 3 5 3 5 a 6 2 6 2 16 2 d 7 36 u 8mb d m 5 1c 6it a5 3 2x 13 6 d 4 6 0 2 9 2 c 2 \
    4 2 0 2 1 2 1 2 2z y a2 j 1r 3 1h 15 b 39 4 2 3q 11 p 7 p c 2g 4 5 3 5 3 5 3 2 10 b 2 p 2 i \
    2 1 2 e 3 d z 3e au s 4 1c 1c v e j 2 7 7 11 b t 3 z 5 7 1d 4d j z 5 z 5 13 9 1f d a 2 e 2 6 \
    2 1 2 a 2 e 2 6 2 1 1w 8m a l b 7 p 5 2 15 2 8 1y 5 3 0 2 17 2 1 4 0 3 m b m a u 1u i 2 1 b \
    l b p 1z 1j 7 1 1t 0 g 3 2 2 2 s 17 s 4 s 10 7 2 r s 1h b l b i e h 33 20 1k 1e e 1e e z 9p \
    15 7 1 27 s b 0 9 l 17 h 1b k s m d 1g 1m 1 3 0 e 18 x o r z u 0 3 0 9 y 4 0 d 1b f 3 m 0 2 \
    0 10 h 2 o k 1 1s 6 2 0 2 3 2 e 2 9 8 1a 13 7 3 1 3 l 2 6 2 1 2 4 4 0 j 0 d 4 4f 1g j 3 l 2 \
    v 1b l 1 2 0 55 1a 16 3 11 1b l 0 1o 16 e 0 20 q 12 6 56 17 39 1r w 7 3 0 3 7 2 1 2 n g 0 2 \
    0 2n 7 3 12 h 0 2 0 t 0 b 13 8 0 m 0 c 19 k 0 j 20 7c 8 2 10 i 0 1e t 35 6 2 1 2 11 m 0 q 5 \
    2 1 2 v f 0 94 i g 0 2 c 2 x 3h 0 28 pl 6f 5f 219 2o g tr i 5 33u g6 6nu fs 8 u i 26 i t j \
    1b h 3 w k 6 i j5 1r 3l 22 6 0 1v c 1t 1 2 0 t 4qf 9 yd 17 8 6w8 3 2 6 2 1 2 82 g 0 u 2 3 0 \
    f 3 9 az 1s5 2y 6 c 4 8 8 9 4mf 2c 2 1y 2 1 3 0 3 1 3 3 2 b 2 0 2 6 2 1s 2 3 3 7 2 6 2 r 2 3 \
    2 4 2 0 4 6 2 9f 3 o 2 o 2 u 2 o 2 u 2 o 2 u 2 o 2 u 2 o 2 7 1f9 u 7 5 7a 1p 43 18 b 6 h 0 \
    8y t j 17 dh r l1 6 2 3 2 1 2 e 2 5g 1o 1v 8 0 xh 3 2 q 2 1 2 0 3 0 2 9 2 3 2 0 2 0 7 0 5 0 \
    2 0 2 0 2 2 2 1 2 0 3 0 2 0 2 0 2 0 2 0 2 1 2 0 3 3 2 6 2 3 2 3 2 0 2 9 2 g 6 2 2 4 2 g 3et \
    wyn x 37d 7 65 3 4g1 f 5rk 2e8 f1 15v 3t6 6 38f";
/// Non-ASCII ranges of Go `unicode.IsDigit` (category Nd), Unicode 15.0.0, 63 ranges.
const DIGIT: &str = "19c 9 3r 9 5j 9 bh 9 3b 9 3b 9 3b 9 3b 9 3b 9 3b 9 3b 9 3b 9 3b 9 2p \
    9 3b 9 1z 9 7r 9 1z 9 1fr 9 13 9 8d 9 3l 9 4n 9 7 9 53 9 2f 9 3r 9 7 9 r7r 9 iv 9 13 9 5j 9 \
    n 9 2f 9 bb 9 gev 9 13b 9 1on 9 ml 9 3l 9 1p 9 41 9 7r 9 9j 9 3b 9 af 9 2v 9 2v 9 br 9 2v 9 \
    l3 9 6v 9 1z 9 br 9 etj 9 2f 9 3r 9 lf9 1d 1tt 9 br 9 dz 9 uv 9 3o7 9";
/// Non-ASCII ranges of complement of Go `strconv.IsPrint`, Unicode 15.0.0, 711 ranges.
const NOT_PRINT: &str = "3k w d 0 jv 1 7 3 8 0 2 0 l 0 b2 0 13 1 1f 1 4 0 1k 7 s 3 7 g n 0 \
    5d 0 1d 1 1o 1 2u d 1o 1 1e 1 g 0 t 1 2 0 c 4 w 8 23 0 4i 0 9 1 3 1 n 0 8 0 2 2 5 1 a 1 3 1 \
    5 7 2 3 3 0 6 1 q 1 4 0 7 3 3 1 n 0 8 0 3 0 3 0 3 1 2 0 6 3 3 1 4 2 2 6 5 0 2 6 i 9 4 0 a 0 \
    4 0 n 0 8 0 3 0 6 1 b 0 4 0 4 1 2 e 5 1 d 6 8 0 4 0 9 1 3 1 n 0 8 0 3 0 6 1 a 1 3 1 4 6 4 3 \
    3 0 6 1 j 9 3 0 7 2 4 0 5 2 3 0 2 0 3 2 3 2 4 2 d 3 6 2 4 0 5 1 2 5 2 d m 4 e 0 4 0 o 0 h 1 \
    a 0 4 0 5 6 3 0 4 1 2 1 5 1 b 6 n 0 4 0 o 0 b 0 6 1 a 0 4 0 5 6 3 5 3 0 5 1 b 0 4 b e 0 4 0 \
    1g 0 4 0 7 3 h 1 r 0 4 0 j 2 p 0 a 0 2 1 8 2 2 3 7 0 2 0 9 5 b 1 4 b 1n 3 u 10 3 0 2 0 6 0 p \
    0 2 0 o 1 6 0 2 0 8 0 b 1 5 v 21 0 11 3 14 0 11 0 g 0 e 10 5j 0 2 4 2 1 ai 0 5 1 8 0 2 0 5 1 \
    16 0 5 1 y 0 5 1 8 0 2 0 5 1 g 0 1m 0 5 1 1w 1 x 2 r 5 2f 1 7 1 ht 0 t 2 2i 6 n 8 p 8 l b e \
    0 4 0 3 b 2n 1 b 5 b 5 f 0 c 5 2i 6 18 4 1z 9 w 0 d 3 d 3 2 2 17 1 6 a 19 3 r 5 c 2 1r 1 1u \
    0 u 1 c 5 b 5 f 1 w 1c 26 2 1c 0 39 7 1p 2 g 2 1p 6 18 1 c 7 18 4 ev 1 7 1 13 1 7 1 9 0 2 0 \
    2 0 2 0 w 1 1i 0 g 0 f 1 7 0 k 1 4 0 a g p 7 1c g 3 1 s 0 e 2 y e y e 3x 3 ig o c k 1ed 1 x \
    0 9q 4 1a 0 2 4 2 1 1l 6 3 d p 8 8 0 8 0 8 0 8 0 8 0 8 0 8 0 8 0 3j x r 0 2i b 5z p d 4 1s 0 \
    2f 1 2w 4 18 0 2n 0 2d b 1c 0 mlq 2 1k 8 9p j 55 7 5o 4 3 0 2 0 6 n 1o 2 b 5 1l 7 1z 7 d 5 \
    39 a v 2 27 0 c 3 y 0 1k 8 f 1 b 1 2w n t 9 7 1 7 1 7 8 8 0 8 0 1p 3 3j 1 b 5 8md b o 3 1e \
    6ir a7 1 2z 11 8 b 6 4 r 0 6 0 2 0 3 0 3 0 3i f ce 1 1j 6 2 v 17 5 1g 0 k 0 5 3 6 0 3s 3 5b \
    2 7 1 7 1 7 1 4 2 8 0 8 c 3 1 d 0 r 0 k 0 3 0 g 1 f x 3g 4 4 3 1a 2 2h 0 e 2 2 1a 1b 3l u 2 \
    1e e t 3 11 8 v 4 18 4 v 0 12 3 f 15 4f 1 b 5 11 3 11 3 15 7 1h a d 0 g 0 8 0 3 0 c 0 g 0 8 \
    0 3 1u 8o 8 n 9 9 n 7 0 17 0 a 1w 7 1 2 0 19 0 3 2 2 1 o 0 21 7 a 1b k 0 3 4 y 2 s 4 2 1r 1l \
    3 l 1 1f 0 3 4 9 0 4 0 u 1 4 3 b 6 a 6 1t v 14 3 d 8 1j 2 u 1 s 4 r 6 5 b 8 27 22 1i 1g c 1g \
    6 1b 7 b 85 w 0 17 0 4 1 3 22 18 7 17 l r 11 t j o 8 27 3 11 8 1r 0 6 c q 6 b 5 1i 0 j 7 14 \
    8 2p 0 l a j 0 1c 1p 8 0 2 0 5 0 g 0 c 5 1o 4 b 5 5 0 9 1 3 1 n 0 8 0 3 0 6 0 b 1 3 1 4 1 2 \
    5 2 4 8 1 8 2 6 3u 2l 0 6 t 21 7 b 4l 1j 1 13 x 1y a b 5 e i 1n 5 b 1h s 1 g 3 o 54 1p 2r 2c \
    b 9 1 2 1 9 0 3 0 v 0 3 1 d 8 b 1x 9 1 1b 1 c q 21 7 2c c 22 6 b 6t a 0 1a 0 f 9 u 2 x 1 n 0 \
    f 20 8 0 3 0 19 2 2 0 3 0 a 7 b 5 7 0 3 0 12 0 3 0 7 6 b 8l q 6 i 0 16 2 t 2d 2 e 1f c po 2t \
    34 0 6 a 5h 217 2s c tt f n 33d g8 6ns fu 6 w 0 b 3 2a 0 b 5 v 1 7 9 1z 9 b 0 8 0 m 4 k j3 \
    2k 2s 24 3 1m 6 i 1r 6 a 3 d 4qh 7 yf 15 a 6w6 5 0 8 0 3 0 84 e 2 s 4 1 2 d 5 7 b1 1s3 30 4 \
    e 2 a 6 b 1 5 3mn 1b 1 o 8 39 1n 6v 9 14 1 23 7 35 k 1z 3d l b l b 2g 8 q 3q 2e 0 20 0 3 1 2 \
    1 3 1 5 0 d 0 2 0 8 0 1u 0 5 1 9 0 8 0 t 0 5 0 6 0 2 2 8 0 9h 1 85 1 jj e 6 0 g un w 5 7 5w \
    8 0 i 1 8 0 3 0 6 4 1r w 2 33 1a 2 f 1 b 3 3 8v w g 1n 4 2 cv 17 kl 8 0 5 0 3 0 g 0 5i 1 h \
    14 25 3 b 3 3 ls 1x 23 1q 5d 5 0 s 0 3 0 2 1 2 0 b 0 5 0 2 0 2 5 2 3 2 0 2 0 2 0 4 0 3 0 2 1 \
    2 0 2 0 2 0 2 0 2 0 3 0 2 1 5 0 8 0 5 0 5 0 2 0 b 0 i 4 4 0 6 0 i 1f 3 7h 19 3 2t b g 1 g 0 \
    g 0 12 9 4v 1j u c 19 3 a 6 3 d 7 49 rd 3 i 2 e 2 3c 3 2o 5 d 3 2 e d 3 1l 7 b 5 15 7 v 1 3 \
    25 9h b f 1 e 2 a 6 1b 0 8 7 f 3 a 6 a 6 44 0 1k 10 b sl wyp v 37f 5 67 1 4g3 d 5rm 2e6 f3 \
    15t 3t8 4 38h f9e7 6p 47bj";

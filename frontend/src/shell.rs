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
use std::hash::BuildHasher;

use gocompat::{GoQuoted, go_is_digit, go_is_letter};
use words::Words;

mod gocompat;
mod param;
mod pattern;
#[cfg(test)]
mod tests;
mod words;

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
}

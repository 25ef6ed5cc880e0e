//! `.dockerignore` semantics, ported from moby/patternmatcher (and its
//! `ignorefile` package) as used by BuildKit's context transfer (fsutil).
//!
//! Docker does not match `.dockerignore` lines with `filepath.Match`: it uses
//! `filepath.Match` only to *validate* a pattern, then translates the pattern
//! into a Go regular expression (`*` → `[^/]*`, `?` → `[^/]`, `**` → `(.*/)?`,
//! `.+()$` escaped, everything else — `[`, `]`, `^`, `|`, `{`, `}`, `\x` —
//! passed through), with fast paths for exact, `prefix**` and `**suffix`
//! patterns. We do the same translation and run the result on a small
//! Go-compatible regexp engine (`goregex`), so quirks such as `a|b*`,
//! `[[:digit:]]`, `\d` or a pattern that validates but fails to compile
//! behave as in Docker.

mod gopath;
mod goregex;
#[cfg(test)]
mod tests;

use gopath::{BadPattern, go_match};
pub(crate) use gopath::{clean, dir};
use goregex::Regex;

/// `bufio.Scanner`'s token limit: `ignorefile.ReadAll` fails on a line of
/// this many bytes or more.
const MAX_LINE: usize = 64 * 1024;

/// Errors from parsing or evaluating ignore patterns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is malformed (Go's `filepath.ErrBadPattern`).
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern {
        /// The offending pattern.
        pattern: String,
    },
    /// The pattern passed Go's `filepath.Match` check but its translated
    /// regular expression does not compile. Docker reports this (as
    /// `ErrBadPattern`) only when the pattern is first evaluated against a
    /// path, so [`PatternMatcher::new`] accepts it too.
    #[error("syntax error in pattern {pattern:?}: {reason}")]
    BadRegexp {
        /// The offending pattern (cleaned, without a leading `!`).
        pattern: String,
        /// What the regular-expression parser rejected.
        reason: String,
    },
    /// A line consisting of just `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// A [`MatchInfo`] that came from a different matcher.
    #[error("wrong number of values in parentMatched: got {got}, want {want}")]
    WrongMatchInfoLength {
        /// Entries in the given [`MatchInfo`].
        got: usize,
        /// Patterns in the matcher.
        want: usize,
    },
    /// An ignore-file line too long for Go's `bufio.Scanner`.
    #[error(
        "ignore file line {line} is {len} bytes long; Docker rejects lines of {MAX_LINE} bytes or more"
    )]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// Its length in bytes.
        len: usize,
    },
}

/// Go's `path/filepath.Match` on Unix (separator `/`, `\` escapes), byte for
/// byte, including which malformed patterns it notices: like Go, it stops
/// checking the pattern once the name has failed to match, so
/// `path_match("a*[", "b")` is `Ok(false)` while `path_match("a[", "b")` is an
/// error.
pub fn path_match(pattern: &str, name: &str) -> Result<bool, PatternError> {
    go_match(pattern.as_bytes(), name.as_bytes()).map_err(|BadPattern| PatternError::BadPattern {
        pattern: pattern.to_owned(),
    })
}

/// `ignorefile.ReadAll`: the patterns of a `.dockerignore`, in order.
///
/// Lines are split on `\n` (a trailing `\r` is dropped), a UTF-8 BOM is
/// stripped from the first line, lines *starting* with `#` are comments,
/// the rest is whitespace-trimmed, blank lines are skipped, and each pattern
/// (after an optional `!`, itself trimmed) is `filepath.Clean`ed with one
/// leading `/` removed. A lone `!` is kept (and rejected later by
/// [`PatternMatcher::new`]). Unlike Docker, lines of 64 KiB and more are
/// accepted; use [`try_read_patterns`] to reject them as Docker does.
pub fn read_patterns(content: &str) -> Vec<String> {
    parse_lines(content, false).unwrap_or_default()
}

/// [`read_patterns`], but failing like Go's `bufio.Scanner` on a line of
/// 64 KiB or more (Docker then fails the build).
pub fn try_read_patterns(content: &str) -> Result<Vec<String>, PatternError> {
    parse_lines(content, true)
}

fn parse_lines(content: &str, limit: bool) -> Result<Vec<String>, PatternError> {
    let mut lines: Vec<&str> = content.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut out = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        if limit && line.len() >= MAX_LINE {
            return Err(PatternError::LineTooLong {
                line: i + 1,
                len: line.len(),
            });
        }
        let mut line = line.strip_suffix('\r').unwrap_or(line);
        if i == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        // Comments are recognised before trimming: " # x" is a pattern.
        if line.starts_with('#') {
            continue;
        }
        // Rust's `trim` and Go's `TrimSpace` agree on White_Space.
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (invert, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let mut pattern = String::new();
        if !rest.is_empty() {
            pattern = clean(rest);
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
        }
        out.push(if invert {
            format!("!{pattern}")
        } else {
            pattern
        });
    }
    Ok(out)
}

/// How a compiled pattern is tested (patternmatcher's `matchType`).
#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `prefix**` with nothing special before: a byte-prefix test.
    Prefix,
    /// `**suffix` with nothing special after: a byte-suffix test.
    Suffix,
    Regexp(Regex),
}

/// One compiled ignore pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    /// `Err(reason)` when the regexp does not compile; surfaced lazily.
    kind: Result<Kind, String>,
}

impl Pattern {
    /// The cleaned pattern, without the leading `!` of an exclusion.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` (re-include) pattern.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Whether the pattern matches `path` itself (no parent handling).
    pub fn matches(&self, path: &str) -> Result<bool, PatternError> {
        let kind = self
            .kind
            .as_ref()
            .map_err(|reason| PatternError::BadRegexp {
                pattern: self.cleaned.clone(),
                reason: reason.clone(),
            })?;
        // Go slices these strings by byte, possibly inside a character.
        let pat = self.cleaned.as_bytes();
        let path_b = path.as_bytes();
        Ok(match kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => path_b.starts_with(&pat[..pat.len().saturating_sub(2)]),
            Kind::Suffix => {
                let suffix = pat.get(2..).unwrap_or_default();
                // `**/foo` also matches `foo` itself.
                path_b.ends_with(suffix)
                    || (suffix.first() == Some(&b'/') && path_b == &suffix[1..])
            }
            Kind::Regexp(re) => re.is_match(path),
        })
    }
}

/// patternmatcher's `compile`: the glob-to-regexp translation.
fn compile(pattern: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum Ty {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let mut chars = pattern.chars().peekable();
    // Go's text/scanner silently drops a byte-order mark at the start.
    chars.next_if_eq(&'\u{feff}');
    let mut re = String::from("^");
    let mut ty = Ty::Exact;
    let mut first = true;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.next_if_eq(&'*').is_some() => {
                chars.next_if_eq(&'/'); // treat `**/` as `**`
                if chars.peek().is_none() {
                    // Trailing `**` accepts everything, as in .gitignore.
                    if ty == Ty::Exact {
                        ty = Ty::Prefix;
                    } else {
                        re.push_str(".*");
                        ty = Ty::Regexp;
                    }
                } else {
                    re.push_str("(.*/)?");
                    ty = Ty::Regexp;
                }
                if first {
                    ty = Ty::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                ty = Ty::Regexp;
            }
            '?' => {
                re.push_str("[^/]");
                ty = Ty::Regexp;
            }
            // patternmatcher means to escape `.+()|{}$`, but its bitmap
            // (`escapeBytes[b%8] |= 1 << (b/8)` on a byte) drops every
            // character >= 64, so `|`, `{` and `}` reach the regexp raw:
            // `|` alternates and `{n,m}` repeats, exactly as in Docker.
            '.' | '+' | '(' | ')' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            // A trailing `\` stays, and then escapes the final `$`.
            '\\' => match chars.next() {
                Some(next) => {
                    re.push('\\');
                    re.push(next);
                    ty = Ty::Regexp;
                }
                None => re.push('\\'),
            },
            '[' | ']' => {
                re.push(ch);
                ty = Ty::Regexp;
            }
            _ => re.push(ch),
        }
        first = false;
    }
    Ok(match ty {
        Ty::Exact => Kind::Exact,
        Ty::Prefix => Kind::Prefix,
        Ty::Suffix => Kind::Suffix,
        Ty::Regexp => {
            re.push('$');
            Kind::Regexp(Regex::new(&re).map_err(|e| e.to_string())?)
        }
    })
}

/// Per-pattern results for a directory, passed down to its children
/// (patternmatcher's `MatchInfo`). The default value means "no parent
/// information": the child's ancestors are then checked directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A compiled `.dockerignore` (patternmatcher's `PatternMatcher`).
#[derive(Debug, Clone)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
    /// fsutil's `onlyPrefixExcludeExceptions`: every `!` pattern is a plain
    /// path (glob-free apart from a trailing `/*` or `/**`).
    only_prefix_exclusions: bool,
}

impl PatternMatcher {
    /// patternmatcher's `New`: trims each pattern, skips blank ones,
    /// `filepath.Clean`s it, splits off a leading `!` and validates it with
    /// `filepath.Match(pattern, ".")`. Patterns are not otherwise rewritten
    /// (use [`read_patterns`] for the ignore-file normalisation).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut out = Vec::with_capacity(patterns.len());
        for raw in patterns {
            let p = raw.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exclusion, p) = match p.strip_prefix('!') {
                Some("") => return Err(PatternError::IllegalExclusion),
                Some(rest) => (true, rest),
                None => (false, p.as_str()),
            };
            if go_match(p.as_bytes(), b".").is_err() {
                return Err(PatternError::BadPattern {
                    pattern: raw.as_ref().trim().to_owned(),
                });
            }
            out.push(Pattern {
                cleaned: p.to_owned(),
                exclusion,
                kind: compile(p),
            });
        }
        let exclusions = out.iter().any(|p| p.exclusion);
        let only_prefix_exclusions = out
            .iter()
            .filter(|p| p.exclusion)
            .all(|p| !without_trailing_glob(&p.cleaned).contains(['*', '[', ']', '?', '^', '\\']));
        Ok(Self {
            patterns: out,
            exclusions,
            only_prefix_exclusions,
        })
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is a `!` exception.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` (relative, `/`-separated, not cleaned) or one of its
    /// parent directories is excluded, the last matching pattern winning
    /// (patternmatcher's `MatchesOrParentMatches`). A pattern whose regexp
    /// does not compile counts as not matching; see
    /// [`try_matches_or_parent_matches`](Self::try_matches_or_parent_matches).
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        self.try_matches_or_parent_matches(path).unwrap_or(false)
    }

    /// [`matches_or_parent_matches`](Self::matches_or_parent_matches),
    /// failing as Docker does when an evaluated pattern is malformed.
    pub fn try_matches_or_parent_matches(&self, path: &str) -> Result<bool, PatternError> {
        let parent = dir(path);
        let mut matched = false;
        for pat in &self.patterns {
            // Only an exclusion can undo a match, only an inclusion make one.
            if pat.exclusion != matched {
                continue;
            }
            let mut m = pat.matches(path)?;
            if !m && parent != "." {
                m = ancestors(&parent).any(|a| pat.matches(a).unwrap_or(false));
            }
            if m {
                matched = !pat.exclusion;
            }
        }
        Ok(matched)
    }

    /// patternmatcher's `MatchesUsingParentResults`, the walker primitive:
    /// the answer for `path` plus the [`MatchInfo`] to pass to its children.
    /// Give the parent directory's info, or the default for top-level
    /// entries (with the default, ancestors are matched directly, so the
    /// result equals [`matches_or_parent_matches`](Self::matches_or_parent_matches)).
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let given = &parent.parent_matched;
        if !given.is_empty() && given.len() != self.patterns.len() {
            return Err(PatternError::WrongMatchInfoLength {
                got: given.len(),
                want: self.patterns.len(),
            });
        }
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, pat) in self.patterns.iter().enumerate() {
            // A pattern that matched the parent matches everything below it.
            let mut m = given.get(i).copied().unwrap_or(false);
            if !m {
                if pat.exclusion != matched {
                    continue;
                }
                m = pat.matches(path)?;
                if !m && given.is_empty() {
                    let parent_dir = dir(path);
                    if parent_dir != "." {
                        m = ancestors(&parent_dir).any(|a| pat.matches(a).unwrap_or(false));
                    }
                }
            }
            info[i] = m;
            if m {
                matched = !pat.exclusion;
            }
        }
        Ok((
            matched,
            MatchInfo {
                parent_matched: info,
            },
        ))
    }

    /// patternmatcher's deprecated `MatchesUsingParentResult`: `path`'s
    /// result given only whether its parent was excluded. Go keeps it for
    /// compatibility although a single bit cannot carry enough (an exception
    /// that matched the parent is not re-applied, docker/buildx#850); walkers
    /// should use [`matches_using_parent_results`](Self::matches_using_parent_results).
    /// Malformed patterns count as not matching.
    pub fn matches_using_parent_result(&self, path: &str, parent_matched: bool) -> bool {
        let mut matched = parent_matched;
        for pat in &self.patterns {
            if pat.exclusion != matched {
                continue;
            }
            if pat.matches(path).unwrap_or(false) {
                matched = !pat.exclusion;
            }
        }
        matched
    }

    /// For an *excluded* directory `dir` (relative, `/`-separated): whether
    /// BuildKit's walker (fsutil) still descends into it because a `!`
    /// exception might re-include something below. fsutil only prunes when
    /// every exception is a plain path (ignoring a trailing `/*` or `/**`);
    /// then it descends iff some exception lies under `dir/`.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        if !self.only_prefix_exclusions {
            return true;
        }
        if !self.exclusions {
            return false;
        }
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", without_trailing_glob(&p.cleaned)).starts_with(&dir_slash))
    }
}

/// fsutil's `patternWithoutTrailingGlob`.
fn without_trailing_glob(p: &str) -> &str {
    let p = p.strip_suffix("/**").unwrap_or(p);
    p.strip_suffix("/*").unwrap_or(p)
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`: each prefix ending before a `/`, then
/// the whole (Go joins the first i+1 elements of `strings.Split`).
fn ancestors(parent: &str) -> impl Iterator<Item = &str> {
    parent
        .match_indices('/')
        .map(|(i, _)| &parent[..i])
        .chain(std::iter::once(parent))
}

//! Shell patterns of `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`,
//! `${VAR%%pat}`, `${VAR/pat/repl}` and `${VAR//pat/repl}`, matched the way
//! BuildKit matches them: converted to a Go regexp, with Go's leftmost-first
//! semantics, and replacements expanded as Go's `Regexp.Expand` does.

use super::gocompat::{go_is_digit, go_is_letter};
use super::{Fail, ShellError, ShellWord, msg, rune_or_eof};

impl ShellWord<'_> {
    pub(super) fn trim_prefix(
        &mut self,
        pattern: &str,
        value: &str,
        greedy: bool,
    ) -> Result<String, Fail> {
        let re = Pattern::compile(pattern, greedy, true)
            .or_else(|e| msg(format!("invalid pattern ({pattern}) in substitution: {e}")))?;
        Ok(match self.find(&re, value, 0)? {
            Some((_, end)) => slice(value, end, value.len()).to_owned(),
            None => value.to_owned(),
        })
    }

    pub(super) fn trim_suffix(
        &mut self,
        pattern: &str,
        value: &str,
        greedy: bool,
    ) -> Result<String, Fail> {
        // Regexps cannot find the shortest rightmost match, so BuildKit
        // reverses pattern and value and trims a prefix instead.
        self.charge(2 * value.len() + pattern.len())?;
        let reversed: String = value.chars().rev().collect();
        let trimmed = self.trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
        Ok(trimmed.chars().rev().collect())
    }

    pub(super) fn find(
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
    pub(super) fn replace_all(
        &mut self,
        re: &Pattern,
        text: &str,
        template: &str,
    ) -> Result<String, Fail> {
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
pub(super) fn slice(text: &str, start: usize, end: usize) -> &str {
    text.get(start..end).unwrap_or_default()
}

/// Reverses a pattern but keeps `\x` escapes in order (`a\*c` -> `c\*a`).
pub(super) fn reverse_pattern(pattern: &str) -> String {
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
pub(super) struct Pattern {
    anchored: bool,
    /// The pattern when it has no wildcards.
    literal: Option<String>,
    prog: Vec<Inst>,
}

impl Pattern {
    pub(super) fn compile(pattern: &str, greedy: bool, anchored: bool) -> Result<Pattern, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a compiled pattern as the Go regexp BuildKit would build.
    fn regex_source(p: &Pattern) -> String {
        let mut out = String::from(if p.anchored { "^" } else { "" });
        let mut pc = 0;
        while let Some(inst) = p.prog.get(pc) {
            match *inst {
                Inst::Lit(c, _) => {
                    if "[]{}.+()|^$*?\\".contains(c) {
                        out.push('\\');
                    }
                    out.push(c);
                }
                Inst::AnyNotNl(_) => out.push('.'),
                Inst::Split(first, _) => {
                    out.push_str(if first == pc + 1 { ".*" } else { ".*?" });
                    pc += 1;
                }
                Inst::Match => {}
            }
            pc += 1;
        }
        out
    }

    #[test]
    fn convert_shell_pattern_to_regex() {
        let cases = [
            ("*", "^.*"),
            ("?", "^."),
            ("\\*", "^\\*"),
            (
                "(()[]{\\}^$.\\*\\?|\\\\",
                "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\",
            ),
        ];
        for (pattern, expected) in cases {
            let re = Pattern::compile(pattern, true, true).expect(pattern);
            assert_eq!(regex_source(&re), expected, "{pattern}");
        }
        let lazy = Pattern::compile("a*", false, false).expect("valid");
        assert_eq!(regex_source(&lazy), "a.*?");
        for pattern in ["\\", "\\x", "\\\\\\"] {
            assert!(Pattern::compile(pattern, true, true).is_err(), "{pattern}");
        }
    }
}

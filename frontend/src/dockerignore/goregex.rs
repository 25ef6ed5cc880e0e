//! The slice of Go's `regexp` package that moby/patternmatcher relies on.
//!
//! patternmatcher translates each glob into a Go regular expression string
//! and compiles it with `regexp.Compile` (RE2 syntax, `syntax.Perl` flags:
//! `^`/`$` anchor the whole text, `.` excludes `\n`, `[^…]` includes it).
//! Only `*`, `?` and `.+()$` are rewritten; `[`, `]`, `^`, `|`, `{`, `}` and
//! every `\x` escape reach the regexp parser untouched, so a `.dockerignore`
//! line can alternate, use counted repeats, `\d`, `[[:alpha:]]`, `\b`,
//! `\Q…\E`, octal and hex escapes, and can fail to compile even though Go's
//! `filepath.Match` accepted it. To equal Docker we parse that string with
//! Go's rules (`parse`) and run it on a Pike VM, which is linear in the
//! text for any pattern (no backtracking blow-up).
//!
//! Not supported: `\p`/`\P` Unicode classes (they would need Go's Unicode
//! tables); they are reported as a compile error instead of silently
//! matching differently.

mod parse;

use std::fmt;
use std::sync::Arc;

/// Highest code point, as Go's `unicode.MaxRune`.
const MAX_RUNE: u32 = 0x10_FFFF;

/// Why a regular expression does not compile; the text mirrors Go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegexError(String);

impl fmt::Display for RegexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error parsing regexp: {}", self.0)
    }
}

fn err<T>(code: &str, expr: &[char]) -> Result<T, RegexError> {
    let expr: String = expr.iter().collect();
    Err(RegexError(format!("{code}: `{expr}`")))
}

/// Zero-width assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assertion {
    BeginText,
    EndText,
    WordBoundary,
    NoWordBoundary,
}

type Ranges = Arc<[(u32, u32)]>;

/// Parsed expression tree (capture groups only group; no captures needed).
#[derive(Debug)]
enum Node {
    /// Sorted, merged, inclusive code-point ranges (a literal is one range).
    Class(Ranges),
    Assert(Assertion),
    Concat(Vec<Node>),
    Alternate(Vec<Node>),
    Group(Box<Node>),
    /// `max: None` is unbounded; `counted` marks Go's `OpRepeat` (`{m,n}`).
    Repeat {
        sub: Box<Node>,
        min: u32,
        max: Option<u32>,
        counted: bool,
    },
}

/// A compiled Go regular expression.
#[derive(Clone)]
pub(crate) struct Regex {
    source: String,
    prog: Vec<Inst>,
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.source).finish()
    }
}

#[derive(Debug, Clone)]
enum Inst {
    Class(Ranges),
    Assert(Assertion),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

impl Regex {
    /// Parses `expr` with Go's `regexp.Compile` rules.
    pub(crate) fn new(expr: &str) -> Result<Self, RegexError> {
        let chars: Vec<char> = expr.chars().collect();
        let node = parse::parse(&chars)?;
        let mut prog = Vec::new();
        emit(&node, &mut prog);
        prog.push(Inst::Match);
        Ok(Self {
            source: expr.to_owned(),
            prog,
        })
    }

    /// The expression as given to [`Regex::new`].
    #[cfg(test)]
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// Go's `MatchString`: does the expression match anywhere in `text`?
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let n = self.prog.len();
        let mut clist = Threads::new(n);
        let mut nlist = Threads::new(n);
        let mut stack = Vec::new();
        for i in 0..=chars.len() {
            let ctx = Ctx {
                at_start: i == 0,
                at_end: i == chars.len(),
                prev: i.checked_sub(1).map(|j| chars[j]),
                next: chars.get(i).copied(),
            };
            // Unanchored search: a new thread may start at every position.
            self.add(&mut clist, 0, ctx, &mut stack);
            if clist
                .pcs
                .iter()
                .any(|&pc| matches!(self.prog[pc], Inst::Match))
            {
                return true;
            }
            let Some(c) = ctx.next else { break };
            let next_ctx = Ctx {
                at_start: false,
                at_end: i + 1 == chars.len(),
                prev: Some(c),
                next: chars.get(i + 1).copied(),
            };
            nlist.clear();
            for k in 0..clist.pcs.len() {
                let pc = clist.pcs[k];
                if let Inst::Class(ranges) = &self.prog[pc]
                    && class_contains(ranges, c as u32)
                {
                    self.add(&mut nlist, pc + 1, next_ctx, &mut stack);
                }
            }
            std::mem::swap(&mut clist, &mut nlist);
        }
        false
    }

    /// Adds the epsilon closure of `pc` at a text position to `list`.
    fn add(&self, list: &mut Threads, pc: usize, ctx: Ctx, stack: &mut Vec<usize>) {
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if !list.insert(pc) {
                continue;
            }
            match &self.prog[pc] {
                Inst::Class(_) | Inst::Match => {}
                Inst::Jmp(t) => stack.push(*t),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Assert(a) => {
                    if ctx.holds(*a) {
                        stack.push(pc + 1);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Ctx {
    at_start: bool,
    at_end: bool,
    prev: Option<char>,
    next: Option<char>,
}

impl Ctx {
    fn holds(self, a: Assertion) -> bool {
        // Go's `\b` is ASCII-only (syntax.IsWordChar).
        let word = |c: Option<char>| c.is_some_and(|c| c == '_' || c.is_ascii_alphanumeric());
        match a {
            Assertion::BeginText => self.at_start,
            Assertion::EndText => self.at_end,
            Assertion::WordBoundary => word(self.prev) != word(self.next),
            Assertion::NoWordBoundary => word(self.prev) == word(self.next),
        }
    }
}

/// A sparse set of program counters, in insertion order.
struct Threads {
    seen: Vec<bool>,
    pcs: Vec<usize>,
}

impl Threads {
    fn new(n: usize) -> Self {
        Self {
            seen: vec![false; n],
            pcs: Vec::new(),
        }
    }
    fn insert(&mut self, pc: usize) -> bool {
        if self.seen[pc] {
            return false;
        }
        self.seen[pc] = true;
        self.pcs.push(pc);
        true
    }
    fn clear(&mut self) {
        for &pc in &self.pcs {
            self.seen[pc] = false;
        }
        self.pcs.clear();
    }
}

fn class_contains(ranges: &[(u32, u32)], c: u32) -> bool {
    let i = ranges.partition_point(|&(_, hi)| hi < c);
    ranges.get(i).is_some_and(|&(lo, _)| lo <= c)
}

/// Thompson construction; `prog` grows, the fragment falls through to its end.
fn emit(node: &Node, prog: &mut Vec<Inst>) {
    match node {
        Node::Class(r) => prog.push(Inst::Class(Arc::clone(r))),
        Node::Assert(a) => prog.push(Inst::Assert(*a)),
        Node::Concat(items) => items.iter().for_each(|n| emit(n, prog)),
        Node::Group(sub) => emit(sub, prog),
        Node::Alternate(alts) => {
            let mut jumps = Vec::new();
            for (k, alt) in alts.iter().enumerate() {
                if k + 1 == alts.len() {
                    emit(alt, prog);
                } else {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    emit(alt, prog);
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let next = prog.len();
                    prog[split] = Inst::Split(split + 1, next);
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat { sub, min, max, .. } => {
            match max {
                None if *min > 0 => {
                    // x{n,} = x{n-1} x+, and x+ loops back over its copy.
                    for _ in 1..*min {
                        emit(sub, prog);
                    }
                    let start = prog.len();
                    emit(sub, prog);
                    prog.push(Inst::Split(start, prog.len() + 1));
                }
                None => {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    emit(sub, prog);
                    prog.push(Inst::Jmp(split));
                    let end = prog.len();
                    prog[split] = Inst::Split(split + 1, end);
                }
                Some(max) => {
                    // x{2,4} = x x (x (x)?)?
                    for _ in 0..*min {
                        emit(sub, prog);
                    }
                    let mut splits = Vec::new();
                    for _ in *min..*max {
                        splits.push(prog.len());
                        prog.push(Inst::Split(prog.len() + 1, 0));
                        emit(sub, prog);
                    }
                    let end = prog.len();
                    for s in splits {
                        prog[s] = Inst::Split(s + 1, end);
                    }
                }
            }
        }
    }
}

//! Go's `regexp/syntax` parser (Perl flags) for the expressions
//! patternmatcher produces, with Go's error cases and size limits.

use super::{Assertion, MAX_RUNE, Node, RegexError, err};

/// Go's parser rejects trees taller than this (`syntax.maxHeight`)...
const MAX_HEIGHT: usize = 1000;
/// ...and programs larger than this many instructions (`syntax.maxSize`).
const MAX_SIZE: i64 = (128 << 20) / 40;

/// Parses a whole expression.
pub(super) fn parse(chars: &[char]) -> Result<Node, RegexError> {
    let mut p = Parser { s: chars, pos: 0 };
    let item = p.alternation()?;
    if p.pos < chars.len() {
        // Only a stray `)` stops the top-level alternation early.
        return err("unexpected )", chars);
    }
    Ok(item.node)
}

/// A parsed node with Go's size and height estimates, which decide
/// "expression too large" and "expression nests too deeply".
struct Item {
    node: Node,
    size: i64,
    height: usize,
}

impl Item {
    fn leaf(node: Node) -> Self {
        Self {
            node,
            size: 1,
            height: 1,
        }
    }

    /// Concatenation or alternation, collapsed like Go's `collapse`.
    fn join(mut items: Vec<Item>, alternate: bool) -> Self {
        if items.len() == 1 {
            return items.remove(0);
        }
        let n = items.len() as i64;
        let mut size: i64 = items.iter().map(|i| i.size).sum();
        if alternate {
            size += n - 1;
        }
        let height = 1 + items.iter().map(|i| i.height).max().unwrap_or(0);
        let nodes = items.into_iter().map(|i| i.node).collect();
        let node = if alternate {
            Node::Alternate(nodes)
        } else {
            Node::Concat(nodes)
        };
        Self {
            node,
            size: size.max(1),
            height,
        }
    }

    fn checked(self, whole: &[char]) -> Result<Self, RegexError> {
        if self.size > MAX_SIZE {
            return err("expression too large", whole);
        }
        if self.height > MAX_HEIGHT {
            return err("expression nests too deeply", whole);
        }
        Ok(self)
    }
}

/// Go's `repeatIsValid`: nested counted repeats may not multiply past `n`.
fn repeat_is_valid(node: &Node, mut n: u32) -> bool {
    match node {
        Node::Repeat {
            sub,
            min,
            max,
            counted,
        } => {
            if *counted {
                let m = match max {
                    Some(0) => return true,
                    Some(m) => *m,
                    None => *min,
                };
                if m > n {
                    return false;
                }
                n = n.checked_div(m).unwrap_or(n);
            }
            repeat_is_valid(sub, n)
        }
        Node::Group(sub) => repeat_is_valid(sub, n),
        Node::Concat(subs) | Node::Alternate(subs) => subs.iter().all(|s| repeat_is_valid(s, n)),
        Node::Class(_) | Node::Assert(_) => true,
    }
}

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
}

/// Perl classes (`syntax.perlGroup`).
const DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const SPACE: &[(u32, u32)] = &[(0x9, 0xa), (0xc, 0xd), (0x20, 0x20)];
const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];

/// POSIX classes (`syntax.posixGroup`), without the `[:` `:]`.
fn posix_group(name: &str) -> Option<&'static [(u32, u32)]> {
    Some(match name {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => &[(0x0, 0x7f)],
        "blank" => &[(0x9, 0x9), (0x20, 0x20)],
        "cntrl" => &[(0x0, 0x1f), (0x7f, 0x7f)],
        "digit" => DIGIT,
        "graph" => &[(0x21, 0x7e)],
        "lower" => &[(0x61, 0x7a)],
        "print" => &[(0x20, 0x7e)],
        "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => &[(0x9, 0xd), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5a)],
        "word" => WORD,
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    })
}

fn negate(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut next_lo = 0u32;
    for &(lo, hi) in ranges {
        if lo > next_lo {
            out.push((next_lo, lo - 1));
        }
        next_lo = hi.saturating_add(1);
    }
    if next_lo <= MAX_RUNE {
        out.push((next_lo, MAX_RUNE));
    }
    out
}

fn normalize(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn class(ranges: Vec<(u32, u32)>) -> Item {
    Item::leaf(Node::Class(ranges.into()))
}

fn lit(c: u32) -> Item {
    class(vec![(c, c)])
}

impl Parser<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.s.get(self.pos + k).copied()
    }

    fn alternation(&mut self) -> Result<Item, RegexError> {
        let mut alts = vec![self.concat()?];
        while self.peek(0) == Some('|') {
            self.pos += 1;
            alts.push(self.concat()?);
        }
        Item::join(alts, true).checked(self.s)
    }

    fn concat(&mut self) -> Result<Item, RegexError> {
        let mut items: Vec<Item> = Vec::new();
        // Go forbids stacking repetition operators (`a**`, `a*{2}`) but
        // allows a non-greedy `?` after one.
        let mut last_repeat = false;
        while let Some(c) = self.peek(0) {
            let start = self.pos;
            let mut repeat = None;
            match c {
                '|' | ')' => break,
                '(' => {
                    if self.peek(1) == Some('?') {
                        return err(
                            "invalid or unsupported Perl syntax",
                            &self.s[start..start + 2],
                        );
                    }
                    self.pos += 1;
                    let inner = self.alternation()?;
                    if self.peek(0) != Some(')') {
                        return err("missing closing )", self.s);
                    }
                    self.pos += 1;
                    let (size, height) = (inner.size + 2, inner.height + 1);
                    items.push(Item {
                        node: Node::Group(Box::new(inner.node)),
                        size,
                        height,
                    });
                }
                '^' | '$' => {
                    self.pos += 1;
                    let a = if c == '^' {
                        Assertion::BeginText
                    } else {
                        Assertion::EndText
                    };
                    items.push(Item::leaf(Node::Assert(a)));
                }
                '.' => {
                    self.pos += 1;
                    items.push(class(vec![(0, 0x9), (0xb, MAX_RUNE)]));
                }
                '[' => items.push(self.class()?),
                '*' | '+' | '?' => {
                    self.pos += 1;
                    repeat = Some(match c {
                        '*' => (0, None, false),
                        '+' => (1, None, false),
                        _ => (0, Some(1), false),
                    });
                }
                '{' => match self.counted_repeat()? {
                    Some((min, max)) => repeat = Some((min, max, true)),
                    None => {
                        // Not `{n}`, `{n,}` or `{n,m}`: a literal brace.
                        self.pos += 1;
                        items.push(lit('{' as u32));
                    }
                },
                '\\' => self.escape_atom(&mut items)?,
                _ => {
                    self.pos += 1;
                    items.push(lit(c as u32));
                }
            }
            if let Some((min, max, counted)) = repeat {
                if self.peek(0) == Some('?') {
                    self.pos += 1; // non-greedy: same answer for a yes/no match
                }
                if last_repeat {
                    return err(
                        "invalid nested repetition operator",
                        &self.s[start..self.pos],
                    );
                }
                let Some(sub) = items.pop() else {
                    return err(
                        "missing argument to repetition operator",
                        &self.s[start..self.pos],
                    );
                };
                let item = repeat_item(sub, min, max, counted).checked(self.s)?;
                if counted
                    && (min >= 2 || max.is_some_and(|m| m >= 2))
                    && !repeat_is_valid(&item.node, 1000)
                {
                    return err("invalid repeat count", &self.s[start..self.pos]);
                }
                items.push(item);
            }
            last_repeat = repeat.is_some();
        }
        Ok(if items.is_empty() {
            Item::leaf(Node::Concat(Vec::new()))
        } else {
            Item::join(items, false)
        })
    }

    /// Go's `parseRepeat` at a `{`: `Some((min, max))` and the cursor moved
    /// past `}`, or `None` (cursor unchanged) when this is no repeat.
    fn counted_repeat(&mut self) -> Result<Option<(u32, Option<u32>)>, RegexError> {
        let start = self.pos;
        let mut at = self.pos + 1;
        let Some(min) = self.int(&mut at) else {
            return Ok(None);
        };
        let max = match self.s.get(at) {
            Some(',') => {
                at += 1;
                if self.s.get(at) == Some(&'}') {
                    None
                } else {
                    let Some(max) = self.int(&mut at) else {
                        return Ok(None);
                    };
                    Some(max)
                }
            }
            Some(_) => Some(min),
            None => return Ok(None),
        };
        if self.s.get(at) != Some(&'}') {
            return Ok(None);
        }
        at += 1;
        self.pos = at;
        // `int` yields None-for-overflow as u32::MAX, which fails here.
        if min > 1000 || max.is_some_and(|m| m > 1000 || min > m) {
            return err("invalid repeat count", &self.s[start..at]);
        }
        Ok(Some((min, max)))
    }

    /// Go's `parseInt`: digits without a leading zero; huge values become
    /// `u32::MAX` (Go: -1) so the caller rejects them.
    fn int(&self, at: &mut usize) -> Option<u32> {
        let digits = self.s[(*at).min(self.s.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || (digits >= 2 && self.s[*at] == '0') {
            return None;
        }
        let mut n: u32 = 0;
        for &d in &self.s[*at..*at + digits] {
            if n >= 100_000_000 {
                n = u32::MAX;
                break;
            }
            n = n * 10 + (d as u32 - '0' as u32);
        }
        *at += digits;
        Some(n)
    }

    /// A `\` sequence outside a class.
    fn escape_atom(&mut self, items: &mut Vec<Item>) -> Result<(), RegexError> {
        let assertion = match self.peek(1) {
            Some('A') => Some(Assertion::BeginText),
            Some('z') => Some(Assertion::EndText),
            Some('b') => Some(Assertion::WordBoundary),
            Some('B') => Some(Assertion::NoWordBoundary),
            _ => None,
        };
        if let Some(a) = assertion {
            self.pos += 2;
            items.push(Item::leaf(Node::Assert(a)));
            return Ok(());
        }
        match self.peek(1) {
            Some('C') => return err("invalid escape sequence", &self.s[self.pos..self.pos + 2]),
            Some('Q') => {
                // `\Q…\E` (or to the end): everything in between is literal,
                // including any `$` patternmatcher appended.
                self.pos += 2;
                while self.pos < self.s.len() {
                    if self.s[self.pos] == '\\' && self.peek(1) == Some('E') {
                        self.pos += 2;
                        break;
                    }
                    items.push(lit(self.s[self.pos] as u32));
                    self.pos += 1;
                }
                return Ok(());
            }
            _ => {}
        }
        if let Some(ranges) = self.perl_or_unicode_class()? {
            items.push(class(normalize(ranges)));
            return Ok(());
        }
        let c = self.escape()?;
        items.push(lit(c));
        Ok(())
    }

    /// `\d \D \s \S \w \W` (and the unsupported `\p`, `\P`) at the cursor.
    fn perl_or_unicode_class(&mut self) -> Result<Option<Vec<(u32, u32)>>, RegexError> {
        if self.peek(0) != Some('\\') {
            return Ok(None);
        }
        let (group, negated) = match self.peek(1) {
            Some('p' | 'P') => {
                let end = (self.pos + 3).min(self.s.len());
                return err("unsupported Unicode class escape", &self.s[self.pos..end]);
            }
            Some('d') => (DIGIT, false),
            Some('D') => (DIGIT, true),
            Some('s') => (SPACE, false),
            Some('S') => (SPACE, true),
            Some('w') => (WORD, false),
            Some('W') => (WORD, true),
            _ => return Ok(None),
        };
        self.pos += 2;
        Ok(Some(if negated {
            negate(group)
        } else {
            group.to_vec()
        }))
    }

    /// Go's `parseEscape`: a single escaped code point at the cursor (`\`).
    fn escape(&mut self) -> Result<u32, RegexError> {
        let start = self.pos;
        self.pos += 1;
        let Some(c) = self.peek(0) else {
            return err("trailing backslash at end of expression", &[]);
        };
        self.pos += 1;
        let octal = |c: Option<char>| c.filter(|c| ('0'..='7').contains(c));
        match c {
            '1'..='7' if octal(self.peek(0)).is_none() => {} // a backreference
            '0'..='7' => {
                let mut r = c as u32 - '0' as u32;
                for _ in 1..3 {
                    let Some(d) = octal(self.peek(0)) else { break };
                    r = r * 8 + (d as u32 - '0' as u32);
                    self.pos += 1;
                }
                return Ok(r);
            }
            'x' if self.peek(0) == Some('{') => {
                // `\x{10FFFF}`: at least one hex digit, at most MaxRune.
                self.pos += 1;
                let mut r: u32 = 0;
                let mut digits = 0;
                while let Some(c) = self.peek(0) {
                    self.pos += 1;
                    if c == '}' {
                        if digits == 0 {
                            break;
                        }
                        return Ok(r);
                    }
                    let Some(v) = c.to_digit(16) else { break };
                    r = r * 16 + v;
                    if r > MAX_RUNE {
                        break;
                    }
                    digits += 1;
                }
            }
            'x' => {
                let x = self.peek(0).and_then(|c| c.to_digit(16));
                if self.peek(0).is_some() {
                    self.pos += 1;
                    let y = self.peek(0).and_then(|c| c.to_digit(16));
                    if self.peek(0).is_some() {
                        self.pos += 1;
                    }
                    if let (Some(x), Some(y)) = (x, y) {
                        return Ok(x * 16 + y);
                    }
                }
            }
            'a' => return Ok(0x07),
            'f' => return Ok(0x0c),
            'n' => return Ok(0x0a),
            'r' => return Ok(0x0d),
            't' => return Ok(0x09),
            'v' => return Ok(0x0b),
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => return Ok(c as u32),
            _ => {}
        }
        let end = self.pos.min(self.s.len());
        err("invalid escape sequence", &self.s[start..end])
    }

    /// Go's `parseClass`, cursor on `[`.
    fn class(&mut self) -> Result<Item, RegexError> {
        let whole = &self.s[self.pos..];
        self.pos += 1;
        let negated = self.peek(0) == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true; // `]` is a member when it comes first
        loop {
            match self.peek(0) {
                None => return err("missing closing ]", whole),
                Some(']') if !first => break,
                _ => {}
            }
            first = false;
            // POSIX `[:alpha:]`; Go takes the name up to the next `:]`.
            if self.peek(0) == Some('[') && self.peek(1) == Some(':') && self.pos + 2 < self.s.len()
            {
                let rest = &self.s[self.pos + 2..];
                if let Some(i) = rest.windows(2).position(|w| w == [':', ']']) {
                    let name: String = rest[..i].iter().collect();
                    let (neg, bare) = match name.strip_prefix('^') {
                        Some(b) => (true, b),
                        None => (false, name.as_str()),
                    };
                    let Some(group) = posix_group(bare) else {
                        return err(
                            "invalid character class range",
                            &self.s[self.pos..self.pos + i + 4],
                        );
                    };
                    ranges.extend(if neg { negate(group) } else { group.to_vec() });
                    self.pos += i + 4;
                    continue;
                }
            }
            if let Some(group) = self.perl_or_unicode_class()? {
                ranges.extend(group);
                continue;
            }
            let start = self.pos;
            let lo = self.class_char(whole)?;
            let mut hi = lo;
            // `[a-]` means `a` or `-`.
            if self.peek(0) == Some('-') && self.peek(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                hi = self.class_char(whole)?;
                if hi < lo {
                    return err("invalid character class range", &self.s[start..self.pos]);
                }
            }
            ranges.push((lo, hi));
        }
        self.pos += 1; // `]`
        let ranges = normalize(ranges);
        Ok(class(if negated { negate(&ranges) } else { ranges }))
    }

    fn class_char(&mut self, whole: &[char]) -> Result<u32, RegexError> {
        match self.peek(0) {
            None => err("missing closing ]", whole),
            Some('\\') => self.escape(),
            Some(c) => {
                self.pos += 1;
                Ok(c as u32)
            }
        }
    }
}

/// Wraps `sub` in a repetition, with Go's size estimate (`calcSize`).
fn repeat_item(sub: Item, min: u32, max: Option<u32>, counted: bool) -> Item {
    let s = sub.size;
    let size = match (counted, max) {
        (false, None) if min == 0 => 2 + s,
        (false, _) => 1 + s,
        (true, None) if min == 0 => 2 + s,
        (true, None) => 1 + i64::from(min) * s,
        (true, Some(max)) => i64::from(max) * s + i64::from(max - min),
    };
    let node = Node::Repeat {
        sub: Box::new(sub.node),
        min,
        max,
        counted,
    };
    Item {
        node,
        size: size.max(1),
        height: sub.height + 1,
    }
}

//! `${...}` parameter expansion: the modifiers after the name and what
//! each of them does with the variable's value.

use super::pattern::{Pattern, slice};
use super::{Fail, ShellWord, msg, rune_or_eof};

impl ShellWord<'_> {
    /// The part of `${...}` after the opening brace.
    pub(super) fn process_braced(&mut self) -> Result<String, Fail> {
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
}

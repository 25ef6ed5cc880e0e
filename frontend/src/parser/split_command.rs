//! Splits a logical line into keyword, builder flags and the rest.

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
pub(super) fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits `s` on runs of [`is_ws`] into at most `n` parts (Go's
/// `regexp.Split(s, n)`; `n == 0` means no limit).
pub(super) fn split_ws(s: &str, n: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        if n != 0 && parts.len() + 1 == n {
            parts.push(rest);
            return parts;
        }
        match rest.find(is_ws) {
            None => {
                parts.push(rest);
                return parts;
            }
            Some(i) => {
                parts.push(&rest[..i]);
                let after = &rest[i..];
                rest = after.trim_start_matches(is_ws);
            }
        }
    }
}

/// Returns `(keyword, flags, args)` for one logical line.
pub(super) fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let parts = split_ws(line.trim(), 2);
    let cmd = parts[0].to_string();
    if parts.len() < 2 {
        return (cmd, Vec::new(), String::new());
    }
    let (args, flags) = extract_builder_flags(parts[1], escape);
    (cmd, flags, args.trim().to_string())
}

#[derive(PartialEq)]
enum Phase {
    Spaces,
    Word,
    Quote,
}

/// Consumes leading `--flag` words (quotes and escapes resolved) and returns
/// the rest of the line and the flags. A bare `--` ends the flags.
fn extract_builder_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let ch = if at_end { '\0' } else { chars[pos].1 };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            let next_is_dash = chars.get(pos + 1).is_some_and(|&(_, c)| c == '-');
            if ch != '-' || !next_is_dash {
                return (&line[chars[pos].0..], words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[chars[pos].0..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = chars[pos].1;
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == escape {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = chars[pos].1;
        }
        word.push(c);
        pos += 1;
    }
    ("", words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_split_off() {
        let (cmd, flags, args) = split_command("COPY --from=a --chown=\"x y\" src dst", '\\');
        assert_eq!(cmd, "COPY");
        assert_eq!(flags, vec!["--from=a", "--chown=x y"]);
        assert_eq!(args, "src dst");
    }

    #[test]
    fn double_dash_ends_flags() {
        let (_, flags, args) = split_command("COPY --a=1 -- --b src", '\\');
        assert_eq!(flags, vec!["--a=1"]);
        assert_eq!(args, "--b src");
    }

    #[test]
    fn regexp_split_semantics() {
        assert_eq!(split_ws("a  b\tc", 0), vec!["a", "b", "c"]);
        assert_eq!(split_ws("a  b\tc", 2), vec!["a", "b\tc"]);
        assert_eq!(split_ws("a ", 0), vec!["a", ""]);
    }
}

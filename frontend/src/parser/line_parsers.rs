//! Per-instruction argument rules (BuildKit's `line_parsers.go`).

use super::split_command::{split_command, split_ws};
use super::{Arg, Node};

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// How deep `ONBUILD` may nest before the parser gives up (BuildKit rejects
/// `ONBUILD ONBUILD` later; this only bounds recursion on hostile input).
const MAX_SUBCOMMAND_DEPTH: usize = 4;

/// Builds the node for one logical line.
pub(super) fn node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, String> {
    let (cmd, flags, rest) = split_command(line, escape);
    let mut node = Node::new(&cmd, line);
    node.flags = flags;
    let rest = rest.as_str();
    match cmd.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest, &mut node)?,
        "arg" => node.args = values(parse_words(rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest, &mut node)?,
        "env" => parse_name_val(rest, "ENV", escape, &mut node)?,
        "label" => parse_name_val(rest, "LABEL", escape, &mut node)?,
        "expose" | "from" => node.args = whitespace_delimited(rest),
        "healthcheck" => parse_health_config(rest, &mut node)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args = vec![Arg::Value(rest.to_string())];
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_SUBCOMMAND_DEPTH {
                    return Err("ONBUILD nested too deeply".to_string());
                }
                let child = node_from_line(rest, escape, depth + 1)?;
                node.args = vec![Arg::Sub(Box::new(child))];
            }
        }
        // Unknown instructions parse (BuildKit keeps them with one empty
        // argument); typing them into instructions reports the error.
        _ => node.args = vec![Arg::Value(String::new())],
    }
    Ok(node)
}

fn values(words: Vec<String>) -> Vec<Arg> {
    words.into_iter().map(Arg::Value).collect()
}

fn whitespace_delimited(rest: &str) -> Vec<Arg> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_ws(rest, 0)
        .into_iter()
        .map(|s| Arg::Value(s.to_string()))
        .collect()
}

enum JsonOutcome {
    Strings(Vec<String>),
    NotJson,
}

/// `parseJSON`: a JSON array of strings, or not JSON at all. An array with a
/// non-string element is an error, not a fallback.
fn parse_json(rest: &str) -> Result<JsonOutcome, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(JsonOutcome::NotJson);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(JsonOutcome::NotJson);
    };
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match v {
            serde_json::Value::String(s) => out.push(s),
            _ => return Err(NOT_STRING_ARRAY.to_string()),
        }
    }
    Ok(JsonOutcome::Strings(out))
}

fn parse_maybe_json(rest: &str, node: &mut Node) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    match parse_json(rest)? {
        JsonOutcome::Strings(words) => {
            node.args = values(words);
            node.json = true;
        }
        JsonOutcome::NotJson => node.args = vec![Arg::Value(rest.to_string())],
    }
    Ok(())
}

fn parse_maybe_json_to_list(rest: &str, node: &mut Node) -> Result<(), String> {
    match parse_json(rest)? {
        JsonOutcome::Strings(words) => {
            node.args = values(words);
            node.json = true;
        }
        JsonOutcome::NotJson => node.args = whitespace_delimited(rest),
    }
    Ok(())
}

fn parse_health_config(rest: &str, node: &mut Node) -> Result<(), String> {
    let sep = rest
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(rest.len(), |(i, _)| i);
    if sep == 0 {
        return Ok(());
    }
    let typ = &rest[..sep];
    let cmd = rest[sep..].trim_start();
    let mut sub = Node::new("", "");
    parse_maybe_json(cmd, &mut sub)?;
    node.json = sub.json;
    node.args = vec![Arg::Value(typ.to_string())];
    node.args.extend(sub.args);
    Ok(())
}

/// `ENV`/`LABEL`: the legacy `KEY value` form or `k=v ...` pairs, each pair
/// dumped as key, value and the separator used.
fn parse_name_val(rest: &str, key: &str, escape: char, node: &mut Node) -> Result<(), String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(());
    };
    if !first.contains('=') {
        let parts = split_ws(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        node.args = values(vec![
            parts[0].to_string(),
            parts[1].to_string(),
            String::new(),
        ]);
        return Ok(());
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                super::go_quote(&word)
            ));
        };
        args.push(Arg::Value(k.to_string()));
        args.push(Arg::Value(v.to_string()));
        args.push(Arg::Value("=".to_string()));
    }
    node.args = args;
    Ok(())
}

#[derive(PartialEq)]
enum Phase {
    Spaces,
    Word,
    Quote,
}

/// Splits on whitespace outside quotes, keeping quotes and escapes in the
/// words (they are processed at expansion time).
pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = if at_end { '\0' } else { chars[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

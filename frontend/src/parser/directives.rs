//! Parser directives: `# syntax=`, `# escape=`, `# check=`.

use super::DEFAULT_ESCAPE;

/// The directive parser's state. Directives are only recognised in the
/// comment lines at the very top of the file; the first other line ends them.
#[derive(Debug, Clone)]
pub struct Directives {
    escape: char,
    done: bool,
    seen: Vec<(String, String)>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            escape: DEFAULT_ESCAPE,
            done: false,
            seen: Vec::new(),
        }
    }
}

impl Directives {
    /// The escape token in force.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// The directives seen so far, lower-cased names with their values.
    pub fn seen(&self) -> &[(String, String)] {
        &self.seen
    }

    /// Feeds one line (newline trimmed). Returns whether it was a directive,
    /// or an error message for a repeated directive or a bad escape token.
    pub fn parse_line(&mut self, line: &str) -> Result<bool, String> {
        if self.done {
            return Ok(false);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(false);
        };
        let Some((name, value)) = match_directive(rest.trim_start()) else {
            self.done = true;
            return Ok(false);
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if self.seen.iter().any(|(n, _)| *n == name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(format!(
                        "invalid escape token '{other}' does not match ` or \\"
                    ));
                }
            };
        }
        self.seen.push((name, value.to_string()));
        Ok(true)
    }
}

/// Matches `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn match_directive(s: &str) -> Option<(&str, &str)> {
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let name_end = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map_or(s.len(), |(i, _)| i);
    let name = &s[..name_end];
    let rest = s[name_end..].trim_start();
    let value = rest.strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

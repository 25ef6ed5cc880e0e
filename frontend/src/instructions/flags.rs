//! Builder flags (`--from=x`, `--link`), parsed like BuildKit's `BFlags`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    String,
    Strings,
}

/// The flags an instruction accepts and the values it was given.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    defined: BTreeMap<&'static str, Kind>,
    bools: BTreeMap<&'static str, bool>,
    strings: BTreeMap<&'static str, String>,
    lists: BTreeMap<&'static str, Vec<String>>,
    used: Vec<&'static str>,
}

impl Flags {
    /// Declares the accepted flags, then parses `args` against them.
    pub(crate) fn parse(
        args: &[String],
        bools: &[&'static str],
        strings: &[&'static str],
        lists: &[&'static str],
    ) -> Result<Self, String> {
        let mut f = Self::default();
        for &b in bools {
            f.defined.insert(b, Kind::Bool);
        }
        for &s in strings {
            f.defined.insert(s, Kind::String);
        }
        for &l in lists {
            f.defined.insert(l, Kind::Strings);
        }
        for a in args {
            if a == "--" {
                break;
            }
            let Some(body) = a.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {a}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some((&key, &kind)) = f.defined.get_key_value(name) else {
                return Err(unknown_flag(name, f.defined.keys().copied()));
            };
            if kind != Kind::Strings && f.used.contains(&key) {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            if !f.used.contains(&key) {
                f.used.push(key);
            }
            match kind {
                Kind::Bool => {
                    let v = match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => true,
                        Some("") => return Err(format!("missing a value on flag: --{name}")),
                        Some("false") => false,
                        Some(other) => {
                            return Err(format!(
                                "expecting boolean value for flag --{name}, not: {other}"
                            ));
                        }
                    };
                    f.bools.insert(key, v);
                }
                Kind::String => {
                    let v = value.ok_or_else(|| format!("missing a value on flag: --{name}"))?;
                    f.strings.insert(key, v.to_string());
                }
                Kind::Strings => {
                    let v = value.ok_or_else(|| format!("missing a value on flag: --{name}"))?;
                    f.lists.entry(key).or_default().push(v.to_string());
                }
            }
        }
        Ok(f)
    }

    /// A boolean flag's value (false when absent).
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }

    /// Whether the flag was given at all.
    pub(crate) fn is_used(&self, name: &str) -> bool {
        self.used.contains(&name)
    }

    /// A string flag's value, `None` when absent.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).cloned()
    }

    /// Every value of a repeatable flag.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
}

fn unknown_flag<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.collect();
    let mut msg = format!("unknown flag: --{name}");
    if let Some(best) = crate::instructions::suggest(name, known.iter().copied()) {
        msg.push_str(&format!(" (did you mean --{best}?)"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::Flags;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_like_bflags() {
        let f = Flags::parse(
            &s(&["--link", "--from=a", "--exclude=x", "--exclude=y"]),
            &["link"],
            &["from"],
            &["exclude"],
        )
        .unwrap();
        assert!(f.bool("link"));
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.list("exclude"), s(&["x", "y"]));
    }

    #[test]
    fn rejects_bad_flags() {
        let err = Flags::parse(&s(&["--form=a"]), &[], &["from"], &[]).unwrap_err();
        assert_eq!(err, "unknown flag: --form (did you mean --from?)");
        let err = Flags::parse(&s(&["--from=a", "--from=b"]), &[], &["from"], &[]).unwrap_err();
        assert_eq!(err, "duplicate flag specified: --from");
        let err = Flags::parse(&s(&["--from"]), &[], &["from"], &[]).unwrap_err();
        assert_eq!(err, "missing a value on flag: --from");
        let err = Flags::parse(&s(&["--link=maybe"]), &["link"], &[], &[]).unwrap_err();
        assert_eq!(err, "expecting boolean value for flag --link, not: maybe");
    }
}

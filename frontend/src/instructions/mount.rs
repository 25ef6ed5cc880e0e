//! `RUN --mount=...` specifications (BuildKit's `commands_runmount.go`).

use serde::{Deserialize, Serialize};

/// What a `RUN --mount` mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A directory of the context or another stage, read-only by default.
    Bind,
    /// A persistent cache directory shared between builds.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (never in a layer, a cache key or a log).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "bind" => Self::Bind,
            "cache" => Self::Cache,
            "tmpfs" => Self::Tmpfs,
            "secret" => Self::Secret,
            "ssh" => Self::Ssh,
            _ => return None,
        })
    }

    /// The lower-case name used in Dockerfiles.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Cache => "cache",
            Self::Tmpfs => "tmpfs",
            Self::Secret => "secret",
            Self::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Several writers at once.
    Shared,
    /// A private copy when the cache is busy.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One parsed and expanded `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Mount type (`bind` by default).
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Stage or image the source comes from (`from=`), empty for the context.
    pub from: String,
    /// Path inside the source.
    pub source: String,
    /// Mount point inside the container.
    pub target: String,
    /// Mounted read-only.
    pub readonly: bool,
    /// tmpfs size limit in bytes (0 = unlimited).
    pub size_limit: u64,
    /// Cache or secret id.
    pub id: String,
    /// Cache sharing mode.
    pub sharing: Option<CacheSharing>,
    /// A missing secret or ssh socket fails the step.
    pub required: bool,
    /// Environment variable a secret is exposed as.
    pub env: Option<String>,
    /// File mode of a secret, ssh socket or cache directory.
    pub mode: Option<u32>,
    /// Owner uid of a secret, ssh socket or cache directory.
    pub uid: Option<u32>,
    /// Owner gid of a secret, ssh socket or cache directory.
    pub gid: Option<u32>,
}

/// Splits one CSV record (Go's `encoding/csv` rules: `"` quotes a field,
/// `""` is a literal quote inside one).
fn csv_fields(val: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = val.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                                .to_string(),
                        );
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => {
                    return Err(
                        "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                            .to_string(),
                    );
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(
                            "failed to parse csv mounts: bare \" in non-quoted-field".to_string()
                        );
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {value}")),
    }
}

/// Parses a size like `64m` or `1g` (docker/go-units `RAMInBytes`).
fn ram_in_bytes(value: &str) -> Option<u64> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.to_ascii_lowercase().trim_end_matches(['b', 'i']) {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0f64.powi(4),
        "p" => 1024.0f64.powi(5),
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses one `--mount` value, expanding each value with `expand`.
pub fn parse_mount(
    val: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    let mut m = Mount {
        kind: MountType::Bind,
        from: String::new(),
        source: String::new(),
        target: String::new(),
        readonly: false,
        size_limit: 0,
        id: String::new(),
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    for field in csv_fields(val)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        if key == "from" && value.find('$').is_some_and(|i| i + 1 != value.len()) {
            return Err(format!(
                "'{key}' doesn't support variable expansion, define alias stage instead"
            ));
        }
        let value = if key == "from" {
            value.to_string()
        } else {
            expand(value)?
        };
        match key.as_str() {
            "type" => {
                m.kind = MountType::parse(&value).ok_or_else(|| {
                    format!("unsupported mount type \"{value}\" (one of bind, cache, tmpfs, secret, ssh)")
                })?;
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                m.required = parse_bool(&key, &value)?;
            }
            "size" if m.kind == MountType::Tmpfs => {
                m.size_limit = ram_in_bytes(&value)
                    .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
            }
            "required" | "size" => {
                return Err(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    m.kind.as_str()
                ));
            }
            "id" => m.id = value,
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value \"{value}\" (one of shared, private, locked)"
                        ));
                    }
                });
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| format!("invalid value {value} for mode"))?,
                );
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                );
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                );
            }
            "env" => m.env = Some(value),
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    validate(&mut m, ro_auto)?;
    Ok(m)
}

fn validate(m: &mut Mount, ro_auto: bool) -> Result<(), String> {
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} not allowed for \"{}\" type mounts",
                    m.kind.as_str()
                ));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if !m.from.is_empty() {
            return Err("secret mount should not have a from".to_string());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".to_string());
        }
        if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() {
            return Err("invalid secret mount. one of source, target required".to_string());
        }
        if !m.source.is_empty() && !m.id.is_empty() {
            return Err("both source and id can't be set".to_string());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Mount, String> {
        parse_mount(s, &mut |v| Ok(v.to_string()))
    }

    #[test]
    fn cache_mount_defaults_to_read_write() {
        let m = parse("type=cache,target=/root/.cache,id=pip,sharing=locked").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.readonly);
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
    }

    #[test]
    fn bind_is_read_only_unless_rw() {
        assert!(parse("target=/src,from=build").unwrap().readonly);
        assert!(!parse("target=/src,rw").unwrap().readonly);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            parse("type=nfs").unwrap_err(),
            "unsupported mount type \"nfs\" (one of bind, cache, tmpfs, secret, ssh)"
        );
        assert_eq!(
            parse("type=bind,mode=0600").unwrap_err(),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            parse("type=secret").unwrap_err(),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            parse("from=$X/y,target=/a").unwrap_err(),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert_eq!(
            parse("type=tmpfs,size=64m,target=/t").unwrap().size_limit,
            64 << 20
        );
        assert_eq!(
            parse("type=bind,size=1").unwrap_err(),
            "unexpected key 'size' for mount type 'bind'"
        );
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            csv_fields(r#"a,"b,c","d""e""#).unwrap(),
            vec!["a", "b,c", "d\"e"]
        );
        assert!(csv_fields(r#"a"b"#).is_err());
    }
}

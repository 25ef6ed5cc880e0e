//! Image references, normalised as Docker does (`ubuntu` is
//! `docker.io/library/ubuntu:latest`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The registry that short names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    /// Registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/ubuntu`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Content digest (`sha256:...`) when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `s` like Docker's `ParseNormalizedNamed` +
    /// `TagNameOnly`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid reference format \"{s}\": {why}");
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let (algo, hex) = d
                    .split_once(':')
                    .ok_or_else(|| invalid("digest must be algorithm:hex"))?;
                if algo != "sha256"
                    || hex.len() != 64
                    || !hex.chars().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(invalid("digest must be sha256 followed by 64 hex digits"));
                }
                (r, Some(d.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(invalid("bad tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if path.is_empty() {
            return Err(invalid("empty repository"));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars().next().is_some_and(|x| x.is_ascii_alphanumeric())
                && c.chars().last().is_some_and(|x| x.is_ascii_alphanumeric())
                && c.chars()
                    .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || "._-".contains(x))
        };
        if !path.split('/').all(component_ok) {
            return Err(invalid("bad repository name"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The shortest form Docker shows (`ubuntu:latest`, `ghcr.io/x/y:1`).
    pub fn familiar(&self) -> String {
        let mut name = if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            name.push(':');
            name.push_str(t);
        }
        if let Some(d) = &self.digest {
            name.push('@');
            name.push_str(d);
        }
        name
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ImageRef;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("ubuntu", "docker.io/library/ubuntu:latest"),
            ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
            ("user/app", "docker.io/user/app:latest"),
            ("127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1"),
            ("localhost/x", "localhost/x:latest"),
            ("ghcr.io/a/b/c:v1", "ghcr.io/a/b/c:v1"),
        ];
        for (input, want) in cases {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
        let pinned = format!("busybox@sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&pinned).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.familiar(), pinned);
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "Ubuntu", "ubuntu:", "a//b", "x@sha256:12", "-x"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}

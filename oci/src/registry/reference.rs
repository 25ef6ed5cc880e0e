//! Image references, normalised as Docker does: `ubuntu` is
//! `docker.io/library/ubuntu:latest`, and `docker.io` is reached at
//! `registry-1.docker.io`.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Digest, DigestAlgorithm};

use super::error::RegistryError;

/// The registry that short names resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker sends the API calls for [`DOCKER_HUB`].
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL_NAMESPACE: &str = "library";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference (`registry/repository[:tag][@digest]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `s` like Docker's `ParseNormalizedNamed`
    /// followed by `TagNameOnly`: a missing registry is `docker.io`, a
    /// one-component Docker Hub name gets `library/`, and a reference with
    /// neither tag nor digest gets `latest`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("the reference is empty"));
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "a 64-character hexadecimal string is an image ID, not a repository name",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(parse_digest(d).map_err(|e| invalid(&e))?)),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/'; an earlier ':' is
        // a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|e| invalid(&e))?;
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("the repository name is longer than 255 characters"));
        }
        let (registry, path) = split_registry(name);
        validate_registry(&registry).map_err(|e| invalid(&e))?;
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("the repository name must be lowercase"));
        }
        validate_path(path).map_err(|e| invalid(&e))?;
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_string()
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

    /// The registry as named, host with optional port (`docker.io`,
    /// `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (with port) that API calls go to: `registry-1.docker.io`
    /// for Docker Hub, as Docker does, the registry itself otherwise.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/ubuntu`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when the reference had neither tag nor
    /// digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, if any. When set, pulls go by digest and the tag
    /// is only informative, as in Docker.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest`, keeping the tag for display.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository at `tag`, without a digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, RegistryError> {
        validate_tag(tag).map_err(|reason| RegistryError::InvalidReference {
            reference: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// Another repository of the same registry, at `tag`.
    pub fn in_repository(&self, repository: &str, tag: &str) -> Result<Self, RegistryError> {
        Self::parse(&format!("{}/{repository}:{tag}", self.registry))
    }

    /// The reference handed to `oci-client`: the API host, and the digest
    /// when pinned (a pinned pull ignores the tag).
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        let host = self.api_host().to_string();
        let repository = self.repository.clone();
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(host, repository, d.to_string()),
            (None, Some(t)) => oci_client::Reference::with_tag(host, repository, t.clone()),
            (None, None) => oci_client::Reference::with_tag(host, repository, "latest".into()),
        }
    }
}

impl FromStr for ImageRef {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Parses a digest strata can verify (sha256, sha384 or sha512).
pub(crate) fn parse_digest(s: &str) -> Result<Digest, String> {
    let digest = Digest::from_str(s).map_err(|e| format!("bad digest {s:?}: {e}"))?;
    match digest.algorithm() {
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha384 | DigestAlgorithm::Sha512 => Ok(digest),
        other => Err(format!(
            "unsupported digest algorithm {other} (sha256, sha384 and sha512 are supported)"
        )),
    }
}

/// Docker's `splitDockerDomain`: the first component is a registry when it
/// looks like a host (has a dot or a port, is `localhost`, or has
/// uppercase letters, which a repository cannot).
fn split_registry(name: &str) -> (String, &str) {
    let (registry, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), path)
        }
        _ => (DOCKER_HUB.to_string(), name),
    };
    if registry == DOCKER_HUB_LEGACY {
        (DOCKER_HUB.to_string(), path)
    } else {
        (registry, path)
    }
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad tag {tag:?}: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ))
    }
}

/// `host[:port]` or `[ipv6][:port]`, each host label alphanumeric with
/// inner dashes.
fn validate_registry(registry: &str) -> Result<(), String> {
    let bad = || Err(format!("bad registry host {registry:?}"));
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return bad();
        };
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !host.split('.').all(label_ok) {
            return bad();
        }
    }
    Ok(())
}

/// Each path component is `[a-z0-9]+` joined by `.`, `_`, `__` or runs of
/// `-` (Docker's `path-component`).
fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the repository name is empty".to_string());
    }
    for component in path.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "bad repository component {component:?}: lowercase letters and digits \
                 separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let dashes = sep.bytes().all(|b| b == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("ubuntu", "docker.io/library/ubuntu:latest"),
            ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/ubuntu", "docker.io/library/ubuntu:latest"),
            (
                "index.docker.io/library/ubuntu",
                "docker.io/library/ubuntu:latest",
            ),
            ("127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("[::1]:5000/x:t", "[::1]:5000/x:t"),
            ("ghcr.io/a/b/c:v1", "ghcr.io/a/b/c:v1"),
            ("a__b/c-d/e--f.g_h", "docker.io/a__b/c-d/e--f.g_h:latest"),
            ("Foo/bar", "Foo/bar:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn docker_hub_is_reached_at_registry_1() {
        let r = ImageRef::parse("ubuntu").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.to_oci().resolve_registry(), "registry-1.docker.io");
        let local = ImageRef::parse("127.0.0.1:5000/x").unwrap();
        assert_eq!(local.to_oci().resolve_registry(), "127.0.0.1:5000");
    }

    #[test]
    fn digests_pin_and_drop_the_default_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.to_oci().digest(), Some(d.as_str()));
        let both = ImageRef::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(both.tag(), Some("1"));
        assert_eq!(both.to_oci().digest(), Some(d.as_str()));
        assert_eq!(both.to_string(), format!("docker.io/library/busybox:1@{d}"));
    }

    #[test]
    fn rejects_bad_references() {
        let hex64 = "a".repeat(64);
        let long = format!("x/{}", "a".repeat(260));
        let bad = [
            "",
            "Ubuntu",
            "ubuntu:",
            "a//b",
            "x@sha256:12",
            "x@md5:d41d8cd98f00b204e9800998ecf8427e",
            "-x",
            "x-",
            "a..b",
            "a___b",
            "ubuntu:-tag",
            "host:port/x",
            "[zz]:5000/x",
            hex64.as_str(),
            long.as_str(),
        ];
        for s in bad {
            let err = ImageRef::parse(s).unwrap_err();
            assert!(
                matches!(err, RegistryError::InvalidReference { .. }),
                "{s}: {err}"
            );
        }
    }

    #[test]
    fn with_tag_and_repository_stay_in_the_registry() {
        let r = ImageRef::parse("127.0.0.1:5000/a/b:1").unwrap();
        assert_eq!(r.with_tag("2").unwrap().to_string(), "127.0.0.1:5000/a/b:2");
        assert!(r.with_tag("bad tag").is_err());
        let other = r.in_repository("c", "3").unwrap();
        assert_eq!(other.to_string(), "127.0.0.1:5000/c:3");
    }
}

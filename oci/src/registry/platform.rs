//! Platforms (`os/arch[/variant]`) and picking one out of an image index.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Descriptor;

use super::error::RegistryError;

/// The platform an image is for, as written in image indexes
/// (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, Go's `GOOS` (`linux`).
    pub os: String,
    /// CPU architecture, Go's `GOARCH` (`amd64`, `arm64`).
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), when it matters.
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, what strata's workers run.
    pub fn linux_amd64() -> Self {
        Self::new("linux", "amd64", None)
    }

    /// A platform from its parts; architecture aliases (`x86_64`,
    /// `aarch64`) are normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_ascii_lowercase(),
            architecture: normalise_arch(architecture).to_string(),
            variant: variant.map(str::to_ascii_lowercase),
        }
    }

    /// Whether an index entry's platform satisfies this one: same OS and
    /// architecture, and the same variant when this one names a variant
    /// (with `arm64` = `arm64/v8` and `amd64` = `amd64/v1`, as containerd
    /// treats them).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none()
                || default_variant(&self.architecture, self.variant.as_deref())
                    == default_variant(&other.architecture, other.variant.as_deref()))
    }

    fn from_descriptor(d: &Descriptor) -> Option<Self> {
        let p = d.platform().as_ref()?;
        Some(Self::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        ))
    }

    /// The index entry for this platform: among the entries that match,
    /// the first whose variant is the architecture's default, else the
    /// first. Entries without a platform (attestations) never match.
    pub fn select<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let matching: Vec<(&Descriptor, Platform)> = manifests
            .iter()
            .filter_map(|d| Self::from_descriptor(d).map(|p| (d, p)))
            .filter(|(_, p)| self.matches(p))
            .collect();
        matching
            .iter()
            .find(|(_, p)| default_variant(&p.architecture, p.variant.as_deref()).is_none())
            .or_else(|| matching.first())
            .map(|(d, _)| *d)
    }

    /// The platforms an index lists, for error messages.
    pub(crate) fn list(manifests: &[Descriptor]) -> String {
        let all: Vec<String> = manifests
            .iter()
            .filter_map(Self::from_descriptor)
            .map(|p| p.to_string())
            .collect();
        if all.is_empty() {
            "no platforms".to_string()
        } else {
            all.join(", ")
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self::linux_amd64()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = RegistryError;

    /// Parses `os/arch` or `os/arch/variant`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if [os, arch].iter().all(|p| ok(p)) => Ok(Self::new(os, arch, None)),
            [os, arch, variant] if [os, arch, variant].iter().all(|p| ok(p)) => {
                Ok(Self::new(os, arch, Some(variant)))
            }
            _ => Err(RegistryError::InvalidPlatform {
                platform: s.to_string(),
                reason: "a platform is os/arch or os/arch/variant, e.g. linux/arm64/v8".into(),
            }),
        }
    }
}

fn normalise_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The variant with the architecture's default folded to `None`.
fn default_variant<'a>(arch: &str, variant: Option<&'a str>) -> Option<&'a str> {
    match (arch, variant) {
        ("arm64", Some("v8")) | ("amd64", Some("v1")) => None,
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{Arch, MediaType, Os, PlatformBuilder};

    fn entry(os: Os, arch: Arch, variant: Option<&str>, n: char) -> Descriptor {
        let mut d = Descriptor::new(
            MediaType::ImageManifest,
            1,
            oci_spec::image::Digest::from_str(&format!("sha256:{}", n.to_string().repeat(64)))
                .unwrap(),
        );
        let mut p = PlatformBuilder::default().os(os).architecture(arch);
        if let Some(v) = variant {
            p = p.variant(v);
        }
        d.set_platform(Some(p.build().unwrap()));
        d
    }

    #[test]
    fn picks_the_wanted_platform() {
        let idx = vec![
            entry(Os::Linux, Arch::ARM64, Some("v8"), 'a'),
            entry(Os::Linux, Arch::Amd64, None, 'b'),
            entry(Os::Linux, Arch::ARM, Some("v6"), 'c'),
            entry(Os::Linux, Arch::ARM, Some("v7"), 'd'),
        ];
        let digest = |p: &str| {
            let p: Platform = p.parse().unwrap();
            p.select(&idx).map(|d| d.digest().digest()[..1].to_string())
        };
        assert_eq!(digest("linux/amd64").as_deref(), Some("b"));
        assert_eq!(digest("linux/arm64").as_deref(), Some("a"));
        assert_eq!(digest("linux/arm64/v8").as_deref(), Some("a"));
        assert_eq!(digest("linux/arm/v7").as_deref(), Some("d"));
        assert_eq!(digest("linux/arm").as_deref(), Some("c"));
        assert_eq!(digest("windows/amd64"), None);
        assert_eq!(digest("linux/x86_64").as_deref(), Some("b"));
        assert_eq!(
            Platform::list(&idx),
            "linux/arm64/v8, linux/amd64, linux/arm/v6, linux/arm/v7"
        );
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(Platform::default().to_string(), "linux/amd64");
        assert_eq!(
            "linux/arm64/v8".parse::<Platform>().unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
    }
}

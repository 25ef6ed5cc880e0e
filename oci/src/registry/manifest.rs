//! Manifest media types, telling fetched manifests from indexes, and
//! writing the manifests strata pushes (OCI or Docker schema 2) as
//! canonical JSON, so the same image always has the same digest.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::error::RegistryError;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (Docker's index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip-compressed layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The manifest kinds strata asks registries for.
pub(crate) const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Manifests and configs are held in memory; Docker and containerd cap
/// manifests at 4 MiB.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Configs grow with history; 16 MiB is far above any real one.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Which manifest schema to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// OCI image manifest and config media types (BuildKit's default).
    #[default]
    Oci,
    /// Docker schema 2 media types, for registries or tools that want them.
    Docker,
}

impl ManifestFormat {
    /// The manifest's media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Self::Oci => OCI_MANIFEST,
            Self::Docker => DOCKER_MANIFEST,
        }
    }

    /// The config blob's media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            Self::Oci => OCI_CONFIG,
            Self::Docker => DOCKER_CONFIG,
        }
    }

    /// A layer's media type in this schema: gzip and plain tar layers are
    /// renamed between the OCI and Docker names (same bytes); Docker
    /// schema 2 has no name for other layer kinds.
    fn layer_media_type(self, given: &MediaType) -> Result<MediaType, String> {
        let text = given.to_string();
        match (self, text.as_str()) {
            (Self::Oci, DOCKER_LAYER_GZIP) => Ok(MediaType::ImageLayerGzip),
            (Self::Oci, DOCKER_LAYER_TAR) => Ok(MediaType::ImageLayer),
            (Self::Oci, _) => Ok(given.clone()),
            (Self::Docker, DOCKER_LAYER_GZIP | DOCKER_LAYER_TAR) => Ok(given.clone()),
            (Self::Docker, "application/vnd.oci.image.layer.v1.tar+gzip") => {
                Ok(MediaType::Other(DOCKER_LAYER_GZIP.to_string()))
            }
            (Self::Docker, "application/vnd.oci.image.layer.v1.tar") => {
                Ok(MediaType::Other(DOCKER_LAYER_TAR.to_string()))
            }
            (Self::Docker, other) => Err(format!(
                "layer media type {other} has no Docker schema 2 equivalent; push an OCI manifest"
            )),
        }
    }
}

/// A fetched manifest document, told apart by its media type (or, when the
/// OCI-optional `mediaType` is absent, by its shape).
#[derive(Debug)]
pub(crate) enum Document {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
}

/// Parses a fetched manifest; returns it with its media type.
pub(crate) fn parse_document(
    bytes: &[u8],
    reference: &str,
) -> Result<(Document, String), RegistryError> {
    let invalid = |what: &str, reason: String| RegistryError::InvalidDocument {
        reference: reference.to_string(),
        what: what.to_string(),
        reason,
    };
    let unsupported = |reason: String| RegistryError::UnsupportedManifest {
        reference: reference.to_string(),
        reason,
    };
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| invalid("manifest", e.to_string()))?;
    match probe.schema_version {
        Some(2) => {}
        Some(1) => {
            return Err(unsupported(
                "Docker schema 1 manifests are not supported; re-push the image with a current \
                 Docker, BuildKit or skopeo"
                    .to_string(),
            ));
        }
        other => return Err(unsupported(format!("schemaVersion {other:?}, expected 2"))),
    }
    let media_type = match probe.media_type {
        Some(m) => m,
        None if probe.manifests.is_some() => OCI_INDEX.to_string(),
        None if probe.layers.is_some() => OCI_MANIFEST.to_string(),
        None => {
            return Err(invalid(
                "manifest",
                "neither `layers` nor `manifests`".into(),
            ));
        }
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest = serde_json::from_slice(bytes)
                .map_err(|e| invalid("image manifest", e.to_string()))?;
            Ok((Document::Image(Box::new(m)), media_type))
        }
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let i: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| invalid("image index", e.to_string()))?;
            Ok((Document::Index(Box::new(i)), media_type))
        }
        other => Err(unsupported(format!(
            "media type {other} is not an image manifest or index"
        ))),
    }
}

/// Writes the manifest for `config` and `layers` in `format`.
pub(crate) fn build_manifest(
    format: ManifestFormat,
    config: Descriptor,
    layers: &[Descriptor],
    annotations: &BTreeMap<String, String>,
    reference: &str,
) -> Result<Vec<u8>, RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidPush {
        reference: reference.to_string(),
        reason,
    };
    let layers = layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.set_media_type(format.layer_media_type(l.media_type()).map_err(&invalid)?);
            Ok(l)
        })
        .collect::<Result<Vec<_>, RegistryError>>()?;
    let mut builder = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(format.manifest_media_type()))
        .config(config)
        .layers(layers);
    if !annotations.is_empty() {
        let map: HashMap<String, String> = annotations.clone().into_iter().collect();
        builder = builder.annotations(map);
    }
    let manifest = builder.build().map_err(|e| invalid(e.to_string()))?;
    canonical_json(&manifest).map_err(|e| invalid(e.to_string()))
}

/// Compact JSON with object keys sorted, whatever map types the value uses
/// (oci-spec keeps annotations in `HashMap`s, whose order changes run to
/// run).
pub fn canonical_json(value: &impl serde::Serialize) -> Result<Vec<u8>, serde_json::Error> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(value)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::verify::sha256_digest;

    fn desc(mt: MediaType, data: &[u8]) -> Descriptor {
        Descriptor::new(mt, data.len() as u64, sha256_digest(data))
    }

    #[test]
    fn manifests_are_deterministic_and_typed() {
        let cfg = desc(MediaType::ImageConfig, b"{}");
        let layer = desc(MediaType::ImageLayerGzip, b"layer");
        let ann: BTreeMap<String, String> =
            (0..20).map(|i| (format!("k{i}"), "v".into())).collect();
        let a = build_manifest(
            ManifestFormat::Oci,
            cfg.clone(),
            std::slice::from_ref(&layer),
            &ann,
            "r",
        )
        .unwrap();
        for _ in 0..5 {
            let b = build_manifest(
                ManifestFormat::Oci,
                cfg.clone(),
                std::slice::from_ref(&layer),
                &ann,
                "r",
            )
            .unwrap();
            assert_eq!(a, b);
        }
        let (doc, mt) = parse_document(&a, "r").unwrap();
        assert_eq!(mt, OCI_MANIFEST);
        assert!(matches!(doc, Document::Image(m) if m.layers().len() == 1));

        let mut dcfg = cfg.clone();
        dcfg.set_media_type(MediaType::from(DOCKER_CONFIG));
        let d = build_manifest(
            ManifestFormat::Docker,
            dcfg,
            &[layer],
            &BTreeMap::new(),
            "r",
        )
        .unwrap();
        let text = String::from_utf8(d).unwrap();
        assert!(
            text.contains(DOCKER_MANIFEST) && text.contains(DOCKER_LAYER_GZIP),
            "{text}"
        );
        let zstd = desc(MediaType::ImageLayerZstd, b"z");
        assert!(
            build_manifest(ManifestFormat::Docker, cfg, &[zstd], &BTreeMap::new(), "r").is_err()
        );
    }

    #[test]
    fn recognises_documents_and_refuses_schema_1() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(
            matches!(parse_document(idx, "r").unwrap(), (Document::Index(_), m) if m == OCI_INDEX)
        );
        let e = parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, "r").unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let art =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart","layers":[]}"#;
        assert!(matches!(
            parse_document(art, "r"),
            Err(RegistryError::UnsupportedManifest { .. })
        ));
        assert!(matches!(
            parse_document(b"nope", "r"),
            Err(RegistryError::InvalidDocument { .. })
        ));
    }
}

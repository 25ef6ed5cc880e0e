//! The OCI distribution API client strata pulls base images and pushes
//! results with, built on `oci-client`.
//!
//! - [`ImageRef`]: references normalised as Docker does (`ubuntu` is
//!   `docker.io/library/ubuntu:latest`; Docker Hub is reached at
//!   `registry-1.docker.io`).
//! - [`RegistryClient::resolve`]: a reference to one [`Platform`]'s
//!   manifest and config ([`ResolvedImage`]); then
//!   [`RegistryClient::blob_stream`], [`RegistryClient::copy_blob`] and
//!   [`RegistryClient::download_blob`] for the layers. Every manifest,
//!   config and blob is checked against its digest; a mismatch is
//!   [`RegistryError::DigestMismatch`], naming both digests.
//! - [`RegistryClient::push_image`]: blobs (HEAD first, cross-repository
//!   mount when the blob is known elsewhere in the registry), config,
//!   manifest (OCI or Docker schema 2) and tag.
//! - Credentials come from a docker-style `config.json` ([`DockerConfig`]);
//!   anonymous, basic and bearer-token auth all work. Loopback registries
//!   and those in [`RegistryConfig::insecure`] are spoken to over plain
//!   HTTP.

mod auth;
mod error;
mod manifest;
mod platform;
mod pull;
mod push;
mod reference;
mod registry_client;
mod roots;
mod verify;

pub use auth::{DockerConfig, RegistryCredentials};
pub use error::RegistryError;
pub use manifest::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    ManifestFormat, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, canonical_json,
};
pub use platform::Platform;
pub use pull::{FetchedManifest, ResolvedImage};
pub use push::{
    BlobPushOutcome, BlobSource, BlobUpload, ImagePush, OpenBlob, PushStats, PushedImage,
};
pub use reference::{DOCKER_HUB, DOCKER_HUB_API_HOST, ImageRef};
pub use registry_client::{RegistryClient, RegistryConfig};
pub use roots::system_root_certs;
pub use verify::{BlobStream, sha256_digest};

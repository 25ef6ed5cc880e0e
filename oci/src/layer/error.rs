//! The error type of the `layer` module.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while diffing, writing, compressing or
/// unpacking a layer. Each variant names the file or tar entry involved.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A filesystem call on a source or destination path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. `lstat` or `open`.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Writing the layer stream (compressor or output writer) failed.
    #[error("writing the layer stream: {0}")]
    Stream(#[source] io::Error),

    /// Reading the layer stream (decompressor or tar framing) failed.
    #[error("reading the layer stream: {0}")]
    Read(#[source] io::Error),

    /// The overlay upper directory uses an overlayfs feature whose on-disk
    /// form the differ cannot interpret.
    #[error(
        "{path}: carries the overlayfs xattr {xattr}, which the layer differ cannot interpret; \
         mount the overlay with redirect_dir=off,metacopy=off"
    )]
    UnsupportedOverlay {
        /// The upper-dir entry.
        path: PathBuf,
        /// The xattr that was found.
        xattr: String,
    },

    /// A file in the new tree is named like an OCI whiteout; written into a
    /// layer it would delete a file instead of creating one.
    #[error(
        "{path}: file names starting with \".wh.\" are reserved for OCI whiteouts and cannot be \
         stored in a layer; rename the file"
    )]
    ReservedName {
        /// The offending path, relative to the layer root.
        path: PathBuf,
    },

    /// A source file changed size while it was being archived.
    #[error(
        "{path}: file changed while it was archived (expected {expected} bytes, read {actual})"
    )]
    FileChanged {
        /// The source file.
        path: PathBuf,
        /// The size seen when the entry was diffed.
        expected: u64,
        /// The bytes that could be read.
        actual: u64,
    },

    /// A file cannot be represented in a tar header the way BuildKit would
    /// write it (device numbers too large, `=` in an xattr name...).
    #[error("{path}: cannot be written to a layer tar: {reason}")]
    Unrepresentable {
        /// The source path, relative to the layer root.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A layer entry would escape the unpack root or is otherwise unsafe.
    #[error("layer entry {entry:?} rejected: {reason}")]
    UnsafeEntry {
        /// The entry name as written in the tar.
        entry: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A layer entry has a tar type that layers must not contain.
    #[error("layer entry {entry:?} has unsupported tar type {kind:?}")]
    UnsupportedEntry {
        /// The entry name as written in the tar.
        entry: String,
        /// The tar typeflag byte, as a character.
        kind: char,
    },

    /// Applying a layer entry to the filesystem failed.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Unpack {
        /// The entry name as written in the tar.
        entry: String,
        /// The operation that failed, e.g. `mknod`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The layer is larger than the configured unpack limits (a
    /// decompression bomb, or limits set too low for this image).
    #[error(
        "layer exceeds the unpack limit of {limit} {what}; raise UnpackOptions::{field} if the image is legitimate"
    )]
    LimitExceeded {
        /// What was counted (`bytes` or `entries`).
        what: &'static str,
        /// The limit that was hit.
        limit: u64,
        /// The `UnpackOptions` field that sets it.
        field: &'static str,
    },

    /// The uncompressed layer does not hash to the diffID it should have.
    #[error("layer diffID mismatch: expected {expected}, the content hashes to {actual}")]
    DiffIdMismatch {
        /// The diffID the caller expected.
        expected: String,
        /// The diffID of the bytes that were read.
        actual: String,
    },
}

impl LayerError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        LayerError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn unpack(entry: &str, op: &'static str, source: impl Into<io::Error>) -> Self {
        LayerError::Unpack {
            entry: entry.to_owned(),
            op,
            source: source.into(),
        }
    }

    pub(crate) fn unsafe_entry(entry: &str, reason: impl Into<String>) -> Self {
        LayerError::UnsafeEntry {
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }
}

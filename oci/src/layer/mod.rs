//! Layers: filesystem changes to deterministic OCI layer blobs, and back.
//!
//! # Writing a layer
//!
//! ```text
//! upper dir + lower layer dirs ─┐
//!                               ├─ diff ─▶ [Change] ─ write_tar ─▶ tar ─┬─ sha256 ─▶ diffID
//! lower tree + new tree ────────┘                                       └─ zstd | gzip ─ sha256 ─▶ blob digest, size
//! ```
//!
//! [`write_layer_from_upper`] serves the overlayfs snapshotter (a RUN step
//! ran on `lowerdir=<parent layers>,upperdir=<fresh dir>`);
//! [`write_layer_from_trees`] serves the copy snapshotter (the step ran in a
//! copy of the parent's merged tree). Both walk two *views* of the
//! filesystem, "before" and "after", and record an entry wherever they
//! differ, so the same change gives the same bytes whichever snapshotter
//! made it: for the overlay the upper dir only tells the walk which
//! subtrees may have changed (an entry overlayfs did not copy up is the
//! lower file itself). An entry is unchanged when its type, mode
//! (including setuid/setgid/sticky), owner, device number, symlink target,
//! kept xattrs and content are equal. Modification times are not compared.
//! Directories above a written entry are written too (containerd's
//! `includeParents`), so every layer can be applied on its own.
//!
//! The tar is written exactly as containerd's `archive.ChangeWriter` (used
//! by BuildKit's overlay and walking differs) writes it through Go's
//! `archive/tar`; the header blocks are laid out byte for byte like Go's
//! (`tar_header.rs` explains why the `tar` crate's encoder is not used for
//! writing):
//!
//! - entries in the order of containerd's walkers: depth first, names in
//!   byte order (paths compare with `/` lowest), a whiteout at the position
//!   of the name it deletes;
//! - names relative without `./`, directories as `dir/`; USTAR headers
//!   unless a field needs PAX (long or non-ASCII names, big ids or sizes,
//!   xattrs), then a PAX header named `dir/PaxHeaders.0/name`;
//! - mode = permission bits plus setuid/setgid/sticky, numeric uid/gid with
//!   empty user and group names, whole-second mtime (no atime/ctime),
//!   clamped to `SOURCE_DATE_EPOCH` when one is given (BuildKit's
//!   `rewrite-timestamp=true`);
//! - whiteouts as empty regular files `.wh.NAME` with mode 0, owner 0:0
//!   and mtime 0 (containerd 2.x);
//! - a regular file whose inode was already written is a hardlink to the
//!   first name (in layer order) it was written under;
//! - xattrs as `SCHILY.xattr.NAME` PAX records; sockets are left out;
//! - the end: two zero blocks, no padding to a 10 KiB record.
//!
//! Where this knowingly differs from BuildKit:
//!
//! - Only changes of the compared attributes make an entry: a file whose
//!   only change is its mtime (`touch`, a copy-up by `open(O_RDWR)`) is not
//!   written, where BuildKit's differs write it. This keeps layers
//!   independent of timing and of how the snapshotter copied files.
//! - [`XattrPolicy::CapabilityOnly`] (the default) matches BuildKit, which
//!   carries only `security.capability`; [`XattrPolicy::All`] also keeps
//!   `user.*`, `trusted.*` and other xattrs (never the overlayfs private
//!   ones, nor `security.selinux`).
//! - BuildKit never writes opaque markers: under an overlay-opaque
//!   directory its overlay differ compares against the lower directory and
//!   writes one whiteout per deleted name, as its walking differ does.
//!   [`WhiteoutStyle::Explicit`] (the default) does the same;
//!   [`WhiteoutStyle::OpaqueWhenReplaced`] writes `dir/.wh..wh..opq`
//!   instead whenever no name of the lower directory survives (a directory
//!   replaced wholesale), for smaller layers with deep deletions.
//! - A file named `.wh.*` in the new tree is an error here; BuildKit would
//!   write it and unpackers would read it as a whiteout.
//! - Hardlinks are formed only among the entries a layer writes. A new
//!   link to a file the step did not change is written as a full copy, as
//!   BuildKit's overlay differ does; containerd's walking differ would also
//!   rewrite the unchanged name as a link to it (out of walk order).
//!
//! The bytes were checked equal to containerd 2.4's `archive.WriteDiff` and
//! BuildKit 0.34's overlay differ + `archive.ChangeWriter` for trees with
//! every entry type, PAX edge cases, deletions and replaced directories;
//! `tests/layer_golden.rs` pins those digests.
//! - Compressed bytes differ from BuildKit's: the deflate and zstd encoders
//!   are not Go's. diffIDs (the uncompressed tar) are what can match.
//!
//! # Compression
//!
//! [`LayerWriter`] hashes the tar (diffID), compresses it and hashes and
//! counts the output in one pass. zstd compresses 4 MiB pieces in parallel
//! as independent frames ([`FramedZstdEncoder`]); gzip compresses 1 MiB
//! blocks in parallel into one gzip member ([`ParallelGzEncoder`]). Both
//! produce bytes that depend on the input and the level alone (not the
//! thread count, the machine or timing), so blob digests do too. SHA-256 comes
//! from the `sha2` crate, which uses the SHA-NI instructions when the CPU
//! has them (detected at run time). [`write_layer`] and the functions
//! built on it, given more than one thread, hand the blob's bytes to the
//! caller's writer on a thread of their own, through a [`pipe`]: writing
//! a big blob into the page cache costs about as much as hashing it, and
//! the two then overlap ([`LayerWriter`] and [`recompress`] write on the
//! caller's thread).
//!
//! # Unpacking
//!
//! [`unpack`] applies layers one after another into one directory;
//! [`unpack_to_overlay_layer_dir`] gives each layer its own directory with
//! overlay-native whiteouts, usable directly as an overlayfs lowerdir.
//! Both refuse entries that would escape the root and bound the work a
//! hostile blob can cause ([`UnpackOptions`]), and report the diffID of
//! what they read.
//!
//! Everything here is blocking I/O; async callers use `spawn_blocking`.

mod compress;
mod diff;
mod error;
mod meta;
mod ordered;
mod pgzip;
pub mod pipe;
mod pzstd;
mod tar_header;
mod tar_write;
mod unpack;

mod view;

use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

pub use compress::{
    Compression, CompressionKind, Compressor, LayerDescriptor, LayerWriter, MEDIA_TYPE_TAR,
    MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD, decompress, recompress,
};
pub use diff::{Change, ChangeKind, diff_trees, diff_upper};
pub use error::LayerError;
pub use meta::{FileKind, FileMeta};
pub use pgzip::ParallelGzEncoder;
pub use pzstd::{FRAME_SIZE as ZSTD_FRAME_SIZE, FramedZstdEncoder};
pub use tar_write::write_tar;
pub use unpack::{OverlayXattrs, UnpackOptions, UnpackReport, unpack, unpack_to_overlay_layer_dir};

/// Which extended attributes a layer carries (and compares).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XattrPolicy {
    /// Only `security.capability`, like BuildKit and containerd.
    #[default]
    CapabilityOnly,
    /// Every xattr except the overlayfs private ones (`trusted.overlay.*`,
    /// `user.overlay.*`) and `security.selinux` (a host label).
    All,
}

/// How deletions are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhiteoutStyle {
    /// One `.wh.NAME` per deleted name, like BuildKit.
    #[default]
    Explicit,
    /// `dir/.wh..wh..opq` when none of a directory's lower names survive
    /// (the directory was replaced), `.wh.NAME` otherwise.
    OpaqueWhenReplaced,
}

/// How layers are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// Clamp modification times later than this (seconds since the Unix
    /// epoch) to it, as BuildKit does with `SOURCE_DATE_EPOCH` and
    /// `rewrite-timestamp=true`.
    pub source_date_epoch: Option<i64>,
    /// Compression threads; 0 means one per available CPU. The output does
    /// not depend on it.
    pub threads: usize,
    /// Which xattrs are written and compared.
    pub xattrs: XattrPolicy,
    /// How deletions are written.
    pub whiteouts: WhiteoutStyle,
}

impl LayerOptions {
    /// The number of compression threads to use.
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// Writes the layer for an overlayfs upper dir to `out`.
///
/// `lowers` are the overlay's lower layer dirs, topmost first (the order of
/// `lowerdir=`), as [`unpack_to_overlay_layer_dir`] makes them. The overlay
/// must be unmounted (or quiescent) and mounted without `redirect_dir` and
/// `metacopy`, which the differ rejects.
pub fn write_layer_from_upper<P: AsRef<Path>>(
    upper: &Path,
    lowers: &[P],
    out: impl Write + Send,
    compression: Compression,
    opts: &LayerOptions,
) -> Result<LayerDescriptor, LayerError> {
    let changes = diff_upper(upper, lowers, opts)?;
    write_layer(&changes, out, compression, opts)
}

/// [`write_layer_from_upper`], also handing the uncompressed tar to `tee`
/// as it is written (to unpack it at the same time, with
/// [`UnpackOptions::link_from`] set to `upper`). The tee is best effort:
/// once a write to it fails it is dropped, and the layer is finished all
/// the same; dropping it is how its reader learns the tar ended.
pub fn write_layer_from_upper_teed<P: AsRef<Path>>(
    upper: &Path,
    lowers: &[P],
    out: impl Write + Send,
    tee: impl Write,
    compression: Compression,
    opts: &LayerOptions,
) -> Result<LayerDescriptor, LayerError> {
    let changes = diff_upper(upper, lowers, opts)?;
    write_layer_with(&changes, out, Some(tee), compression, opts)
}

/// The diffID and uncompressed size of the layer `changes` make, without
/// making its blob: the tar is hashed and handed to `tee` as it is
/// written (to unpack it at the same time, as
/// [`write_layer_from_upper_teed`] does), and nothing is compressed. The
/// blob can be made later from the same changes with [`write_layer`],
/// which writes the same tar as long as the files have not changed: the
/// diffID it reports tells.
pub fn diff_id_teed(
    changes: &[Change],
    tee: impl Write,
    opts: &LayerOptions,
) -> Result<(String, u64), LayerError> {
    let hashing = Tee {
        inner: compress::DigestWriter {
            out: io::sink(),
            hasher: Some(Sha256::new()),
            written: 0,
        },
        tee: Some(tee),
    };
    let buffered = BufWriter::with_capacity(256 * 1024, hashing);
    let (buffered, _) = write_tar(changes, buffered, opts)?;
    let Tee { inner, tee } = buffered
        .into_inner()
        .map_err(|e| LayerError::Stream(e.into_error()))?;
    drop(tee);
    let diff_id = inner
        .hasher
        .map(compress::sha256_string)
        .unwrap_or_default();
    Ok((diff_id, inner.written))
}

/// Writes the layer that turns the tree `lower` into the tree `new` to
/// `out` (the copy snapshotter's path). For the same change it produces
/// the same bytes as [`write_layer_from_upper`].
pub fn write_layer_from_trees(
    lower: &Path,
    new: &Path,
    out: impl Write + Send,
    compression: Compression,
    opts: &LayerOptions,
) -> Result<LayerDescriptor, LayerError> {
    let changes = diff_trees(lower, new, opts)?;
    write_layer(&changes, out, compression, opts)
}

/// Writes already computed changes as a compressed layer blob to `out`.
pub fn write_layer(
    changes: &[Change],
    out: impl Write + Send,
    compression: Compression,
    opts: &LayerOptions,
) -> Result<LayerDescriptor, LayerError> {
    write_layer_with(changes, out, None::<io::Sink>, compression, opts)
}

fn write_layer_with(
    changes: &[Change],
    out: impl Write + Send,
    tee: Option<impl Write>,
    compression: Compression,
    opts: &LayerOptions,
) -> Result<LayerDescriptor, LayerError> {
    let threads = opts.effective_threads();
    if threads < 2 {
        return write_layer_into(changes, out, tee, compression, threads, opts, true);
    }
    // With cores to spare the blob is hashed and written out on a thread
    // of its own: hashing the compressed bytes and writing them into the
    // page cache cost about as much as reading, hashing and teeing the
    // tar, and the step's result waits on both.
    let hash_here = compression != Compression::Uncompressed;
    std::thread::scope(|s| {
        let (blob, mut written) = pipe::pipe();
        let writing = std::thread::Builder::new()
            .name("strata-blob-write".into())
            .spawn_scoped(s, move || {
                let mut out = compress::DigestWriter {
                    out,
                    hasher: hash_here.then(Sha256::new),
                    written: 0,
                };
                written.write_to(&mut out)?;
                out.flush()?;
                Ok(out.hasher.map(compress::sha256_string))
            })
            .map_err(LayerError::Stream)?;
        let made = write_layer_into(changes, blob, tee, compression, threads, opts, false);
        let wrote = writing
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread writing the blob panicked")));
        match (made, wrote) {
            (Ok(mut desc), Ok(digest)) => {
                if let Some(digest) = digest {
                    desc.digest = digest;
                }
                Ok(desc)
            }
            (Ok(_), Err(e)) => Err(LayerError::Stream(e)),
            // A failed write ends the pipe, which fails the layer writer
            // with BrokenPipe: the write's own error is the one that
            // explains it. Any other failure of the layer writer came
            // first (the pipe then ended as if complete) and is the cause.
            (Err(LayerError::Stream(p)), Err(e)) if p.kind() == io::ErrorKind::BrokenPipe => {
                Err(LayerError::Stream(e))
            }
            (Err(e), _) => Err(e),
        }
    })
}

fn write_layer_into(
    changes: &[Change],
    out: impl Write,
    tee: Option<impl Write>,
    compression: Compression,
    threads: usize,
    opts: &LayerOptions,
    hash_blob: bool,
) -> Result<LayerDescriptor, LayerError> {
    let writer = Tee {
        inner: LayerWriter::hashing_blob(
            out,
            compression,
            threads,
            hash_blob && compression != Compression::Uncompressed,
        )?,
        tee,
    };
    // Batch the many small header writes before they reach the hashers
    // and the compressor; file contents arrive in 1 MiB chunks and pass
    // straight through.
    let buffered = BufWriter::with_capacity(256 * 1024, writer);
    let (buffered, _) = write_tar(changes, buffered, opts)?;
    let writer = buffered
        .into_inner()
        .map_err(|e| LayerError::Stream(e.into_error()))?;
    let Tee { inner, tee } = writer;
    drop(tee);
    let (desc, _) = inner.finish()?;
    Ok(desc)
}

/// Writes to `inner`, and a copy to `tee` until a write to it fails.
struct Tee<W, T> {
    inner: W,
    tee: Option<T>,
}

impl<W: Write, T: Write> Write for Tee<W, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(t) = &mut self.tee
            && t.write_all(&buf[..n]).is_err()
        {
            self.tee = None;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(t) = &mut self.tee
            && t.flush().is_err()
        {
            self.tee = None;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::pzstd::tests::Full;
    use super::*;

    /// An empty tree and one with 9 MiB of files (three zstd frames).
    fn trees() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (empty, tree) = (dir.path().join("empty"), dir.path().join("tree"));
        std::fs::create_dir(&empty).expect("mkdir");
        std::fs::create_dir(&tree).expect("mkdir");
        let data = pzstd::tests::sample(9 << 20);
        std::fs::write(tree.join("big"), &data).expect("write");
        std::fs::write(tree.join("small"), b"strata").expect("write");
        (dir, empty, tree)
    }

    fn opts(threads: usize) -> LayerOptions {
        LayerOptions {
            threads,
            source_date_epoch: Some(0),
            ..LayerOptions::default()
        }
    }

    #[test]
    fn the_blob_is_the_same_written_on_the_callers_thread_or_its_own() {
        let (_dir, empty, tree) = trees();
        for c in [
            Compression::ZSTD,
            Compression::GZIP,
            Compression::Uncompressed,
        ] {
            let (mut inline, mut behind) = (Vec::new(), Vec::new());
            let a = write_layer_from_trees(&empty, &tree, &mut inline, c, &opts(1)).expect("1");
            let b = write_layer_from_trees(&empty, &tree, &mut behind, c, &opts(3)).expect("3");
            assert_eq!(a, b, "{c:?}");
            assert!(inline == behind, "{c:?}: the bytes differ");
            assert_eq!(a.size, behind.len() as u64);
        }
    }

    #[test]
    fn a_failed_blob_write_is_the_error_reported() {
        let (_dir, empty, tree) = trees();
        for threads in [1, 2] {
            for room in [0, 1000, 5 << 20] {
                let err = write_layer_from_trees(
                    &empty,
                    &tree,
                    Full { room },
                    Compression::ZSTD,
                    &opts(threads),
                )
                .expect_err("the writer is full");
                assert!(
                    err.to_string().contains("disk full"),
                    "{threads} threads, room {room}: {err}"
                );
            }
        }
    }
}

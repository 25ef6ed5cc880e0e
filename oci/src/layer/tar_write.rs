//! Writing layer entries as a tar stream, the way containerd's
//! `archive.ChangeWriter` does.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::LayerOptions;
use super::diff::{Change, ChangeKind};
use super::error::LayerError;
use super::meta::{self, FileKind, FileMeta};
use super::tar_header::{self, BLOCK, HeaderFields};

/// Bytes read from a source file per write into the layer stream.
const COPY_CHUNK: usize = 1 << 20;

/// Writes `changes` (in their order) as an uncompressed layer tar to `out`
/// and returns `out` and the number of bytes written.
///
/// Entries are written like containerd's `ChangeWriter` (PAX format, whole
/// seconds, no atime/ctime, numeric owners with empty user and group
/// names, directories named `dir/`, whiteouts as empty regular files with
/// mode 0 and mtime 0); xattrs kept by [`LayerOptions::xattrs`] become
/// `SCHILY.xattr.*` records. A regular file whose inode was already written
/// becomes a hardlink to the first name it was written under. Modification
/// times later than [`LayerOptions::source_date_epoch`] are clamped to it.
pub fn write_tar<W: Write>(
    changes: &[Change],
    out: W,
    opts: &LayerOptions,
) -> Result<(W, u64), LayerError> {
    let mut w = TarStream::new(out);
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    for change in changes {
        match &change.kind {
            ChangeKind::Whiteout => {
                let name = whiteout_name(&change.path)?;
                w.header(&whiteout_fields(&name), &change.path)?;
            }
            ChangeKind::Opaque => {
                let mut name = path_bytes(&change.path).to_vec();
                name.extend_from_slice(b"/.wh..wh..opq");
                w.header(&whiteout_fields(&name), &change.path)?;
            }
            ChangeKind::Entry { source, meta } => {
                write_entry(
                    &mut w,
                    &change.path,
                    source,
                    meta,
                    &mut links,
                    &mut buf,
                    opts,
                )?;
            }
        }
    }
    w.finish()
}

fn write_entry<W: Write>(
    w: &mut TarStream<W>,
    path: &Path,
    source: &Path,
    meta: &FileMeta,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    buf: &mut [u8],
    opts: &LayerOptions,
) -> Result<(), LayerError> {
    let mut name = path_bytes(path).to_vec();
    let xattrs = meta::read_xattrs(source, opts.xattrs)?;
    let mtime = match opts.source_date_epoch {
        Some(epoch) => meta.mtime.min(epoch),
        None => meta.mtime,
    };
    let mut linkname = Vec::new();
    let mut size = 0;
    let (mut devmajor, mut devminor) = (0, 0);
    let typeflag = match meta.kind {
        FileKind::Regular => {
            let key = (meta.dev, meta.ino);
            match links.get(&key) {
                Some(first) if meta.nlink > 1 => {
                    linkname = first.clone();
                    b'1'
                }
                _ => {
                    if meta.nlink > 1 {
                        links.insert(key, name.clone());
                    }
                    size = meta.size;
                    b'0'
                }
            }
        }
        FileKind::Directory => {
            name.push(b'/');
            b'5'
        }
        FileKind::Symlink => {
            let target =
                fs::read_link(source).map_err(|e| LayerError::io("readlink", source, e))?;
            linkname = target.as_os_str().as_bytes().to_vec();
            b'2'
        }
        FileKind::CharDevice | FileKind::BlockDevice => {
            devmajor = nix::sys::stat::major(meta.rdev);
            devminor = nix::sys::stat::minor(meta.rdev);
            if meta.kind == FileKind::CharDevice {
                b'3'
            } else {
                b'4'
            }
        }
        FileKind::Fifo => b'6',
        // Sockets never reach a layer (the views leave them out).
        FileKind::Socket => return Ok(()),
    };
    let fields = HeaderFields {
        name: &name,
        linkname: &linkname,
        typeflag,
        mode: meta.mode,
        uid: u64::from(meta.uid),
        gid: u64::from(meta.gid),
        size,
        mtime,
        devmajor,
        devminor,
        xattrs: &xattrs,
    };
    w.header(&fields, path)?;
    if size > 0 {
        w.content(source, size, buf)?;
    }
    Ok(())
}

fn whiteout_fields(name: &[u8]) -> HeaderFields<'_> {
    HeaderFields {
        name,
        linkname: b"",
        typeflag: b'0',
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        devmajor: 0,
        devminor: 0,
        xattrs: &[],
    }
}

fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

fn whiteout_name(path: &Path) -> Result<Vec<u8>, LayerError> {
    let base = path
        .file_name()
        .ok_or_else(|| LayerError::Unrepresentable {
            path: path.to_path_buf(),
            reason: "a whiteout needs a file name".into(),
        })?;
    let mut name = Vec::new();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        name.extend_from_slice(path_bytes(parent));
        name.push(b'/');
    }
    name.extend_from_slice(b".wh.");
    name.extend_from_slice(base.as_bytes());
    Ok(name)
}

/// A tar stream: header blocks, content padded to blocks, and the two
/// zero blocks Go's `tar.Writer.Close` ends with.
struct TarStream<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> TarStream<W> {
    fn new(out: W) -> Self {
        TarStream { out, written: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), LayerError> {
        self.out.write_all(bytes).map_err(LayerError::Stream)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> Result<(), LayerError> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn header(&mut self, fields: &HeaderFields<'_>, path: &Path) -> Result<(), LayerError> {
        let enc = tar_header::encode(fields).map_err(|reason| LayerError::Unrepresentable {
            path: path.to_path_buf(),
            reason,
        })?;
        if let Some((xblk, records)) = enc.pax {
            self.put(&xblk)?;
            self.put(&records)?;
            self.pad(records.len() as u64)?;
        }
        self.put(&enc.main)
    }

    /// Copies exactly `size` bytes of `source`, failing if it shrank.
    fn content(&mut self, source: &Path, size: u64, buf: &mut [u8]) -> Result<(), LayerError> {
        let mut file = meta::open_nofollow(source)?;
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = meta::read_full(&mut file, &mut buf[..want])
                .map_err(|e| LayerError::io("read", source, e))?;
            if n == 0 {
                return Err(LayerError::FileChanged {
                    path: PathBuf::from(source),
                    expected: size,
                    actual: size - left,
                });
            }
            self.put(&buf[..n])?;
            left -= n as u64;
        }
        self.pad(size)
    }

    fn finish(mut self) -> Result<(W, u64), LayerError> {
        self.put(&[0u8; 2 * BLOCK])?;
        Ok((self.out, self.written))
    }
}

//! Read-only views of a filesystem made of one plain directory, or of a
//! stack of overlayfs layer directories merged the way overlayfs merges
//! them (char 0:0 whiteouts, opaque directories).
//!
//! Both differs walk two views: the copy snapshotter compares two plain
//! trees; the overlay differ compares "lowers" with "upper over lowers".
//! Because both go through the same walk, the same change gives the same
//! layer whichever snapshotter made it.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::error::LayerError;
use super::meta::{self, FileKind, FileMeta};

/// How a view interprets the directories it is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViewKind {
    /// One ordinary directory tree: a char 0:0 device is just a device.
    Plain,
    /// overlayfs layers, topmost first.
    Overlay {
        /// Reject overlayfs features the differ cannot interpret
        /// (redirects, metacopy) in the topmost layer, the upper dir.
        strict_top: bool,
    },
}

/// A merged directory: the layer directories that contribute entries to
/// it, topmost first, each with the index of its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirStack {
    parts: Vec<(usize, PathBuf)>,
}

impl DirStack {
    /// The directory whose metadata the merged directory shows.
    pub(crate) fn top(&self) -> Option<&Path> {
        self.parts.first().map(|(_, p)| p.as_path())
    }
}

/// One entry of a view.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A directory, possibly merged from several layers.
    Dir { stack: DirStack, meta: FileMeta },
    /// Anything else, found in exactly one layer.
    Leaf { path: PathBuf, meta: FileMeta },
}

impl Node {
    /// The real path whose metadata and content this entry shows.
    pub(crate) fn source(&self) -> &Path {
        match self {
            Node::Dir { stack, .. } => stack.top().unwrap_or(Path::new("")),
            Node::Leaf { path, .. } => path,
        }
    }

    pub(crate) fn meta(&self) -> &FileMeta {
        match self {
            Node::Dir { meta, .. } | Node::Leaf { meta, .. } => meta,
        }
    }
}

/// A view over one plain directory or a stack of overlay layers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    kind: ViewKind,
}

impl View {
    pub(crate) fn new(kind: ViewKind) -> View {
        View { kind }
    }

    /// The root directory of the view over `layers` (topmost first; exactly
    /// one for a plain view, none for an empty filesystem).
    pub(crate) fn root<P: AsRef<Path>>(&self, layers: &[P]) -> DirStack {
        DirStack {
            parts: layers
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.as_ref().to_path_buf()))
                .collect(),
        }
    }

    /// The names in a merged directory, sorted by bytes. Whiteouts and the
    /// names they hide are left out, and so are sockets, which layers do
    /// not carry.
    pub(crate) fn list(&self, dir: &DirStack) -> Result<Vec<OsString>, LayerError> {
        let mut names: Vec<OsString> = Vec::new();
        // Names whited out by an upper layer; they hide the same name below.
        let mut hidden: Vec<OsString> = Vec::new();
        for (_, path) in &dir.parts {
            let rd = fs::read_dir(path).map_err(|e| LayerError::io("read_dir", path, e))?;
            let mut added = Vec::new();
            let mut whiteouts = Vec::new();
            for entry in rd {
                let entry = entry.map_err(|e| LayerError::io("read_dir", path, e))?;
                let ft = entry
                    .file_type()
                    .map_err(|e| LayerError::io("lstat", &entry.path(), e))?;
                let name = entry.file_name();
                if names.binary_search(&name).is_ok() || hidden.binary_search(&name).is_ok() {
                    continue;
                }
                if self.is_overlay() && ft.is_char_device() {
                    let m = entry
                        .metadata()
                        .map_err(|e| LayerError::io("lstat", &entry.path(), e))?;
                    if FileMeta::from_metadata(&m).is_whiteout() {
                        whiteouts.push(name);
                        continue;
                    }
                }
                if ft.is_socket() {
                    // Hides the name below, but is not part of the layer.
                    whiteouts.push(name);
                    continue;
                }
                added.push(name);
            }
            names.extend(added);
            names.sort();
            hidden.extend(whiteouts);
            hidden.sort();
        }
        Ok(names)
    }

    /// The entry `name` in a merged directory, or `None` if it does not
    /// exist (or is whited out).
    pub(crate) fn child(&self, dir: &DirStack, name: &OsStr) -> Result<Option<Node>, LayerError> {
        let mut stack = Vec::new();
        let mut top_meta = None;
        for (layer, parent) in &dir.parts {
            let path = parent.join(name);
            let Some(m) = meta::lstat(&path)? else {
                continue;
            };
            if m.kind == FileKind::Socket || (self.is_overlay() && m.is_whiteout()) {
                // Sockets are not part of layers; whiteouts delete the name.
                // Either way the layers below are hidden.
                break;
            }
            if self.kind == (ViewKind::Overlay { strict_top: true })
                && *layer == 0
                && let Some(xattr) = meta::unsupported_overlay_xattr(&path)?
            {
                return Err(LayerError::UnsupportedOverlay { path, xattr });
            }
            if m.kind != FileKind::Directory {
                if stack.is_empty() {
                    return Ok(Some(Node::Leaf { path, meta: m }));
                }
                // A non-directory below a directory is hidden by it, and
                // hides everything under it.
                break;
            }
            let opaque = self.is_overlay() && is_opaque(&path)?;
            stack.push((*layer, path));
            top_meta.get_or_insert(m);
            if opaque {
                break;
            }
        }
        Ok(top_meta.map(|meta| Node::Dir {
            stack: DirStack { parts: stack },
            meta,
        }))
    }

    /// Resolves a relative path from `root`, component by component.
    pub(crate) fn lookup(&self, root: &DirStack, rel: &Path) -> Result<Option<Node>, LayerError> {
        let comps: Vec<&OsStr> = rel.iter().collect();
        let mut dir = root.clone();
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            match self.child(&dir, comp)? {
                Some(node) if last => return Ok(Some(node)),
                Some(Node::Dir { stack, .. }) => dir = stack,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    fn is_overlay(&self) -> bool {
        matches!(self.kind, ViewKind::Overlay { .. })
    }
}

/// The xattrs overlayfs marks an opaque directory with.
pub(crate) const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Whether an overlay layer directory is opaque (hides the layers below).
pub(crate) fn is_opaque(path: &Path) -> Result<bool, LayerError> {
    for name in OPAQUE_XATTRS {
        match xattr::get(path, name) {
            Ok(Some(v)) if v.as_slice() == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA)) => {}
            Err(e) => return Err(LayerError::io("getxattr", path, e)),
        }
    }
    Ok(false)
}

/// Whether a file name is reserved for whiteouts in OCI layers.
pub(crate) fn is_whiteout_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b".wh.")
}

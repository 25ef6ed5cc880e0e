//! Computing the entries of a layer from an overlay upper dir or from two
//! directory trees.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::LayerError;
use super::meta::{self, FileMeta};
use super::view::{self, DirStack, Node, View, ViewKind};
use super::{LayerOptions, WhiteoutStyle};

/// One entry of a layer, in the order the tar lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The changed path, relative to the layer root (no leading `/` or `./`).
    /// For a whiteout, the deleted path; for an opaque marker, the directory.
    pub path: PathBuf,
    /// What the layer records for it.
    pub kind: ChangeKind,
}

/// What a layer records for a changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// The entry found at `source` (file, directory, symlink, device, fifo)
    /// is written with its metadata and content.
    Entry {
        /// Where to read it from.
        source: PathBuf,
        /// Its `lstat` metadata at diff time.
        meta: FileMeta,
    },
    /// The path was deleted: written as `parent/.wh.name`.
    Whiteout,
    /// Everything the lower layers had in this directory is gone: written
    /// as `path/.wh..wh..opq` (only with [`WhiteoutStyle::OpaqueWhenReplaced`]).
    Opaque,
}

/// The entries of the layer an overlayfs upper dir represents.
///
/// `lowers` are the overlay's lower layer directories, topmost first (the
/// order of the `lowerdir=` mount option); they must be overlay-native
/// layer dirs such as [`super::unpack_to_overlay_layer_dir`] produces. The
/// result is what [`diff_trees`] gives for the lower and merged views: the
/// upper dir only tells the walk which subtrees may have changed.
pub fn diff_upper<P: AsRef<Path>>(
    upper: &Path,
    lowers: &[P],
    opts: &LayerOptions,
) -> Result<Vec<Change>, LayerError> {
    let lower_view = View::new(ViewKind::Overlay { strict_top: false });
    let new_view = View::new(ViewKind::Overlay { strict_top: true });
    let mut new_layers: Vec<&Path> = vec![upper];
    new_layers.extend(lowers.iter().map(|p| p.as_ref()));
    let lower_root = lower_view.root(lowers);
    let new_root = new_view.root(&new_layers);
    Differ::new(lower_view, new_view, opts).run(&lower_root, &new_root)
}

/// The entries of the layer that turns the tree `lower` into the tree
/// `new` (for the copy snapshotter, where `lower` is the merged view of the
/// parent layers and `new` the tree after the step ran).
pub fn diff_trees(
    lower: &Path,
    new: &Path,
    opts: &LayerOptions,
) -> Result<Vec<Change>, LayerError> {
    let view = View::new(ViewKind::Plain);
    let lower_root = view.root(&[lower]);
    let new_root = view.root(&[new]);
    Differ::new(view, view, opts).run(&lower_root, &new_root)
}

/// A directory on the walk's path whose entry is written only if something
/// under it is (containerd's `includeParents`).
struct Frame {
    path: PathBuf,
    source: PathBuf,
    meta: FileMeta,
    emitted: bool,
}

struct Differ<'a> {
    lower: View,
    new: View,
    opts: &'a LayerOptions,
    out: Vec<Change>,
    frames: Vec<Frame>,
}

impl<'a> Differ<'a> {
    fn new(lower: View, new: View, opts: &'a LayerOptions) -> Self {
        Differ {
            lower,
            new,
            opts,
            out: Vec::new(),
            frames: Vec::new(),
        }
    }

    fn run(mut self, lower: &DirStack, new: &DirStack) -> Result<Vec<Change>, LayerError> {
        self.walk_dir(Path::new(""), Some(lower), new)?;
        Ok(self.out)
    }

    /// Writes `change` after every directory above it that is not written yet.
    fn emit(&mut self, change: Change) {
        for frame in self.frames.iter_mut().filter(|f| !f.emitted) {
            frame.emitted = true;
            self.out.push(Change {
                path: frame.path.clone(),
                kind: ChangeKind::Entry {
                    source: frame.source.clone(),
                    meta: frame.meta.clone(),
                },
            });
        }
        self.out.push(change);
    }

    /// Compares the children of a directory. Children are visited in byte
    /// order of their names and depth first, which is the order of
    /// containerd's walkers (paths compared with `/` sorting first).
    fn walk_dir(
        &mut self,
        rel: &Path,
        lower: Option<&DirStack>,
        new: &DirStack,
    ) -> Result<(), LayerError> {
        let new_names = self.new.list(new)?;
        let lower_names = match lower {
            Some(dir) => self.lower.list(dir)?,
            None => Vec::new(),
        };
        let opaque = self.opts.whiteouts == WhiteoutStyle::OpaqueWhenReplaced
            && !lower_names.is_empty()
            && lower_names
                .iter()
                .all(|n| new_names.binary_search(n).is_err());
        if opaque {
            self.emit(Change {
                path: rel.to_path_buf(),
                kind: ChangeKind::Opaque,
            });
        }
        for (name, in_lower, in_new) in merge_sorted(&lower_names, &new_names) {
            let path = rel.join(&name);
            if !in_new {
                if !opaque {
                    self.emit(Change {
                        path,
                        kind: ChangeKind::Whiteout,
                    });
                }
                continue;
            }
            if view::is_whiteout_name(&name) {
                return Err(LayerError::ReservedName { path });
            }
            let Some(new_child) = self.new.child(new, &name)? else {
                return Err(vanished(new, &name));
            };
            let lower_child = match lower {
                Some(dir) if in_lower && !opaque => self.lower.child(dir, &name)?,
                _ => None,
            };
            self.node(path, lower_child, new_child)?;
        }
        Ok(())
    }

    fn node(&mut self, path: PathBuf, lower: Option<Node>, new: Node) -> Result<(), LayerError> {
        if let Some(l) = &lower {
            // The same layer file on both sides: overlayfs did not copy it
            // up, so nothing under it changed.
            if l.source() == new.source() {
                return Ok(());
            }
        }
        let same = match &lower {
            Some(l) if l.meta().kind == new.meta().kind => meta::same_entry(
                l.source(),
                l.meta(),
                new.source(),
                new.meta(),
                self.opts.xattrs,
            )?,
            _ => false,
        };
        match new {
            Node::Dir { stack, meta } => {
                let lower_dir = match lower {
                    Some(Node::Dir { stack, .. }) => Some(stack),
                    _ => None,
                };
                let source = stack_source(&stack, &path)?;
                if !same {
                    self.emit(Change {
                        path: path.clone(),
                        kind: ChangeKind::Entry {
                            source: source.clone(),
                            meta: meta.clone(),
                        },
                    });
                }
                self.frames.push(Frame {
                    path: path.clone(),
                    source,
                    meta,
                    emitted: !same,
                });
                let walked = self.walk_dir(&path, lower_dir.as_ref(), &stack);
                self.frames.pop();
                walked
            }
            Node::Leaf { path: source, meta } => {
                if !same {
                    self.emit(Change {
                        path,
                        kind: ChangeKind::Entry { source, meta },
                    });
                }
                Ok(())
            }
        }
    }
}

fn stack_source(stack: &DirStack, path: &Path) -> Result<PathBuf, LayerError> {
    stack.top().map(Path::to_path_buf).ok_or_else(|| {
        LayerError::io(
            "resolve",
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })
}

fn vanished(dir: &DirStack, name: &OsString) -> LayerError {
    LayerError::io(
        "lstat",
        &dir.top().unwrap_or(Path::new("")).join(name),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "entry disappeared while the layer was diffed",
        ),
    )
}

/// The union of two sorted name lists, with where each name occurs.
fn merge_sorted(a: &[OsString], b: &[OsString]) -> Vec<(OsString, bool, bool)> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                out.push((x.clone(), true, true));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                out.push((x.clone(), true, false));
                i += 1;
            }
            (Some(x), None) => {
                out.push((x.clone(), true, false));
                i += 1;
            }
            (_, Some(y)) => {
                out.push((y.clone(), false, true));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_byte_order_and_sides() {
        let a: Vec<OsString> = ["a", "c", "d"].iter().map(OsString::from).collect();
        let b: Vec<OsString> = ["b", "c", "e"].iter().map(OsString::from).collect();
        let got: Vec<(String, bool, bool)> = merge_sorted(&a, &b)
            .into_iter()
            .map(|(n, x, y)| (n.to_string_lossy().into_owned(), x, y))
            .collect();
        let want = [
            ("a", true, false),
            ("b", false, true),
            ("c", true, true),
            ("d", true, false),
            ("e", false, true),
        ];
        assert_eq!(
            got,
            want.iter()
                .map(|(n, x, y)| (n.to_string(), *x, *y))
                .collect::<Vec<_>>()
        );
    }
}

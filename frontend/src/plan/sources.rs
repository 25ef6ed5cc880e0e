//! Which context files a COPY/ADD source selects, and the digest of that
//! selection (content, mode and owner of every file; never mtime).

use crate::context::{ContextEntry, ContextManifest, EntryKind};
use crate::dockerignore::{PatternMatcher, path_match};
use sha2::{Digest, Sha256};

/// The files one source selects.
pub(crate) struct Selection {
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
}

/// Cleans a source path to a context-relative one ("" = the root).
/// Absolute paths are relative to the context root, as in Docker; a path
/// that climbs out of the context is an error.
pub(crate) fn clean_context_path(src: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "source \"{src}\" is outside the build context: COPY and ADD can only use files inside it"
                    ));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn has_wildcards(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

fn parent_dir(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn base_name(p: &str) -> &str {
    p.rfind('/').map_or(p, |i| &p[i + 1..])
}

/// Follows a symlinked source inside the context (Docker copies what a
/// source link points to). Links leaving the context are errors.
fn follow<'m>(
    manifest: &'m ContextManifest,
    mut entry: &'m ContextEntry,
    src: &str,
) -> Result<&'m ContextEntry, String> {
    for _ in 0..40 {
        if entry.kind != EntryKind::Symlink {
            return Ok(entry);
        }
        let target = entry.link_target.as_deref().unwrap_or_default();
        let joined = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("{}/{target}", parent_dir(&entry.path))
        };
        let resolved = clean_context_path(&joined).map_err(|_| {
            format!("source \"{src}\" is a symlink that points outside the build context")
        })?;
        entry = manifest.get(&resolved).ok_or_else(|| {
            format!(
                "source \"{src}\" is a symlink to \"{target}\", which is not in the build context"
            )
        })?;
    }
    Err(format!(
        "source \"{src}\": too many levels of symbolic links"
    ))
}

fn hash_entry(h: &mut Sha256, rel: &str, e: &ContextEntry) {
    let kind = match e.kind {
        EntryKind::File => "f",
        EntryKind::Dir => "d",
        EntryKind::Symlink => "l",
    };
    let content = e
        .digest
        .as_deref()
        .or(e.link_target.as_deref())
        .unwrap_or_default();
    h.update(
        format!(
            "{rel}\0{kind}\0{:o}\0{}\0{}\0{content}\n",
            e.mode, e.uid, e.gid
        )
        .as_bytes(),
    );
}

/// Selects the context files of one source and digests them.
pub(crate) fn select(
    manifest: &ContextManifest,
    src: &str,
    exclude: &[String],
) -> Result<Selection, String> {
    let path = clean_context_path(src)?;
    let excluder = if exclude.is_empty() {
        None
    } else {
        Some(PatternMatcher::new(exclude).map_err(|e| format!("--exclude: {e}"))?)
    };
    let roots: Vec<&ContextEntry> = if path.is_empty() {
        Vec::new()
    } else if has_wildcards(&path) {
        let mut found = Vec::new();
        for e in &manifest.entries {
            if path_match(&path, &e.path).map_err(|e| format!("source \"{src}\": {e}"))? {
                found.push(e);
            }
        }
        // A wildcard that matches nothing copies nothing; BuildKit allows it.
        found
    } else {
        let e = manifest.get(&path).ok_or_else(|| {
            format!("\"{src}\": not found in the build context (or excluded by .dockerignore)")
        })?;
        vec![e]
    };

    let mut h = Sha256::new();
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut add = |h: &mut Sha256, rel: &str, e: &ContextEntry| {
        if excluder
            .as_ref()
            .is_some_and(|m| m.matches_or_parent_matches(rel))
        {
            return;
        }
        hash_entry(h, rel, e);
        if e.kind != EntryKind::Dir {
            files += 1;
            bytes += e.size;
        }
    };
    if path.is_empty() {
        for e in &manifest.entries {
            add(&mut h, &e.path, e);
        }
    }
    for root in roots {
        let target = follow(manifest, root, src)?;
        if target.kind == EntryKind::Dir {
            let prefix_len = target.path.len() + 1;
            for e in manifest.subtree(&target.path) {
                if e.path == target.path {
                    // The directory's own mode and owner reach the image too.
                    hash_entry(&mut h, ".", e);
                    continue;
                }
                add(&mut h, &e.path[prefix_len..], e);
            }
        } else {
            add(&mut h, base_name(&root.path), target);
        }
    }
    Ok(Selection {
        digest: format!("sha256:{}", hex::encode(h.finalize())),
        files,
        bytes,
    })
}

/// The part of `manifest` a step reading `sources` needs (each source as
/// written in COPY/ADD or a bind mount's `source`, "" or "." for the whole
/// context): every matched entry, the subtree of matched directories, and
/// the directories above them. When a symlink is involved the whole
/// manifest is returned, so link resolution on the worker sees everything
/// it could reach. Workers materialise only this subset.
pub fn context_subset(manifest: &ContextManifest, sources: &[String]) -> ContextManifest {
    let mut keep = std::collections::BTreeSet::new();
    for src in sources {
        let Ok(path) = clean_context_path(src) else {
            continue;
        };
        if path.is_empty() {
            return manifest.clone();
        }
        let roots: Vec<&ContextEntry> = if has_wildcards(&path) {
            manifest
                .entries
                .iter()
                .filter(|e| path_match(&path, &e.path).unwrap_or(false))
                .collect()
        } else {
            manifest.get(&path).into_iter().collect()
        };
        for root in roots {
            for e in manifest.subtree(&root.path) {
                keep.insert(e.path.as_str());
            }
            keep.insert(root.path.as_str());
        }
    }
    let mut out: Vec<ContextEntry> = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for p in &keep {
        let mut rest = *p;
        while let Some((parent, _)) = rest.rsplit_once('/') {
            dirs.insert(parent);
            rest = parent;
        }
    }
    for e in &manifest.entries {
        if keep.contains(e.path.as_str()) || dirs.contains(e.path.as_str()) {
            if e.kind == EntryKind::Symlink {
                return manifest.clone();
            }
            out.push(e.clone());
        }
    }
    ContextManifest::from_entries(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_keeps_paths_inside() {
        assert_eq!(clean_context_path("./a/../b/").unwrap(), "b");
        assert_eq!(clean_context_path("/etc/x").unwrap(), "etc/x");
        assert_eq!(clean_context_path(".").unwrap(), "");
        assert!(
            clean_context_path("../x")
                .unwrap_err()
                .contains("outside the build context")
        );
        assert!(clean_context_path("a/../../x").is_err());
    }

    fn e(path: &str, kind: EntryKind) -> ContextEntry {
        ContextEntry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            digest: None,
            link_target: (kind == EntryKind::Symlink).then(|| "x".into()),
            mtime: None,
            hardlink: None,
        }
    }

    #[test]
    fn subset_keeps_matches_their_subtrees_and_parents() {
        let m = ContextManifest::from_entries(vec![
            e("a", EntryKind::Dir),
            e("a/b", EntryKind::Dir),
            e("a/b/c.txt", EntryKind::File),
            e("a/d.txt", EntryKind::File),
            e("src", EntryKind::Dir),
            e("src/main.rs", EntryKind::File),
            e("z.md", EntryKind::File),
        ]);
        let paths =
            |s: &ContextManifest| s.entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(
            paths(&context_subset(&m, &["a/b/c.txt".into()])),
            ["a", "a/b", "a/b/c.txt"]
        );
        assert_eq!(
            paths(&context_subset(&m, &["src".into()])),
            ["src", "src/main.rs"]
        );
        assert_eq!(paths(&context_subset(&m, &["*.md".into()])), ["z.md"]);
        assert_eq!(context_subset(&m, &[".".into()]), m);
        assert!(context_subset(&m, &["missing".into()]).entries.is_empty());
        let with_link = ContextManifest::from_entries(vec![
            e("l", EntryKind::Symlink),
            e("x", EntryKind::File),
        ]);
        assert_eq!(context_subset(&with_link, &["l".into()]), with_link);
    }
}

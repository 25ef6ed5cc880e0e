//! Resolving paths inside a root: symlinks are followed as if the root were
//! `/` (an absolute link target restarts at the root, `..` stops there),
//! so nothing outside the root is ever reached.

use super::{CopyError, clean_rooted, io, join_inside};
use std::path::{Path, PathBuf};
use strata_frontend::dockerignore::path_match;

const MAX_LINKS: usize = 255;

/// Resolves `rooted` (a `/`-rooted path) inside `root`. Intermediate
/// symlinks are always followed; the last component only when
/// `follow_last`. Missing components are fine: the result is where the path
/// would be.
pub fn resolve_in_root(root: &Path, rooted: &str, follow_last: bool) -> Result<PathBuf, CopyError> {
    let mut pending: Vec<String> = clean_rooted(rooted)
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut current: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            current.pop();
            continue;
        }
        if part == "." {
            continue;
        }
        current.push(part);
        let is_last = pending.is_empty();
        if is_last && !follow_last {
            break;
        }
        let here = join_inside(root, &format!("/{}", current.join("/")));
        let Ok(meta) = std::fs::symlink_metadata(&here) else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(CopyError::SymlinkLoop(rooted.to_string()));
        }
        let target = std::fs::read_link(&here).map_err(|e| io("reading link", rooted, e))?;
        let target = target.to_string_lossy().into_owned();
        current.pop();
        if target.starts_with('/') {
            current.clear();
        }
        for t in target.split('/').rev().filter(|s| !s.is_empty()) {
            pending.push(t.to_string());
        }
    }
    Ok(join_inside(root, &format!("/{}", current.join("/"))))
}

/// Expands a wildcard source pattern against the tree under `root`, one
/// path component at a time (Go `filepath.Match` per component, as fsutil's
/// `ResolveWildcards`). Results are `/`-rooted and sorted.
pub fn resolve_wildcards(root: &Path, pattern: &str) -> Result<Vec<String>, CopyError> {
    let cleaned = clean_rooted(pattern);
    let parts: Vec<&str> = cleaned.split('/').filter(|s| !s.is_empty()).collect();
    let mut found = vec![String::new()];
    for part in parts {
        let mut next = Vec::new();
        for base in &found {
            if !part.contains(['*', '?', '[']) {
                next.push(format!("{base}/{}", unescape(part)));
                continue;
            }
            let dir = resolve_in_root(root, if base.is_empty() { "/" } else { base }, true)?;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let ok = path_match(part, &name).map_err(|e| CopyError::Pattern {
                    pattern: pattern.to_string(),
                    reason: e.to_string(),
                })?;
                if ok {
                    next.push(format!("{base}/{name}"));
                }
            }
        }
        found = next;
    }
    found.retain(|p| {
        resolve_in_root(root, p, false)
            .map(|r| std::fs::symlink_metadata(r).is_ok())
            .unwrap_or(false)
    });
    Ok(found)
}

/// Removes Go-pattern escapes from a component without wildcards.
fn unescape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

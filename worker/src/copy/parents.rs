//! `COPY --parents`: the matched paths keep their directories, as
//! BuildKit's Dockerfile frontend copies them (`convert_copy.go`): a source
//! `base/./pattern` copies the contents of `base` (the source root when
//! there is no `/./` pivot) into the destination, keeping only the paths
//! `pattern` includes and the directories leading to them, which take
//! their source directories' metadata (fsutil's `createParentDirs`).

use super::tree::Copier;
use super::{CopyError, CopyOptions, clean_rooted, has_wildcards, io, source_matches};
use std::path::{Path, PathBuf};
use strata_frontend::dockerignore::{PatternMatcher, path_match};

/// Copies `source` with `--parents` from `src_root` to `dest` in
/// `dst_root`.
pub fn copy_parents(
    src_root: &Path,
    source: &str,
    dst_root: &Path,
    dest: &str,
    opts: &CopyOptions,
) -> Result<(), CopyError> {
    let (base, pattern) = match source.split_once("/./") {
        Some((base, pattern)) => (base, pattern),
        None => ("/", source),
    };
    let pattern = clean_rooted(pattern).trim_start_matches('/').to_string();
    let include = PatternMatcher::new(&[pattern.as_str()]).map_err(|e| CopyError::Pattern {
        pattern: pattern.clone(),
        reason: e.to_string(),
    })?;
    let select = Select {
        include: &include,
        components: pattern.split('/').collect(),
        prunable: !pattern.contains("**"),
    };
    let mut copier = Copier::new(opts);
    let mut found = false;
    for base in source_matches(src_root, base)? {
        let src = super::resolve_in_root(src_root, &base, true)?;
        if !std::fs::metadata(&src).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let mut included = Vec::new();
        select.walk(&src, "", &mut included)?;
        found |= !included.is_empty();
        let dst = copier.ensure_dir(dst_root, dest)?;
        let mut made: Vec<(PathBuf, PathBuf)> = Vec::new();
        for rel in &included {
            // The directories on the way, from the top.
            let mut prefix = PathBuf::new();
            let parts: Vec<&str> = rel.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                prefix.push(part);
                let (s, d) = (src.join(&prefix), dst.join(&prefix));
                if std::fs::symlink_metadata(&d).is_err() {
                    copier.make_dir_like(&s, &d)?;
                    made.push((s, d));
                }
            }
            copier.copy_entry(&src.join(rel), &dst.join(rel), rel)?;
        }
        // Copying into them changed their times: set them again, deepest
        // first.
        for (s, d) in made.iter().rev() {
            copier.make_dir_like(s, d)?;
        }
    }
    // BuildKit requires the path to exist unless wildcards are involved.
    if !found && !has_wildcards(base) && !has_wildcards(&pattern) {
        return Err(CopyError::NotFound(source.to_string()));
    }
    Ok(())
}

/// Which paths under a base the pattern includes.
struct Select<'a> {
    include: &'a PatternMatcher,
    /// The pattern's components, to skip directories nothing can match in.
    components: Vec<&'a str>,
    /// False when `**` can match at any depth.
    prunable: bool,
}

impl Select<'_> {
    /// Whether something under the directory `rel` can match.
    fn may_contain_matches(&self, rel: &str) -> bool {
        if !self.prunable {
            return true;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        parts.len() < self.components.len()
            && parts
                .iter()
                .zip(&self.components)
                .all(|(name, pat)| path_match(pat, name).unwrap_or(false))
    }

    /// Adds to `out`, in name order, the topmost included paths under
    /// `dir` (at `rel`); an included directory is copied whole.
    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), CopyError> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| io("listing", &dir.display().to_string(), e))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = dir.join(&name);
            if self.include.matches_or_parent_matches(&child) {
                out.push(child);
            } else if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
                && self.may_contain_matches(&child)
            {
                self.walk(&path, &child, out)?;
            }
        }
        Ok(())
    }
}

//! COPY and ADD: expansion, sources (context, stage or image), the
//! destination, and Docker's history text.

use super::dispatch::{Planner, Source};
use super::instr::{StageBuild, clean_abs};
use super::{Action, CopyFrom, CopySource, PlanError, StepKind, sources};
use crate::instructions::{Copy, InlineFile, Instruction};
use std::collections::BTreeMap;

/// Joins a path onto the working directory like BuildKit's `NormalizePath`,
/// keeping a trailing slash (it means "into this directory").
pub(crate) fn normalize_dest(workdir: &str, p: &str) -> String {
    let p = if p.is_empty() || p == "." { "./" } else { p };
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", if workdir.is_empty() { "/" } else { workdir })
    };
    let mut clean = clean_abs(&joined);
    if (p.ends_with('/') || p.ends_with("/.")) && clean != "/" {
        clean.push('/');
    }
    clean
}

fn valid_chmod(s: &str) -> Result<(), String> {
    let bad = || {
        format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777")
    };
    if s.chars().all(|c| c.is_ascii_digit()) {
        return match u32::from_str_radix(s, 8) {
            Ok(m) if m <= 0o7777 => Ok(()),
            _ => Err(bad()),
        };
    }
    // Symbolic modes: [ugoa]*[+-=][rwxXst]* clauses separated by commas.
    let ok = s.split(',').all(|clause| {
        let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        !rest.is_empty()
            && rest.split_inclusive(['+', '-', '=']).count() > 0
            && rest.starts_with(['+', '-', '='])
            && rest.chars().all(|c| "+-=rwxXstugo".contains(c))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid chmod parameter: '{s}'"))
    }
}

/// Whether `--chown` names a user or group (BuildKit's `chownByName`):
/// names are looked up in the destination's `/etc/passwd` and `/etc/group`,
/// which a `--link` copy does not see.
fn chown_by_name(chown: &str) -> bool {
    let (user, group) = chown.split_once(':').unwrap_or((chown, ""));
    let name = |s: &str| !s.is_empty() && s != "root" && s.parse::<i32>().is_err();
    name(user) || name(group)
}

impl Planner<'_> {
    /// Plans one COPY or ADD step.
    pub(super) fn dispatch_copy(
        &mut self,
        st: &mut StageBuild,
        c: &Copy,
        ins: &Instruction,
        add: bool,
    ) -> Result<(), PlanError> {
        let line = ins.start_line;
        let name = if add { "ADD" } else { "COPY" };
        let mut used = BTreeMap::new();
        let chown = self.expand_tracking(st, &c.chown, &mut used, line)?;
        let chmod = self.expand_tracking(st, &c.chmod, &mut used, line)?;
        if !chmod.is_empty() {
            valid_chmod(&chmod).map_err(|e| PlanError::at(line, e))?;
        }
        let mut srcs = Vec::with_capacity(c.paths.sources.len());
        for s in &c.paths.sources {
            srcs.push(self.expand_tracking(st, s, &mut used, line)?);
        }
        let dest_raw = self.expand_tracking(st, &c.paths.dest, &mut used, line)?;
        let raw_lexer = crate::shell::Lexer::new('\\').skip_process_quotes(true);
        let mut inline = Vec::new();
        for f in &c.paths.contents {
            let data = if f.expand {
                raw_lexer
                    .process_word(&f.data, &st.env)
                    .map_err(|e| PlanError::at(line, e.to_string()))?
                    .value
            } else {
                f.data.clone()
            };
            inline.push(InlineFile { data, ..f.clone() });
        }
        if c.link && chown_by_name(&chown) {
            return Err(PlanError::at(
                line,
                format!(
                    "--chown={chown}: user and group names can't be resolved when used with --link, use numeric uid[:gid] instead"
                ),
            ));
        }
        let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        if !c.checksum.is_empty() {
            if srcs.len() != 1 {
                return Err(PlanError::at(
                    line,
                    "checksum can't be specified for multiple sources",
                ));
            }
            if !is_url(&srcs[0]) {
                return Err(PlanError::at(
                    line,
                    "checksum requires HTTP(S) or Git sources",
                ));
            }
        }
        let (from, reads, images) = if c.from.is_empty() {
            (CopyFrom::Context, Vec::new(), Vec::new())
        } else {
            match self.resolve_from(&c.from, "--from", st.index, line)? {
                Source::Stage(j) => (CopyFrom::Stage { index: j }, vec![j], Vec::new()),
                Source::Image(r) => {
                    let digest = self.image_digest(&r, &st.platform, "--from", line)?;
                    (
                        CopyFrom::Image {
                            reference: r.to_string(),
                        },
                        Vec::new(),
                        vec![digest],
                    )
                }
            }
        };
        let mut sources = Vec::with_capacity(srcs.len());
        for s in &srcs {
            let url = add && is_url(s);
            if !url && add && (s.starts_with("git@") || s.ends_with(".git") && s.contains("://")) {
                return Err(PlanError::at(
                    line,
                    format!(
                        "ADD {s}: git sources are not supported by strata yet; clone in a RUN step instead"
                    ),
                ));
            }
            let mut source = CopySource {
                path: s.clone(),
                url,
                digest: None,
                files: 0,
                bytes: 0,
            };
            if !url && from == CopyFrom::Context {
                if let Some(manifest) = self.context {
                    let sel = sources::select(manifest, s, &c.exclude)
                        .map_err(|e| PlanError::at(line, format!("{name} failed: {e}")))?;
                    source.digest = Some(sel.digest);
                    source.files = sel.files;
                    source.bytes = sel.bytes;
                } else {
                    sources::clean_context_path(s)
                        .map_err(|e| PlanError::at(line, format!("{name} failed: {e}")))?;
                }
            }
            sources.push(source);
        }
        let workdir = if st.config.working_dir.is_empty() {
            "/"
        } else {
            st.config.working_dir.as_str()
        };
        let dest = normalize_dest(workdir, &dest_raw);
        let mut text = String::from(name);
        if c.parents {
            text.push_str(" --parents");
        }
        if !chown.is_empty() {
            text.push_str(&format!(" --chown={chown}"));
        }
        if !chmod.is_empty() {
            text.push_str(&format!(" --chmod={chmod}"));
        }
        for s in &srcs {
            text.push_str(&format!(" {s}"));
        }
        for f in &inline {
            text.push_str(&format!(" <<{}", f.name));
        }
        text.push_str(&format!(" {dest_raw} # buildkit"));
        // BuildKit links (copies onto scratch and merges) only without
        // --chmod; with it, --link is an ordinary copy.
        let link = c.link && chmod.is_empty();
        let action = Action::Copy {
            add,
            from,
            sources,
            inline,
            dest,
            chown,
            chmod,
            link,
            parents: c.parents,
            exclude: c.exclude.clone(),
            checksum: c.checksum.clone(),
            unpack: c.unpack,
        };
        let kind = if add { StepKind::Add } else { StepKind::Copy };
        self.push_step(st, kind, ins, action, used, reads, images, text)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_paths_resolve_against_workdir() {
        assert_eq!(normalize_dest("/app", "."), "/app/");
        assert_eq!(normalize_dest("/app", "x"), "/app/x");
        assert_eq!(normalize_dest("/app", "x/"), "/app/x/");
        assert_eq!(normalize_dest("/", "/opt/a/../b"), "/opt/b");
        assert_eq!(normalize_dest("/", "/"), "/");
    }

    #[test]
    fn chown_names_are_told_from_ids() {
        assert!(chown_by_name("app") && chown_by_name("1000:staff"));
        assert!(!chown_by_name("1000:1000") && !chown_by_name("root") && !chown_by_name(""));
    }

    #[test]
    fn chmod_values() {
        assert!(valid_chmod("755").is_ok() && valid_chmod("u+x,g-w").is_ok());
        assert!(
            valid_chmod("8888").is_err()
                && valid_chmod("17777").is_err()
                && valid_chmod("abc").is_err()
        );
    }
}

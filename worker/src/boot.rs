//! Whether a directory's contents were written before the machine last
//! went down.
//!
//! The worker never syncs what it derives from verified data: the
//! unpacked layers (from blobs whose diffID is checked as they unpack,
//! or hardlinked from the step that made them) and the materialised
//! build contexts; nor the cache mounts that steps write. Within one boot the page cache keeps them whole
//! whatever happens to the worker process. After the machine went down
//! (a crash, a power cut, a reboot that did not stop the worker first)
//! any file written shortly before may be empty or torn, and nothing
//! would notice: these trees are used as found. So each such directory
//! records the boot it was opened in, and a directory opened in another
//! boot is emptied and made again from the blobs, which are checked
//! against their digests or diffIDs where they are used. The worker
//! cannot tell a clean reboot from a crash, so it does this after any.

use std::path::Path;

/// The file, in a directory kept this way, naming the boot it was last
/// opened in.
const MARKER: &str = ".boot-id";

/// Whether a directory entry's name is this module's record (or its
/// temporary), which a sweep of the directory must leave alone.
pub(crate) fn is_record(name: &str) -> bool {
    name.strip_prefix(MARKER)
        .is_some_and(|rest| rest.is_empty() || rest == ".tmp")
}

/// The kernel's id of the current boot; `None` where the kernel does not
/// say (then nothing is ever dropped).
fn current() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether the record in `dir` names another boot than this one: then
/// what `dir` holds may have been cut short by the machine going down. A
/// directory with no record (new, or from a worker before this check) is
/// taken as whole, an unreadable record as another boot's.
pub(crate) fn opened_in_another_boot(dir: &Path) -> bool {
    let Some(now) = current() else {
        return false;
    };
    match std::fs::read_to_string(dir.join(MARKER)) {
        Ok(before) => before.trim() != now,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Records the current boot in `dir`: call it once what an earlier boot
/// left there is gone, before writing anything new. (Recorded any
/// earlier, a worker that stopped between the two would find the old
/// contents under this boot's name after a restart.) A new record is
/// synced, with its directory, before it is trusted: once per boot.
pub(crate) fn record_boot(dir: &Path) {
    let Some(now) = current() else {
        return;
    };
    let marker = dir.join(MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == now) {
        return;
    }
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, now.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &marker)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot record the boot");
    }
}

/// Empties `dir` but for its record, when the record names another boot,
/// then records this one; true if it was emptied. For directories whose
/// contents are all to go after the machine went down.
pub(crate) fn empty_if_opened_in_another_boot(dir: &Path) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let another = opened_in_another_boot(dir);
    if another {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if is_record(&entry.file_name().to_string_lossy()) {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    record_boot(dir);
    Ok(another)
}

/// Records `boot` as the one `dir` was last opened in (tests).
#[cfg(test)]
pub(crate) fn pretend_opened_in(dir: &Path, boot: &str) {
    std::fs::write(dir.join(MARKER), boot).expect("boot record");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_whole_in_its_own_boot_and_suspect_after_another() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(!opened_in_another_boot(dir.path()), "a new directory");
        record_boot(dir.path());
        assert!(!opened_in_another_boot(dir.path()), "reopened in this boot");
        pretend_opened_in(dir.path(), "an-earlier-boot");
        assert!(
            opened_in_another_boot(dir.path()),
            "reopened after a reboot"
        );
        assert!(
            opened_in_another_boot(dir.path()),
            "still suspect until the boot is recorded"
        );
        record_boot(dir.path());
        assert!(!opened_in_another_boot(dir.path()), "recorded again");
    }

    #[test]
    fn a_directory_from_another_boot_is_emptied_but_for_its_record() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("cache/sub")).expect("mkdir");
        std::fs::write(dir.path().join("cache.digest"), "x").expect("write");
        assert!(!empty_if_opened_in_another_boot(dir.path()).expect("first"));
        assert!(
            dir.path().join("cache/sub").is_dir(),
            "emptied in its own boot"
        );
        pretend_opened_in(dir.path(), "an-earlier-boot");
        assert!(empty_if_opened_in_another_boot(dir.path()).expect("after a reboot"));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, [MARKER], "only the record stays");
        assert!(!opened_in_another_boot(dir.path()));
    }
}

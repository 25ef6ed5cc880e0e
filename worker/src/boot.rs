//! Whether a directory's contents were written before the machine last
//! went down.
//!
//! The worker never syncs what it derives from verified data: the
//! unpacked layers (from blobs whose diffID is checked as they unpack,
//! or hardlinked from the step that made them) and the materialised
//! build contexts. Within one boot the page cache keeps them whole
//! whatever happens to the worker process. After the machine went down
//! (a crash, a power cut, a reboot that did not stop the worker first)
//! any file written shortly before may be empty or torn, and nothing
//! would notice: these trees are used as found. So each such directory
//! records the boot it was opened in, and a directory opened in another
//! boot is emptied and made again from the blobs, which are checked
//! against their digests wherever they are used.

use std::path::Path;

/// The file, in a directory kept this way, naming the boot it was last
/// opened in.
const MARKER: &str = ".boot-id";

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
/// contents under this boot's name after a restart.) No sync is needed:
/// a record that was lost names an older boot, which only empties the
/// directory once more.
pub(crate) fn record_boot(dir: &Path) {
    let Some(now) = current() else {
        return;
    };
    let (marker, tmp) = (dir.join(MARKER), dir.join(format!("{MARKER}.tmp")));
    if let Err(e) = std::fs::write(&tmp, &now).and_then(|()| std::fs::rename(&tmp, &marker)) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot record the boot");
    }
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
}

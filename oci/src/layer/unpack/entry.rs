//! Reading entry names and metadata from tar headers and PAX records.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;

use crate::layer::error::LayerError;
use crate::layer::meta::is_overlay_private;
use crate::layer::tar_header::PAX_XATTR;

/// Entry metadata from the tar header and PAX records.
pub(super) struct EntryMeta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: TimeSpec,
    pub(super) xattrs: Vec<(OsString, Vec<u8>)>,
}

pub(super) fn rel_path(parent: &[OsString], name: &OsStr) -> PathBuf {
    let mut p: PathBuf = parent.iter().collect();
    p.push(name);
    p
}

/// Splits a tar name into components, rejecting absolute names and `..`.
pub(super) fn normalize(raw: &[u8], entry: &str, what: &str) -> Result<Vec<OsString>, LayerError> {
    if raw.first() == Some(&b'/') {
        return Err(LayerError::unsafe_entry(entry, format!("absolute {what}")));
    }
    let mut comps = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(LayerError::unsafe_entry(
                    entry,
                    format!("{what} contains a `..` component"),
                ));
            }
            c => comps.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(comps)
}

pub(super) fn entry_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    entry_name: &str,
) -> Result<EntryMeta, LayerError> {
    let header = entry.header();
    let bad = |what: &str| LayerError::unsafe_entry(entry_name, format!("invalid {what} field"));
    let mode =
        numeric(header.mode().map(u64::from), &header.as_old().mode).map_err(|_| bad("mode"))?;
    let mode = u32::try_from(mode).map_err(|_| bad("mode"))? & 0o7777;
    let uid = numeric(header.uid(), &header.as_old().uid).map_err(|_| bad("uid"))?;
    let uid = u32::try_from(uid).map_err(|_| bad("uid"))?;
    let gid = numeric(header.gid(), &header.as_old().gid).map_err(|_| bad("gid"))?;
    let gid = u32::try_from(gid).map_err(|_| bad("gid"))?;
    let mut secs = i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(i64::MAX);
    let mut nanos = 0;
    let mut xattrs = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| LayerError::unpack(entry_name, "read PAX records", e))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| LayerError::unpack(entry_name, "read PAX records", e))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                (secs, nanos) =
                    parse_pax_time(ext.value_bytes()).ok_or_else(|| bad("PAX mtime"))?;
            } else if let Some(name) = key.strip_prefix(PAX_XATTR.as_bytes()) {
                if is_overlay_private(name) {
                    tracing::warn!(entry = entry_name, xattr = %String::from_utf8_lossy(name), "ignoring overlayfs-private xattr in layer");
                    continue;
                }
                xattrs.push((
                    OsString::from_vec(name.to_vec()),
                    ext.value_bytes().to_vec(),
                ));
            }
        }
    }
    Ok(EntryMeta {
        mode,
        uid,
        gid,
        mtime: TimeSpec::new(secs, nanos),
        xattrs,
    })
}

/// A numeric header field; like Go's reader, an all-NUL or blank field is 0.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(e),
    }
}

/// Parses a PAX time, `[-]secs[.fraction]`.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    // One sign only, as Go's ParseInt; `--9223372036854775808` would
    // otherwise overflow the negation below.
    if neg && whole.starts_with(['-', '+']) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    if !neg {
        return Some((secs, nanos));
    }
    if nanos == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nanos))
    }
}

/// Xattrs a filesystem cannot store are skipped with a warning (as
/// containerd does); other failures fail the entry.
pub(super) fn set_xattr_result(
    r: io::Result<()>,
    name: &OsStr,
    entry: &str,
) -> Result<(), LayerError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(Errno::ENOTSUP as i32) => {
            tracing::warn!(entry, xattr = %name.to_string_lossy(), "filesystem does not support this xattr; skipped");
            Ok(())
        }
        Err(e) => Err(LayerError::unpack(entry, "setxattr", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_escapes_rejected() {
        let ok = normalize(b"./usr//bin/./ls", "e", "path").unwrap();
        assert_eq!(ok, ["usr", "bin", "ls"].map(OsString::from));
        assert!(normalize(b"/etc/passwd", "e", "path").is_err());
        assert!(normalize(b"a/../../x", "e", "path").is_err());
        assert!(normalize(b"./", "e", "path").unwrap().is_empty());
    }

    #[test]
    fn pax_times_parse_like_go() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_pax_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"+1"), Some((1, 0)));
        // Used to overflow (a panic in debug builds).
        assert_eq!(parse_pax_time(b"--9223372036854775808"), None);
        assert_eq!(parse_pax_time(b"-+1.5"), None);
        assert_eq!(
            parse_pax_time(b"-9223372036854775807.5"),
            Some((i64::MIN, 500_000_000))
        );
    }
}

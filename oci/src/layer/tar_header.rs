//! Tar header blocks byte-identical to Go's `archive/tar` writer, which
//! BuildKit and containerd use to write layers.
//!
//! The `tar` crate's encoders differ from Go in small but digest-changing
//! ways (checksum field layout, PAX header names and fields), so the
//! blocks are laid out here following `archive/tar`'s `Writer.WriteHeader`:
//! USTAR whenever USTAR can represent the entry (splitting long names into
//! the prefix field), otherwise a PAX extended header (records sorted by
//! key) named `dir/PaxHeaders.0/file` followed by a USTAR-magic main header
//! whose fields are truncated best-effort copies.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

/// The size of a tar block.
pub(crate) const BLOCK: usize = 512;

/// Go's `archive/tar` key prefix for extended attributes.
pub(crate) const PAX_XATTR: &str = "SCHILY.xattr.";

/// The fields of one entry's header, as Go's `tar.Header` would hold them
/// after containerd filled it in.
#[derive(Debug)]
pub(crate) struct HeaderFields<'a> {
    pub name: &'a [u8],
    pub linkname: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub devmajor: u64,
    pub devminor: u64,
    pub xattrs: &'a [(OsString, Vec<u8>)],
}

/// The blocks that introduce one entry.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// A PAX extended header block and its (unpadded) records.
    pub pax: Option<([u8; BLOCK], Vec<u8>)>,
    /// The entry's own header block.
    pub main: [u8; BLOCK],
}

// Field offsets of the USTAR header.
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 108);
const UID: (usize, usize) = (108, 116);
const GID: (usize, usize) = (116, 124);
const SIZE: (usize, usize) = (124, 136);
const MTIME: (usize, usize) = (136, 148);
const CHKSUM: (usize, usize) = (148, 156);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 257);
const MAGIC: (usize, usize) = (257, 263);
const VERSION: (usize, usize) = (263, 265);
const UNAME: (usize, usize) = (265, 297);
const GNAME: (usize, usize) = (297, 329);
const DEVMAJOR: (usize, usize) = (329, 337);
const DEVMINOR: (usize, usize) = (337, 345);
const PREFIX: (usize, usize) = (345, 500);

fn field(blk: &mut [u8; BLOCK], f: (usize, usize)) -> &mut [u8] {
    &mut blk[f.0..f.1]
}

/// Encodes one entry the way Go's `tar.Writer.WriteHeader` does for a
/// header with `Format: tar.FormatPAX` and whole-second times (containerd's
/// `ChangeWriter`). Errors name what Go would refuse to encode.
pub(crate) fn encode(h: &HeaderFields<'_>) -> Result<Encoded, String> {
    let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut ustar_ok = true;

    if !is_ascii(h.name) || h.name.len() > NAME.1 - NAME.0 {
        pax.insert(b"path".to_vec(), h.name.to_vec());
        if split_ustar_path(h.name).is_none() {
            ustar_ok = false;
        }
    }
    if !is_ascii(h.linkname) || h.linkname.len() > LINKNAME.1 - LINKNAME.0 {
        pax.insert(b"linkpath".to_vec(), h.linkname.to_vec());
        ustar_ok = false;
    }
    for (key, value, width) in [("uid", h.uid, 8), ("gid", h.gid, 8), ("size", h.size, 12)] {
        let value = i64::try_from(value).map_err(|_| format!("{key} {value} is too large"))?;
        if !fits_in_octal(width, value) {
            ustar_ok = false;
            pax.insert(key.as_bytes().to_vec(), value.to_string().into_bytes());
        }
    }
    for (what, value) in [("major", h.devmajor), ("minor", h.devminor)] {
        if !i64::try_from(value).is_ok_and(|v| fits_in_octal(8, v)) {
            return Err(format!(
                "device {what} number {value} does not fit in a tar header"
            ));
        }
    }
    if !fits_in_octal(12, h.mtime) {
        ustar_ok = false;
        pax.insert(b"mtime".to_vec(), h.mtime.to_string().into_bytes());
    }
    if !h.xattrs.is_empty() {
        ustar_ok = false;
        for (name, value) in h.xattrs {
            let name = name.as_bytes();
            if name.is_empty() || name.contains(&b'=') || name.contains(&0) {
                return Err(format!(
                    "xattr name {:?} cannot be stored in a PAX record",
                    String::from_utf8_lossy(name)
                ));
            }
            let mut key = PAX_XATTR.as_bytes().to_vec();
            key.extend_from_slice(name);
            pax.insert(key, value.clone());
        }
    }

    if ustar_ok {
        let (prefix, name) = split_ustar_path(h.name).unwrap_or((&[], h.name));
        let mut blk = template(h, name, h.linkname);
        format_string(field(&mut blk, PREFIX), prefix);
        set_format(&mut blk);
        return Ok(Encoded {
            pax: None,
            main: blk,
        });
    }

    let mut records = Vec::new();
    for (k, v) in &pax {
        records.extend_from_slice(&pax_record(k, v));
    }
    let mut xblk = [0u8; BLOCK];
    xblk[TYPEFLAG] = b'x';
    let mut xname = to_ascii(&pax_header_name(h.name));
    xname.truncate(NAME.1 - NAME.0);
    while xname.last() == Some(&b'/') {
        xname.pop();
    }
    format_string(field(&mut xblk, NAME), &xname);
    format_octal(field(&mut xblk, MODE), 0);
    format_octal(field(&mut xblk, UID), 0);
    format_octal(field(&mut xblk, GID), 0);
    let len = i64::try_from(records.len()).map_err(|_| "PAX records too large".to_string())?;
    format_octal(field(&mut xblk, SIZE), len);
    format_octal(field(&mut xblk, MTIME), 0);
    set_format(&mut xblk);

    let mut blk = template(h, &to_ascii(h.name), &to_ascii(h.linkname));
    set_format(&mut blk);
    Ok(Encoded {
        pax: Some((xblk, records)),
        main: blk,
    })
}

/// Go's `templateV7Plus`: the fields shared by USTAR and PAX main headers.
fn template(h: &HeaderFields<'_>, name: &[u8], linkname: &[u8]) -> [u8; BLOCK] {
    let mut blk = [0u8; BLOCK];
    blk[TYPEFLAG] = h.typeflag;
    format_string(field(&mut blk, NAME), name);
    format_string(field(&mut blk, LINKNAME), linkname);
    format_octal(field(&mut blk, MODE), i64::from(h.mode));
    format_octal(field(&mut blk, UID), i64::try_from(h.uid).unwrap_or(-1));
    format_octal(field(&mut blk, GID), i64::try_from(h.gid).unwrap_or(-1));
    format_octal(field(&mut blk, SIZE), i64::try_from(h.size).unwrap_or(-1));
    format_octal(field(&mut blk, MTIME), h.mtime);
    format_string(field(&mut blk, UNAME), b"");
    format_string(field(&mut blk, GNAME), b"");
    format_octal(
        field(&mut blk, DEVMAJOR),
        i64::try_from(h.devmajor).unwrap_or(-1),
    );
    format_octal(
        field(&mut blk, DEVMINOR),
        i64::try_from(h.devminor).unwrap_or(-1),
    );
    blk
}

/// Sets the USTAR magic and the checksum (six octal digits, NUL, space).
fn set_format(blk: &mut [u8; BLOCK]) {
    field(blk, MAGIC).copy_from_slice(b"ustar\0");
    field(blk, VERSION).copy_from_slice(b"00");
    let sum: u32 = blk
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (CHKSUM.0..CHKSUM.1).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    format_octal(&mut blk[CHKSUM.0..CHKSUM.1 - 1], i64::from(sum));
    blk[CHKSUM.1 - 1] = b' ';
}

/// Go's `formatter.formatString`.
fn format_string(b: &mut [u8], s: &[u8]) {
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s[..n]);
    if s.len() < b.len() {
        b[s.len()] = 0;
    }
    // Go avoids a trailing slash in a truncated name field.
    if s.len() > b.len() && b[b.len() - 1] == b'/' {
        let mut t = b.len() - 1;
        while t > 0 && s[t - 1] == b'/' {
            t -= 1;
        }
        b[t] = 0;
    }
}

/// Go's `formatter.formatOctal`: zero-padded octal, NUL-terminated; zero
/// when the value does not fit.
fn format_octal(b: &mut [u8], x: i64) {
    let x = if fits_in_octal(b.len(), x) { x } else { 0 };
    let digits = format!("{x:o}");
    let pad = b.len().saturating_sub(digits.len() + 1);
    let mut s = vec![b'0'; pad];
    s.extend_from_slice(digits.as_bytes());
    format_string(b, &s);
}

fn fits_in_octal(width: usize, x: i64) -> bool {
    let bits = (width - 1) * 3;
    x >= 0 && (width >= 22 || x < 1i64 << bits)
}

/// Go's `isASCII`: 7-bit and no NUL.
fn is_ascii(s: &[u8]) -> bool {
    s.iter().all(|&c| c < 0x80 && c != 0)
}

/// Go's `toASCII`. Bytes below 0x80 are never part of a multi-byte UTF-8
/// sequence, so filtering bytes equals Go's filtering of runes.
fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&c| c < 0x80 && c != 0).collect()
}

/// Go's `splitUSTARPath`.
fn split_ustar_path(name: &[u8]) -> Option<(&[u8], &[u8])> {
    const NAME_SIZE: usize = 100;
    const PREFIX_SIZE: usize = 155;
    let mut length = name.len();
    if length <= NAME_SIZE || !is_ascii(name) {
        return None;
    } else if length > PREFIX_SIZE + 1 {
        length = PREFIX_SIZE + 1;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&c| c == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > NAME_SIZE || nlen == 0 || i > PREFIX_SIZE {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

/// Go's `path.Join(dir, "PaxHeaders.0", file)` for `dir, file := path.Split(name)`.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let (dir, file) = match name.iter().rposition(|&c| c == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&name[..0], name),
    };
    let mut dir = dir;
    while dir.last() == Some(&b'/') {
        dir = &dir[..dir.len() - 1];
    }
    let mut out = Vec::with_capacity(name.len() + 14);
    if !dir.is_empty() {
        out.extend_from_slice(dir);
        out.push(b'/');
    }
    out.extend_from_slice(b"PaxHeaders.0");
    if !file.is_empty() {
        out.push(b'/');
        out.extend_from_slice(file);
    }
    out
}

/// Go's `formatPAXRecord`: `"<len> <key>=<value>\n"`, the length counting itself.
fn pax_record(k: &[u8], v: &[u8]) -> Vec<u8> {
    let body = k.len() + v.len() + 3;
    let mut size = body + body.to_string().len();
    if size.to_string().len() + body != size {
        size = size.to_string().len() + body;
    }
    let mut rec = format!("{size} ").into_bytes();
    rec.extend_from_slice(k);
    rec.push(b'=');
    rec.extend_from_slice(v);
    rec.push(b'\n');
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(name: &'a [u8], xattrs: &'a [(OsString, Vec<u8>)]) -> HeaderFields<'a> {
        HeaderFields {
            name,
            linkname: b"",
            typeflag: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 5,
            mtime: 1_700_000_000,
            devmajor: 0,
            devminor: 0,
            xattrs,
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        // 99 bytes of body plus a 3-digit length: the length grows the record.
        let v = vec![b'x'; 90];
        let rec = pax_record(b"path", &v);
        let len: usize = String::from_utf8_lossy(rec.split(|&c| c == b' ').next().unwrap())
            .parse()
            .unwrap();
        assert_eq!(len, rec.len());
    }

    #[test]
    fn checksum_and_numbers_are_laid_out_like_go() {
        let enc = encode(&fields(b"etc/hosts", &[])).unwrap();
        assert!(enc.pax.is_none());
        let b = enc.main;
        assert_eq!(&b[100..108], b"0000644\0");
        assert_eq!(&b[124..136], b"00000000005\0");
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert_eq!(&b[329..345], b"0000000\x000000000\0");
        assert_eq!(b[154], 0);
        assert_eq!(b[155], b' ');
        let header = tar::Header::from_byte_slice(&b);
        assert_eq!(header.cksum().unwrap(), {
            let mut copy = b;
            copy[148..156].fill(b' ');
            copy.iter().map(|&c| u32::from(c)).sum::<u32>()
        });
    }

    #[test]
    fn long_names_split_into_prefix_when_ustar_allows() {
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let enc = encode(&fields(name.as_bytes(), &[])).unwrap();
        assert!(enc.pax.is_none());
        assert_eq!(&enc.main[345..465], "d".repeat(120).as_bytes());
        assert_eq!(&enc.main[0..51], format!("{}\0", "f".repeat(50)).as_bytes());
    }

    #[test]
    fn xattrs_force_pax_with_go_header_name() {
        let xattrs = [(OsString::from("security.capability"), vec![1, 0, 0, 2])];
        let enc = encode(&fields(b"usr/bin/ping", &xattrs)).unwrap();
        let (xblk, records) = enc.pax.unwrap();
        assert_eq!(&xblk[0..26], b"usr/bin/PaxHeaders.0/ping\0");
        assert_eq!(xblk[156], b'x');
        assert_eq!(
            records,
            b"41 SCHILY.xattr.security.capability=\x01\x00\x00\x02\n"
        );
        assert_eq!(pax_header_name(b"usr/"), b"usr/PaxHeaders.0");
        assert_eq!(pax_header_name(b"top"), b"PaxHeaders.0/top");
    }

    #[test]
    fn non_ascii_names_go_to_pax_and_are_stripped_in_the_main_header() {
        let enc = encode(&fields("caf\u{e9}/men\u{fc}".as_bytes(), &[])).unwrap();
        let (_, records) = enc.pax.unwrap();
        assert_eq!(records, "20 path=caf\u{e9}/men\u{fc}\n".as_bytes());
        assert_eq!(&enc.main[0..9], b"caf/men\0\0");
    }
}

//! `USER` resolution through the rootfs's `/etc/passwd` and `/etc/group`,
//! with the exact rules of BuildKit's `GetUser` and moby/sys/user's
//! `GetExecUser` (first match wins, supplementary groups only in the
//! implicit `name` form, numeric fallbacks).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::rootpath::root_path;

/// BuildKit refuses passwd and group files above 10 MiB.
const MAX_USER_FILE_BYTES: u64 = 10 << 20;

/// The identity a step runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary group first (containerd's
    /// `ensureAdditionalGids`, which BuildKit applies).
    pub additional_gids: Vec<u32>,
    /// What runc puts in `HOME` when the step's env has none: the home of
    /// the first passwd entry with this uid, else `/`.
    pub home: String,
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: i64,
    gid: i64,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: i64,
    members: Vec<String>,
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`) in
/// `rootfs`. Errors carry BuildKit's messages.
pub(crate) fn resolve(rootfs: &Path, user: &str) -> Result<ResolvedUser, String> {
    let passwd = read_user_file(rootfs, "/etc/passwd")?;
    let group = read_user_file(rootfs, "/etc/group")?;
    resolve_with(user, passwd.as_deref(), group.as_deref())
}

/// The owner a file operation gives what it creates for `spec` (COPY/ADD
/// `--chown`, WORKDIR's directory as USER), with BuildKit's file-op rules
/// (`llb.WithUser`, then `readUser`), which differ from [`resolve`]'s: a
/// numeric user without a group is also the group (`1000` is `1000:1000`),
/// a name takes its passwd entry's uid and primary gid, a group part
/// replaces the gid, and a name without an entry (or without the file)
/// leaves root's id in place rather than failing.
pub(crate) fn resolve_chown(rootfs: &Path, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    let id = |s: &str| {
        if s == "root" {
            Some(0)
        } else {
            s.parse::<u32>().ok().filter(|v| *v <= i32::MAX as u32)
        }
    };
    let (mut uid, mut gid) = (0, 0);
    match id(user) {
        Some(n) => (uid, gid) = (n, n),
        None => {
            let passwd = read_user_file(rootfs, "/etc/passwd")?;
            let entries = passwd.as_deref().map(parse_passwd).unwrap_or_default();
            if let Some(u) = entries.iter().find(|u| u.name == user) {
                (uid, gid) = (u.uid as u32, u.gid as u32);
            }
        }
    }
    if let Some(group) = group {
        match id(group) {
            Some(n) => gid = n,
            None => {
                let text = read_user_file(rootfs, "/etc/group")?;
                let groups = text.as_deref().map(parse_group).unwrap_or_default();
                if let Some(g) = groups.iter().find(|g| g.name == group) {
                    gid = g.gid as u32;
                }
            }
        }
    }
    Ok((uid, gid))
}

/// [`resolve`] on file contents; `None` is a missing file.
fn resolve_with(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, String> {
    let passwd_entries = passwd.map(parse_passwd).unwrap_or_default();
    let (uid, gid, sgids) = get_user(user, &passwd_entries, group)?;
    let mut additional_gids = sgids;
    if !additional_gids.contains(&gid) {
        additional_gids.insert(0, gid);
    }
    let home = passwd_entries
        .iter()
        .find(|u| u.uid == i64::from(uid))
        .map_or_else(|| "/".to_owned(), |u| u.home.clone());
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// BuildKit's `GetUser`.
fn get_user(
    user: &str,
    passwd: &[PasswdEntry],
    group: Option<&str>,
) -> Result<(u32, u32, Vec<u32>), String> {
    let (spec, is_default) = if user.is_empty() {
        ("0", true)
    } else {
        (user, false)
    };
    if let Some((uid, gid)) = parse_uid_gid(spec) {
        return Ok((uid, gid, Vec::new()));
    }
    match get_exec_user(spec, passwd, group) {
        Ok(found) => Ok(found),
        Err(_) if is_default => Ok((0, 0, Vec::new())),
        Err(e) => Err(e),
    }
}

/// BuildKit's fast path: both parts numeric (or `root`), no file lookup.
fn parse_uid_gid(spec: &str) -> Option<(u32, u32)> {
    let (u, g) = spec.split_once(':')?;
    let id = |s: &str| {
        if s == "root" {
            Some(0)
        } else {
            s.parse::<u32>().ok()
        }
    };
    Some((id(u)?, id(g)?))
}

/// moby/sys/user's `parseNumeric`: `Ok(None)` for a name, an error for a
/// number outside 0..=2^31-1.
fn parse_numeric(val: &str) -> Result<Option<i64>, String> {
    if val.is_empty() {
        return Ok(None);
    }
    match val.parse::<i64>() {
        Ok(id) if (0..=i64::from(i32::MAX)).contains(&id) => Ok(Some(id)),
        Ok(_) => Err("user/group IDs must be >= 0 and <= 2147483647".into()),
        Err(e) => match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                Err("user/group IDs must be >= 0 and <= 2147483647".into())
            }
            _ => Ok(None),
        },
    }
}

/// moby/sys/user's `GetExecUser` with root (0:0) as the defaults.
fn get_exec_user(
    spec: &str,
    passwd: &[PasswdEntry],
    group: Option<&str>,
) -> Result<(u32, u32, Vec<u32>), String> {
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or_default();
    let group_arg = parts.next().unwrap_or_default();
    let uid_arg = parse_numeric(user_arg)?;
    let gid_arg = parse_numeric(group_arg)?;

    let (mut uid, mut gid, mut sgids) = (0i64, 0i64, Vec::new());
    let matched = passwd.iter().find(|u| match (user_arg, uid_arg) {
        ("", _) => u.uid == 0,
        (_, Some(id)) => u.uid == id,
        (name, None) => u.name == name,
    });
    let mut matched_name = "";
    if let Some(u) = matched {
        matched_name = &u.name;
        uid = u.uid;
        gid = u.gid;
    } else if !user_arg.is_empty() {
        match uid_arg {
            Some(id) => uid = id,
            None => {
                return Err(format!(
                    "unable to find user {user_arg}: no matching entries in passwd file"
                ));
            }
        }
    }

    if !group_arg.is_empty() || !matched_name.is_empty() {
        let groups = group.map(parse_group).unwrap_or_default();
        let matching: Vec<&GroupEntry> = groups
            .iter()
            .filter(|g| match (group_arg, gid_arg) {
                ("", _) => g.members.iter().any(|m| m == matched_name),
                (_, Some(id)) => g.gid == id,
                (name, None) => g.name == name,
            })
            .collect();
        if !group_arg.is_empty() {
            match (matching.first(), gid_arg) {
                (Some(g), _) => gid = g.gid,
                (None, Some(id)) => gid = id,
                (None, None) => {
                    return Err(format!(
                        "unable to find group {group_arg}: no matching entries in group file"
                    ));
                }
            }
        } else {
            sgids = matching.iter().map(|g| g.gid).collect();
        }
    }
    // Go converts with uint32(int): negative ids from a broken file wrap.
    let to_u32 = |v: i64| v as u32;
    Ok((
        to_u32(uid),
        to_u32(gid),
        sgids.into_iter().map(to_u32).collect(),
    ))
}

fn read_user_file(rootfs: &Path, path: &str) -> Result<Option<String>, String> {
    let Ok(host) = root_path(rootfs, path) else {
        return Ok(None);
    };
    let Ok(file) = fs::File::open(&host) else {
        return Ok(None);
    };
    let is_regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !is_regular {
        return Ok(None);
    }
    let mut buf = Vec::new();
    file.take(MAX_USER_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e: io::Error| format!("failed to read {path}: {e}"))?;
    if buf.len() as u64 > MAX_USER_FILE_BYTES {
        return Err(format!("{path:?} exceeds {MAX_USER_FILE_BYTES} bytes"));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// `strconv.Atoi` with the error ignored, as moby/sys/user parses ids.
fn atoi(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

/// `name:password:UID:GID:GECOS:directory:shell`; blank lines skipped,
/// missing fields left empty. Unlike group files, `#` is not a comment.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let field = |i: usize| f.get(i).copied().unwrap_or_default();
            PasswdEntry {
                name: field(0).into(),
                uid: atoi(field(2)),
                gid: atoi(field(3)),
                home: field(5).into(),
            }
        })
        .collect()
}

/// `group_name:password:GID:user_list`; blank lines and `#` comments
/// skipped.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let field = |i: usize| f.get(i).copied().unwrap_or_default();
            let list = field(3);
            GroupEntry {
                name: field(0).into(),
                gid: atoi(field(2)),
                members: if list.is_empty() {
                    Vec::new()
                } else {
                    list.split(',').map(str::to_owned).collect()
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          app:x:1000:1000::/home/app:/bin/sh\n\
                          nobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:root\nbin:x:1:root,daemon\napp:x:1000:\n\
                         # comment\nextra:x:2000:app,other\n";

    fn r(user: &str) -> Result<ResolvedUser, String> {
        resolve_with(user, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_resolve_with_supplementary_groups() {
        let app = r("app").unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, vec![1000, 2000]);
        assert_eq!(app.home, "/home/app");
    }

    #[test]
    fn default_user_is_root_with_its_listed_groups() {
        let root = r("").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.additional_gids, vec![0, 1]);
        assert_eq!(root.home, "/root");
        let bare = resolve_with("", None, None).unwrap();
        assert_eq!(
            (bare.uid, bare.additional_gids, bare.home),
            (0, vec![0], "/".into())
        );
    }

    #[test]
    fn numeric_forms_fall_back_without_entries() {
        let u = r("1234").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1234, 0, "/"));
        let u = r("1000:2000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        assert_eq!(
            u.additional_gids,
            vec![2000],
            "fast path: no supplementary groups"
        );
        let u = r("1000").unwrap();
        assert_eq!(u.additional_gids, vec![1000, 2000]);
    }

    #[test]
    fn explicit_groups_replace_the_primary_and_drop_supplementary() {
        let u = r("app:extra").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 2000));
        assert_eq!(u.additional_gids, vec![2000]);
        let u = r("app:3000").unwrap();
        assert_eq!(u.gid, 3000);
        let u = r("root:root").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
    }

    #[test]
    fn file_operations_resolve_owners_like_buildkits_read_user() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        std::fs::write(
            root.path().join("etc/passwd"),
            format!("{PASSWD}odd:x:1005:1002::/:/bin/sh\n"),
        )
        .expect("write");
        std::fs::write(root.path().join("etc/group"), GROUP).expect("write");
        let c = |spec: &str| resolve_chown(root.path(), spec).expect(spec);
        assert_eq!(c("1005"), (1005, 1005), "a bare uid is also the gid");
        assert_eq!(c("odd"), (1005, 1002), "a name takes its primary group");
        assert_eq!(c("odd:extra"), (1005, 2000));
        assert_eq!(c("1005:7"), (1005, 7));
        assert_eq!(c(":extra"), (0, 2000));
        assert_eq!(c("app:"), (1000, 1000));
        assert_eq!(c("root:root"), (0, 0));
        assert_eq!(c("ghost:ghosts"), (0, 0), "unknown names leave root's ids");
        let bare = tempfile::tempdir().expect("tempdir");
        assert_eq!(resolve_chown(bare.path(), "app"), Ok((0, 0)));
    }

    #[test]
    fn unknown_names_use_buildkits_messages() {
        assert_eq!(
            r("ghost").unwrap_err(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            r("app:ghosts").unwrap_err(),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert!(resolve_with("app", None, None).is_err());
        assert!(r("99999999999").is_err());
    }
}

//! `--add-host HOST:IP`: extra `/etc/hosts` entries for the RUN steps of a
//! build, as `docker build --add-host`. Checked where the flag is read
//! (the client) and again where a request is accepted (the scheduler).

use std::net::IpAddr;

/// One extra hosts entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraHost {
    /// The name it resolves.
    pub host: String,
    /// Its address.
    pub ip: IpAddr,
}

impl ExtraHost {
    /// Parses `HOST:IP` or `HOST=IP` (IPv6 addresses after the first
    /// separator, bare or in brackets: `db:::1`, `db=[::1]`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--add-host {raw:?}: {why}");
        let Some((host, ip)) = raw.split_once([':', '=']) else {
            return Err(bad("expected HOST:IP"));
        };
        if host.is_empty()
            || host.len() > 253
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(bad(
                "the host name must be letters, digits, '-', '.' and '_'",
            ));
        }
        if ip == "host-gateway" {
            return Err(bad(
                "host-gateway is a Docker daemon's address, which a build farm does not have; give the IP address",
            ));
        }
        let bare = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        let ip = bare
            .parse()
            .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?;
        Ok(Self {
            host: host.to_string(),
            ip,
        })
    }

    /// `HOST:IP`, as the scheduler hands it to workers.
    pub fn wire(&self) -> String {
        format!("{}:{}", self.host, self.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_as_docker_reads_them() {
        let h = |s: &str| ExtraHost::parse(s).map(|h| h.wire());
        assert_eq!(
            h("mirror.test:10.1.2.3").as_deref(),
            Ok("mirror.test:10.1.2.3")
        );
        assert_eq!(
            h("mirror.test=10.1.2.3").as_deref(),
            Ok("mirror.test:10.1.2.3")
        );
        assert_eq!(h("db:::1").as_deref(), Ok("db:::1"));
        assert_eq!(h("db=[2001:db8::1]").as_deref(), Ok("db:2001:db8::1"));
        for (raw, why) in [
            ("mirror.test", "expected HOST:IP"),
            (":10.1.2.3", "host name"),
            ("a b:10.1.2.3", "host name"),
            ("x:10.1.2", "not an IP address"),
            ("x:host-gateway", "host-gateway"),
        ] {
            let e = h(raw).expect_err(raw);
            assert!(e.contains(why) && e.contains(raw), "{raw}: {e}");
        }
    }
}

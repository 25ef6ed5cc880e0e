//! The `/etc/hosts` and `/etc/resolv.conf` a step sees, generated like
//! BuildKit's `executor/oci/hosts.go` and `resolvconf.go`.
//!
//! BuildKit bind-mounts no `/etc/hostname`: the hostname is only set in the
//! step's UTS namespace, and a step may write `/etc/hostname` into its layer.
//! strata does the same.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use super::Network;

/// The host file BuildKit reads.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where systemd-resolved keeps the real upstream servers.
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// Used when no usable nameserver is left (Docker's and BuildKit's choice).
const DEFAULT_NAMESERVERS: [&str; 4] = [
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
];

/// `/etc/hosts`: localhost, the hostname, then the extra hosts in order.
/// `extra_hosts` are `(hostname, ip)`; the ip must parse.
pub(crate) fn hosts_file(
    hostname: &str,
    extra_hosts: &[(String, String)],
) -> Result<String, String> {
    let mut out =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (host, ip) in extra_hosts {
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("invalid IP address {ip:?} for extra host {host:?}"))?;
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(format!("invalid extra host name {host:?}"));
        }
        out.push_str(&format!("{addr}\t{host}\n"));
    }
    Ok(out)
}

/// `/etc/resolv.conf` from the host's, read now.
pub(crate) fn resolv_conf_from_host(network: Network) -> String {
    let read = |p: &str| fs::read_to_string(p).ok();
    let mut source = read(HOST_RESOLV_CONF);
    // With a network namespace of its own the step cannot reach
    // systemd-resolved's 127.0.0.53; its upstream servers are elsewhere.
    if network == Network::None
        && source
            .as_deref()
            .is_some_and(|s| ResolvConf::parse(s).nameservers == ["127.0.0.53"])
        && Path::new(SYSTEMD_RESOLV_CONF).exists()
    {
        source = read(SYSTEMD_RESOLV_CONF);
    }
    resolv_conf(source.as_deref().unwrap_or_default(), network)
}

/// `/etc/resolv.conf` from `host` (the host file's text). With host
/// networking it is the host's (a local resolver is reachable); otherwise
/// loopback nameservers are dropped. Docker's public defaults replace an
/// empty list.
pub(crate) fn resolv_conf(host: &str, network: Network) -> String {
    let mut rc = ResolvConf::parse(host);
    if network != Network::Host || rc.nameservers.is_empty() {
        rc.nameservers.retain(|ns| !is_loopback(ns));
        if rc.nameservers.is_empty() {
            rc.nameservers = DEFAULT_NAMESERVERS.iter().map(|s| s.to_string()).collect();
        }
    }
    rc.generate()
}

fn is_loopback(ns: &str) -> bool {
    let addr = ns.split('%').next().unwrap_or(ns);
    addr.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// moby's resolvconf parser: recognised directives are normalised, other
/// lines kept verbatim, comments dropped.
#[derive(Debug, Default)]
struct ResolvConf {
    nameservers: Vec<String>,
    search: Vec<String>,
    options: Vec<String>,
    other: Vec<String>,
}

impl ResolvConf {
    fn parse(text: &str) -> Self {
        let mut rc = Self::default();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some((&directive, args)) = fields.split_first() else {
                continue;
            };
            match directive {
                "nameserver" => {
                    // Invalid addresses are dropped, as moby does.
                    if let Some(addr) = args.first()
                        && addr
                            .split('%')
                            .next()
                            .unwrap_or(addr)
                            .parse::<IpAddr>()
                            .is_ok()
                    {
                        rc.nameservers.push((*addr).to_owned());
                    }
                }
                // `domain` is an obsolete `search`; only the last one counts.
                "domain" | "search" if !args.is_empty() => {
                    rc.search = args.iter().map(|s| s.to_string()).collect();
                }
                "domain" | "search" => {}
                "options" => rc.options.extend(args.iter().map(|s| s.to_string())),
                _ => rc.other.push(line.to_owned()),
            }
        }
        rc
    }

    fn generate(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        for line in &self.other {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_localhost_hostname_and_extra_hosts() {
        let hosts = hosts_file(
            "buildkitsandbox",
            &[("mirror.local".into(), "10.0.0.7".into())],
        )
        .unwrap();
        assert_eq!(
            hosts,
            "127.0.0.1\tlocalhost buildkitsandbox\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.0.0.7\tmirror.local\n"
        );
        assert!(hosts_file("h", &[("x".into(), "not-an-ip".into())]).is_err());
    }

    #[test]
    fn host_network_keeps_a_local_resolver() {
        let host = "# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch a b\n";
        assert_eq!(
            resolv_conf(host, Network::Host),
            "nameserver 127.0.0.53\nsearch a b\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn isolated_network_drops_loopback_nameservers() {
        let host = "nameserver 127.0.0.1\nnameserver 10.1.2.3\nnameserver ::1\n";
        assert_eq!(resolv_conf(host, Network::None), "nameserver 10.1.2.3\n");
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", Network::None),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n\
             nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n"
        );
        assert!(resolv_conf("", Network::Host).starts_with("nameserver 8.8.8.8\n"));
    }
}

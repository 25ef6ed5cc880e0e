//! The image configuration a stage builds up, and the metadata-only changes
//! instructions make to it (the OCI/Docker image config fields).

use crate::instructions::{Healthcheck, format_go_duration};
use crate::parser::go_quote;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default `PATH` BuildKit gives a Linux image that has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's HEALTHCHECK config as stored in the image (durations in ns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Interval in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Timeout in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Start period in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Start interval in nanoseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Retries before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl From<&Healthcheck> for HealthConfig {
    fn from(h: &Healthcheck) -> Self {
        Self {
            test: h.test.clone(),
            interval: h.interval,
            timeout: h.timeout,
            start_period: h.start_period,
            start_interval: h.start_interval,
            retries: h.retries,
        }
    }
}

impl HealthConfig {
    /// Go's `%+v` of the struct, as BuildKit writes into history.
    pub fn go_repr(&self) -> String {
        format!(
            "{{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
            self.test.join(" "),
            format_go_duration(self.interval),
            format_go_duration(self.timeout),
            format_go_duration(self.start_period),
            format_go_duration(self.start_interval),
            self.retries
        )
    }
}

/// The runtime part of an image config (OCI `config` object, Docker
/// extensions included), as far as a Dockerfile can change it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `EXPOSE`d ports (`80/tcp`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// `ENV` as `K=V`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `LABEL`s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Set by CMD/ENTRYPOINT (Docker's Windows-era flag, kept for parity).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

impl ImageConfig {
    /// The value of `key` in `Env`.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.iter().find_map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key` in `Env`, replacing in place (BuildKit's `addEnv`).
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }

    /// The shell for shell-form commands: `SHELL` or `/bin/sh -c`.
    pub fn shell_or_default(&self) -> Vec<String> {
        if self.shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            self.shell.clone()
        }
    }

    /// Applies one metadata change.
    pub fn apply(&mut self, change: &ConfigChange) {
        match change {
            ConfigChange::Env(kvs) => {
                for (k, v) in kvs {
                    self.env_set(k, v);
                }
            }
            ConfigChange::Label(kvs) => {
                for (k, v) in kvs {
                    self.labels.insert(k.clone(), v.clone());
                }
            }
            ConfigChange::Cmd(args) => {
                self.cmd = Some(args.clone());
                self.args_escaped = true;
            }
            ConfigChange::Entrypoint { args, reset_cmd } => {
                self.entrypoint = Some(args.clone());
                if *reset_cmd {
                    self.cmd = None;
                }
            }
            ConfigChange::Expose(ports) => {
                for p in ports {
                    self.exposed_ports.insert(p.clone(), serde_json::Map::new());
                }
            }
            ConfigChange::Volume(vols) => {
                for v in vols {
                    self.volumes.insert(v.clone(), serde_json::Map::new());
                }
            }
            ConfigChange::User(u) => self.user = u.clone(),
            ConfigChange::Workdir(w) => self.working_dir = w.clone(),
            ConfigChange::StopSignal(s) => self.stop_signal = s.clone(),
            ConfigChange::Healthcheck(h) => self.healthcheck = Some(h.clone()),
            ConfigChange::Shell(s) => self.shell = s.clone(),
            ConfigChange::OnBuild(t) => self.on_build.push(t.clone()),
            ConfigChange::ClearOnBuild => self.on_build.clear(),
            ConfigChange::Maintainer(_) | ConfigChange::None => {}
        }
    }
}

/// A metadata-only change to the image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum ConfigChange {
    /// Set environment variables.
    Env(Vec<(String, String)>),
    /// Set labels.
    Label(Vec<(String, String)>),
    /// Set the default command.
    Cmd(Vec<String>),
    /// Set the entrypoint; `reset_cmd` when no CMD was set in this stage.
    Entrypoint {
        /// The entrypoint argv.
        args: Vec<String>,
        /// Clear an inherited CMD.
        reset_cmd: bool,
    },
    /// Add exposed ports.
    Expose(Vec<String>),
    /// Add volumes.
    Volume(Vec<String>),
    /// Set the user.
    User(String),
    /// Set the working directory.
    Workdir(String),
    /// Set the stop signal.
    StopSignal(String),
    /// Set the healthcheck.
    Healthcheck(HealthConfig),
    /// Set the shell.
    Shell(Vec<String>),
    /// Add an ONBUILD trigger.
    OnBuild(String),
    /// Drop inherited ONBUILD triggers (they do not carry to a child stage).
    ClearOnBuild,
    /// Set the image author (the `author` field, outside `config`).
    Maintainer(String),
    /// History only (ARG).
    None,
}

/// Go's `%v` of a string slice: `[a b]`.
pub(crate) fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub(crate) fn go_quoted_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", q.join(" "))
}

/// Expands an EXPOSE spec into `port/proto` entries (ranges expanded).
pub(crate) fn parse_ports(raw: &str) -> Result<Vec<String>, String> {
    let invalid = || format!("invalid port: \"{raw}\"");
    // [ip:][hostPort:]containerPort[/proto]; only the container part matters.
    let container = raw.rsplit(':').next().unwrap_or(raw);
    let (port, proto) = match container.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (container, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid());
    }
    let parse = |p: &str| p.parse::<u16>().ok().filter(|_| !p.is_empty());
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (parse(a).ok_or_else(invalid)?, parse(b).ok_or_else(invalid)?),
        None => {
            let p = parse(port).ok_or_else(invalid)?;
            (p, p)
        }
    };
    if end < start || u32::from(end) - u32::from(start) > 65_535 {
        return Err(invalid());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_expand_like_docker() {
        assert_eq!(parse_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_ports("8000-8002").unwrap().len(), 3);
        assert!(parse_ports("http").is_err());
        assert!(parse_ports("80/xyz").is_err());
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = ImageConfig::default();
        c.env_set("A", "1");
        c.env_set("B", "2");
        c.env_set("A", "3");
        assert_eq!(c.env, vec!["A=3", "B=2"]);
        assert_eq!(c.env_get("A"), Some("3"));
    }

    #[test]
    fn healthcheck_history_matches_go() {
        let h = HealthConfig {
            test: vec!["CMD-SHELL".into(), "curl -f http://localhost/".into()],
            interval: 30_000_000_000,
            timeout: 3_000_000_000,
            retries: 3,
            ..Default::default()
        };
        assert_eq!(
            h.go_repr(),
            "{Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:3s StartPeriod:0s StartInterval:0s Retries:3}"
        );
    }
}

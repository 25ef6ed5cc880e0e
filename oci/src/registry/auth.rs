//! Credentials from a docker-style `config.json`: `auths.<host>.auth`
//! (base64 `user:password`), `username`/`password`, or `registrytoken`.
//! Credential helpers (`credsStore`, `credHelpers`) are not run: a registry
//! whose credentials live only in a helper gets a clear error.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::error::RegistryError;
use super::reference::{DOCKER_HUB, DOCKER_HUB_API_HOST};

/// How to authenticate to one registry. The bearer-token exchange
/// (`WWW-Authenticate` challenge, token endpoint) happens inside the client
/// with these credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryCredentials {
    /// No credentials: anonymous pulls, anonymous bearer tokens.
    Anonymous,
    /// A user name and password (HTTP basic, or exchanged for a token).
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// A ready bearer token (`registrytoken` in `config.json`).
    Bearer(String),
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl RegistryCredentials {
    pub(crate) fn to_oci(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Self::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    auths: HashMap<String, RawAuth>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// A loaded docker-style `config.json`.
#[derive(Debug)]
pub struct DockerConfig {
    path: PathBuf,
    /// Keyed by bare host (`https://index.docker.io/v1/` becomes
    /// `index.docker.io`), as Docker's `ConvertToHostname` does.
    auths: HashMap<String, RawAuth>,
    creds_store: Option<String>,
    cred_helpers: HashMap<String, String>,
}

impl DockerConfig {
    /// Where Docker looks: `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json`. `None` when neither variable is set.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
    }

    /// Reads and parses `path`. This is a small synchronous read, done once
    /// when a client is built.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let bad = |reason: String| RegistryError::CredentialsFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        Self::parse(path, &bytes).map_err(bad)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let auths = raw
            .auths
            .into_iter()
            .map(|(k, v)| (bare_host(&k), v))
            .collect();
        let cred_helpers = raw
            .cred_helpers
            .into_iter()
            .map(|(k, v)| (bare_host(&k), v))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            auths,
            creds_store: raw.creds_store.filter(|s| !s.is_empty()),
            cred_helpers,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials for `registry` (a registry as named in references:
    /// `docker.io`, `127.0.0.1:5000`). Docker Hub's are also found under
    /// `https://index.docker.io/v1/` and `registry-1.docker.io`.
    pub fn credentials_for(&self, registry: &str) -> Result<RegistryCredentials, RegistryError> {
        let candidates: Vec<&str> = if registry == DOCKER_HUB || registry == DOCKER_HUB_API_HOST {
            vec!["index.docker.io", DOCKER_HUB, DOCKER_HUB_API_HOST]
        } else {
            vec![registry]
        };
        let helper_error = |helper: &str| RegistryError::CredentialHelperUnsupported {
            registry: registry.to_string(),
            helper: helper.to_string(),
            path: self.path.clone(),
        };
        if let Some(helper) = candidates.iter().find_map(|c| self.cred_helpers.get(*c)) {
            return Err(helper_error(helper));
        }
        let Some(entry) = candidates.iter().find_map(|c| self.auths.get(*c)) else {
            // No entry at all: Docker would ask the credential store, which
            // answers "not found" for registries it has never logged in to,
            // so anonymous access is what Docker would do too.
            return Ok(RegistryCredentials::Anonymous);
        };
        let bad = |reason: String| RegistryError::CredentialsFile {
            path: self.path.clone(),
            reason: format!("auths entry for {registry}: {reason}"),
        };
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("`auth` is not base64: {e}")))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| bad("`auth` does not decode to UTF-8".to_string()))?;
            let (username, password) = text
                .split_once(':')
                .ok_or_else(|| bad("`auth` must decode to user:password".to_string()))?;
            return Ok(RegistryCredentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if let (Some(username), Some(password)) = (&entry.username, &entry.password)
            && !username.is_empty()
        {
            return Ok(RegistryCredentials::Basic {
                username: username.clone(),
                password: password.clone(),
            });
        }
        if let Some(token) = entry.registrytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(RegistryCredentials::Bearer(token.to_string()));
        }
        if entry
            .identitytoken
            .as_deref()
            .is_some_and(|t| !t.is_empty())
        {
            return Err(bad(
                "`identitytoken` (an OAuth refresh token) is not supported; log in with a \
                 user name and password or access token instead"
                    .to_string(),
            ));
        }
        match &self.creds_store {
            // An empty entry next to a credential store is where `docker
            // login` leaves its mark: the secret is in the store.
            Some(store) => Err(helper_error(store)),
            None => Ok(RegistryCredentials::Anonymous),
        }
    }
}

/// Docker's `ConvertToHostname`: drop the scheme and any path.
fn bare_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        DockerConfig::parse(Path::new("/x/config.json"), json.as_bytes()).unwrap()
    }

    fn basic(u: &str, p: &str) -> RegistryCredentials {
        RegistryCredentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn reads_auth_and_username_password() {
        // "alice:s3cr:et" — the password may contain ':'.
        let c = config(
            r#"{"auths": {
                "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcjpldA=="},
                "https://ghcr.io": {"username": "bob", "password": "pw"},
                "https://index.docker.io/v1/": {"auth": "dTpw"},
                "tok.example": {"registrytoken": "T"}
            }}"#,
        );
        assert_eq!(
            c.credentials_for("127.0.0.1:5000").unwrap(),
            basic("alice", "s3cr:et")
        );
        assert_eq!(c.credentials_for("ghcr.io").unwrap(), basic("bob", "pw"));
        assert_eq!(c.credentials_for("docker.io").unwrap(), basic("u", "p"));
        assert_eq!(
            c.credentials_for("tok.example").unwrap(),
            RegistryCredentials::Bearer("T".into())
        );
        assert_eq!(
            c.credentials_for("quay.io").unwrap(),
            RegistryCredentials::Anonymous
        );
    }

    #[test]
    fn helpers_are_reported_not_ignored() {
        let c = config(
            r#"{"auths": {"a.example": {}}, "credsStore": "desktop",
                "credHelpers": {"123.dkr.ecr.example": "ecr-login"}}"#,
        );
        let e = c.credentials_for("123.dkr.ecr.example").unwrap_err();
        assert!(e.to_string().contains("ecr-login"), "{e}");
        let e = c.credentials_for("a.example").unwrap_err();
        assert!(e.to_string().contains("desktop"), "{e}");
        assert_eq!(
            c.credentials_for("b.example").unwrap(),
            RegistryCredentials::Anonymous
        );
    }

    #[test]
    fn bad_entries_name_the_file() {
        let c = config(r#"{"auths": {"a.example": {"auth": "!!!"}}}"#);
        let e = c.credentials_for("a.example").unwrap_err().to_string();
        assert!(e.contains("/x/config.json") && e.contains("base64"), "{e}");
        assert!(DockerConfig::parse(Path::new("/x"), b"{").is_err());
        let dbg = format!("{:?}", basic("u", "secret"));
        assert!(!dbg.contains("secret"));
    }
}

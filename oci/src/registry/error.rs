//! The registry module's errors. Each message says what failed, for which
//! reference or digest, and whether retrying may help;
//! [`RegistryError::is_retryable`] says the same to code.

use std::path::PathBuf;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The image reference does not parse.
    #[error(
        "invalid image reference {reference:?}: {reason} (fix the reference; retrying will not help)"
    )]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A platform string does not parse.
    #[error("invalid platform {platform:?}: {reason} (retrying will not help)")]
    InvalidPlatform {
        /// The platform as given.
        platform: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The docker-style `config.json` could not be read or parsed.
    #[error("cannot read registry credentials from {}: {reason} (fix or remove the file; retrying will not help)", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The credentials for a registry live in a credential helper, which
    /// strata does not run.
    #[error("the credentials for {registry} are kept by the docker credential helper {helper:?}, which strata does not support; put `auth` (base64 of user:password) or `username`/`password` for {registry} under `auths` in {} (retrying will not help)", path.display())]
    CredentialHelperUnsupported {
        /// The registry host.
        registry: String,
        /// The helper's name (`desktop`, `ecr-login`, ...).
        helper: String,
        /// The config file that names the helper.
        path: PathBuf,
    },

    /// The registry wants credentials we do not have, or refused the ones we
    /// sent (HTTP 401, or a failed token exchange).
    #[error(
        "unauthorized: {registry} refused access to {reference} while {action}: {detail} (check the credentials for {registry} in the docker config.json; retrying will not help)"
    )]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The image.
        reference: String,
        /// What we were doing.
        action: String,
        /// The registry's words.
        detail: String,
    },

    /// The credentials were accepted but do not allow the operation
    /// (HTTP 403 / `DENIED`).
    #[error(
        "access denied: {registry} does not allow {action} for {reference}: {detail} (the account lacks the permission; retrying will not help)"
    )]
    Denied {
        /// The registry host.
        registry: String,
        /// The image.
        reference: String,
        /// What we were doing.
        action: String,
        /// The registry's words.
        detail: String,
    },

    /// The manifest, blob or repository does not exist.
    #[error(
        "not found: {reference} on {registry} while {action}: {detail} (check the name, tag and digest; retrying will not help)"
    )]
    NotFound {
        /// The registry host.
        registry: String,
        /// The image.
        reference: String,
        /// What we were doing.
        action: String,
        /// The registry's words.
        detail: String,
    },

    /// Any other 4xx answer: the registry refused the request as made.
    #[error("{registry} rejected {action} for {reference} (client error{}): {detail} (retrying will not help)", status.map(|s| format!(" {s}")).unwrap_or_default())]
    Rejected {
        /// The registry host.
        registry: String,
        /// The image.
        reference: String,
        /// What we were doing.
        action: String,
        /// The HTTP status, when known.
        status: Option<u16>,
        /// The registry's words.
        detail: String,
    },

    /// A 5xx, 408 or 429 answer: the registry is failing or throttling.
    #[error(
        "{registry} failed while {action} for {reference} (server error {status}): {detail} (transient: retrying later may help)"
    )]
    Server {
        /// The registry host.
        registry: String,
        /// The image.
        reference: String,
        /// What we were doing.
        action: String,
        /// The HTTP status.
        status: u16,
        /// The registry's words.
        detail: String,
    },

    /// The connection failed, timed out or broke mid-transfer.
    #[error(
        "network error talking to {registry} while {action} for {reference}: {detail} (transient: retrying may help)"
    )]
    Network {
        /// The registry host.
        registry: String,
        /// The image.
        reference: String,
        /// What we were doing.
        action: String,
        /// The error chain, flattened.
        detail: String,
    },

    /// Content did not hash to the digest that names it.
    #[error(
        "digest mismatch for {what} of {reference}: expected {expected}, got {actual} (the content was corrupted in transit or the registry serves bad data; one retry may help, a repeat means the registry is broken)"
    )]
    DigestMismatch {
        /// The image.
        reference: String,
        /// Which content (`manifest`, `config sha256:...`, `blob sha256:...`).
        what: String,
        /// The digest the content should have.
        expected: String,
        /// The digest the content has.
        actual: String,
    },

    /// Content had another length than its descriptor says.
    #[error(
        "size mismatch for {what} of {reference}: the descriptor says {expected} bytes, the registry sent {actual} (the descriptor or the registry is wrong; retrying will not help)"
    )]
    SizeMismatch {
        /// The image.
        reference: String,
        /// Which content.
        what: String,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes received (or "at least" this many when cut short).
        actual: u64,
    },

    /// A manifest or config is over the size strata holds in memory.
    #[error(
        "{what} of {reference} is {size} bytes, over the {limit}-byte limit for documents held in memory (retrying will not help)"
    )]
    TooLarge {
        /// The image.
        reference: String,
        /// Which document.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The index has no manifest for the wanted platform.
    #[error(
        "{reference} has no image for platform {platform}; its index offers: {available} (choose one of those platforms; retrying will not help)"
    )]
    PlatformNotFound {
        /// The image.
        reference: String,
        /// The wanted platform.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },

    /// The manifest is of a kind strata does not handle (schema 1,
    /// artifacts, nested indexes).
    #[error("unsupported manifest for {reference}: {reason} (retrying will not help)")]
    UnsupportedManifest {
        /// The image.
        reference: String,
        /// Why.
        reason: String,
    },

    /// A manifest, index or config is not valid JSON of its kind.
    #[error(
        "invalid {what} for {reference}: {reason} (the document is malformed; retrying will not help)"
    )]
    InvalidDocument {
        /// The image.
        reference: String,
        /// Which document.
        what: String,
        /// The parse error.
        reason: String,
    },

    /// The registry answered in a way the distribution spec does not allow.
    #[error(
        "{registry} broke the distribution protocol while {action} for {reference}: {detail} (retrying will not help)"
    )]
    Protocol {
        /// The registry host.
        registry: String,
        /// The image.
        reference: String,
        /// What we were doing.
        action: String,
        /// What was wrong.
        detail: String,
    },

    /// What the caller asked to push is inconsistent.
    #[error("cannot push {reference}: {reason} (fix the push request; retrying will not help)")]
    InvalidPush {
        /// The target image.
        reference: String,
        /// What is wrong.
        reason: String,
    },

    /// A local file could not be read or written.
    #[error("local I/O error on {} while {action}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What we were doing.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Whether the same call may succeed if made again: network failures,
    /// server errors and throttling, and a digest mismatch (corruption in
    /// transit). Everything else needs a change first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Network { .. } | Self::Server { .. } | Self::DigestMismatch { .. }
        )
    }
}

/// Where an `oci-client` error happened, to name it in ours.
pub(crate) struct Context {
    pub registry: String,
    pub reference: String,
    pub action: String,
    /// Whether the call went without credentials, to tell "none
    /// configured" from "refused" in an unauthorized error.
    pub anonymous: bool,
}

impl Context {
    /// Maps an `oci-client` error onto ours, sorting network failures, 4xx,
    /// 5xx and digest mismatches apart.
    pub(crate) fn map(&self, err: OciDistributionError) -> RegistryError {
        match self.map_inner(err) {
            RegistryError::Unauthorized {
                registry,
                reference,
                action,
                detail,
            } => {
                let why = if self.anonymous {
                    "no credentials were sent: the docker config.json has none for this registry"
                } else {
                    "the credentials from the docker config.json were refused"
                };
                RegistryError::Unauthorized {
                    registry,
                    reference,
                    action,
                    detail: format!("{detail}; {why}"),
                }
            }
            other => other,
        }
    }

    fn map_inner(&self, err: OciDistributionError) -> RegistryError {
        let registry = self.registry.clone();
        let reference = self.reference.clone();
        let action = self.action.clone();
        match err {
            OciDistributionError::AuthenticationFailure(detail) => RegistryError::Unauthorized {
                registry,
                reference,
                action,
                detail: format!("token request failed: {}", detail.trim()),
            },
            OciDistributionError::UnauthorizedError { url } => RegistryError::Unauthorized {
                registry,
                reference,
                action,
                detail: format!("HTTP 401 for {url}"),
            },
            OciDistributionError::RegistryError { envelope, url } => {
                let detail = format!("{envelope} ({url})");
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let has = |c: OciErrorCode| codes.contains(&&c);
                if has(OciErrorCode::Unauthorized) {
                    RegistryError::Unauthorized {
                        registry,
                        reference,
                        action,
                        detail,
                    }
                } else if has(OciErrorCode::Denied) {
                    RegistryError::Denied {
                        registry,
                        reference,
                        action,
                        detail,
                    }
                } else if has(OciErrorCode::Toomanyrequests) {
                    RegistryError::Server {
                        registry,
                        reference,
                        action,
                        status: 429,
                        detail,
                    }
                } else if has(OciErrorCode::ManifestUnknown)
                    || has(OciErrorCode::BlobUnknown)
                    || has(OciErrorCode::NameUnknown)
                    || has(OciErrorCode::NotFound)
                {
                    RegistryError::NotFound {
                        registry,
                        reference,
                        action,
                        detail,
                    }
                } else {
                    RegistryError::Rejected {
                        registry,
                        reference,
                        action,
                        status: None,
                        detail,
                    }
                }
            }
            OciDistributionError::ServerError { code, url, message } => {
                self.by_status(code, format!("{} ({url})", message.trim()))
            }
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => RegistryError::DigestMismatch {
                reference,
                what: "manifest".to_string(),
                expected,
                actual,
            },
            OciDistributionError::RequestError(e) if e.is_builder() => RegistryError::Protocol {
                registry,
                reference,
                action,
                detail: error_chain(&e),
            },
            OciDistributionError::RequestError(e) => match e.status() {
                Some(status) => self.by_status(status.as_u16(), error_chain(&e)),
                None => RegistryError::Network {
                    registry,
                    reference,
                    action,
                    detail: error_chain(&e),
                },
            },
            OciDistributionError::IoError(e) => self.map_io(e, "content"),
            other => RegistryError::Protocol {
                registry,
                reference,
                action,
                detail: error_chain(&other),
            },
        }
    }

    /// Sorts an HTTP status: 401/403/404 by meaning, 408/429/5xx as
    /// retryable, the other 4xx as the client's fault.
    fn by_status(&self, code: u16, detail: String) -> RegistryError {
        let registry = self.registry.clone();
        let reference = self.reference.clone();
        let action = self.action.clone();
        match code {
            401 => RegistryError::Unauthorized {
                registry,
                reference,
                action,
                detail,
            },
            403 => RegistryError::Denied {
                registry,
                reference,
                action,
                detail,
            },
            404 => RegistryError::NotFound {
                registry,
                reference,
                action,
                detail,
            },
            408 | 429 | 500..=599 => RegistryError::Server {
                registry,
                reference,
                action,
                status: code,
                detail,
            },
            _ => RegistryError::Rejected {
                registry,
                reference,
                action,
                status: Some(code),
                detail,
            },
        }
    }

    /// An I/O error out of a blob stream: either `oci-client`'s own digest
    /// check or a broken transfer.
    pub(crate) fn map_io(&self, err: std::io::Error, what: &str) -> RegistryError {
        if let Some(DigestError::VerificationError { expected, actual }) =
            err.get_ref().and_then(|e| e.downcast_ref::<DigestError>())
        {
            return RegistryError::DigestMismatch {
                reference: self.reference.clone(),
                what: what.to_string(),
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        RegistryError::Network {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            action: self.action.clone(),
            detail: error_chain(&err),
        }
    }
}

/// `err: cause: cause...`, since reqwest hides the useful part ("connection
/// refused") in its sources.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            registry: "r.example".into(),
            reference: "r.example/a:1".into(),
            action: "fetching the manifest".into(),
            anonymous: true,
        }
    }

    #[test]
    fn status_codes_sort_into_retryable_and_not() {
        let err = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        assert!(matches!(
            ctx().map(err(401)),
            RegistryError::Unauthorized { .. }
        ));
        assert!(matches!(
            ctx().map(err(404)),
            RegistryError::NotFound { .. }
        ));
        assert!(!ctx().map(err(400)).is_retryable());
        assert!(ctx().map(err(503)).is_retryable());
        assert!(ctx().map(err(429)).is_retryable());
        let msg = ctx().map(err(401)).to_string();
        assert!(
            msg.contains("unauthorized") && msg.contains("r.example/a:1"),
            "{msg}"
        );
    }

    #[test]
    fn digest_errors_name_both_digests() {
        let e = ctx().map(OciDistributionError::DigestError(
            DigestError::VerificationError {
                expected: "sha256:aa".into(),
                actual: "sha256:bb".into(),
            },
        ));
        let msg = e.to_string();
        assert!(
            msg.contains("sha256:aa") && msg.contains("sha256:bb"),
            "{msg}"
        );
        assert!(e.is_retryable());
    }
}

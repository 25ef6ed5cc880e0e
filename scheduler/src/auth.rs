//! Bearer tokens: client tokens (one per tenant; the tenant is the build's
//! cache namespace) and worker tokens, kept apart. Each set comes from a
//! path: a directory (a mounted Kubernetes Secret: every file a token, its
//! name the tenant or worker token's name) or a file of `NAME TOKEN`
//! lines. The path is read again every few seconds, so rotating a token is
//! updating the Secret or the file; no restart.
//!
//! Tokens are compared in constant time and never logged. A call without
//! a valid token gets UNAUTHENTICATED; a client token on the worker API
//! (or a worker token on the client API) gets PERMISSION_DENIED. Without
//! token paths configured (embedded mode, a trusted network) every call
//! is let through.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

/// How often a token path is read again.
const RELOAD: Duration = Duration::from_secs(2);

/// The tenant a client token belongs to, attached to authenticated
/// BuildService requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

/// Token names and their bytes.
type NamedTokens = Vec<(String, Vec<u8>)>;

/// One set of tokens, re-read from its path.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<(Instant, NamedTokens)>,
}

/// Reads `NAME TOKEN` pairs from a directory or a file.
pub fn read_tokens(path: &Path) -> std::io::Result<NamedTokens> {
    let mut out = Vec::new();
    if path.is_dir() {
        for e in std::fs::read_dir(path)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Kubernetes keeps `..data` and timestamped dirs beside the keys.
            if name.starts_with('.') || !e.path().is_file() {
                continue;
            }
            let token = std::fs::read_to_string(e.path())?.trim().to_string();
            if !token.is_empty() {
                out.push((name, token.into_bytes()));
            }
        }
    } else {
        for line in std::fs::read_to_string(path)?.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((name, token)) = line.split_once(char::is_whitespace) {
                out.push((name.to_string(), token.trim().as_bytes().to_vec()));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Tokens {
    /// Loads the tokens at `path` (an unreadable or empty path is an
    /// error now, not a farm that silently refuses everyone).
    pub fn open(path: &Path) -> Result<Self, String> {
        let tokens = read_tokens(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if tokens.is_empty() {
            return Err(format!("{}: no tokens in it", path.display()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            loaded: Mutex::new((Instant::now(), tokens)),
        })
    }

    /// The name of the token `presented` is, if any. Every token is
    /// compared, in constant time each.
    pub fn check(&self, presented: &[u8]) -> Option<String> {
        let mut guard = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if guard.0.elapsed() >= RELOAD {
            match read_tokens(&self.path) {
                Ok(t) => guard.1 = t,
                // Keep the previous set while a Secret is being rewritten.
                Err(e) => tracing::warn!("re-reading tokens from {}: {e}", self.path.display()),
            }
            guard.0 = Instant::now();
        }
        let mut found = None;
        for (name, token) in &guard.1 {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(name.clone());
            }
        }
        found
    }
}

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// BuildService: clients.
    Client,
    /// WorkerService and BlobService: workers.
    Worker,
}

/// The token sets of a scheduler.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Client tokens by tenant.
    pub clients: Option<Arc<Tokens>>,
    /// Worker tokens.
    pub workers: Option<Arc<Tokens>>,
    /// The worker API needs a TLS client certificate the scheduler's
    /// client CA verified (mTLS).
    pub worker_certs: bool,
}

fn bearer(req: &Request<()>) -> Option<Vec<u8>> {
    let v = req.metadata().get("authorization")?.as_bytes();
    let token = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(token.to_vec())
}

impl Auth {
    /// Whether any token set is configured.
    pub fn enabled(&self) -> bool {
        self.clients.is_some() || self.workers.is_some()
    }

    /// Checks a request for `api`; on success a client request carries
    /// its [`Tenant`].
    pub fn check(&self, api: Api, mut req: Request<()>) -> Result<Request<()>, Status> {
        let (own, other) = match api {
            Api::Client => (&self.clients, &self.workers),
            Api::Worker => (&self.workers, &self.clients),
        };
        if api == Api::Worker && self.worker_certs && req.peer_certs().is_none_or(|c| c.is_empty())
        {
            return Err(Status::unauthenticated(
                "the worker API needs a TLS client certificate signed by the scheduler's client CA",
            ));
        }
        let Some(own) = own else {
            return Ok(req);
        };
        let who = match api {
            Api::Client => "a client token",
            Api::Worker => "a worker token",
        };
        let Some(token) = bearer(&req) else {
            return Err(Status::unauthenticated(format!(
                "this scheduler needs {who}: send `authorization: Bearer TOKEN` (STRATA_TOKEN for the CLI)"
            )));
        };
        if let Some(name) = own.check(&token) {
            if api == Api::Client {
                req.extensions_mut().insert(Tenant(name));
            }
            return Ok(req);
        }
        if other.as_ref().is_some_and(|o| o.check(&token).is_some()) {
            return Err(Status::permission_denied(match api {
                Api::Worker => "a client token cannot use the worker API",
                Api::Client => "a worker token cannot use the client API",
            }));
        }
        Err(Status::unauthenticated(format!(
            "the token is not {who} of this scheduler"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn req(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    #[test]
    fn tokens_are_kept_apart_and_rotate_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clients = dir.path().join("clients");
        std::fs::create_dir(&clients).unwrap();
        std::fs::write(clients.join("team-a"), "tok-a\n").unwrap();
        std::fs::write(clients.join("..data"), "ignored").unwrap();
        let workers = dir.path().join("workers.txt");
        std::fs::write(&workers, "# workers\npool-1 wtok\n").unwrap();
        let auth = Auth {
            clients: Some(Arc::new(Tokens::open(&clients).unwrap())),
            workers: Some(Arc::new(Tokens::open(&workers).unwrap())),
            worker_certs: false,
        };
        let ok = auth.check(Api::Client, req(Some("tok-a"))).unwrap();
        assert_eq!(
            ok.extensions().get::<Tenant>(),
            Some(&Tenant("team-a".into()))
        );
        assert!(auth.check(Api::Worker, req(Some("wtok"))).is_ok());
        let code = |r: Result<Request<()>, Status>| r.unwrap_err().code();
        assert_eq!(
            code(auth.check(Api::Client, req(None))),
            Code::Unauthenticated
        );
        assert_eq!(
            code(auth.check(Api::Client, req(Some("nope")))),
            Code::Unauthenticated
        );
        assert_eq!(
            code(auth.check(Api::Worker, req(Some("tok-a")))),
            Code::PermissionDenied
        );
        assert_eq!(
            code(auth.check(Api::Client, req(Some("wtok")))),
            Code::PermissionDenied
        );

        // Rotation: the new token works once the path is read again.
        std::fs::write(clients.join("team-a"), "tok-a2").unwrap();
        let t = auth.clients.as_ref().unwrap();
        t.loaded.lock().unwrap().0 = Instant::now() - RELOAD;
        assert_eq!(t.check(b"tok-a2").as_deref(), Some("team-a"));
        assert_eq!(t.check(b"tok-a"), None);

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(Tokens::open(&empty).unwrap_err().contains("no tokens"));
    }
}

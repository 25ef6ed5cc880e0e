//! Bearer tokens: client tokens (one per tenant; the tenant is the build's
//! cache namespace) and worker tokens, kept apart. Each set comes from a
//! path: a directory (a mounted Kubernetes Secret: every file a token, its
//! name the tenant or worker token's name) or a file of `NAME TOKEN`
//! lines. The path is read again every few seconds, so rotating a token is
//! updating the Secret or the file; no restart.
//!
//! Tokens are compared in constant time and never logged (the `Debug` of
//! every type holding one shows names only). A call without a valid token
//! gets UNAUTHENTICATED; a client token on the worker API (or a worker
//! token on the client API) gets PERMISSION_DENIED. A token in both sets
//! is refused at start-up, and for both APIs if a rotation brings one.
//! Client tokens without worker tokens (or worker certificates) would
//! leave the worker API open: refused unless asked for explicitly
//! ([`Auth::new`]). Without token paths configured (embedded mode, a
//! trusted network) every call is let through.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

/// How often a token path is read again.
const RELOAD: Duration = Duration::from_secs(2);

/// The tenant a client token belongs to, attached to authenticated
/// BuildService requests. A tenant sees only its own builds and images;
/// without client tokens there are no tenants and every call sees all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl Tenant {
    /// The tenant of an authenticated request (`None` without client
    /// tokens).
    pub fn of<T>(req: &Request<T>) -> Option<Self> {
        req.extensions().get::<Self>().cloned()
    }
}

/// Token names and their bytes.
type NamedTokens = Vec<(String, Vec<u8>)>;

/// One set of tokens, re-read from its path.
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<(Instant, NamedTokens)>,
}

/// Names and the path only: a token never reaches a log.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        f.debug_struct("Tokens")
            .field("path", &self.path)
            .field("names", &names)
            .finish_non_exhaustive()
    }
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

    /// The first pair of a token of `self` equal to one of `other`, by
    /// name.
    fn shared_with(&self, other: &Tokens) -> Option<(String, String)> {
        let mine = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let theirs = other.loaded.lock().unwrap_or_else(|e| e.into_inner());
        mine.1.iter().find_map(|(a, ta)| {
            theirs
                .1
                .iter()
                .find(|(_, tb)| bool::from(ta.as_slice().ct_eq(tb)))
                .map(|(b, _)| (a.clone(), b.clone()))
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

/// Takes the bearer token out of the request: the handlers behind the
/// check never hold it, so none can log it.
fn bearer(req: &mut Request<()>) -> Option<Vec<u8>> {
    let v = req.metadata_mut().remove("authorization")?;
    let v = v.as_bytes();
    let token = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    Some(token.to_vec())
}

impl Auth {
    /// The token sets of a scheduler, checked together. Refused: a token
    /// in both sets (it would open both APIs), and client tokens with the
    /// worker API open to anyone — no worker tokens, no worker
    /// certificates — unless `open_worker_api` says so.
    pub fn new(
        clients: Option<Tokens>,
        workers: Option<Tokens>,
        worker_certs: bool,
        open_worker_api: bool,
    ) -> Result<Self, String> {
        if let (Some(c), Some(w)) = (&clients, &workers)
            && let Some((client, worker)) = c.shared_with(w)
        {
            return Err(format!(
                "client token {client:?} ({}) is also worker token {worker:?} ({}): a token may open one API only; give each its own",
                c.path.display(),
                w.path.display()
            ));
        }
        if clients.is_some() && workers.is_none() && !worker_certs && !open_worker_api {
            return Err(
                "--client-tokens without --worker-tokens (or --tls-client-ca) lets anyone who reaches the port register as a worker and receive builds' secrets and contexts: add --worker-tokens, or pass --open-worker-api if only trusted hosts can reach it"
                    .to_string(),
            );
        }
        Ok(Self {
            clients: clients.map(Arc::new),
            workers: workers.map(Arc::new),
            worker_certs,
        })
    }

    /// Whether any token set is configured.
    pub fn enabled(&self) -> bool {
        self.clients.is_some() || self.workers.is_some()
    }

    /// The tenant a build of `namespace` belongs to: with client tokens a
    /// build's namespace is its tenant's; without, there are no tenants.
    pub fn owner<'a>(&self, namespace: &'a str) -> Option<&'a str> {
        self.clients.is_some().then_some(namespace)
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
        let Some(token) = bearer(&mut req) else {
            return Err(Status::unauthenticated(format!(
                "this scheduler needs {who}: send `authorization: Bearer TOKEN` (STRATA_TOKEN for the CLI)"
            )));
        };
        let theirs = other.as_ref().and_then(|o| o.check(&token));
        if let Some(name) = own.check(&token) {
            if let Some(other_name) = theirs {
                // A rotation put one token in both sets: it opens neither.
                let (client, worker) = match api {
                    Api::Client => (name, other_name),
                    Api::Worker => (other_name, name),
                };
                return Err(Status::permission_denied(format!(
                    "client token {client:?} is also worker token {worker:?}: refused for both APIs until one of them is changed"
                )));
            }
            if api == Api::Client {
                req.extensions_mut().insert(Tenant(name));
            }
            return Ok(req);
        }
        if theirs.is_some() {
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
        // The handler gets the tenant, never the token.
        assert!(ok.metadata().get("authorization").is_none());
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

    fn file(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn client_tokens_without_worker_tokens_are_refused_unless_opted_out() {
        let dir = tempfile::tempdir().unwrap();
        let clients = file(dir.path(), "clients", "team-a tok-a\n");
        let workers = file(dir.path(), "workers", "pool wtok\n");
        let open = |p: &Path| Some(Tokens::open(p).unwrap());
        let e = Auth::new(open(&clients), None, false, false).unwrap_err();
        assert!(e.contains("--client-tokens without --worker-tokens"), "{e}");
        assert!(e.contains("--open-worker-api"), "{e}");
        // Workers proven otherwise, or the operator says the port is
        // private: allowed.
        assert!(Auth::new(open(&clients), None, true, false).is_ok());
        let auth = Auth::new(open(&clients), None, false, true).unwrap();
        assert!(auth.check(Api::Worker, req(None)).is_ok());
        assert!(Auth::new(open(&clients), open(&workers), false, false).is_ok());
        assert!(Auth::new(None, None, false, false).is_ok());
    }

    #[test]
    fn a_token_in_both_sets_is_refused_at_start_and_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let clients = file(dir.path(), "clients", "team-a same\nteam-b tok-b\n");
        let workers = file(dir.path(), "workers", "pool same\n");
        let open = |p: &Path| Some(Tokens::open(p).unwrap());
        let e = Auth::new(open(&clients), open(&workers), false, false).unwrap_err();
        assert!(
            e.contains("client token \"team-a\"") && e.contains("worker token \"pool\""),
            "{e}"
        );
        assert!(!e.contains("same"), "the token itself is in the error: {e}");

        // A rotation that makes one token both: neither API takes it.
        std::fs::write(&workers, "pool wtok\n").unwrap();
        let auth = Auth::new(open(&clients), open(&workers), false, false).unwrap();
        std::fs::write(&workers, "pool tok-b\n").unwrap();
        auth.workers.as_ref().unwrap().loaded.lock().unwrap().0 = Instant::now() - RELOAD;
        for api in [Api::Client, Api::Worker] {
            let e = auth.check(api, req(Some("tok-b"))).unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{api:?}: {e:?}");
            assert!(e.message().contains("refused for both APIs"), "{e:?}");
        }
        assert!(auth.check(Api::Client, req(Some("same"))).is_ok());
    }

    #[test]
    fn debug_output_names_tokens_but_never_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        let clients = file(dir.path(), "clients", "team-a s3cr3t-client\n");
        let workers = file(dir.path(), "workers", "pool s3cr3t-worker\n");
        let auth = Auth::new(
            Some(Tokens::open(&clients).unwrap()),
            Some(Tokens::open(&workers).unwrap()),
            false,
            false,
        )
        .unwrap();
        let shown = format!("{auth:?} {auth:#?}");
        assert!(
            shown.contains("team-a") && shown.contains("pool"),
            "{shown}"
        );
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    /// What kubelet does with a mounted Secret: the keys are symlinks
    /// through `..data` to a timestamped directory, and an update writes a
    /// new directory and swaps `..data` in one rename.
    #[test]
    fn a_kubernetes_secret_update_is_picked_up() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("client-tokens");
        std::fs::create_dir(&mount).unwrap();
        let version = |name: &str, tokens: &[(&str, &str)]| {
            let d = mount.join(name);
            std::fs::create_dir(&d).unwrap();
            for (k, v) in tokens {
                std::fs::write(d.join(k), v).unwrap();
            }
        };
        version("..2026_01_01_00_00_00.1", &[("team-a", "tok-a1")]);
        symlink("..2026_01_01_00_00_00.1", mount.join("..data")).unwrap();
        symlink("..data/team-a", mount.join("team-a")).unwrap();
        let tokens = Tokens::open(&mount).unwrap();
        assert_eq!(tokens.check(b"tok-a1").as_deref(), Some("team-a"));
        assert!(!format!("{tokens:?}").contains("..data"));

        // The update: a new version with a second tenant, `..data`
        // swapped by rename, the new key linked, the old version removed.
        version(
            "..2026_01_02_00_00_00.2",
            &[("team-a", "tok-a2\n"), ("team-b", "tok-b")],
        );
        symlink("..2026_01_02_00_00_00.2", mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        symlink("..data/team-b", mount.join("team-b")).unwrap();
        std::fs::remove_dir_all(mount.join("..2026_01_01_00_00_00.1")).unwrap();

        tokens.loaded.lock().unwrap().0 = Instant::now() - RELOAD;
        assert_eq!(tokens.check(b"tok-a2").as_deref(), Some("team-a"));
        assert_eq!(tokens.check(b"tok-b").as_deref(), Some("team-b"));
        assert_eq!(tokens.check(b"tok-a1"), None);
    }
}

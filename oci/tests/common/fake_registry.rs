//! A minimal registry on a loopback port that serves canned answers: the
//! only way to test what a real registry never does (serve bytes that do
//! not match their digest) and the bearer-token dance (a real token server
//! needs signing keys). It answers GET and HEAD, one request per
//! connection, and records what it was asked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A canned answer.
#[derive(Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// 200 with `body` and `content_type`.
    pub fn ok(body: Vec<u8>, content_type: &str) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request the server saw: method, path with query, Authorization.
#[derive(Debug, Clone)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The Authorization header, if any.
    pub authorization: Option<String>,
}

/// Bearer-token protection: `/token` hands `token` to `user:password`.
#[derive(Clone)]
struct Bearer {
    user: String,
    password: String,
    token: String,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Reply>,
    bearer: Option<Bearer>,
    seen: Vec<Seen>,
}

/// The server. Dropping it stops it.
pub struct FakeRegistry {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    listener: Option<TcpListener>,
    task: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    /// Binds a loopback port; add routes, then [`FakeRegistry::serve`].
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake registry");
        let addr = listener.local_addr().expect("fake registry address");
        let state = Arc::new(Mutex::new(State::default()));
        state
            .lock()
            .expect("state")
            .routes
            .insert("/v2/".into(), Reply::ok(b"{}".to_vec(), "application/json"));
        Self {
            addr,
            state,
            listener: Some(listener),
            task: None,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Answers GET/HEAD `path` with `reply`.
    pub fn route(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .expect("state")
            .routes
            .insert(path.into(), reply);
    }

    /// Wants `Authorization: Bearer <token>` everywhere, handing the token
    /// out at `/token` to basic-auth `user:password`, as Docker Hub does.
    pub fn require_bearer(&self, user: &str, password: &str, token: &str) {
        self.state.lock().expect("state").bearer = Some(Bearer {
            user: user.into(),
            password: password.into(),
            token: token.into(),
        });
    }

    /// What the server was asked so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    /// Starts answering.
    pub fn serve(&mut self) {
        let listener = self.listener.take().expect("serve once");
        let state = self.state.clone();
        let realm = format!("http://{}/token", self.addr);
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                let realm = realm.clone();
                tokio::spawn(async move {
                    let _ = handle(conn, state, realm).await;
                });
            }
        }));
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn handle(
    mut conn: TcpStream,
    state: Arc<Mutex<State>>,
    realm: String,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let authorization = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let path = target.split('?').next().unwrap_or_default().to_string();

    let reply = {
        let mut st = state.lock().expect("state");
        st.seen.push(Seen {
            method: method.clone(),
            target: target.clone(),
            authorization: authorization.clone(),
        });
        decide(&st, &path, authorization.as_deref(), &realm)
    };
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    conn.write_all(out.as_bytes()).await?;
    if method != "HEAD" {
        conn.write_all(&reply.body).await?;
    }
    conn.shutdown().await
}

fn decide(st: &State, path: &str, authorization: Option<&str>, realm: &str) -> Reply {
    let unauthorized = || Reply {
        status: 401,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            (
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"{realm}\",service=\"fake-registry\""),
            ),
        ],
        body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
            .to_vec(),
    };
    if let Some(bearer) = &st.bearer {
        if path == "/token" {
            let expected = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", bearer.user, bearer.password));
            return if authorization == Some(format!("Basic {expected}").as_str()) {
                let body = serde_json::json!({ "token": bearer.token }).to_string();
                Reply::ok(body.into_bytes(), "application/json")
            } else {
                Reply {
                    status: 401,
                    headers: vec![],
                    body: b"bad credentials".to_vec(),
                }
            };
        }
        if authorization != Some(format!("Bearer {}", bearer.token).as_str()) {
            return unauthorized();
        }
    }
    st.routes.get(path).cloned().unwrap_or_else(|| Reply {
        status: 404,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: br#"{"errors":[{"code":"NOT_FOUND","message":"no such route"}]}"#.to_vec(),
    })
}

/// An image as the fake registry serves it.
pub struct CannedImage {
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// Their digest.
    pub manifest_digest: String,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Their digest.
    pub config_digest: String,
    /// Layer bytes.
    pub layer: Vec<u8>,
    /// Their digest.
    pub layer_digest: String,
}

impl CannedImage {
    /// An OCI image of `layer` (gzip) and `config`.
    pub fn new(layer: Vec<u8>, config: Vec<u8>) -> Self {
        use strata_oci::registry::sha256_digest;
        let layer_digest = sha256_digest(&layer).to_string();
        let config_digest = sha256_digest(&config).to_string();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": strata_oci::registry::OCI_MANIFEST,
            "config": {
                "mediaType": strata_oci::registry::OCI_CONFIG,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer.len(),
            }],
        });
        let manifest = serde_json::to_vec(&manifest).expect("serialise manifest");
        Self {
            manifest_digest: sha256_digest(&manifest).to_string(),
            manifest,
            config_digest,
            config,
            layer_digest,
            layer,
        }
    }
}

impl FakeRegistry {
    /// Serves `image` as `repo:tag` (and by digest), honestly.
    pub fn serve_image(&self, repo: &str, tag: &str, image: &CannedImage) {
        let manifest = Reply::ok(image.manifest.clone(), strata_oci::registry::OCI_MANIFEST)
            .header("Docker-Content-Digest", &image.manifest_digest);
        self.route(&format!("/v2/{repo}/manifests/{tag}"), manifest.clone());
        self.route(
            &format!("/v2/{repo}/manifests/{}", image.manifest_digest),
            manifest,
        );
        self.route(
            &format!("/v2/{repo}/blobs/{}", image.config_digest),
            Reply::ok(image.config.clone(), "application/octet-stream"),
        );
        self.route(
            &format!("/v2/{repo}/blobs/{}", image.layer_digest),
            Reply::ok(image.layer.clone(), "application/octet-stream"),
        );
    }
}

//! The strata scheduler: serves `BuildService` to clients and
//! `WorkerService` + `BlobService` to workers. It plans each build with the
//! frontend, answers steps from the layer cache, queues the others as
//! per-layer jobs for connected workers (independent stages at the same
//! time, on different workers), streams every event to the build's
//! watchers, assembles and stores the image, and tags, pushes and exports
//! images.
//!
//! Module map: [`service`] (the gRPC surface), [`build`] (one build's run
//! and event log), [`pool`] (workers and the job queue), [`blobs`] (the
//! content store), [`cache`] (cache key → layer), [`images`] (names and
//! history), [`archive`] (docker/OCI/rootfs archives, `docker import`),
//! [`assign`] (planned step → wire job), [`image`] (config and manifest).

pub mod archive;
pub mod assign;
pub mod auth;
pub mod blobs;
pub mod build;
pub mod cache;
pub mod config;
pub mod image;
pub mod images;
pub mod metrics;
pub mod origins;
pub mod pool;
pub mod prune;
pub mod push;
pub mod service;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_oci::registry::{RegistryClient, RegistryConfig};
use strata_state::{MemoryState, RedisConfig, RedisState, StateStore};
use strata_store::{S3Blobs, S3Config};

/// How a scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Where the cache index, image index and build logs live.
    pub state_dir: PathBuf,
    /// Root of the blob store; `<state_dir>/store` when unset. The embedded
    /// farm points it at its worker's store so nothing is copied.
    pub blob_root: Option<PathBuf>,
    /// Which registries are plain HTTP, where credentials are.
    pub registry: RegistryConfig,
    /// How many workers a job is tried on before the build fails.
    pub max_attempts: u32,
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// How long a job's lease lasts without a heartbeat.
    pub lease_duration: Duration,
    /// The shared blob store (S3); without one, the local directory is
    /// the whole store.
    pub s3: Option<S3Config>,
    /// The shared state (Redis); without one, state lives in memory and
    /// the cache index's durable records in the blob store.
    pub redis: Option<RedisConfig>,
    /// Per cache namespace, the other namespaces whose cache it may reuse.
    pub cache_shares: BTreeMap<String, Vec<String>>,
    /// Client and worker tokens; none configured lets every call in.
    pub auth: auth::Auth,
    /// Entitlements builds may be granted (`security.insecure`).
    pub allowed_entitlements: std::collections::BTreeSet<String>,
    /// Largest build context, in bytes: the sum of its files at
    /// StartBuild, and what one `UploadBlobs` call or one blob may store.
    pub max_context_bytes: u64,
}

impl SchedulerConfig {
    /// Defaults for a state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            blob_root: None,
            registry: RegistryConfig::default(),
            max_attempts: 3,
            heartbeat_interval: Duration::from_secs(5),
            lease_duration: Duration::from_secs(30),
            s3: None,
            redis: None,
            cache_shares: BTreeMap::new(),
            auth: auth::Auth::default(),
            allowed_entitlements: Default::default(),
            max_context_bytes: strata_frontend::limits::Limits::default().max_context_bytes,
        }
    }
}

/// Shared state of a running scheduler.
pub struct Inner {
    /// Its configuration.
    pub config: SchedulerConfig,
    /// The content store.
    pub blobs: blobs::Blobs,
    /// Live state: cache index copy, claims, workers, build logs.
    pub state: Arc<dyn StateStore>,
    /// The layer cache index.
    pub cache: cache::CacheIndex,
    /// Image names and records.
    pub images: images::ImageStore,
    /// Registry access for base images and pushes.
    pub registry: RegistryClient,
    /// Connected workers and queued jobs.
    pub pool: pool::Pool,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// The gRPC health service (grpc.health.v1), as routes the other
    /// services are added to.
    pub health: tonic::service::Routes,
    /// Reports the scheduler's serving state to the health service.
    pub health_reporter: tonic_health::server::HealthReporter,
    /// Set once SIGTERM arrived: not ready, take no new builds.
    pub draining: std::sync::atomic::AtomicBool,
    /// Blobs running builds use, which prune leaves alone.
    pub pins: prune::Pins,
    /// Builds of this process, by id.
    pub builds: Mutex<HashMap<String, Arc<build::BuildHandle>>>,
    /// Builds whose run has not ended yet: a build that emitted its last
    /// event still saves its log to the durable store and drops its
    /// journal before it counts as done here (a drain waits for that).
    pub settling: std::sync::atomic::AtomicUsize,
}

/// A scheduler, ready to serve.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// Why a scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory or a store in it is unusable.
    #[error("state {path}: {detail}")]
    State {
        /// Where.
        path: PathBuf,
        /// What.
        detail: String,
    },
    /// The shared blob store or state cannot be used.
    #[error("{0}")]
    Store(String),
}

impl Scheduler {
    /// Opens the stores: the state directory, and the shared blob store
    /// and state when configured (checked now, so a wrong endpoint or
    /// bucket fails at start with its name).
    pub async fn open(config: SchedulerConfig) -> Result<Self, StartError> {
        let state_err = |path: &std::path::Path, detail: String| StartError::State {
            path: path.to_path_buf(),
            detail,
        };
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| state_err(&config.state_dir, e.to_string()))?;
        let blob_root = config
            .blob_root
            .clone()
            .unwrap_or_else(|| config.state_dir.join("store"));
        let local =
            blobs::FsBlobs::open(&blob_root).map_err(|e| state_err(&blob_root, e.to_string()))?;
        let shared = match &config.s3 {
            Some(s3) => {
                let store =
                    S3Blobs::new(s3.clone()).map_err(|e| StartError::Store(e.to_string()))?;
                store
                    .check()
                    .await
                    .map_err(|e| StartError::Store(e.to_string()))?;
                Some(Arc::new(store) as Arc<dyn blobs::BlobStore>)
            }
            None => None,
        };
        let blobs = blobs::Blobs::new(local, shared);
        let state: Arc<dyn StateStore> = match &config.redis {
            Some(r) => Arc::new(
                RedisState::connect(r.clone())
                    .await
                    .map_err(|e| StartError::Store(e.to_string()))?,
            ),
            None => Arc::new(MemoryState::new()),
        };
        let cache = cache::CacheIndex::new(
            Arc::clone(&state),
            blobs.durable(),
            config.cache_shares.clone(),
        );
        cache.migrate_legacy(&config.state_dir).await;
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<strata_proto::build::v1::build_service_server::BuildServiceServer<
                service::BuildApi,
            >>()
            .await;
        let images = images::ImageStore::open(&config.state_dir)
            .map_err(|e| state_err(&config.state_dir, e.to_string()))?;
        let registry = RegistryClient::new(config.registry.clone())
            .map_err(|e| state_err(&config.state_dir, format!("registry client: {e}")))?;
        let scheduler = Self {
            inner: Arc::new(Inner {
                cache,
                state,
                pool: pool::Pool::new(config.max_attempts),
                config,
                blobs,
                images,
                registry,
                metrics: metrics::Metrics::new(),
                health: tonic::service::Routes::new(health),
                health_reporter,
                draining: std::sync::atomic::AtomicBool::new(false),
                pins: prune::Pins::default(),
                builds: Mutex::new(HashMap::new()),
                settling: std::sync::atomic::AtomicUsize::new(0),
            }),
        };
        scheduler.reap_silent_workers();
        build::recover::resume_all(&scheduler.inner).await;
        Ok(scheduler)
    }

    /// Every second, workers silent for longer than the lease duration
    /// lose their jobs to others (see [`pool::Pool::expire`]).
    fn reap_silent_workers(&self) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                for id in inner
                    .pool
                    .expire(inner.config.lease_duration, std::time::Instant::now())
                {
                    tracing::warn!(
                        worker_id = id,
                        lease = ?inner.config.lease_duration,
                        "no heartbeat: the worker's jobs go to others"
                    );
                }
            }
        });
    }

    /// The shared state.
    pub fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (ready: the
    /// shared stores answer and the scheduler is not draining); keeps the
    /// load gauges current. Returns the bound address.
    pub async fn serve_metrics(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr, strata_telemetry::TelemetryError> {
        use std::sync::atomic::Ordering;
        let stores_ok = Arc::new(std::sync::atomic::AtomicBool::new(true));
        {
            let (inner, ok) = (Arc::downgrade(&self.inner), Arc::clone(&stores_ok));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    let Some(inner) = inner.upgrade() else { return };
                    inner.metrics.set_load(inner.pool.load());
                    // The stores are probed every 5 s.
                    if n.is_multiple_of(5) {
                        let state = inner.state.get("health/probe").await.is_ok();
                        let blobs = inner.blobs.durable().list_objects("health/").await.is_ok();
                        ok.store(state && blobs, Ordering::Relaxed);
                    }
                    n += 1;
                }
            });
        }
        let inner = Arc::downgrade(&self.inner);
        let ready: strata_telemetry::http::Readiness = Arc::new(move || {
            inner
                .upgrade()
                .is_some_and(|i| !i.draining.load(Ordering::Relaxed))
                && stores_ok.load(Ordering::Relaxed)
        });
        strata_telemetry::http::spawn(addr, self.inner.metrics.registry.clone(), ready).await
    }

    /// Stops taking builds (SIGTERM): not ready, gRPC health NOT_SERVING
    /// for the whole server (service `""`, what Kubernetes' grpc probes
    /// and load balancers ask) and for BuildService, StartBuild refused;
    /// running builds go on.
    pub async fn drain(&self) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let health = &self.inner.health_reporter;
        health
            .set_not_serving::<strata_proto::build::v1::build_service_server::BuildServiceServer<
                service::BuildApi,
            >>()
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    }

    /// Builds of this process that have not finished, or finished but
    /// are still saving their log.
    pub fn running_builds(&self) -> usize {
        let unfinished = self
            .inner
            .builds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|b| !b.finished())
            .count();
        unfinished.max(
            self.inner
                .settling
                .load(std::sync::atomic::Ordering::Acquire),
        )
    }

    /// The gRPC services (BuildService, WorkerService, BlobService) with
    /// strata's message size limits.
    pub fn routes(&self) -> tonic::service::Routes {
        service::routes(Arc::clone(&self.inner))
    }
}

//! The gRPC server's life: bind, serve, drain, stop.
//!
//! [`Server::bind`] does everything that can fail because of the machine or the settings (device,
//! ports) before anything is served, so those failures are start-up errors with a clear message.
//! [`Server::serve`] takes its shutdown trigger as a future (mini-redis style): the binary passes
//! SIGINT/SIGTERM, tests pass a channel. On the trigger, health flips to NOT_SERVING, the server
//! keeps taking calls for `drain_delay` (load balancers notice), then stops accepting and lets
//! in-flight calls finish for up to `shutdown_timeout`.

use std::{future::Future, io, net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tonic::codec::CompressionEncoding;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use std::sync::Arc;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::jobs::store::JobStore;

use crate::{
    auth::{ApiKeys, GrpcAuthLayer},
    device::{DeviceError, Placement, libtorch_version},
    engine::{
        cpu_pool::CpuPool,
        policy::Policy,
        registry::{LoadError, Registry, health_name},
    },
    grpc::{
        InferenceService, JobsService, ModelsService, WorkerService, pb,
        pb::jobs_server::JobsServer,
        pb::{
            inference_server::InferenceServer, models_server::ModelsServer,
            worker_server::WorkerServer,
        },
        status::rewrite_transport_status,
    },
    settings::{Settings, TlsSettings},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("cannot listen for {what} on {addr}: address already in use")]
    AddrInUse { what: &'static str, addr: SocketAddr },
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: io::Error },
    #[error("server.tls: cannot read {what} {}: {source}", path.display())]
    TlsFile { what: &'static str, path: std::path::PathBuf, source: io::Error },
    #[error("store.url: {0}")]
    Store(#[from] crate::jobs::store::StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// Why a running server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("gRPC reflection could not be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Load(#[from] Box<LoadError>),
}

/// Everything `lote::run` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A server whose listeners are bound and whose device is chosen, not yet serving.
pub struct Server {
    settings: Settings,
    placement: Placement,
    grpc: TcpListener,
    metrics: Option<TcpListener>,
    http: Option<TcpListener>,
    tls: Option<ServerTlsConfig>,
    store: JobStore,
    /// None: no API keys asked for.
    keys: Option<ApiKeys>,
}

/// Binds and serves until `shutdown` resolves and in-flight calls have finished.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    Server::bind(settings).await?.serve(shutdown).await?;
    Ok(())
}

impl Server {
    pub async fn bind(settings: Settings) -> Result<Self, StartError> {
        let placement = Placement::resolve(&settings.device)?;
        let tls = tls_config(&settings.server.tls)?;
        let keys = settings.server.auth.api_keys_file.as_deref().map(ApiKeys::load).transpose()?;
        let store = JobStore::connect(&settings.store.url).await?;
        let grpc = listen("gRPC", settings.server.grpc_addr).await?;
        let metrics = match settings.server.metrics_addr {
            Some(addr) => Some(listen("metrics", addr).await?),
            None => None,
        };
        let http = match settings.server.http_addr {
            Some(addr) => Some(listen("HTTP", addr).await?),
            None => None,
        };
        let open_beyond_loopback = [Some(settings.server.grpc_addr), settings.server.http_addr]
            .into_iter()
            .flatten()
            .any(|addr| !addr.ip().is_loopback());
        if keys.is_none() && open_beyond_loopback {
            warn!("listening beyond loopback without API keys: set server.auth.api_keys_file");
        }
        Ok(Self { settings, placement, grpc, metrics, http, tls, store, keys })
    }

    /// The address gRPC listens on (the real port when the settings asked for port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("a bound listener has an address")
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The address of the OpenAI-compatible HTTP API, when it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let grpc_addr = self.grpc_addr();
        let metrics_addr = self.metrics_addr().map(|addr| addr.to_string());
        let http_addr = self.http_addr().map(|addr| addr.to_string());
        let server = &self.settings.server;
        let limits = &server.limits;
        // Install the recorder before anything records: the engine threads register their
        // metric handles once, when their models load.
        crate::metrics::handle();
        let (reporter, health) = tonic_health::server::health_reporter();
        // Serving once every model is ready; the model-less services answer from the start.
        let ready = if self.settings.models.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_health(&reporter, ready).await;
        reporter.set_service_status(inference_service_name(), ready).await;
        reporter.set_service_status(models_service_name(), ServingStatus::Serving).await;
        for model in &self.settings.models {
            reporter.set_service_status(health_name(&model.name), ServingStatus::NotServing).await;
        }

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Every lote service: the message size limit both ways, gzip accepted and sent.
        macro_rules! limited {
            ($server:expr) => {
                $server
                    .max_decoding_message_size(limits.max_message_bytes)
                    .max_encoding_message_size(limits.max_message_bytes)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip)
            };
        }
        let worker = limited!(WorkerServer::new(WorkerService::new(&self.placement)));
        let registry = Arc::new(Registry::new(&self.settings.models, self.placement));
        let pool = CpuPool::for_this_machine();
        let inference = limited!(InferenceServer::new(InferenceService::new(
            registry.clone(),
            limits.clone(),
            pool.clone(),
        )));
        let models = limited!(ModelsServer::new(ModelsService::new(registry.clone())));
        let http_state = crate::http::HttpState {
            registry: registry.clone(),
            limits: limits.clone(),
            keys: self.keys.clone(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            calls: crate::http::Calls::Interactive,
            batches: None,
        };
        // Job documents of OpenAI batches run through the HTTP routes; lote's own through
        // the engine.
        let executor = Arc::new(crate::http::batch::executor::BatchExecutor::new(
            Arc::new(crate::jobs::worker::EngineExecutor::new(registry.clone())),
            &http_state,
        ));
        let (jobs, consumers) =
            crate::jobs::runtime::prepare_with(&self.settings, self.store.clone(), executor);
        let batches = crate::http::batch::BatchContext {
            jobs: jobs.clone(),
            registry: registry.clone(),
            limits: limits.clone(),
        };
        let jobs = limited!(JobsServer::new(JobsService::new(jobs, limits.max_documents_per_job)));

        // `stopping` turns true once the drain is over and the server stops accepting calls.
        let (stopping_tx, mut stopping) = watch::channel(false);
        // Models load in the background: health says which are ready; a failure stops the
        // server. Job documents are consumed once every model is ready.
        let loading = {
            let (registry, reporter) = (registry.clone(), reporter.clone());
            let policy = Policy::from_settings(&self.settings.batching);
            let max_input_tokens = limits.max_input_tokens;
            let stop_consuming = stopping.clone();
            tokio::spawn(async move {
                registry.load_all(policy, &pool, max_input_tokens, &reporter).await?;
                set_health(&reporter, ServingStatus::Serving).await;
                reporter.set_service_status(inference_service_name(), ServingStatus::Serving).await;
                Ok::<_, LoadError>(tokio::spawn(consumers.run(stop_consuming)))
            })
        };
        let metrics_task = self.metrics.map(|listener| {
            let mut stopping = stopping.clone();
            tokio::spawn(crate::metrics::serve(listener, async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }))
        });
        let batch_task =
            tokio::spawn(crate::http::batch::lifecycle::run(batches.clone(), stopping.clone()));
        let http_task = self.http.map(|listener| {
            let state = Arc::new(crate::http::HttpState { batches: Some(batches), ..http_state });
            let mut stopping = stopping.clone();
            tokio::spawn(crate::http::serve(listener, state, async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }))
        });
        let drain_delay = server.drain_delay;
        let shutdown_models: Vec<String> =
            self.settings.models.iter().map(|m| m.name.clone()).collect();
        let reporter_for_trigger = reporter.clone();
        let trigger = async move {
            let reporter = reporter_for_trigger;
            shutdown.await;
            info!(?drain_delay, "shutdown requested: health is NOT_SERVING");
            set_health(&reporter, ServingStatus::NotServing).await;
            for name in [inference_service_name(), models_service_name()] {
                reporter.set_service_status(name, ServingStatus::NotServing).await;
            }
            for name in shutdown_models {
                reporter.set_service_status(health_name(&name), ServingStatus::NotServing).await;
            }
            tokio::time::sleep(drain_delay).await;
            info!("no longer accepting calls; waiting for in-flight calls");
            let _ = stopping_tx.send(true);
        };

        metrics::gauge!(
            "lote_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "libtorch" => libtorch_version(),
            "device" => self.placement.device_name(),
            "dtype" => self.placement.dtype.to_string(),
        )
        .set(1.0);
        info!(
            %grpc_addr,
            metrics_addr = metrics_addr.as_deref().unwrap_or("off"),
            http_addr = http_addr.as_deref().unwrap_or("off"),
            device = %self.placement.device_name(),
            dtype = %self.placement.dtype,
            libtorch = %libtorch_version(),
            version = env!("CARGO_PKG_VERSION"),
            "serving"
        );

        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let serving = builder
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .layer(GrpcAuthLayer::new(self.keys.clone()))
            .layer(tower::util::MapResponseLayer::new(rewrite_transport_status(
                limits.max_message_bytes,
            )))
            .add_service(health)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(worker)
            .add_service(inference)
            .add_service(models)
            .add_service(jobs)
            .serve_with_incoming_shutdown(incoming(self.grpc), trigger);
        tokio::pin!(serving);
        let consuming = Arc::new(tokio::sync::Mutex::new(None));
        let loaded = {
            let consuming = consuming.clone();
            async move {
                match loading.await {
                    Ok(Ok(consumers)) => {
                        *consuming.lock().await = Some(consumers);
                        std::future::pending().await
                    }
                    Ok(Err(error)) => error,
                    Err(join) => panic!("model loading panicked: {join}"),
                }
            }
        };
        let result = tokio::select! {
            result = &mut serving => result,
            error = loaded => {
                warn!(%error, "a model could not load; stopping");
                return Err(ServeError::Load(Box::new(error)));
            }
            _ = async { stopping.wait_for(|stop| *stop).await.is_ok() } => {
                finish_in_flight(serving, server.shutdown_timeout).await
            }
        };
        // Job documents in flight finish (and are acknowledged) before the worker exits.
        if let Some(consumers) = consuming.lock().await.take()
            && tokio::time::timeout(server.shutdown_timeout, consumers).await.is_err()
        {
            warn!(
                "job documents still in flight after the shutdown timeout; they will be redelivered"
            );
        }
        for task in [metrics_task, http_task].into_iter().flatten() {
            let _ = task.await;
        }
        let _ = batch_task.await;
        info!("stopped");
        Ok(result?)
    }
}

/// Lets the stopping server finish its in-flight calls, for at most `timeout`.
async fn finish_in_flight<F>(serving: F, timeout: Duration) -> Result<(), tonic::transport::Error>
where
    F: Future<Output = Result<(), tonic::transport::Error>>,
{
    match tokio::time::timeout(timeout, serving).await {
        Ok(result) => result,
        Err(_) => {
            warn!(?timeout, "calls still in flight after the shutdown timeout; stopping anyway");
            Ok(())
        }
    }
}

/// Sets the overall status ("") and each lote service's.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(worker_service_name(), status).await;
}

fn worker_service_name() -> &'static str {
    <WorkerServer<WorkerService> as tonic::server::NamedService>::NAME
}

fn inference_service_name() -> &'static str {
    <InferenceServer<InferenceService> as tonic::server::NamedService>::NAME
}

fn models_service_name() -> &'static str {
    <ModelsServer<ModelsService> as tonic::server::NamedService>::NAME
}

/// TLS from the settings: none, server TLS, or mutual TLS when a client CA is given.
fn tls_config(tls: &TlsSettings) -> Result<Option<ServerTlsConfig>, StartError> {
    let Some(cert) = &tls.cert else { return Ok(None) };
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| StartError::TlsFile {
            what,
            path: path.into(),
            source,
        })
    };
    let key = tls.key.as_deref().expect("settings validation pairs cert with key");
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read("cert", cert)?, read("key", key)?));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("client_ca", ca)?));
    }
    Ok(Some(config))
}

/// Accepted gRPC connections, with TCP_NODELAY: small responses are not held back by Nagle's
/// algorithm waiting for the client's delayed ACK (40 ms a call on Linux).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => StartError::AddrInUse { what, addr },
        _ => StartError::Bind { what, addr, source },
    })
}

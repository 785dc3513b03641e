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
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{
    device::{DeviceError, Placement, libtorch_version},
    grpc::{WorkerService, pb, pb::worker_server::WorkerServer},
    settings::Settings,
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
}

/// Why a running server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("gRPC reflection could not be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
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
        let grpc = listen("gRPC", settings.server.grpc_addr).await?;
        let metrics = match settings.server.metrics_addr {
            Some(addr) => Some(listen("metrics", addr).await?),
            None => None,
        };
        Ok(Self { settings, placement, grpc, metrics })
    }

    /// The address gRPC listens on (the real port when the settings asked for port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("a bound listener has an address")
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let grpc_addr = self.grpc_addr();
        let metrics_addr = self.metrics_addr().map(|addr| addr.to_string());
        let server = &self.settings.server;
        let limits = &server.limits;
        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::Serving).await;

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let worker = WorkerServer::new(WorkerService::new(&self.placement))
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);

        // `stopping` turns true once the drain is over and the server stops accepting calls.
        let (stopping_tx, mut stopping) = watch::channel(false);
        let metrics_task = self.metrics.map(|listener| {
            let mut stopping = stopping.clone();
            tokio::spawn(crate::metrics::serve(listener, async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }))
        });
        let drain_delay = server.drain_delay;
        let trigger = async move {
            shutdown.await;
            info!(?drain_delay, "shutdown requested: health is NOT_SERVING");
            set_health(&reporter, ServingStatus::NotServing).await;
            tokio::time::sleep(drain_delay).await;
            info!("no longer accepting calls; waiting for in-flight calls");
            let _ = stopping_tx.send(true);
        };

        // Install the recorder before recording: the endpoint's task may not have run yet.
        crate::metrics::handle();
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
            device = %self.placement.device_name(),
            dtype = %self.placement.dtype,
            libtorch = %libtorch_version(),
            version = env!("CARGO_PKG_VERSION"),
            "serving"
        );

        let serving = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .add_service(health)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(worker)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.grpc), trigger);
        tokio::pin!(serving);
        let result = tokio::select! {
            result = &mut serving => result,
            _ = async { stopping.wait_for(|stop| *stop).await.is_ok() } => {
                finish_in_flight(serving, server.shutdown_timeout).await
            }
        };
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
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

async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => StartError::AddrInUse { what, addr },
        _ => StartError::Bind { what, addr, source },
    })
}

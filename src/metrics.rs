//! Prometheus metrics at `http://{server.metrics_addr}/metrics`.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), installed on
//! first use; each server instance serves its rendering on its own listener and stops with it.

use std::{future::Future, sync::OnceLock};

use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// The handle that renders the process's metrics, installing the recorder the first time.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = buckets(PrometheusBuilder::new()).build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; we then render an empty set.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Histogram buckets (Prometheus histograms, so percentiles aggregate across workers):
/// latencies, batch sizes and rows, tokens per batch, padding shares.
fn buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    let seconds =
        [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let tokens = [64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0];
    let shares = [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75];
    let suffix = |s: &str| Matcher::Suffix(s.to_string());
    let full = |s: &str| Matcher::Full(s.to_string());
    [
        (suffix("_seconds"), &seconds[..]),
        (full("lote_batch_size"), &sizes[..]),
        (full("lote_decode_rows"), &sizes[..]),
        (full("lote_batch_tokens"), &tokens[..]),
        (full("lote_batch_padding_ratio"), &shares[..]),
    ]
    .into_iter()
    .fold(builder, |builder, (matcher, buckets)| {
        builder.set_buckets_for_metric(matcher, buckets).expect("buckets are not empty")
    })
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = handle();
    let app = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

//! `lote health`: asks a worker's grpc.health.v1 once and turns the answer into an exit code,
//! for container health checks (Docker HEALTHCHECK, compose) where no gRPC probe is built in.
//! Exit 0 when the service is SERVING; 1 when it is anything else, unknown or unreachable, with
//! one line on stderr saying which.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The worker: http://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The service to ask about: "" (the default) is the whole worker, SERVING once every model
    /// is loaded; `lote.model.NAME` is one model.
    #[arg(long, default_value = "")]
    pub service: String,
    /// How long connecting and the call may take together.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{addr}: {source}")]
    BadAddr { addr: String, source: tonic::transport::Error },
    #[error("cannot reach {addr}: {source}")]
    Unreachable { addr: String, source: tonic::transport::Error },
    #[error("{addr} gave no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr}: {:?}: {}", .status.code(), .status.message())]
    Call { addr: String, status: tonic::Status },
    #[error("{addr}: service {service:?} is {status}")]
    NotServing { addr: String, service: String, status: &'static str },
}

/// Prints `SERVING` and returns Ok when the service serves.
pub async fn check(args: &HealthArgs) -> Result<(), HealthError> {
    let addr = args.addr.clone();
    let ask = async {
        let endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|source| HealthError::BadAddr { addr: addr.clone(), source })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| HealthError::Unreachable { addr: addr.clone(), source })?;
        HealthClient::new(channel)
            .check(HealthCheckRequest { service: args.service.clone() })
            .await
            .map_err(|status| HealthError::Call { addr: addr.clone(), status })
    };
    let response = tokio::time::timeout(args.timeout, ask)
        .await
        .map_err(|_| HealthError::Timeout { addr: addr.clone(), timeout: args.timeout })??;
    let status = response.into_inner().status();
    if status != tonic_health::pb::health_check_response::ServingStatus::Serving {
        return Err(HealthError::NotServing {
            addr,
            service: args.service.clone(),
            status: status.as_str_name(),
        });
    }
    println!("SERVING");
    Ok(())
}

//! `lote.v1.Worker`: what this worker is and what it runs on.

use tonic::{Request, Response, Status};

use super::pb::{GetInfoRequest, GetInfoResponse, worker_server::Worker};
use crate::device::{Placement, libtorch_version};

pub struct WorkerService {
    info: GetInfoResponse,
}

impl WorkerService {
    pub fn new(placement: &Placement) -> Self {
        Self {
            info: GetInfoResponse {
                version: env!("CARGO_PKG_VERSION").into(),
                libtorch_version: libtorch_version(),
                device: placement.device_name(),
                dtype: placement.dtype.to_string(),
                cuda_device_count: tch::Cuda::device_count() as u32,
            },
        }
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        Ok(Response::new(self.info.clone()))
    }
}

//! `lote.v1.Models`: what this worker serves and whether each model is ready.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb;
use crate::engine::{
    call::EngineError,
    registry::{ModelInfo, Registry},
};

pub struct ModelsService {
    registry: Arc<Registry>,
}

impl ModelsService {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

fn message(info: ModelInfo) -> pb::ModelInfo {
    pb::ModelInfo {
        name: info.name,
        task: info.task.to_string(),
        architecture: info.architecture,
        max_input_tokens: info.max_input_tokens as u32,
        device: info.device,
        dtype: info.dtype,
        state: if info.ready { "ready" } else { "loading" }.into(),
        weights_sha256: info.weights_sha256,
    }
}

#[tonic::async_trait]
impl pb::models_server::Models for ModelsService {
    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let models = self.registry.info().into_iter().map(message).collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let name = request.into_inner().name;
        let info = self.registry.info().into_iter().find(|info| info.name == name);
        info.map(|info| Response::new(message(info)))
            .ok_or_else(|| Status::from(EngineError::UnknownModel(name)))
    }
}

//! Every model of the settings, loaded at start and served by name. A model is `loading` until
//! its weights are on the device and its thread runs, then `ready`; calls to a loading model get
//! UNAVAILABLE. A model that cannot load stops the worker with a clear error (a worker that
//! silently lacks a model would take traffic it cannot answer).

use std::{path::PathBuf, sync::OnceLock};

use super::{
    call::EngineError,
    cpu_pool::CpuPool,
    encoder::EncoderService,
    generation::GenerationService,
    load::{Loaded, ModelLoadError, load},
    policy::Policy,
};
use crate::{
    device::Placement,
    settings::{ModelSettings, Task},
    tasks::pipeline::ModelIdentity,
    tokenize::TextTokenizer,
};

/// The grpc.health.v1 service name of one model: `lote.model.NAME`.
pub fn health_name(model: &str) -> String {
    format!("lote.model.{model}")
}

/// A loaded model, by kind of task.
#[derive(Clone)]
pub enum ServedModel {
    Encoder(EncoderService),
    Generation(GenerationService),
}

impl ServedModel {
    /// Starts the engine threads of a loaded model (on the current tokio runtime).
    pub fn start(
        name: &str,
        loaded: Loaded,
        policy: Policy,
        pool: CpuPool,
        max_input_tokens: Option<usize>,
    ) -> Self {
        match loaded {
            Loaded::Encoder(pipeline) => ServedModel::Encoder(EncoderService::start(
                name,
                *pipeline,
                policy,
                pool,
                max_input_tokens,
            )),
            Loaded::Generation(pipeline) => ServedModel::Generation(GenerationService::start(
                name,
                *pipeline,
                policy,
                pool,
                max_input_tokens,
            )),
        }
    }

    /// The model directory's name and weights hash.
    pub fn identity(&self) -> &ModelIdentity {
        match self {
            ServedModel::Encoder(s) => &s.pipeline().identity,
            ServedModel::Generation(s) => &s.pipeline().identity,
        }
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        match self {
            ServedModel::Encoder(s) => &s.pipeline().tokenizer,
            ServedModel::Generation(s) => &s.pipeline().tokenizer,
        }
    }

    pub fn task(&self) -> Task {
        match self {
            ServedModel::Encoder(s) => s.pipeline().task,
            ServedModel::Generation(s) => s.pipeline().task,
        }
    }
}

/// What `lote.v1.Models` reports of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub task: Task,
    pub architecture: String,
    pub max_input_tokens: usize,
    pub device: String,
    pub dtype: String,
    pub ready: bool,
    pub weights_sha256: String,
}

struct Slot {
    settings: ModelSettings,
    architecture: String,
    loaded: OnceLock<(ServedModel, usize, String)>,
}

/// The models of this worker.
pub struct Registry {
    slots: Vec<Slot>,
    placement: Placement,
}

/// Why a model could not load.
#[derive(Debug, thiserror::Error)]
#[error("model `{name}` ({}) could not load: {source}", path.display())]
pub struct LoadError {
    pub name: String,
    pub path: PathBuf,
    pub source: ModelLoadError,
}

impl Registry {
    /// Every model of the settings, all still loading.
    pub fn new(models: &[ModelSettings], placement: Placement) -> Self {
        let slots = models
            .iter()
            .map(|settings| Slot {
                architecture: read_architecture(&settings.path),
                settings: settings.clone(),
                loaded: OnceLock::new(),
            })
            .collect();
        Self { slots, placement }
    }

    /// Loads every model in turn (off the runtime's threads), making each ready as it comes.
    pub async fn load_all(
        &self,
        policy: Policy,
        pool: &CpuPool,
        max_input_tokens: usize,
        health: &tonic_health::server::HealthReporter,
    ) -> Result<(), LoadError> {
        for slot in &self.slots {
            let settings = slot.settings.clone();
            let placement = self.placement.with_dtype(settings.dtype);
            let error = |source| LoadError {
                name: settings.name.clone(),
                path: settings.path.clone(),
                source,
            };
            let loaded = {
                let settings = settings.clone();
                tokio::task::spawn_blocking(move || load(&settings, &placement, policy))
                    .await
                    .map_err(|e| error(ModelLoadError::Interrupted(e.to_string())))?
                    .map_err(error)?
            };
            let service = ServedModel::start(
                &settings.name,
                loaded,
                policy,
                pool.clone(),
                Some(max_input_tokens),
            );
            let max = service.tokenizer().max_length;
            let sha = service.identity().sha256.clone();
            let served = (service, max, sha);
            let _ = slot.loaded.set(served);
            health
                .set_service_status(
                    health_name(&settings.name),
                    tonic_health::ServingStatus::Serving,
                )
                .await;
            tracing::info!(model = %settings.name, task = %settings.task, "model ready");
        }
        Ok(())
    }

    /// The model named `name`, once ready.
    pub fn get(&self, name: &str) -> Result<&ServedModel, EngineError> {
        let slot = self
            .slots
            .iter()
            .find(|slot| slot.settings.name == name)
            .ok_or_else(|| EngineError::UnknownModel(name.to_string()))?;
        slot.loaded
            .get()
            .map(|(served, ..)| served)
            .ok_or_else(|| EngineError::Loading(name.into()))
    }

    /// The task a model serves, for callers that must check it first.
    /// The model named in a call, checked to serve `task`.
    pub fn serving(&self, name: &str, task: Task) -> Result<&ServedModel, EngineError> {
        let served = self.get(name)?;
        let serves = self.task_of(name).expect("a served model has settings");
        if serves != task {
            return Err(EngineError::WrongTask {
                model: name.into(),
                task: serves.to_string(),
                wanted: task.to_string(),
            });
        }
        Ok(served)
    }

    pub fn task_of(&self, name: &str) -> Option<Task> {
        self.slots.iter().find(|s| s.settings.name == name).map(|s| s.settings.task)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.settings.name.as_str())
    }

    pub fn info(&self) -> Vec<ModelInfo> {
        self.slots
            .iter()
            .map(|slot| {
                let loaded = slot.loaded.get();
                ModelInfo {
                    name: slot.settings.name.clone(),
                    task: slot.settings.task,
                    architecture: slot.architecture.clone(),
                    max_input_tokens: loaded.map_or(0, |(_, max, _)| *max),
                    device: self.placement.device_name(),
                    dtype: self.placement.with_dtype(slot.settings.dtype).dtype.to_string(),
                    ready: loaded.is_some(),
                    weights_sha256: loaded.map(|(.., sha)| sha.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// config.json's `architectures[0]`, else its `model_type`, else "unknown".
fn read_architecture(dir: &std::path::Path) -> String {
    let config: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    config["architectures"][0]
        .as_str()
        .or_else(|| config["model_type"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

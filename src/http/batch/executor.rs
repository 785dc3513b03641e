//! A batch line computed by the very route handler an HTTP call of it would reach: the line's
//! body is sent to an in-process router (no socket) whose calls go to the bulk lane, so a
//! batch line answers exactly what the same call answers over HTTP. The answer is stored
//! with its status: 200 succeeds; a 4xx is the line's fault and final; 429/503 (busy,
//! stopping) go back to the queue; a model failure (500) is retried alone once, as every job
//! document is, and then final. Documents of lote's own jobs pass to the engine executor.

use std::sync::Arc;

use axum::{Router, body::Body, http::Request};
use serde_json::Value;
use tower::ServiceExt;

use super::output::stored_response;
use crate::{
    engine::call::EngineError,
    http::{Calls, HttpState, router},
    jobs::{
        JobRecord,
        worker::{Executor, Failure},
    },
    settings::Task,
};

pub struct BatchExecutor {
    engine: Arc<dyn Executor>,
    /// Lines on their first delivery: batched with others in the bulk lane.
    batched: Router,
    /// Lines retried after a model failure: each in a batch of its own.
    alone: Router,
}

impl BatchExecutor {
    /// `state` is the HTTP state to copy (registry and limits); its calls go to the bulk lane.
    pub fn new(engine: Arc<dyn Executor>, state: &HttpState) -> Self {
        let with = |alone| {
            router(Arc::new(HttpState {
                registry: state.registry.clone(),
                limits: state.limits.clone(),
                started: state.started,
                keys: None,
                calls: Calls::Bulk { alone },
                batches: None,
            }))
        };
        Self { engine, batched: with(false), alone: with(true) }
    }
}

#[tonic::async_trait]
impl Executor for BatchExecutor {
    fn check(&self, model: &str, task: Task, params: &Value) -> Result<(), EngineError> {
        self.engine.check(model, task, params)
    }

    async fn execute(
        &self,
        job: &JobRecord,
        input: &Value,
        params: &Value,
        alone: bool,
    ) -> Result<Value, Failure> {
        let Some(endpoint) = &job.endpoint else {
            return self.engine.execute(job, input, params, alone).await;
        };
        let router = if alone { &self.alone } else { &self.batched };
        let request = Request::post(endpoint.as_str())
            .header("content-type", "application/json")
            .body(Body::from(input.to_string()))
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let response = router.clone().oneshot(request).await.expect("a router never fails");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| Failure::Transient(format!("reading the route's answer: {e}")))?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Permanent(format!("the route answered no JSON: {e}")))?;
        let stored = stored_response(status.as_u16(), body);
        match status.as_u16() {
            200 => Ok(stored),
            429 | 503 => Err(Failure::Transient(stored.to_string())),
            500 if !alone => Err(Failure::Transient(stored.to_string())),
            _ => Err(Failure::Permanent(stored.to_string())),
        }
    }
}

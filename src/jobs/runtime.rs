//! Wiring jobs into a worker: the store, the executor over the engine, and the transport the
//! settings choose (RabbitMQ when `amqp.enabled`, else the in-process queue). The gRPC service
//! can take submissions at once; documents are consumed once the models are loaded.

use std::sync::Arc;

use tokio::sync::watch;

use super::{
    amqp,
    local::{self, LocalQueueHandle},
    service::{Dispatch, Jobs, sweep_ended, sweep_unpublished},
    store::JobStore,
    worker::{DocumentHandler, Executor},
};
use crate::settings::Settings;

/// Starts consuming documents when the models are ready.
pub struct Consumers {
    store: JobStore,
    handler: Arc<DocumentHandler>,
    dispatch: Dispatch,
    amqp: crate::settings::AmqpSettings,
    models: Vec<String>,
    /// How long ended jobs are kept (`jobs.retention`).
    retention: std::time::Duration,
}

/// The jobs of a worker computing documents with `executor` (the engine, through the HTTP
/// routes for batch lines; a stand-in model in tests about delivery).
pub fn prepare_with(
    settings: &Settings,
    store: JobStore,
    executor: Arc<dyn Executor>,
) -> (Jobs, Consumers) {
    let dispatch = if settings.amqp.enabled {
        let topology = amqp::Topology {
            prefix: settings.amqp.queue_prefix.clone(),
            delivery_limit: settings.amqp.delivery_limit,
        };
        Dispatch::Amqp(amqp::Publisher::new(topology))
    } else {
        Dispatch::Local(LocalQueueHandle::default())
    };
    let handler = Arc::new(DocumentHandler::new(store.clone(), executor.clone()));
    let jobs = Jobs::new(
        store.clone(),
        executor,
        dispatch.clone(),
        settings.server.limits.max_inputs_per_call,
    );
    let consumers = Consumers {
        store,
        handler,
        dispatch,
        amqp: settings.amqp.clone(),
        models: settings.models.iter().map(|m| m.name.clone()).collect(),
        retention: settings.jobs.retention,
    };
    (jobs, consumers)
}

impl Consumers {
    /// Consumes until `stop` turns true; in-flight documents finish first.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let retention = tokio::spawn(sweep_ended(self.store.clone(), self.retention, stop.clone()));
        self.consume(stop).await;
        let _ = retention.await;
    }

    async fn consume(self, stop: watch::Receiver<bool>) {
        match self.dispatch {
            Dispatch::Local(handle) => {
                let concurrency = usize::from(self.amqp.prefetch);
                let mut stop = stop;
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                local::run(self.store, self.handler, concurrency, handle, stopped).await;
            }
            Dispatch::Amqp(publisher) => {
                let transport = amqp::start(
                    &self.amqp,
                    self.models,
                    self.handler,
                    publisher.clone(),
                    stop.clone(),
                );
                let sweeper = tokio::spawn(sweep_unpublished(self.store, publisher, stop.clone()));
                let mut stop = stop;
                let _ = stop.wait_for(|s| *s).await;
                let _ = sweeper.await;
                transport.stopped().await;
            }
        }
    }
}

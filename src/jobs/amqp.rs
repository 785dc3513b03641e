//! RabbitMQ as the cluster transport for job documents (lapin).
//!
//! Topology, all durable, named from `amqp.queue_prefix` (default `lote`):
//! - `{prefix}.documents.{model}`: one quorum queue per model, one persistent message per
//!   document; `x-delivery-limit` = `amqp.delivery_limit`, dead-lettering at-least-once
//!   (`x-dead-letter-strategy`, with `x-overflow = reject-publish`) to the exchange
//!   `{prefix}.dead-letter`;
//! - `{prefix}.dead-letter` (fanout) into the quorum queue `{prefix}.dead-letter`, which keeps
//!   every dead-lettered message for people to look at, and `{prefix}.dead-letter.accounting`,
//!   which workers consume to record such documents as failed (so a message that went past the
//!   delivery limit is still accounted for in its job);
//! - `{prefix}.results`: a topic exchange; each finished document is published there with its
//!   job id as routing key.
//!
//! Publishing uses publisher confirms and `mandatory`; a document is marked published in the
//! store only once confirmed, and a sweeper republishes what was stored but never confirmed
//! (duplicates are harmless: results are written once). Consuming uses manual acks and a
//! prefetch of `amqp.prefetch`, set again on every connection. The connection is recovered
//! with backoff after any failure (a broker restart, `rabbitmqctl close_all_connections`), and
//! the consumers subscribe again, also after a broker-side cancel.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use tokio::sync::watch;

use super::{
    store::{JobStore, now_ms},
    wire::{self, DocumentMessage},
    worker::{DocumentHandler, Settle},
};
use crate::settings::AmqpSettings;

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ is not connected")]
    Disconnected,
    #[error("RabbitMQ did not accept the message: {0}")]
    NotConfirmed(String),
}

/// Queue and exchange names.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    pub delivery_limit: u32,
}

impl Topology {
    pub fn documents_queue(&self, model: &str) -> String {
        format!("{}.documents.{model}", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    pub fn accounting_queue(&self) -> String {
        format!("{}.dead-letter.accounting", self.prefix)
    }

    pub fn results_exchange(&self) -> String {
        format!("{}.results", self.prefix)
    }

    fn quorum(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
        args
    }

    /// Declares everything a worker or publisher of `models` needs (idempotent).
    pub async fn declare(&self, channel: &Channel, models: &[String]) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let queue = QueueDeclareOptions { durable: true, ..Default::default() };
        let dlx = self.dead_letter_exchange();
        channel
            .exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        for name in [self.dead_letter_queue(), self.accounting_queue()] {
            channel.queue_declare(name.as_str().into(), queue, self.quorum()).await?;
            channel
                .queue_bind(
                    name.as_str().into(),
                    dlx.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .exchange_declare(
                self.results_exchange().as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        for model in models {
            self.declare_documents_queue(channel, model).await?;
        }
        Ok(())
    }

    pub async fn declare_documents_queue(
        &self,
        channel: &Channel,
        model: &str,
    ) -> Result<(), lapin::Error> {
        let mut args = self.quorum();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        args.insert("x-dead-letter-exchange".into(), text(&self.dead_letter_exchange()));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(self.delivery_limit as i32));
        let options = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(self.documents_queue(model).as_str().into(), options, args).await?;
        Ok(())
    }
}

/// Resolves once `stop` is true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The broker URL with a heartbeat, unless it sets one.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&heartbeat=10")
    } else {
        format!("{url}?heartbeat=10")
    }
}

/// Publishes with confirms over the current connection (None while reconnecting).
#[derive(Clone)]
pub struct Publisher {
    topology: Topology,
    channel: Arc<tokio::sync::Mutex<Option<Channel>>>,
    declared: Arc<Mutex<HashSet<String>>>,
}

impl Publisher {
    pub fn new(topology: Topology) -> Self {
        Self { topology, channel: Arc::default(), declared: Arc::default() }
    }

    async fn set(&self, channel: Option<Channel>) {
        self.declared.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.channel.lock().await = channel;
    }

    /// The current channel (None while reconnecting); the lock is not held while publishing.
    async fn channel(&self) -> Result<Channel, AmqpError> {
        self.channel.lock().await.clone().ok_or(AmqpError::Disconnected)
    }

    /// Declares a model's queue once per connection (so that `mandatory` publishes find it).
    async fn ensure_queue(&self, channel: &Channel, model: &str) -> Result<String, AmqpError> {
        let queue = self.topology.documents_queue(model);
        let known = self.declared.lock().unwrap_or_else(|p| p.into_inner()).contains(&queue);
        if !known {
            self.topology.declare_documents_queue(channel, model).await?;
            self.declared.lock().unwrap_or_else(|p| p.into_inner()).insert(queue.clone());
        }
        Ok(queue)
    }

    /// Publishes documents of `model` and waits for the broker to confirm every one of them
    /// (they are sent back to back, the confirms awaited after).
    pub async fn publish_documents(
        &self,
        model: &str,
        messages: &[DocumentMessage],
    ) -> Result<(), AmqpError> {
        let channel = self.channel().await?;
        let queue = self.ensure_queue(&channel, model).await?;
        let properties =
            BasicProperties::default().with_delivery_mode(2).with_content_type(wire::JSON.into());
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let body = message.encode_json();
            let confirm = channel
                .basic_publish("".into(), queue.as_str().into(), options, &body, properties.clone())
                .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirm = confirm.await?;
            if !confirm.is_ack() {
                return Err(AmqpError::NotConfirmed("nacked".into()));
            }
            if confirm.take_message().is_some() {
                return Err(AmqpError::NotConfirmed(format!("no queue took it ({queue})")));
            }
        }
        Ok(())
    }

    /// Announces a finished document on the results exchange (routing key: its job id),
    /// without waiting for the broker's confirm: the store already holds the result.
    pub async fn publish_result(&self, job: &str, body: &[u8]) -> Result<(), AmqpError> {
        let channel = self.channel().await?;
        let properties =
            BasicProperties::default().with_delivery_mode(2).with_content_type(wire::JSON.into());
        let _unconfirmed = channel
            .basic_publish(
                self.topology.results_exchange().as_str().into(),
                job.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?;
        Ok(())
    }
}

/// The running transport: whether it is connected now, and its task.
pub struct Transport {
    pub connected: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Transport {
    /// Waits until the transport has stopped (after `stop` turned true).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Connects (and reconnects, forever) and consumes the queues of `models` until `stop` turns
/// true.
pub fn start(
    settings: &AmqpSettings,
    models: Vec<String>,
    handler: Arc<DocumentHandler>,
    publisher: Publisher,
    stop: watch::Receiver<bool>,
) -> Transport {
    let topology = publisher.topology.clone();
    let (connected_tx, connected) = watch::channel(false);
    let url = with_heartbeat(&settings.url);
    let prefetch = settings.prefetch;
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut stop = stop;
        loop {
            if *stop.borrow() {
                break;
            }
            let session = Session {
                url: &url,
                topology: &topology,
                models: &models,
                prefetch,
                handler: handler.clone(),
                publisher: publisher.clone(),
                connected: &connected_tx,
            };
            match session.run(&mut stop).await {
                Ok(()) => break,
                Err(error) => {
                    let _ = connected_tx.send(false);
                    publisher.set(None).await;
                    tracing::warn!(%error, ?backoff, "RabbitMQ connection lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let _ = connected_tx.send(false);
        publisher.set(None).await;
    });
    Transport { connected, task }
}

/// One connection's life.
struct Session<'a> {
    url: &'a str,
    topology: &'a Topology,
    models: &'a [String],
    prefetch: u16,
    handler: Arc<DocumentHandler>,
    publisher: Publisher,
    connected: &'a watch::Sender<bool>,
}

impl Session<'_> {
    /// Consumes until the connection fails (Err) or `stop` turns true (Ok).
    async fn run(self, stop: &mut watch::Receiver<bool>) -> Result<(), AmqpError> {
        let connection = Connection::connect(self.url, ConnectionProperties::default()).await?;
        let publishing = connection.create_channel().await?;
        self.topology.declare(&publishing, self.models).await?;
        publishing.confirm_select(ConfirmSelectOptions::default()).await?;
        self.publisher.set(Some(publishing)).await;
        let consuming = connection.create_channel().await?;
        consuming.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        let mut streams = futures::stream::SelectAll::new();
        let queues = self
            .models
            .iter()
            .map(|model| (self.topology.documents_queue(model), false))
            .chain(std::iter::once((self.topology.accounting_queue(), true)));
        for (queue, accounting) in queues {
            let consumer = consuming
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            // Each consumer ends with None, so that one cancelled by the broker is noticed even
            // while the others go on.
            let ended = futures::stream::once(async { None });
            streams.push(consumer.map(Some).chain(ended).map(move |d| (d, accounting)).boxed());
        }
        let _ = self.connected.send(true);
        tracing::info!(
            queues = self.models.len() + 1,
            prefetch = self.prefetch,
            "consuming from RabbitMQ"
        );
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                next = streams.next() => match next {
                    Some((Some(Ok(delivery)), accounting)) => {
                        let (handler, publisher) = (self.handler.clone(), self.publisher.clone());
                        tasks.spawn(async move {
                            if accounting {
                                account(&handler, delivery).await;
                            } else {
                                process(&handler, &publisher, delivery).await;
                            }
                        });
                    }
                    Some((Some(Err(error)), _)) => return Err(error.into()),
                    // A consumer was cancelled (queue deleted, broker-side cancel): start over.
                    Some((None, _)) | None => return Err(AmqpError::Disconnected),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stopped(stop) => {
                    while tasks.join_next().await.is_some() {}
                    let _ = connection.close(200, "worker stopping".into()).await;
                    return Ok(());
                }
            }
        }
    }
}

fn content_type(delivery: &Delivery) -> Option<String> {
    delivery.properties.content_type().as_ref().map(|t| t.to_string())
}

/// Handles one document delivery and settles it.
async fn process(handler: &DocumentHandler, publisher: &Publisher, delivery: Delivery) {
    let message = DocumentMessage::decode(&delivery.data, content_type(&delivery).as_deref());
    let handled = handler.handle(message, delivery.redelivered).await;
    let settled = match &handled.settle {
        Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
        Settle::Requeue => delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await,
        Settle::DeadLetter(reason) => {
            tracing::warn!(%reason, "document dead-lettered");
            delivery.reject(BasicRejectOptions { requeue: false }).await
        }
    };
    if let Err(error) = settled {
        // The channel is gone: the broker redelivers the message, which finds its result.
        tracing::info!(%error, "could not settle a delivery");
    }
    if let Some(document) = handled.finished {
        let event = serde_json::json!({
            "job_id": document.job_id,
            "custom_id": document.custom_id,
            "seq": document.seq,
            "state": document.state.as_str(),
            "result": document.result,
            "error": document.error,
        });
        let job = &document.job_id;
        if let Err(error) = publisher.publish_result(job, event.to_string().as_bytes()).await {
            tracing::info!(%error, "result event not published");
        }
    }
}

/// Records a dead-lettered document as failed, with the broker's reason.
async fn account(handler: &DocumentHandler, delivery: Delivery) {
    let reason = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-first-death-reason").cloned())
        .and_then(|value| match value {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        })
        .map(|reason| match reason.as_str() {
            "delivery_limit" => "the delivery limit was reached".to_string(),
            "rejected" => "rejected by a worker".to_string(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "dead-lettered".to_string());
    if let Ok(message) = DocumentMessage::decode(&delivery.data, content_type(&delivery).as_deref())
        && let Err(error) = handler.account_dead_letter(&message, &reason).await
    {
        tracing::warn!(%error, "could not record a dead-lettered document; retrying");
        let _ = delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await;
        return;
    }
    let _ = delivery.ack(BasicAckOptions::default()).await;
}

/// Publishes every stored document not yet confirmed by the broker and created before
/// `older_than` ago, marking them once confirmed. Returns how many were published.
pub async fn publish_pending(
    store: &JobStore,
    publisher: &Publisher,
    older_than: Duration,
) -> Result<usize, String> {
    let mut published = 0;
    loop {
        let before = now_ms() - older_than.as_millis() as i64;
        let documents = store.unpublished(before, 1000).await.map_err(|e| e.to_string())?;
        if documents.is_empty() {
            return Ok(published);
        }
        // Consecutive documents of one job go together.
        for group in documents.chunk_by(|(a, _), (b, _)| a.id == b.id) {
            let job = &group[0].0;
            let messages: Vec<DocumentMessage> =
                group.iter().map(|(_, document)| DocumentMessage::from_record(document)).collect();
            publisher.publish_documents(&job.model, &messages).await.map_err(|e| e.to_string())?;
            let seqs: Vec<i64> = group.iter().map(|(_, document)| document.seq).collect();
            store.mark_published(&job.id, &seqs).await.map_err(|e| e.to_string())?;
            published += group.len();
        }
    }
}

//! The real RabbitMQ (127.0.0.1:5672) and PostgreSQL (127.0.0.1:5432) for the job tests: a
//! fresh database and unique queue names per test, and raw access to the queues.

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeleteOptions},
};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The server's `postgres` database, as scripts/services found it (LOTE_TEST_POSTGRES).
fn postgres_admin() -> String {
    std::env::var("LOTE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new, empty PostgreSQL database; its URL.
pub async fn fresh_postgres() -> String {
    let name = format!("lote_test_{}", uuid::Uuid::now_v7().simple());
    let admin_url = postgres_admin();
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {admin_url}: {e}; scripts/services starts it (make test runs it)")
    });
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
    admin.close().await;
    let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// Queue and exchange names no other test uses.
pub fn unique_prefix() -> String {
    format!("lote-test-{}", uuid::Uuid::now_v7().simple())
}

pub async fn connect() -> Connection {
    Connection::connect(AMQP_URL, ConnectionProperties::default()).await.unwrap_or_else(|e| {
        panic!("RabbitMQ at {AMQP_URL}: {e}; scripts/services starts it (make test runs it)")
    })
}

/// Publishes a raw body straight to a model's documents queue.
pub async fn publish_raw(prefix: &str, model: &str, body: &[u8], content_type: &str) {
    publish_many(prefix, model, &[body.to_vec()], content_type).await;
}

/// Takes every message of the dead-letter queue.
pub async fn dead_letters(prefix: &str) -> Vec<Vec<u8>> {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{prefix}.dead-letter");
    let mut bodies = Vec::new();
    while let Some(message) =
        channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap()
    {
        bodies.push(message.delivery.data.clone());
        message.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
    bodies
}

/// Messages ready in a queue.
pub async fn ready_messages(queue: &str) -> u32 {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = channel.queue_declare(queue.into(), options, Default::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

/// Removes a test's queues (its exchanges are harmless and small).
pub async fn delete_queues(prefix: &str, models: &[&str]) {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let mut queues: Vec<String> =
        models.iter().map(|m| format!("{prefix}.documents.{m}")).collect();
    queues.push(format!("{prefix}.dead-letter"));
    queues.push(format!("{prefix}.dead-letter.accounting"));
    for queue in queues {
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Waits until a consumer is subscribed to `queue` (the worker is connected).
pub async fn wait_for_consumer(queue: &str) {
    for _ in 0..600 {
        let connection = connect().await;
        let channel = connection.create_channel().await.unwrap();
        let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = channel.queue_declare(queue.into(), options, Default::default()).await;
        let _ = connection.close(200, "done".into()).await;
        if declared.is_ok_and(|q| q.consumer_count() > 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no consumer on {queue} within 60 s");
}

/// Publishes many bodies to a model's documents queue over one confirmed channel.
pub async fn publish_many(prefix: &str, model: &str, bodies: &[Vec<u8>], content_type: &str) {
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let queue = format!("{prefix}.documents.{model}");
    let properties =
        BasicProperties::default().with_delivery_mode(2).with_content_type(content_type.into());
    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
    let mut confirms = Vec::with_capacity(bodies.len());
    for body in bodies {
        let publish = channel
            .basic_publish("".into(), queue.as_str().into(), options, body, properties.clone())
            .await
            .unwrap();
        confirms.push(publish);
    }
    for confirm in confirms {
        let confirm = confirm.await.unwrap();
        assert!(confirm.is_ack() && confirm.take_message().is_none(), "{queue} took the message");
    }
    let _ = connection.close(200, "done".into()).await;
}

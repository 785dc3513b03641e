//! The job transport's ceiling: documents per second through RabbitMQ and the job store with a
//! model that answers at once (an echo), at several prefetch counts.
//! `cargo run --release --example jobs_transport -- [--documents N] [--store URL]`
//! (RabbitMQ on 127.0.0.1:5672; the store defaults to a fresh SQLite file, give a
//! postgres:// URL for the cluster store). Prints one JSON line per prefetch.

use std::{sync::Arc, time::Instant};

use clap::Parser;
use lote::{
    Settings,
    engine::call::EngineError,
    jobs::{
        JobRecord, NewDocument,
        runtime::prepare_with,
        service::Submission,
        store::JobStore,
        worker::{Executor, Failure},
    },
    settings::{ModelSettings, Task},
};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3000)]
    documents: usize,
    /// A postgres:// database (must exist); each run uses its own tables' rows.
    #[arg(long)]
    store: Option<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,32,256")]
    prefetch: Vec<u16>,
}

struct Echo;

#[tonic::async_trait]
impl Executor for Echo {
    fn check(&self, _: &str, _: Task, _: &Value) -> Result<(), EngineError> {
        Ok(())
    }

    async fn execute(
        &self,
        _: &JobRecord,
        input: &Value,
        _: &Value,
        _: bool,
    ) -> Result<Value, Failure> {
        Ok(json!({ "echo": input["text"] }))
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    for prefetch in &args.prefetch {
        let url = args.store.clone().unwrap_or_else(|| {
            format!("sqlite://{}", dir.path().join(format!("p{prefetch}.db")).display())
        });
        let store = JobStore::connect(&url).await.unwrap();
        let prefix = format!("lote-bench-{}", uuid::Uuid::now_v7().simple());
        let mut settings = Settings::default();
        settings.amqp.enabled = true;
        settings.amqp.queue_prefix = prefix.clone();
        settings.amqp.prefetch = *prefetch;
        settings.models = vec![ModelSettings {
            name: "echo".into(),
            task: Task::TextClassification,
            path: "/none".into(),
            dtype: None,
        }];
        let (jobs, consumers) = prepare_with(&settings, store.clone(), Arc::new(Echo));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let consuming = tokio::spawn(consumers.run(stopped));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let documents = (0..args.documents)
            .map(|i| NewDocument {
                custom_id: format!("d{i}"),
                input: json!({ "text": format!("documento {i}") }),
                params: None,
            })
            .collect();
        let started = Instant::now();
        let job = jobs
            .submit(Submission {
                task: Task::TextClassification,
                model: "echo".into(),
                params: Value::Null,
                documents,
                idempotency_key: None,
                external_documents: 0,
            })
            .await
            .unwrap();
        let submitted = started.elapsed().as_secs_f64();
        loop {
            let now = store.job(&job.id).await.unwrap().unwrap();
            if now.state.is_final() {
                assert_eq!(now.succeeded as usize, args.documents);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({
                "prefetch": prefetch,
                "documents": args.documents,
                "store": if url.starts_with("sqlite") { "sqlite" } else { "postgres" },
                "submit_seconds": submitted,
                "seconds": seconds,
                "documents_per_second": args.documents as f64 / seconds,
            })
        );
        let _ = stop.send(true);
        let _ = consuming.await;
        let cleanup =
            lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
                .await
                .unwrap();
        let channel = cleanup.create_channel().await.unwrap();
        for queue in ["documents.echo", "dead-letter", "dead-letter.accounting"] {
            let _ = channel
                .queue_delete(format!("{prefix}.{queue}").as_str().into(), Default::default())
                .await;
        }
    }
}

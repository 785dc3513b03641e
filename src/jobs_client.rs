//! The job commands of the `lote` CLI, as clients of a running worker's `lote.v1.Jobs`:
//! `submit` (with a progress bar until the job ends, or `--detach`), `status`, `results`,
//! `cancel` and `jobs`.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::PathBuf,
};

use serde_json::{Map, Value};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{
    client::{BearerKey, ClientError},
    grpc::pb::{self, jobs_client::JobsClient},
};

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The worker: http://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The API key, for a worker with server.auth on.
    #[arg(long, env = "LOTE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

type Client = JobsClient<InterceptedService<Channel, BearerKey>>;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub model: String,
    /// JSONL documents: {"custom_id"?, "text"} or {"custom_id"?, "question", "context"},
    /// optional "params". Without custom_id, the line number is used.
    #[arg(long, required_unless_present = "external")]
    pub input: Option<PathBuf>,
    /// Instead of --input: a job of this many documents that another service publishes
    /// straight to the model's queue (see README).
    #[arg(long, conflicts_with = "input")]
    pub external: Option<u32>,
    /// A parameter for every document (`max_new_tokens=60`).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Submitting twice with the same key returns the first job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print the job id and return at once.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub target: Target,
    pub job: String,
}

#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub target: Target,
    pub job: String,
    /// Where to write one JSON line per finished document (stdout when absent).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only jobs in this state.
    #[arg(long)]
    pub state: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobsCliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("job {id} ended {state}: {failed} of {total} documents failed")]
    Failed { id: String, state: String, failed: u64, total: u64 },
}

impl From<tonic::Status> for JobsCliError {
    fn from(status: tonic::Status) -> Self {
        Self::Client(ClientError::Status(status))
    }
}

fn usage(message: String) -> JobsCliError {
    JobsCliError::Client(ClientError::Usage(message))
}

fn io_error(path: &std::path::Path, source: std::io::Error) -> JobsCliError {
    JobsCliError::Client(ClientError::Io { path: path.to_path_buf(), source })
}

async fn client(target: &Target) -> Result<Client, JobsCliError> {
    let key = BearerKey::new(target.api_key.as_deref())?;
    let connect = |source| ClientError::Connect { addr: target.addr.clone(), source };
    let channel = Channel::from_shared(target.addr.clone())
        .map_err(|e| usage(e.to_string()))?
        .connect()
        .await
        .map_err(connect)?;
    Ok(JobsClient::with_interceptor(channel, key).max_decoding_message_size(usize::MAX))
}

/// The documents of a JSONL file.
fn read_documents(path: &PathBuf) -> Result<Vec<pb::JobDocument>, JobsCliError> {
    let io = |source| io_error(path, source);
    let file = std::fs::File::open(path).map_err(io)?;
    let mut documents = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| usage(format!("{}:{}: {why}", path.display(), index + 1));
        let value: Map<String, Value> =
            serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let text =
            |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let custom_id = match value.get("custom_id").or_else(|| value.get("id")) {
            Some(Value::String(id)) => id.clone(),
            Some(other) => other.to_string(),
            None => (index + 1).to_string(),
        };
        documents.push(pb::JobDocument {
            custom_id,
            text: text("text"),
            question: text("question"),
            context: text("context"),
            params_json: value.get("params").map(Value::to_string).unwrap_or_default(),
            text_pair: text("text_pair"),
            query: text("query"),
            documents: value
                .get("documents")
                .and_then(Value::as_array)
                .map(|items| items.iter().map(|d| d.as_str().unwrap_or_default().into()).collect())
                .unwrap_or_default(),
        });
    }
    Ok(documents)
}

fn print_job(job: &pb::Job) {
    println!(
        "{} {} ({} on {}): {} of {} succeeded, {} failed, {} pending",
        job.id, job.state, job.task, job.model, job.succeeded, job.total, job.failed, job.pending
    );
}

pub async fn submit(args: &SubmitArgs) -> Result<(), JobsCliError> {
    let params = crate::run::parse_cli_params(&args.params).map_err(|e| usage(e.to_string()))?;
    let documents = match &args.input {
        Some(input) => read_documents(input)?,
        None => Vec::new(),
    };
    let mut client = client(&args.target).await?;
    // Large files go as a client stream, a thousand documents a message.
    let mut chunks = documents.chunks(1000).map(<[pb::JobDocument]>::to_vec);
    let header = pb::SubmitJobRequest {
        model: args.model.clone(),
        task: args.task.clone(),
        params_json: Value::Object(params).to_string(),
        documents: chunks.next().unwrap_or_default(),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        external_documents: args.external.unwrap_or(0),
    };
    let rest: Vec<pb::SubmitJobRequest> =
        chunks.map(|documents| pb::SubmitJobRequest { documents, ..Default::default() }).collect();
    let job = client
        .submit_job_stream(tokio_stream::iter(std::iter::once(header).chain(rest)))
        .await?
        .into_inner();
    if args.detach {
        println!("{}", job.id);
        return Ok(());
    }
    eprintln!("job {} submitted: {} documents", job.id, job.total);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(job.total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} documents {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut events =
        client.watch_job(pb::WatchJobRequest { id: job.id.clone() }).await?.into_inner();
    let mut last = job;
    while let Some(event) = events.message().await? {
        if let Some(job) = event.job {
            if let Some(bar) = &bar {
                bar.set_position(job.succeeded + job.failed);
            }
            last = job;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print_job(&last);
    if last.state != "completed" {
        return Err(JobsCliError::Failed {
            id: last.id,
            state: last.state,
            failed: last.failed,
            total: last.total,
        });
    }
    Ok(())
}

pub async fn status(args: &JobArgs) -> Result<(), JobsCliError> {
    let job =
        client(&args.target).await?.get_job(pb::GetJobRequest { id: args.job.clone() }).await?;
    print_job(&job.into_inner());
    Ok(())
}

pub async fn cancel(args: &JobArgs) -> Result<(), JobsCliError> {
    let job = client(&args.target)
        .await?
        .cancel_job(pb::CancelJobRequest { id: args.job.clone() })
        .await?;
    print_job(&job.into_inner());
    Ok(())
}

pub async fn list(args: &ListArgs) -> Result<(), JobsCliError> {
    let mut client = client(&args.target).await?;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(pb::ListJobsRequest {
                state: args.state.clone().unwrap_or_default(),
                page_size: 100,
                page_token: page_token.clone(),
            })
            .await?
            .into_inner();
        for job in &page.jobs {
            print_job(job);
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// Writes every finished document as one JSON line: custom_id, state, and the result's fields
/// or the error.
pub async fn results(args: &ResultsArgs) -> Result<(), JobsCliError> {
    let mut client = client(&args.target).await?;
    let request = pb::GetResultsRequest { id: args.job.clone(), after: -1, from_start: true };
    let mut stream = client.get_results(request).await?.into_inner();
    let path = args.output.clone().unwrap_or_else(|| PathBuf::from("-"));
    let io = |source| io_error(&path, source);
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?)),
        None => Box::new(std::io::stdout().lock()),
    };
    while let Some(document) = stream.message().await? {
        let mut line = Map::new();
        line.insert("custom_id".into(), Value::String(document.custom_id));
        line.insert("state".into(), Value::String(document.state));
        if let Ok(Value::Object(fields)) = serde_json::from_str(&document.result_json) {
            line.extend(fields);
        }
        if !document.error.is_empty() {
            line.insert("error".into(), Value::String(document.error));
        }
        serde_json::to_writer(&mut out, &Value::Object(line)).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
}

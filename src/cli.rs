//! The `lote` command line. Exit codes: 0 done, 1 failed while running, 2 bad usage, bad settings
//! or a start-up fault (port in use, missing device), always with one line on stderr saying why.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing::info;

use crate::{
    device::{Placement, libtorch_version},
    engine::policy::Policy,
    server::{RunError, Server},
    settings::{Settings, SettingsLoader, Task},
    shutdown, telemetry,
};

#[derive(Debug, Parser)]
#[command(
    name = "lote",
    about = "Serve transformer models on LibTorch",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print lote's version, the libtorch it runs on and the device `auto` picks.
    #[arg(short = 'V', long, global = true)]
    version: bool,
    /// A TOML settings file, read in place of config/default.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (health, reflection, lote.v1) until SIGINT or SIGTERM.
    Serve,
    /// Print the effective settings (defaults, file and environment merged) as TOML.
    Config,
    /// Answer every line of a JSONL file with one model, offline.
    Run(RunArgs),
    /// Call a running worker once and print its answer as JSON.
    Infer(crate::client::InferArgs),
    /// Submit a JSONL file as a job; shows progress until it ends (or --detach).
    Submit(crate::jobs_client::SubmitArgs),
    /// A job's state and counts.
    Status(crate::jobs_client::JobArgs),
    /// A job's results as JSONL.
    Results(crate::jobs_client::ResultsArgs),
    /// Cancel a job: its pending documents are not computed.
    Cancel(crate::jobs_client::JobArgs),
    /// The jobs a worker's store holds, newest first.
    Jobs(crate::jobs_client::ListArgs),
    /// Ask a worker's grpc.health.v1: exit 0 when SERVING, 1 otherwise (container health checks).
    Health(crate::health_check::HealthArgs),
    /// Model directories.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Download a model directory from the Hugging Face hub (HF_ENDPOINT and HF_TOKEN honoured):
    /// config, tokenizer and safetensors weights only.
    Pull(crate::hub::PullArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// question-answering, fill-mask, text-classification, token-classification or
    /// feature-extraction.
    #[arg(long, value_parser = parse_task)]
    task: Task,
    /// JSONL input: {"id"?, "text"} or {"id"?, "question", "context"}, optional "params".
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// JSONL output, one line per input line, in input order.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// A task parameter for every line (`top_k=3`); a line's own "params" win.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
}

fn parse_task(text: &str) -> Result<Task, String> {
    text.parse()
}

/// What went wrong, and which exit code it earns.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Start(#[from] crate::server::StartError),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error("{failed} of {total} lines failed; see their \"error\" fields in {output}")]
    LinesFailed { failed: usize, total: usize, output: String },
    #[error("no command given: see `lote --help`")]
    Usage,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Infer(#[from] crate::client::ClientError),
    #[error(transparent)]
    Jobs(#[from] crate::jobs_client::JobsCliError),
    #[error(transparent)]
    Health(#[from] crate::health_check::HealthError),
    #[error(transparent)]
    Pull(#[from] crate::hub::PullError),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Settings(_) | CliError::Start(_) | CliError::Usage => ExitCode::from(2),
            CliError::Run(_) => ExitCode::from(2),
            // A model that cannot load is a settings fault found at start.
            CliError::Serve(crate::server::ServeError::Load(_)) => ExitCode::from(2),
            CliError::Infer(crate::client::ClientError::Usage(_)) => ExitCode::from(2),
            CliError::Infer(_) => ExitCode::from(1),
            CliError::Jobs(crate::jobs_client::JobsCliError::Client(
                crate::client::ClientError::Usage(_),
            )) => ExitCode::from(2),
            CliError::Jobs(_) | CliError::Health(_) | CliError::Pull(_) => ExitCode::from(1),
            CliError::Serve(_) | CliError::Runtime(_) | CliError::LinesFailed { .. } => {
                ExitCode::from(1)
            }
        }
    }
}

impl From<RunError> for CliError {
    fn from(error: RunError) -> Self {
        match error {
            RunError::Start(e) => CliError::Start(e),
            RunError::Serve(e) => CliError::Serve(e),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lote: error: {error}");
            error.exit_code()
        }
    }
}

fn execute(cli: Cli) -> Result<(), CliError> {
    if cli.version {
        println!("{}", version_report());
        return Ok(());
    }
    let loader = match &cli.config {
        Some(path) => SettingsLoader::new().file(path),
        None => SettingsLoader::new(),
    };
    let Some(command) = cli.command else {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return Err(CliError::Usage);
    };
    match command {
        Command::Serve => serve(loader.load()?),
        Command::Run(args) => run_file(loader.load()?, &args),
        Command::Infer(args) => Ok(client_runtime()?.block_on(crate::client::infer(&args))?),
        Command::Submit(args) => Ok(client_runtime()?.block_on(crate::jobs_client::submit(&args))?),
        Command::Status(args) => Ok(client_runtime()?.block_on(crate::jobs_client::status(&args))?),
        Command::Results(args) => {
            Ok(client_runtime()?.block_on(crate::jobs_client::results(&args))?)
        }
        Command::Cancel(args) => Ok(client_runtime()?.block_on(crate::jobs_client::cancel(&args))?),
        Command::Jobs(args) => Ok(client_runtime()?.block_on(crate::jobs_client::list(&args))?),
        Command::Health(args) => Ok(client_runtime()?.block_on(crate::health_check::check(&args))?),
        Command::Models(ModelsCommand::Pull(args)) => {
            Ok(client_runtime()?.block_on(crate::hub::pull_command(&args))?)
        }
        Command::Config => {
            let mut settings = loader.load()?;
            // Passwords stay in the settings file; what is printed shows them masked.
            settings.amqp.url = crate::settings::secrets::masked_url(&settings.amqp.url);
            settings.store.url = crate::settings::secrets::masked_url(&settings.store.url);
            print!("{}", toml::to_string_pretty(&settings).expect("settings serialize to TOML"));
            Ok(())
        }
    }
}

/// A small runtime for the client commands.
fn client_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CliError::Runtime)
}

fn serve(settings: Settings) -> Result<(), CliError> {
    telemetry::init(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        // Before anything is served, so that an early signal is a clean shutdown too.
        let signals = shutdown::Signals::install().map_err(CliError::Runtime)?;
        let server = Server::bind(settings).await?;
        let shutdown = async {
            let signal = signals.received().await;
            info!(signal, "signal received");
        };
        server.serve(shutdown).await?;
        Ok(())
    })
}

fn run_file(settings: Settings, args: &RunArgs) -> Result<(), CliError> {
    telemetry::init(&settings.log);
    let placement =
        Placement::resolve(&settings.device).map_err(crate::server::StartError::from)?;
    let started = std::time::Instant::now();
    let summary = crate::run::run(&crate::run::RunRequest {
        model: &args.model,
        task: args.task,
        input: &args.input,
        output: &args.output,
        params: &args.params,
        placement,
        policy: Policy::from_settings(&settings.batching),
        max_documents: settings.server.limits.max_inputs_per_call,
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = summary.batches;
    info!(
        succeeded = summary.succeeded,
        failed = summary.failed,
        seconds,
        tokens_per_second = stats.real_tokens as f64 / seconds.max(1e-9),
        padding_efficiency = stats.padding_efficiency(),
        batches = stats.batches,
        rows = stats.rows,
        computed_tokens = stats.computed_tokens,
        model_seconds = stats.model_seconds,
        tokenize_seconds = summary.tokenize_seconds,
        "run finished"
    );
    if summary.failed > 0 {
        return Err(CliError::LinesFailed {
            failed: summary.failed,
            total: summary.failed + summary.succeeded,
            output: args.output.display().to_string(),
        });
    }
    Ok(())
}

/// `lote --version`: our version, libtorch's, and what `device.kind = "auto"` resolves to here.
fn version_report() -> String {
    let auto = Placement::resolve(&Default::default()).map(|p| p.device_name());
    format!(
        "lote {}\nlibtorch {}\ncuda devices {}\ndevice (auto) {}",
        env!("CARGO_PKG_VERSION"),
        libtorch_version(),
        tch::Cuda::device_count(),
        auto.unwrap_or_else(|e| e.to_string()),
    )
}

//! The `lote` command line. Exit codes: 0 done, 1 failed while running, 2 bad usage, bad settings
//! or a start-up fault (port in use, missing device), always with one line on stderr saying why.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing::info;

use crate::{
    device::{Placement, libtorch_version},
    server::{RunError, Server},
    settings::{Settings, SettingsLoader},
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
    #[error("no command given: see `lote --help`")]
    Usage,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Settings(_) | CliError::Start(_) | CliError::Usage => ExitCode::from(2),
            CliError::Serve(_) | CliError::Runtime(_) => ExitCode::from(1),
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
        Command::Config => {
            let settings = loader.load()?;
            print!("{}", toml::to_string_pretty(&settings).expect("settings serialize to TOML"));
            Ok(())
        }
    }
}

fn serve(settings: Settings) -> Result<(), CliError> {
    telemetry::init(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let server = Server::bind(settings).await?;
        let shutdown = async {
            let signal = shutdown::signal_received().await;
            info!(signal, "signal received");
        };
        server.serve(shutdown).await?;
        Ok(())
    })
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

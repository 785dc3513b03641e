//! `lote run`: offline inference over a JSONL file.
//!
//! Lines are read in windows, each window answered by the pipeline in length-sorted batches, and
//! written back in input order, so memory stays bounded on any file size. A bad line (invalid
//! JSON, a missing field, empty text, an unknown parameter) gets an `"error"` line of its own;
//! every other line is answered as usual.

use std::{
    io::{BufRead, BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
};

use serde_json::{Map, Value, json};

use std::sync::{Arc, Mutex};

use crate::{
    device::Placement,
    engine::{
        call::EngineError,
        cpu_pool::CpuPool,
        load::{self, Loaded, ModelLoadError},
        policy::{Lane, Policy},
        registry::ServedModel,
    },
    settings::{ModelSettings, Task},
    tasks::{
        TaskError, TaskInput,
        generate::GenerationParams,
        output_fields::{generation_fields, result_fields},
        pipeline::{BatchStats, ModelIdentity, TaskParams},
    },
};

/// Lines answered together; the pipeline sorts them by length and batches them.
const WINDOW: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Load(#[from] ModelLoadError),
    #[error("bad --param `{0}`: expected key=value")]
    BadParam(String),
}

/// What `lote run` was asked to do.
pub struct RunRequest<'a> {
    pub model: &'a Path,
    pub task: Task,
    pub input: &'a Path,
    pub output: &'a Path,
    /// `key=value` pairs; values are read as JSON when they parse, else as strings.
    pub params: &'a [String],
    pub placement: Placement,
    /// The engine's batching policy (the bulk lane is used); its size and token bounds are also
    /// the direct batch budget.
    pub policy: Policy,
    /// Most documents of one rerank line (`server.limits.max_inputs_per_call`).
    pub max_documents: usize,
}

/// Counts of a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunSummary {
    pub succeeded: usize,
    pub failed: usize,
    /// What the model computed, for throughput and padding figures.
    pub batches: BatchStats,
    /// Tokenizing and post-processing time on the CPU pool, summed over calls.
    pub tokenize_seconds: f64,
}

pub fn run(request: &RunRequest<'_>) -> Result<RunSummary, RunError> {
    let defaults = parse_cli_params(request.params)?;
    let pipeline = Runner::load(request)?;
    let io_in = |source| RunError::Io { path: request.input.to_path_buf(), source };
    let io_out = |source| RunError::Io { path: request.output.to_path_buf(), source };
    let reader = std::io::BufReader::new(std::fs::File::open(request.input).map_err(io_in)?);
    let mut writer = BufWriter::new(std::fs::File::create(request.output).map_err(io_out)?);
    let progress = progress_bar(request.input);
    let mut summary = RunSummary::default();
    let mut window: Vec<(usize, String)> = Vec::with_capacity(WINDOW);
    let mut lines = reader.lines().enumerate();
    loop {
        window.clear();
        for (number, line) in lines.by_ref().take(WINDOW) {
            window.push((number + 1, line.map_err(io_in)?));
        }
        if window.is_empty() {
            break;
        }
        for line in pipeline.answer_lines(&defaults, &window, &mut summary) {
            serde_json::to_writer(&mut writer, &line).map_err(|e| io_out(e.into()))?;
            writer.write_all(b"\n").map_err(io_out)?;
        }
        if let Some(bar) = &progress {
            bar.inc(window.len() as u64);
        }
    }
    writer.flush().map_err(io_out)?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(summary)
}

fn progress_bar(input: &Path) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = std::fs::read(input).map(|bytes| bytecount_lines(&bytes)).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} lines {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn bytecount_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// `key=value` pairs into a JSON object.
pub fn parse_cli_params(pairs: &[String]) -> Result<Map<String, Value>, RunError> {
    let mut params = Map::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| RunError::BadParam(pair.clone()))?;
        if key.is_empty() {
            return Err(RunError::BadParam(pair.clone()));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        params.insert(key.to_string(), value);
    }
    Ok(params)
}

/// The model behind a run, served by the engine as `lote serve` serves it: its model on a model
/// thread (encoder batches or continuous batching for generation), fed through the bulk lane,
/// with tokenizing on the CPU pool. Public for the fuzz target that feeds it lines
/// (fuzz/engine/fuzz_targets/run_line.rs).
pub struct Runner {
    served: ServedModel,
    /// What the encoder model computed (None for generation).
    stats: Option<Arc<Mutex<BatchStats>>>,
    runtime: tokio::runtime::Runtime,
    max_documents: usize,
}

/// A line's parameters, parsed for its runner.
#[derive(Clone)]
enum LineParams {
    Encoder(TaskParams),
    Generation(Box<GenerationParams>),
}

impl Runner {
    /// The request's model, task and placement, loaded (its input and output are not read).
    pub fn load(request: &RunRequest<'_>) -> Result<Self, RunError> {
        let settings = ModelSettings {
            name: "run".into(),
            task: request.task,
            path: request.model.to_path_buf(),
            dtype: None,
        };
        let loaded = load::load(&settings, &request.placement, request.policy)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|source| RunError::Io { path: request.model.to_path_buf(), source })?;
        let pool = CpuPool::for_this_machine();
        let policy = request.policy;
        let stats = match &loaded {
            Loaded::Encoder(pipeline) => pipeline.stats(),
            Loaded::Generation(_) => None,
        };
        let served =
            runtime.block_on(async move { ServedModel::start("run", loaded, policy, pool, None) });
        Ok(Self { served, stats, runtime, max_documents: request.max_documents })
    }

    fn task(&self) -> Task {
        self.served.task()
    }

    /// The output line of each of `window`'s (line number, text) lines, in order, as `lote run`
    /// writes them; `defaults` are the `--param` values a line's `params` override.
    pub fn answer_lines(
        &self,
        defaults: &Map<String, Value>,
        window: &[(usize, String)],
        summary: &mut RunSummary,
    ) -> Vec<Value> {
        answer_window(self, defaults, window, summary)
    }

    fn identity(&self) -> &ModelIdentity {
        self.served.identity()
    }

    fn parse_params(&self, params: &Value) -> Result<LineParams, TaskError> {
        match &self.served {
            ServedModel::Encoder(e) => e.pipeline().parse_params(params).map(LineParams::Encoder),
            ServedModel::Generation(g) => g
                .pipeline()
                .parse_params(params)
                .map(|params| LineParams::Generation(Box::new(params))),
        }
    }

    /// Each item's output fields, or its error.
    fn answer(
        &self,
        items: Vec<(TaskInput, LineParams)>,
        summary: &mut RunSummary,
    ) -> Vec<Result<Map<String, Value>, String>> {
        let count = items.len();
        let refused = |error: EngineError| vec![Err(error.to_string()); count];
        match &self.served {
            ServedModel::Encoder(service) => {
                let items: Vec<(TaskInput, TaskParams)> = items
                    .into_iter()
                    .map(|(input, params)| match params {
                        LineParams::Encoder(params) => (input, params),
                        LineParams::Generation(_) => {
                            unreachable!("an encoder runner parses encoder params")
                        }
                    })
                    .collect();
                let answered = self.runtime.block_on(service.answer(items, Lane::Bulk, None));
                if let Some(shared) = &self.stats {
                    summary.batches =
                        *shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                match answered {
                    Ok(answered) => {
                        summary.tokenize_seconds += answered.report.tokenize.as_secs_f64();
                        answered
                            .results
                            .into_iter()
                            .map(|r| r.map(|r| result_fields(&r)).map_err(|e| e.to_string()))
                            .collect()
                    }
                    Err(error) => refused(error),
                }
            }
            ServedModel::Generation(service) => {
                let task = service.pipeline().task;
                let items: Vec<(TaskInput, GenerationParams)> = items
                    .into_iter()
                    .map(|(input, params)| match params {
                        LineParams::Generation(params) => (input, *params),
                        LineParams::Encoder(_) => {
                            unreachable!("a generation runner parses generation params")
                        }
                    })
                    .collect();
                match self.runtime.block_on(service.generate(items, Lane::Bulk, None)) {
                    Ok(answered) => {
                        summary.tokenize_seconds += answered.report.tokenize.as_secs_f64();
                        answered
                            .results
                            .into_iter()
                            .map(|r| {
                                r.map(|r| {
                                    generation_fields(
                                        task,
                                        &r.generation,
                                        r.input_tokens,
                                        r.truncated,
                                    )
                                })
                                .map_err(|e| e.to_string())
                            })
                            .collect()
                    }
                    Err(error) => refused(error),
                }
            }
        }
    }
}

/// One parsed line: its id and either its input and parameters or why it cannot be run.
struct Line {
    number: usize,
    id: Option<Value>,
    parsed: Result<(TaskInput, LineParams), String>,
}

fn parse_line(pipeline: &Runner, defaults: &Map<String, Value>, number: usize, text: &str) -> Line {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return Line { number, id: None, parsed: Err(format!("invalid JSON: {e}")) },
    };
    let Value::Object(mut object) = value else {
        return Line { number, id: None, parsed: Err("a line must be a JSON object".into()) };
    };
    let id = object.remove("id");
    let parsed = (|| {
        let mut params = defaults.clone();
        match object.remove("params") {
            Some(Value::Object(overrides)) => params.extend(overrides),
            Some(Value::Null) | None => {}
            Some(_) => return Err("`params` must be an object".to_string()),
        }
        let input = input_of(pipeline.task(), object, pipeline.max_documents)?;
        let params = pipeline.parse_params(&Value::Object(params)).map_err(|e| e.to_string())?;
        Ok((input, params))
    })();
    Line { number, id, parsed }
}

/// The task's input fields; anything else on the line is an error, not silently ignored.
fn input_of(
    task: Task,
    mut object: Map<String, Value>,
    max_documents: usize,
) -> Result<TaskInput, String> {
    let input = crate::tasks::input_from_fields(task, &mut object, max_documents)?;
    if let Some(unknown) = object.keys().next() {
        return Err(format!("unknown field `{unknown}`"));
    }
    Ok(input)
}

fn answer_window(
    pipeline: &Runner,
    defaults: &Map<String, Value>,
    window: &[(usize, String)],
    summary: &mut RunSummary,
) -> Vec<Value> {
    let lines: Vec<Line> =
        window.iter().map(|(number, text)| parse_line(pipeline, defaults, *number, text)).collect();
    let runnable: Vec<(TaskInput, LineParams)> =
        lines.iter().filter_map(|line| line.parsed.as_ref().ok().cloned()).collect();
    let mut results = pipeline.answer(runnable, summary).into_iter();
    lines
        .into_iter()
        .map(|line| {
            let result: Result<Map<String, Value>, String> = match line.parsed {
                Ok(_) => results.next().expect("one result per runnable line"),
                Err(message) => Err(message),
            };
            let mut out = Map::new();
            if let Some(id) = line.id {
                out.insert("id".into(), id);
            }
            out.insert("line".into(), json!(line.number));
            match result {
                Ok(fields) => {
                    summary.succeeded += 1;
                    out.extend(fields);
                    out.insert("model".into(), json!(pipeline.identity()));
                }
                Err(message) => {
                    summary.failed += 1;
                    out.insert("error".into(), Value::String(message));
                }
            }
            Value::Object(out)
        })
        .collect()
}

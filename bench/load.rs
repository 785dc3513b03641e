//! A load generator for a running `lote serve`, run as its own process on loopback
//! (`cargo run --release --example load -- ...`; bench/grpc_load.py drives it).
//!
//! Open loop (`--rate R`): a call starts every 1/R seconds whether or not earlier ones have
//! answered, as independent users would, so queueing shows in the latencies. Closed loop
//! (`--concurrency C`): C callers, each starting its next call when its last one answers; C = 1
//! is the one-at-a-time baseline. Prints one JSON object: calls, errors by code, throughput,
//! tokens/s and latency percentiles.
//!
//! `--http HOST:PORT` sends `embed` calls to the OpenAI-compatible `POST /v1/embeddings`
//! instead (closed loop: each caller keeps one HTTP/1.1 connection alive, as a pooled client
//! does), for the same load over both transports.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use lote::grpc::pb::{self, inference_client::InferenceClient};
use serde_json::json;
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    #[arg(long)]
    model: String,
    /// embed, generate, stream, or tokenize (a trivial call: the transport's ceiling).
    #[arg(long)]
    kind: String,
    /// Open loop: calls started per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: callers waiting for their answers.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How long calls are started for, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Inputs, one per line, used in turn.
    #[arg(long)]
    texts: std::path::PathBuf,
    /// New tokens per generation (forced with min_new_tokens).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: u32,
    /// The HTTP API's address: `embed` calls go to /v1/embeddings (closed loop only).
    #[arg(long)]
    http: Option<String>,
}

/// One kept-alive HTTP/1.1 connection, enough for JSON posts with Content-Length answers.
struct HttpConnection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl HttpConnection {
    async fn open(host: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(host).await.expect("the HTTP API listens");
        stream.set_nodelay(true).unwrap();
        Self { stream: tokio::io::BufReader::new(stream), host: host.into() }
    }

    /// Posts `body`; returns the status and the answer's body.
    async fn post(&mut self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).await.unwrap();
        (status, answer)
    }
}

/// One `/v1/embeddings` call, as the `openai` client makes it (floats asked for explicitly).
async fn http_embed(connection: &mut HttpConnection, args: &Args, text: &str) -> Outcome {
    let started = Instant::now();
    let body = json!({"model": args.model, "input": text, "encoding_format": "float"});
    let (status, answer) = connection.post("/v1/embeddings", body.to_string().as_bytes()).await;
    let latency = started.elapsed();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    let tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    let code = if status == 200 { tonic::Code::Ok } else { tonic::Code::Unknown };
    Outcome { latency, code, tokens }
}

/// What one call gave.
struct Outcome {
    latency: Duration,
    code: tonic::Code,
    tokens: u64,
}

async fn call(client: &mut InferenceClient<Channel>, args: &Args, text: &str) -> Outcome {
    let started = Instant::now();
    let parameters = pb::GenerationParameters {
        max_new_tokens: Some(args.max_new_tokens),
        min_new_tokens: Some(args.max_new_tokens),
        do_sample: Some(false),
        return_full_text: Some(false),
        ..Default::default()
    };
    let result: Result<u64, tonic::Status> = match args.kind.as_str() {
        "embed" => client
            .embed(pb::EmbedRequest {
                model: args.model.clone(),
                inputs: vec![text.into()],
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().metadata.map_or(0, |m| m.input_tokens)),
        "tokenize" => client
            .tokenize(pb::TokenizeRequest {
                model: args.model.clone(),
                inputs: vec![text.into()],
                add_special_tokens: Some(true),
            })
            .await
            .map(|r| r.into_inner().metadata.map_or(0, |m| m.input_tokens)),
        "generate" => client
            .generate(pb::GenerateRequest {
                model: args.model.clone(),
                inputs: vec![text.into()],
                parameters: Some(parameters),
            })
            .await
            .map(|r| r.into_inner().metadata.map_or(0, |m| m.output_tokens)),
        "stream" => {
            let request = pb::GenerateStreamRequest {
                model: args.model.clone(),
                input: text.into(),
                parameters: Some(parameters),
            };
            match client.generate_stream(request).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let mut tokens = 0;
                    loop {
                        match stream.message().await {
                            Ok(Some(message)) if message.finish_reason.is_none() => tokens += 1,
                            Ok(_) => break Ok(tokens),
                            Err(status) => break Err(status),
                        }
                    }
                }
                Err(status) => Err(status),
            }
        }
        other => panic!("unknown kind {other}"),
    };
    let latency = started.elapsed();
    match result {
        Ok(tokens) => Outcome { latency, code: tonic::Code::Ok, tokens },
        Err(status) => Outcome { latency, code: status.code(), tokens: 0 },
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let texts: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&args.texts)
            .expect("the texts file")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
    );
    let channel = Channel::from_shared(args.addr.clone()).unwrap().connect().await.unwrap();
    let client = InferenceClient::new(channel);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    match args.rate {
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            let mut index = 0;
            while next < until {
                tokio::time::sleep_until(next.into()).await;
                let (mut client, args, texts, outcomes) =
                    (client.clone(), args.clone(), texts.clone(), outcomes.clone());
                let text = texts[index % texts.len()].clone();
                tasks.push(tokio::spawn(async move {
                    let outcome = call(&mut client, &args, &text).await;
                    outcomes.lock().await.push(outcome);
                }));
                index += 1;
                next += interval;
            }
        }
        None if args.http.is_some() => {
            assert_eq!(args.kind, "embed", "--http takes --kind embed");
            for worker in 0..args.concurrency {
                let (args, texts, outcomes) = (args.clone(), texts.clone(), outcomes.clone());
                tasks.push(tokio::spawn(async move {
                    let mut connection = HttpConnection::open(args.http.as_deref().unwrap()).await;
                    let mut index = worker;
                    while Instant::now() < until {
                        let text = &texts[index % texts.len()];
                        let outcome = http_embed(&mut connection, &args, text).await;
                        outcomes.lock().await.push(outcome);
                        index += args.concurrency;
                    }
                }));
            }
        }
        None => {
            for worker in 0..args.concurrency {
                let (mut client, args, texts, outcomes) =
                    (client.clone(), args.clone(), texts.clone(), outcomes.clone());
                tasks.push(tokio::spawn(async move {
                    let mut index = worker;
                    while Instant::now() < until {
                        let text = &texts[index % texts.len()];
                        let outcome = call(&mut client, &args, text).await;
                        outcomes.lock().await.push(outcome);
                        index += args.concurrency;
                    }
                }));
            }
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let outcomes = outcomes.lock().await;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut tokens = 0;
    for outcome in outcomes.iter() {
        *codes.entry(format!("{:?}", outcome.code)).or_default() += 1;
        if outcome.code == tonic::Code::Ok {
            latencies.push(outcome.latency.as_secs_f64() * 1000.0);
            tokens += outcome.tokens;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let report = json!({
        "kind": args.kind,
        "rate": args.rate,
        "concurrency": if args.rate.is_some() { None } else { Some(args.concurrency) },
        "calls": outcomes.len(),
        "codes": codes,
        "seconds": elapsed,
        "calls_per_second": latencies.len() as f64 / elapsed,
        "tokens_per_second": tokens as f64 / elapsed,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
    });
    println!("{report}");
}

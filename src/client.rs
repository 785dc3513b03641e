//! `lote infer`: one call to a running worker, built from the command line and printed as JSON.
//! Requests are written as JSON and turned into protobuf through the service's own descriptors
//! (the same ones reflection serves), so every field of the API is reachable with `--param`
//! and the output uses the proto's JSON mapping.

use std::{path::PathBuf, time::Duration};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::grpc::pb::{self, inference_client::InferenceClient};

/// What `lote infer` was asked.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The worker: http://HOST:PORT, or https://HOST:PORT with --ca.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The model's name in the worker's settings.
    #[arg(long)]
    pub model: String,
    /// A task (feature-extraction, text-classification, token-classification,
    /// question-answering, fill-mask, summarization, text-generation) or `tokenize`.
    #[arg(long)]
    pub task: String,
    /// An input text; repeat for several.
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// Question-answering: the question (with --context).
    #[arg(long)]
    pub question: Option<String>,
    #[arg(long)]
    pub context: Option<String>,
    /// A request field (`top_k=3`, `max_new_tokens=20`); values are JSON when they parse.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// text-generation: stream tokens as they come (one JSON object per line).
    #[arg(long)]
    pub stream: bool,
    /// The call's deadline, e.g. `2s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// PEM CA to trust for https.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The API key, for a worker with server.auth on.
    #[arg(long, env = "LOTE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Sends `Authorization: Bearer KEY` with every call when there is a key.
#[derive(Debug, Clone)]
pub struct BearerKey(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerKey {
    pub fn new(key: Option<&str>) -> Result<Self, ClientError> {
        key.map(|key| {
            format!("Bearer {key}")
                .parse()
                .map_err(|_| ClientError::Usage("the API key must be printable ASCII".into()))
        })
        .transpose()
        .map(Self)
    }
}

impl tonic::service::Interceptor for BearerKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Why a client command failed (`lote infer`, and the job commands).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: tonic::transport::Error },
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Runs the call and prints its answer (or, streaming, each message) as JSON lines.
pub async fn infer(args: &InferArgs) -> Result<(), ClientError> {
    let request = request_json(args)?;
    let channel = connect(args).await?;
    let key = BearerKey::new(args.api_key.as_deref())?;
    let mut client = InferenceClient::with_interceptor(channel, key)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    macro_rules! unary {
        ($method:ident, $message:ty, $name:literal) => {{
            let message: $message = to_proto($name, &request)?;
            let response = client.$method(with_timeout(message, args.timeout)).await?;
            print_json($name.replace("Request", "Response").as_str(), &response.into_inner())
        }};
    }
    let task = args.task.as_str();
    match (task, args.stream) {
        ("text-generation", true) => {
            let message: pb::GenerateStreamRequest = to_proto("GenerateStreamRequest", &request)?;
            let mut stream =
                client.generate_stream(with_timeout(message, args.timeout)).await?.into_inner();
            while let Some(event) = stream.message().await? {
                print_json("GenerateStreamResponse", &event);
            }
        }
        (_, true) => return Err(ClientError::Usage("--stream is for text-generation".into())),
        ("feature-extraction", _) => unary!(embed, pb::EmbedRequest, "EmbedRequest"),
        ("text-classification", _) => unary!(classify, pb::ClassifyRequest, "ClassifyRequest"),
        ("token-classification", _) => {
            unary!(classify_tokens, pb::ClassifyTokensRequest, "ClassifyTokensRequest")
        }
        ("question-answering", _) => {
            unary!(answer_question, pb::AnswerQuestionRequest, "AnswerQuestionRequest")
        }
        ("fill-mask", _) => unary!(fill_mask, pb::FillMaskRequest, "FillMaskRequest"),
        ("rerank", _) => unary!(rerank, pb::RerankRequest, "RerankRequest"),
        ("zero-shot-classification", _) => {
            unary!(classify_zero_shot, pb::ClassifyZeroShotRequest, "ClassifyZeroShotRequest")
        }
        ("summarization", _) => unary!(summarize, pb::SummarizeRequest, "SummarizeRequest"),
        ("translation", _) => unary!(translate, pb::TranslateRequest, "TranslateRequest"),
        ("text-generation", _) => unary!(generate, pb::GenerateRequest, "GenerateRequest"),
        ("tokenize", _) => unary!(tokenize, pb::TokenizeRequest, "TokenizeRequest"),
        (other, _) => return Err(ClientError::Usage(format!("unknown task `{other}`"))),
    }
    Ok(())
}

fn with_timeout<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

/// The request as JSON: model, inputs, and the parameters where the task's message keeps them.
fn request_json(args: &InferArgs) -> Result<Value, ClientError> {
    let params = crate::run::parse_cli_params(&args.params)
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let mut request = Map::new();
    request.insert("model".into(), json!(args.model));
    let generation = matches!(args.task.as_str(), "summarization" | "text-generation");
    if args.task == "question-answering" {
        let (Some(question), Some(context)) = (&args.question, &args.context) else {
            return Err(ClientError::Usage(
                "question-answering needs --question and --context".into(),
            ));
        };
        request.insert("inputs".into(), json!([{ "question": question, "context": context }]));
    } else if args.stream {
        let [text] = args.texts.as_slice() else {
            return Err(ClientError::Usage("--stream takes exactly one --text".into()));
        };
        request.insert("input".into(), json!(text));
    } else {
        if args.texts.is_empty() {
            return Err(ClientError::Usage("give at least one --text".into()));
        }
        request.insert("inputs".into(), json!(args.texts));
    }
    if generation {
        request.insert("parameters".into(), Value::Object(params));
    } else {
        request.extend(params);
    }
    Ok(Value::Object(request))
}

fn descriptors() -> DescriptorPool {
    DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the built-in descriptors decode")
}

/// JSON into the message `lote.v1.NAME`, through its descriptor.
fn to_proto<T: Message + Default>(name: &str, json: &Value) -> Result<T, ClientError> {
    let pool = descriptors();
    let descriptor = pool
        .get_message_by_name(&format!("lote.v1.{name}"))
        .expect("every request message is in the descriptors");
    let dynamic = DynamicMessage::deserialize(descriptor, json)
        .map_err(|e| ClientError::Usage(format!("bad parameters for {name}: {e}")))?;
    T::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| ClientError::Usage(format!("bad parameters for {name}: {e}")))
}

/// Prints a message as one JSON line (proto JSON names, defaults included).
fn print_json<T: Message>(name: &str, message: &T) {
    let pool = descriptors();
    let descriptor =
        pool.get_message_by_name(&format!("lote.v1.{name}")).expect("a lote.v1 message");
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as itself");
    let options = SerializeOptions::new().skip_default_fields(false).use_proto_field_name(true);
    let mut out = serde_json::Serializer::new(std::io::stdout());
    let _ = dynamic.serialize_with_options(&mut out, &options);
    println!();
}

async fn connect(args: &InferArgs) -> Result<Channel, ClientError> {
    let connect_error = |source| ClientError::Connect { addr: args.addr.clone(), source };
    let mut endpoint = Endpoint::from_shared(args.addr.clone()).map_err(connect_error)?;
    if args.ca.is_some() || args.cert.is_some() {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ClientError::Io { path: path.clone(), source })
        };
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).map_err(connect_error)?;
    }
    endpoint.connect().await.map_err(connect_error)
}

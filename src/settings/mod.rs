//! One typed tree for every setting lote reads, with the default of each field written beside it.
//!
//! Precedence, lowest first: the defaults below, then a TOML file (`config/default.toml` when it
//! exists, or the one named by `--config`), then environment variables `LOTE__SECTION__KEY`
//! (`LOTE__SERVER__GRPC_ADDR=0.0.0.0:50051`). Every struct denies unknown keys, so a typo is an
//! error that names the key and where it came from (see [`load`]) instead of a silently ignored line.

mod load;
pub mod secrets;

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

pub use load::{Origin, SettingsError, SettingsLoader};

/// An enum written in settings as one of a fixed set of names. A wrong name is an error that
/// lists the right ones: "`int8` is not one of fp32, bf16, fp16".
macro_rules! named_values {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$variant_meta])* $variant),+ }

        impl $name {
            /// Every accepted name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("`{other}` is not one of {}", Self::NAMES.join(", "))),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use named_values;

/// Everything lote reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub device: DeviceSettings,
    /// The models this worker serves. Empty by default. Set them in the TOML file as
    /// `[[models]]` tables; lists cannot be given through environment variables.
    pub models: Vec<ModelSettings>,
    pub batching: BatchingSettings,
    pub amqp: AmqpSettings,
    pub store: StoreSettings,
    pub jobs: JobsSettings,
}

/// What happens to jobs once they end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSettings {
    /// How long an ended job (completed, failed, cancelled) is kept with its documents and
    /// results before a sweeper deletes it, with its batch, if it was one. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self { retention: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// The gRPC endpoint, the metrics endpoint and the limits every call is held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Where gRPC listens. Default `127.0.0.1:50051`; port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// Where Prometheus metrics are served over HTTP at `/metrics`. Default `127.0.0.1:9464`.
    /// An empty string turns the endpoint off.
    #[serde(with = "optional_addr")]
    pub metrics_addr: Option<SocketAddr>,
    /// Where the OpenAI-compatible HTTP API listens (`/v1/models`, `/v1/embeddings`,
    /// `/v1/rerank`). Default `127.0.0.1:8080`. An empty string turns it off.
    #[serde(with = "optional_addr")]
    pub http_addr: Option<SocketAddr>,
    /// After SIGINT/SIGTERM, how long health reports NOT_SERVING while new calls are still taken,
    /// so load balancers stop routing here first. Default `0s`; a Kubernetes rollout wants a few
    /// seconds.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// How long in-flight calls may take to finish after shutdown starts before the server stops
    /// regardless. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub limits: LimitSettings,
    pub tls: TlsSettings,
    pub auth: AuthSettings,
}

/// API keys, off unless `api_keys_file` is set. With it, every HTTP route and every gRPC call
/// but health needs `Authorization: Bearer KEY` for a key whose sha256 the file lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// One lowercase or uppercase hex sha256 of a key a line (`printf %s KEY | sha256sum`);
    /// blank lines and `#` comments are skipped. Keys themselves are never stored or logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<PathBuf>,
}

/// TLS for gRPC, off unless `cert` is set. With `client_ca`, clients must present a certificate
/// signed by it (mutual TLS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain of this server. Unset: plaintext (h2c).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`. Required with `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM CA certificate that client certificates must chain to. Unset: no client certificate
    /// is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// Explicit bounds on what one call may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest gRPC message accepted or sent, in bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Most inputs (documents, questions, prompts) in one call. Default 256.
    pub max_inputs_per_call: usize,
    /// Most tokens of one input after tokenization. Default 8192.
    pub max_input_tokens: usize,
    /// Most calls handled at once on one connection. Default 256.
    pub max_concurrent_streams: u32,
    /// Most documents in one job. Default 1,000,000.
    pub max_documents_per_job: usize,
    /// Largest file uploaded to `POST /v1/files` (a batch's input), in bytes. Default 1 GiB.
    pub max_batch_file_bytes: usize,
}

/// How logs are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `human` (default; coloured on a terminal) or `json` (one object a line, for collectors).
    pub format: LogFormat,
    /// A tracing env-filter directive. Default `info`. `RUST_LOG`, when set, wins.
    pub filter: String,
}

named_values! {
    /// How log lines are written.
    #[derive(Default)]
    LogFormat {
        #[default]
        Human = "human",
        Json = "json",
    }
}

/// Where the models run and in which floating point type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSettings {
    /// `auto` (default: CUDA device 0 when libtorch sees one, else CPU), `cpu` or `cuda:N`.
    pub kind: DeviceSpec,
    /// `fp32` (default), `bf16`, `fp16`, or `int8` (CPU: linear layers' weights in int8 per
    /// output channel, activations quantized per row at each call; the rest in fp32).
    pub dtype: Dtype,
    /// libtorch intra-op threads on CPU. Default 0: libtorch's own choice (one per core).
    pub threads: usize,
}

/// Which device a worker asks for; see [`crate::device`] for how it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

named_values! {
    /// Numeric type of model weights and activations.
    #[derive(Default)]
    Dtype {
        #[default]
        Fp32 = "fp32",
        Bf16 = "bf16",
        Fp16 = "fp16",
        Int8 = "int8",
    }
}

/// One model this worker loads and serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// The name callers use to pick this model. Required, unique.
    pub name: String,
    /// The task it serves. Required.
    pub task: Task,
    /// A Hugging Face model directory (config.json, *.safetensors, tokenizer.json). Required.
    pub path: PathBuf,
    /// This model's dtype, when not `device.dtype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<Dtype>,
}

named_values! {
    /// The tasks lote serves, named as transformers names its pipelines.
    Task {
        QuestionAnswering = "question-answering",
        FillMask = "fill-mask",
        TextClassification = "text-classification",
        ZeroShotClassification = "zero-shot-classification",
        Rerank = "rerank",
        TokenClassification = "token-classification",
        FeatureExtraction = "feature-extraction",
        Summarization = "summarization",
        Translation = "translation",
        TextGeneration = "text-generation",
    }
}

/// The dynamic batcher's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingSettings {
    /// Most tokens in one batch, padding counted. Default 16384.
    pub max_batch_tokens: usize,
    /// Most inputs in one batch. Default 64.
    pub max_batch_size: usize,
    /// Longest an idle model waits for more inputs to join a batch. Default `5ms`.
    #[serde(with = "humantime_serde")]
    pub max_batch_delay: Duration,
    /// Most inputs queued per model; past it new calls fail with RESOURCE_EXHAUSTED. Default 4096.
    pub max_queued: usize,
    /// Share of batches kept for bulk work (jobs, `lote run`) while interactive calls wait,
    /// so bulk is never starved. Between 0 and 1. Default 0.2.
    pub bulk_share: f64,
}

/// RabbitMQ, the cluster transport for bulk jobs. Off by default: a single node uses an
/// in-process queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// Use RabbitMQ for jobs. Default false.
    pub enabled: bool,
    /// Broker address. Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Unacknowledged deliveries a worker holds (documents in flight at once; the in-process
    /// queue uses the same number). Default 64.
    pub prefetch: u16,
    /// Deliveries of one document before it is dead-lettered. Default 5.
    pub delivery_limit: u32,
    /// Names of queues and exchanges start with this: `{prefix}.documents.{model}`,
    /// `{prefix}.dead-letter`, `{prefix}.results`. Default `lote`.
    pub queue_prefix: String,
}

/// Where job state lives: SQLite on a single node, PostgreSQL for a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite://PATH` (default `sqlite://lote.db`) or `postgres://...`.
    pub url: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            drain_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(30),
            limits: LimitSettings::default(),
            tls: TlsSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            max_inputs_per_call: 256,
            max_input_tokens: 8192,
            max_concurrent_streams: 256,
            max_documents_per_job: 1_000_000,
            max_batch_file_bytes: 1 << 30,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Human, filter: "info".into() }
    }
}

impl Default for BatchingSettings {
    fn default() -> Self {
        Self {
            max_batch_tokens: 16384,
            max_batch_size: 64,
            max_batch_delay: Duration::from_millis(5),
            max_queued: 4096,
            bulk_share: 0.2,
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefetch: 64,
            delivery_limit: 5,
            queue_prefix: "lote".into(),
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { url: "sqlite://lote.db".into() }
    }
}

impl Settings {
    /// Checks what types alone cannot: ranges, uniqueness, URL schemes. On failure returns the
    /// dotted key at fault and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, why: String| Err((key.to_string(), why));
        let limits = &self.server.limits;
        for (key, value) in [
            ("server.limits.max_message_bytes", limits.max_message_bytes),
            ("server.limits.max_inputs_per_call", limits.max_inputs_per_call),
            ("server.limits.max_input_tokens", limits.max_input_tokens),
            ("server.limits.max_concurrent_streams", limits.max_concurrent_streams as usize),
            ("server.limits.max_documents_per_job", limits.max_documents_per_job),
            ("server.limits.max_batch_file_bytes", limits.max_batch_file_bytes),
            ("batching.max_batch_tokens", self.batching.max_batch_tokens),
            ("batching.max_batch_size", self.batching.max_batch_size),
            ("batching.max_queued", self.batching.max_queued),
            ("amqp.prefetch", self.amqp.prefetch as usize),
            ("jobs.retention", self.jobs.retention.as_millis().min(usize::MAX as u128) as usize),
            ("amqp.delivery_limit", self.amqp.delivery_limit as usize),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0".into());
            }
        }
        let tls = &self.server.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            return bad("server.tls", "cert and key must be set together".into());
        }
        if tls.client_ca.is_some() && tls.cert.is_none() {
            return bad("server.tls.client_ca", "mutual TLS needs server.tls.cert and key".into());
        }
        if !(0.0..=1.0).contains(&self.batching.bulk_share) {
            return bad(
                "batching.bulk_share",
                format!("{} is outside [0, 1]", self.batching.bulk_share),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return bad("log.filter", e.to_string());
        }
        if self.amqp.queue_prefix.trim().is_empty() {
            return bad("amqp.queue_prefix", "must not be empty".into());
        }
        if !self.amqp.url.starts_with("amqp://") && !self.amqp.url.starts_with("amqps://") {
            return bad(
                "amqp.url",
                format!(
                    "`{}` is not an amqp:// or amqps:// URL",
                    secrets::masked_url(&self.amqp.url)
                ),
            );
        }
        if !self.store.url.starts_with("sqlite://")
            && !self.store.url.starts_with("postgres://")
            && !self.store.url.starts_with("postgresql://")
        {
            return bad(
                "store.url",
                format!(
                    "`{}` is neither sqlite://PATH nor postgres://...",
                    secrets::masked_url(&self.store.url)
                ),
            );
        }
        for (i, model) in self.models.iter().enumerate() {
            if model.name.trim().is_empty() {
                return bad(&format!("models.{i}.name"), "must not be empty".into());
            }
            if self.models[..i].iter().any(|m| m.name == model.name) {
                return bad(&format!("models.{i}.name"), format!("`{}` is used twice", model.name));
            }
        }
        Ok(())
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("`{other}` is not a device: use auto, cpu or cuda:N")),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `Option<SocketAddr>` written as an address, or as an empty string for "off".
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("`{text}` is not an address like 127.0.0.1:9464"))
        })
    }
}

//! Shared helpers for the integration tests: the real server started in-process on port 0, and
//! the real binary started as a child process.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub mod broker;
pub mod jobs;

use lote::{Server, Settings};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A fresh SQLite job store in the temporary folder, unique to this call.
pub fn temp_store_url() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let path =
        std::env::temp_dir().join(format!("lote-test-{}-{n}-{nanos}.db", std::process::id()));
    format!("sqlite://{}", path.display())
}

/// Settings for a test server: port 0 for gRPC, metrics and HTTP, CPU, its own job store.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.store.url = temp_store_url();
    settings.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    settings.server.http_addr = Some("127.0.0.1:0".parse().unwrap());
    settings.device.kind = lote::settings::DeviceSpec::Cpu;
    settings
}

/// A server running in this process; `stop` fires its shutdown future.
pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), lote::server::ServeError>>,
}

impl TestServer {
    pub async fn start(settings: Settings) -> Self {
        let server = Server::bind(settings).await.expect("server binds");
        let grpc_addr = server.grpc_addr();
        let metrics_addr = server.metrics_addr();
        let http_addr = server.http_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self { grpc_addr, metrics_addr, http_addr, stop: Some(stop), task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).unwrap().connect().await.expect("connects")
    }

    /// Fires the shutdown future.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A test server started with `settings`, returned once it is SERVING (every model loaded).
pub async fn start_ready(settings: Settings) -> TestServer {
    let server = TestServer::start(settings).await;
    for _ in 0..600 {
        if health_status(server.channel().await, "").await.ok().as_deref() == Some("Serving") {
            return server;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the models did not load");
}

/// The code and message of a call that must fail.
pub fn failure<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> (tonic::Code, String) {
    let status = result.expect_err("the call must fail");
    (status.code(), status.message().to_string())
}

/// grpc.health.v1 Check for `service` ("" is the whole server), as the status name.
pub async fn health_status(channel: Channel, service: &str) -> Result<String, tonic::Status> {
    let response =
        HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await?;
    Ok(format!("{:?}", response.into_inner().status()))
}

/// The `lote` binary with a clean LOTE__ environment and JSON logs.
pub fn lote_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lote"));
    for (name, _) in std::env::vars() {
        if name.starts_with("LOTE__") {
            command.env_remove(name);
        }
    }
    command.env("LOTE__LOG__FORMAT", "json").env_remove("RUST_LOG");
    command.env("LOTE__STORE__URL", temp_store_url());
    // Workers of parallel tests must not all take the HTTP API's default port.
    command.env("LOTE__SERVER__HTTP_ADDR", "127.0.0.1:0");
    command
}

/// A running `lote serve`, with the gRPC address read from its "serving" log line.
pub struct ServeProcess {
    pub child: Child,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The OpenAI-compatible HTTP API, when it is on.
    pub http_addr: Option<SocketAddr>,
    pub stderr: mpsc::Receiver<String>,
}

impl ServeProcess {
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lote starts");
        let (lines_tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (grpc_addr, metrics_addr, http_addr) = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("lote logs `serving` within 60 s");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if event["message"] == "serving" {
                let addr = |key: &str| event[key].as_str().unwrap().parse().unwrap();
                let http = event["http_addr"].as_str().and_then(|a| a.parse().ok());
                break (addr("grpc_addr"), addr("metrics_addr"), http);
            }
        };
        Self { child, grpc_addr, metrics_addr, http_addr, stderr: lines }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python of the venv `make test` prepares (LOTE_VENV, else .venv), checked to have the
/// `modules` a test's scripts import. A missing venv or package fails the test with its name
/// and `make setup`, not with a traceback from a child process: it is never skipped.
pub fn venv_python(modules: &[&str]) -> std::path::PathBuf {
    let venv = std::env::var("LOTE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let python = venv.join("bin/python");
    assert!(python.is_file(), "{} missing: run `make setup` (make test does)", python.display());
    let probe = "import importlib.util, sys\n\
                 print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))";
    let output = Command::new(&python).arg("-c").arg(probe).args(modules).output().unwrap();
    assert!(
        output.status.success(),
        "{} does not run: {}; run `make setup`",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let missing = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        missing.is_empty(),
        "the venv {} lacks the Python packages {missing}: run `make setup` (it installs \
         scripts/requirements.txt)",
        venv.display()
    );
    python
}

/// Sends `signal` to a child process (SIGTERM, SIGINT, SIGKILL).
pub fn send_signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0);
}

/// The child's exit code once it exits within `limit` (-1 when a signal killed it), else None.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The folder `make fixtures` writes (tests/fixtures/models); `LOTE_FIXTURES` overrides it.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::env::var("LOTE_FIXTURES").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
    })
}

/// A tiny model made by tests/fixtures/make_models.py (`make fixtures`). A missing fixture fails
/// the test: it is never skipped.
pub fn fixture_model(name: &str) -> std::path::PathBuf {
    let dir = fixtures_dir().join(name);
    assert!(
        dir.join("config.json").is_file(),
        "fixture {} missing: run `make fixtures`",
        dir.display()
    );
    dir
}

pub fn read_reference(dir: &std::path::Path) -> serde_json::Value {
    read_json(&dir.join("reference.json"))
}

pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Asserts two JSON values are equal but for numbers, which may differ by `tolerance`: the same
/// input computed in batches of other shapes differs in the last float bits (a GEMM's rows take
/// different kernel paths), within the 1e-4 parity bound.
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, tolerance: f64, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= tolerance, "{at}: {x} vs {y}");
        }
        (Value::Array(xs), Value::Array(ys)) => {
            assert_eq!(xs.len(), ys.len(), "{at}: lengths");
            for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                assert_json_close(x, y, tolerance, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(xs), Value::Object(ys)) => {
            assert_eq!(xs.keys().collect::<Vec<_>>(), ys.keys().collect::<Vec<_>>(), "{at}: keys");
            for (key, x) in xs {
                assert_json_close(x, &ys[key], tolerance, &format!("{at}.{key}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

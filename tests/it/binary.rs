//! The real `lote` binary: clean exit on SIGTERM/SIGINT, clear start-up errors with exit code 2,
//! and `--version`.

use crate::common;

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use common::{ServeProcess, health_status, lote_command, send_signal, wait_exit};

/// A plain HTTP/1.0 GET, enough for the metrics endpoint.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

fn serve_command() -> std::process::Command {
    let mut command = lote_command();
    command
        .env("LOTE__SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("LOTE__SERVER__METRICS_ADDR", "127.0.0.1:0")
        .env("LOTE__DEVICE__KIND", "cpu");
    command
}

// Multi-threaded so the client's connection task keeps running (and closes on the server's
// GOAWAY) while this thread blocks waiting for the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_serving_binary_with_exit_code_0_within_5s() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut process = ServeProcess::start(serve_command());
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", process.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        assert_eq!(health_status(channel, "").await.unwrap(), "Serving");
        let metrics = http_get(process.metrics_addr, "/metrics");
        assert!(metrics.contains("lote_build_info{"), "{metrics}");
        send_signal(&process.child, signal);
        let code = wait_exit(&mut process.child, Duration::from_secs(5));
        assert_eq!(code, Some(0), "signal {signal}: exit code 0 within 5 s");
        // The child has exited, so its stderr closes and the reader thread ends the channel.
        let logs: Vec<String> =
            std::iter::from_fn(|| process.stderr.recv_timeout(Duration::from_secs(5)).ok())
                .collect();
        assert!(logs.iter().any(|l| l.contains("NOT_SERVING")), "{logs:?}");
        assert!(logs.iter().any(|l| l.contains("\"stopped\"")), "{logs:?}");
    }
}

#[test]
fn port_in_use_is_a_clear_error_with_exit_code_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = serve_command()
        .env("LOTE__SERVER__GRPC_ADDR", addr.to_string())
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!("lote: error: cannot listen for gRPC on {addr}: address already in use")
    );
}

#[test]
fn missing_cuda_device_is_a_clear_error_not_a_panic() {
    let output = serve_command().env("LOTE__DEVICE__KIND", "cuda:3").arg("serve").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let count = tch::Cuda::device_count();
    assert!(count < 4, "this test needs a machine with fewer than 4 CUDA devices");
    let last = stderr.lines().last().unwrap();
    let expected = format!(
        "lote: error: device cuda:3 is not available: libtorch sees {count} CUDA device(s)"
    );
    assert!(last.starts_with(&expected), "{stderr}");
}

#[test]
fn version_reports_libtorch_and_device() {
    let output = lote_command().arg("--version").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with(&format!("lote {}\n", env!("CARGO_PKG_VERSION"))), "{stdout}");
    assert!(stdout.contains("libtorch 2.11.0"), "{stdout}");
    let device = if tch::Cuda::is_available() { "cuda:0" } else { "cpu" };
    assert!(stdout.contains(&format!("device (auto) {device}")), "{stdout}");
}

#[test]
fn no_command_prints_help_and_exits_2() {
    let output = lote_command().output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: lote"));
}

/// `lote health`'s exit code and its one stderr line.
fn health(addr: &str, service: &str) -> (Option<i32>, String, String) {
    let output =
        lote_command().args(["health", "--addr", addr, "--service", service]).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim_end().to_string();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

// `lote health` runs as a child process, so the test blocks on it like on the server.
#[test]
fn health_exits_0_when_serving_and_1_when_draining_unknown_or_unreachable() {
    let mut command = serve_command();
    command.env("LOTE__SERVER__DRAIN_DELAY", "3s");
    let mut process = ServeProcess::start(command);
    let addr = format!("http://{}", process.grpc_addr);
    assert_eq!(health(&addr, ""), (Some(0), "SERVING".into(), String::new()));
    assert_eq!(health(&addr, "lote.v1.Models"), (Some(0), "SERVING".into(), String::new()));
    assert_eq!(
        health(&addr, "lote.model.nope"),
        (Some(1), String::new(), format!("lote: error: {addr}: NotFound: service not registered"))
    );

    send_signal(&process.child, libc::SIGTERM);
    // The drain lasts 3 s: health must say NOT_SERVING within it, while the port still answers.
    let start = Instant::now();
    let draining = loop {
        let answer = health(&addr, "");
        if answer.0 != Some(0) || start.elapsed() > Duration::from_secs(2) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        draining,
        (Some(1), String::new(), format!("lote: error: {addr}: service \"\" is NOT_SERVING"))
    );
    assert_eq!(wait_exit(&mut process.child, Duration::from_secs(10)), Some(0));

    let (code, stdout, stderr) = health(&addr, "");
    assert_eq!((code, stdout.as_str()), (Some(1), ""));
    assert!(stderr.starts_with(&format!("lote: error: cannot reach {addr}: ")), "{stderr}");
}

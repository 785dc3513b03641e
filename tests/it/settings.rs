//! Settings precedence (defaults < file < environment) and every bad-input case, through the
//! library loader and through the binary's exit code and message.

use crate::common;

use std::{io::Write, path::Path, time::Duration};

use lote::settings::{DeviceSpec, Dtype, LogFormat, Origin, SettingsError, SettingsLoader, Task};

fn write_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    path
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn defaults_apply_without_file_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SettingsLoader::new()
        .file_if_present(dir.path().join("absent.toml"))
        .env(no_env())
        .load()
        .unwrap();
    assert_eq!(settings, lote::Settings::default());
    assert_eq!(settings.server.grpc_addr.to_string(), "127.0.0.1:50051");
    assert_eq!(settings.device.kind, DeviceSpec::Auto);
    assert_eq!(settings.device.dtype, Dtype::Fp32);
}

#[test]
fn file_overrides_defaults_and_environment_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "lote.toml",
        r#"
[server]
grpc_addr = "127.0.0.1:6000"
shutdown_timeout = "7s"
[device]
kind = "cuda:1"
dtype = "bf16"
[batching]
max_batch_size = 8
[[models]]
name = "minilm"
task = "feature-extraction"
path = "/models/minilm"
"#,
    );
    let from_file = SettingsLoader::new().file(&file).env(no_env()).load().unwrap();
    assert_eq!(from_file.server.grpc_addr.to_string(), "127.0.0.1:6000");
    assert_eq!(from_file.server.shutdown_timeout, Duration::from_secs(7));
    assert_eq!(from_file.device.kind, DeviceSpec::Cuda(1));
    assert_eq!(from_file.device.dtype, Dtype::Bf16);
    assert_eq!(from_file.batching.max_batch_size, 8);
    assert_eq!(from_file.batching.max_batch_tokens, 16384, "unset keys keep defaults");
    assert_eq!(from_file.models.len(), 1);
    assert_eq!(from_file.models[0].task, Task::FeatureExtraction);

    let with_env = SettingsLoader::new()
        .file(&file)
        .env([
            ("LOTE__SERVER__GRPC_ADDR", "0.0.0.0:7000"),
            ("LOTE__BATCHING__MAX_BATCH_SIZE", "32"),
            ("LOTE__LOG__FORMAT", "json"),
            ("LOTE__DEVICE__KIND", "cpu"),
            ("LOTE_VENV", "/not/a/setting"),
        ])
        .load()
        .unwrap();
    assert_eq!(with_env.server.grpc_addr.to_string(), "0.0.0.0:7000");
    assert_eq!(with_env.batching.max_batch_size, 32);
    assert_eq!(with_env.log.format, LogFormat::Json);
    assert_eq!(with_env.device.kind, DeviceSpec::Cpu);
    assert_eq!(with_env.device.dtype, Dtype::Bf16, "file still wins over defaults");
    assert_eq!(with_env.server.shutdown_timeout, Duration::from_secs(7));
}

#[test]
fn empty_metrics_addr_turns_the_endpoint_off() {
    let settings = SettingsLoader::new().env([("LOTE__SERVER__METRICS_ADDR", "")]).load().unwrap();
    assert_eq!(settings.server.metrics_addr, None);
}

#[test]
fn missing_explicit_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let error = SettingsLoader::new().file(&path).env(no_env()).load().unwrap_err();
    assert_eq!(error, SettingsError::MissingFile { path: path.clone() });
    assert_eq!(error.to_string(), format!("config file {}: not found", path.display()));
}

#[test]
fn unparsable_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "broken.toml", "[server\ngrpc_addr = ");
    let error = SettingsLoader::new().file(&path).env(no_env()).load().unwrap_err();
    let SettingsError::UnreadableFile { path: named, .. } = &error else {
        panic!("expected UnreadableFile, got {error:?}")
    };
    assert_eq!(named, &path);
    let message = error.to_string();
    assert!(message.starts_with(&format!("config file {}: ", path.display())), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn unknown_key_in_file_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "typo.toml", "[server]\ngrpc_adr = \"127.0.0.1:1\"\n");
    let error = SettingsLoader::new().file(&path).env(no_env()).load().unwrap_err();
    assert_eq!(
        error,
        SettingsError::UnknownKey { key: "server.grpc_adr".into(), origin: Origin::File(path) }
    );
}

#[test]
fn unknown_section_in_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "typo.toml", "[sever]\nport = 1\n");
    let error = SettingsLoader::new().file(&path).env(no_env()).load().unwrap_err();
    assert_eq!(
        error,
        SettingsError::UnknownKey { key: "sever".into(), origin: Origin::File(path) }
    );
}

#[test]
fn unknown_key_in_environment_names_the_variable() {
    let error = SettingsLoader::new().env([("LOTE__BATCHING__MAX_BATCH", "3")]).load().unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown key `batching.max_batch` in environment variable LOTE__BATCHING__MAX_BATCH"
    );
}

#[test]
fn bad_value_in_environment_names_key_and_variable() {
    let error = SettingsLoader::new().env([("LOTE__DEVICE__KIND", "gpu")]).load().unwrap_err();
    assert_eq!(
        error.to_string(),
        "bad value for `device.kind` in environment variable LOTE__DEVICE__KIND: \
         `gpu` is not a device: use auto, cpu or cuda:N"
    );
    let error =
        SettingsLoader::new().env([("LOTE__SERVER__GRPC_ADDR", "localhost")]).load().unwrap_err();
    let SettingsError::BadValue { key, origin, .. } = error else { panic!("{error:?}") };
    assert_eq!(key, "server.grpc_addr");
    assert_eq!(origin, Origin::Env("LOTE__SERVER__GRPC_ADDR".into()));
}

#[test]
fn bad_value_in_file_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[batching]\nmax_batch_size = \"many\"\n", "batching.max_batch_size"),
        ("[device]\ndtype = \"fp64\"\n", "device.dtype"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[server]\nshutdown_timeout = \"soon\"\n", "server.shutdown_timeout"),
        ("[batching]\nbulk_share = 1.5\n", "batching.bulk_share"),
        ("[batching]\nmax_batch_tokens = 0\n", "batching.max_batch_tokens"),
        ("[store]\nurl = \"mysql://x\"\n", "store.url"),
        (
            "[[models]]\nname = \"m\"\ntask = \"speech-recognition\"\npath = \"/m\"\n",
            "models.0.task",
        ),
        ("[[models]]\nname = \"m\"\ntask = \"fill-mask\"\n", "models.0.path"),
        (
            "[[models]]\nname = \"m\"\ntask = \"fill-mask\"\npath = \"/m\"\ndtype = \"int4\"\n",
            "models.0.dtype",
        ),
        ("[server.tls]\ncert = \"/c.pem\"\n", "server.tls"),
        ("[server.tls]\nclient_ca = \"/ca.pem\"\n", "server.tls.client_ca"),
    ] {
        let path = write_file(dir.path(), "bad.toml", text);
        let error = SettingsLoader::new().file(&path).env(no_env()).load().unwrap_err();
        let SettingsError::BadValue { key: named, origin, .. } = &error else {
            panic!("{text}: expected BadValue, got {error:?}")
        };
        assert_eq!(named, key, "{text}");
        assert_eq!(origin, &Origin::File(path.clone()), "{text}");
        assert!(error.to_string().starts_with(&format!("bad value for `{key}` in ")));
    }
}

#[test]
fn missing_model_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "m.toml", "[[models]]\nname = \"m\"\ntask = \"fill-mask\"\n");
    let error = SettingsLoader::new().file(&path).env(no_env()).load().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("bad value for `models.0.path` in {}: missing required key", path.display())
    );
}

#[test]
fn duplicate_model_names_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = "[[models]]\nname = \"m\"\ntask = \"fill-mask\"\npath = \"/m\"\n";
    let path = write_file(dir.path(), "m.toml", &format!("{model}{model}"));
    let error = SettingsLoader::new().file(&path).env(no_env()).load().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("bad value for `models.1.name` in {}: `m` is used twice", path.display())
    );
}

#[test]
fn shipped_default_file_is_valid_and_equals_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let settings = SettingsLoader::new().file(path).env(no_env()).load().unwrap();
    assert_eq!(settings, lote::Settings::default());
}

// The binary: exit code 2 and exactly one line naming key and source.

fn run_lote(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = common::lote_command();
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn binary_exits_2_with_one_line_for_each_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = write_file(dir.path(), "unknown.toml", "[amqp]\nprefetch_count = 3\n");
    let broken = write_file(dir.path(), "broken.toml", "[amqp\n");
    let missing = dir.path().join("missing.toml");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            vec!["--config", missing.to_str().unwrap(), "serve"],
            vec![],
            format!("lote: error: config file {}: not found", missing.display()),
        ),
        (
            vec!["--config", unknown.to_str().unwrap(), "serve"],
            vec![],
            format!("lote: error: unknown key `amqp.prefetch_count` in {}", unknown.display()),
        ),
        (
            vec!["serve"],
            vec![("LOTE__DEVICE__DTYPE", "int4")],
            "lote: error: bad value for `device.dtype` in environment variable \
             LOTE__DEVICE__DTYPE: `int4` is not one of fp32, bf16, fp16, int8"
                .into(),
        ),
    ];
    for (args, env, expected) in cases {
        let (code, _, stderr) = run_lote(&args, &env);
        assert_eq!(code, 2, "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end(), expected, "{args:?} {env:?}");
    }
    let (code, _, stderr) = run_lote(&["--config", broken.to_str().unwrap(), "config"], &[]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("lote: error: config file {}: ", broken.display())));
}

#[test]
fn config_command_prints_effective_settings_as_toml() {
    let (code, stdout, stderr) = run_lote(&["config"], &[("LOTE__BATCHING__MAX_BATCH_SIZE", "12")]);
    assert_eq!(code, 0, "{stderr}");
    let printed: lote::Settings = toml::from_str(&stdout).expect("prints valid settings TOML");
    assert_eq!(printed.batching.max_batch_size, 12);
    assert_eq!(printed.server.grpc_addr.to_string(), "127.0.0.1:50051");
}

#[test]
fn config_and_its_errors_never_show_a_password() {
    let env = [
        ("LOTE__AMQP__URL", "amqp://lote:segredo-amqp@mq:5672/%2f"),
        ("LOTE__STORE__URL", "postgres://lote:segredo-pg@db/lote?sslmode=require"),
    ];
    let (code, stdout, stderr) = run_lote(&["config"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("segredo"), "{stdout}");
    assert!(stdout.contains("amqp://lote:***@mq:5672/%2f"), "{stdout}");
    assert!(stdout.contains("postgres://lote:***@db/lote?sslmode=require"), "{stdout}");
    let (code, _, stderr) = run_lote(&["config"], &[("LOTE__STORE__URL", "mysql://u:segredo@db")]);
    assert_eq!(code, 2);
    assert!(!stderr.contains("segredo"), "{stderr}");
    assert!(stderr.contains("mysql://u:***@db"), "{stderr}");
}

#[test]
fn a_tls_file_that_cannot_be_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("server.pem");
    let cert = missing.to_str().unwrap();
    let (code, _, stderr) = run_lote(
        &["serve"],
        &[("LOTE__SERVER__TLS__CERT", cert), ("LOTE__SERVER__TLS__KEY", cert)],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with(&format!("lote: error: server.tls: cannot read cert {cert}: ")),
        "{stderr}"
    );
}

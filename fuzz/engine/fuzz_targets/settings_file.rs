//! Arbitrary bytes as the settings file (`--config`, TOML), with `LOTE__` variables after a
//! `\0\0` separator (one `KEY=VALUE` per line): loading either gives settings or an error that
//! says what is wrong, never a panic; what loads prints as `lote config` prints it, and that
//! printout, read back as a settings file, gives the very same settings.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use lote::settings::{SettingsLoader, secrets::masked_url};

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lote-fuzz-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let (file, vars) = match data.windows(2).position(|w| w == [0, 0]) {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let vars: Vec<(String, String)> = String::from_utf8_lossy(vars)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (format!("LOTE__{key}"), value.to_string()))
        .collect();
    let path = scratch().join("settings.toml");
    std::fs::write(&path, file).expect("written");
    let loaded = SettingsLoader::new().file(&path).env(vars).load();
    let settings = match loaded {
        Ok(settings) => settings,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let mut shown = settings.clone();
    shown.amqp.url = masked_url(&shown.amqp.url);
    shown.store.url = masked_url(&shown.store.url);
    assert_eq!(masked_url(&shown.amqp.url), shown.amqp.url, "masking is stable");
    let printed = toml::to_string_pretty(&shown).expect("settings serialize to TOML");
    let again = scratch().join("printed.toml");
    let unmasked = toml::to_string_pretty(&settings).expect("settings serialize to TOML");
    std::fs::write(&again, &unmasked).expect("written");
    let reread = SettingsLoader::new()
        .file(&again)
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_or_else(|e| panic!("lote config's own output does not load: {e}\n{printed}"));
    assert_eq!(reread, settings, "printed and read back");
});

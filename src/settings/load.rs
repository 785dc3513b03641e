//! Reading [`Settings`] from defaults, a TOML file and the environment, keeping track of where
//! each key came from so that an error can say "unknown key `server.prot` in config/default.toml"
//! or "... from environment variable LOTE__SERVER__PROT" rather than a bare serde message.

use std::{collections::HashMap, fmt, path::PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Source, Value, ValueKind};

use super::Settings;

/// Prefix and separator of environment variables: `LOTE__SECTION__KEY`.
const ENV_PREFIX: &str = "LOTE";
const ENV_SEPARATOR: &str = "__";

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "config/default.toml";

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Defaults,
    File(PathBuf),
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => f.write_str("the built-in defaults"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// Why settings could not be loaded. Each message is one line naming the key and its source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("config file {}: not found", path.display())]
    MissingFile { path: PathBuf },
    #[error("config file {}: {reason}", path.display())]
    UnreadableFile { path: PathBuf, reason: String },
    #[error("unknown key `{key}` in {origin}")]
    UnknownKey { key: String, origin: Origin },
    #[error("bad value for `{key}` in {origin}: {reason}")]
    BadValue { key: String, origin: Origin, reason: String },
}

/// Which file to read, and whether its absence is an error.
#[derive(Debug, Clone)]
enum FileChoice {
    /// Read when present (the default `config/default.toml`).
    IfPresent(PathBuf),
    /// Named by the user: must exist.
    Required(PathBuf),
}

/// Builds [`Settings`] from the three layers. The environment is the process's unless a map is
/// given, so tests need not touch global state.
#[derive(Debug, Clone)]
pub struct SettingsLoader {
    file: FileChoice,
    env: Option<HashMap<String, String>>,
}

impl Default for SettingsLoader {
    fn default() -> Self {
        Self { file: FileChoice::IfPresent(PathBuf::from(DEFAULT_FILE)), env: None }
    }
}

impl SettingsLoader {
    /// Defaults, then `config/default.toml` if present, then the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `path` instead of `config/default.toml`; a missing file is then an error.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = FileChoice::Required(path.into());
        self
    }

    /// Reads `path` only when it exists.
    pub fn file_if_present(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = FileChoice::IfPresent(path.into());
        self
    }

    /// Uses these variables in place of the process environment.
    pub fn env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = Some(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect());
        self
    }

    pub fn load(&self) -> Result<Settings, SettingsError> {
        let defaults =
            Config::try_from(&Settings::default()).map_err(|e| SettingsError::BadValue {
                key: String::new(),
                origin: Origin::Defaults,
                reason: e.to_string(),
            })?;
        let (file_path, file_keys) = self.read_file()?;
        let env_vars = self.lote_env_vars();
        let env_keys: HashMap<String, String> =
            env_vars.keys().map(|var| (env_var_key(var), var.clone())).collect();
        let origins = Origins { file_path, file_keys, env_keys };

        let mut builder = Config::builder().add_source(defaults);
        if let Some(path) = &origins.file_path {
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        let env = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .source(Some(env_vars.into_iter().collect()));
        let merged = builder.add_source(env).build().map_err(|e| SettingsError::BadValue {
            key: String::new(),
            origin: origins.any(),
            reason: e.to_string(),
        })?;

        let settings: Settings =
            serde_path_to_error::deserialize(merged).map_err(|e| origins.explain(e))?;
        settings.validate().map_err(|(key, reason)| SettingsError::BadValue {
            origin: origins.of(&key),
            key,
            reason,
        })?;
        Ok(settings)
    }

    /// The file to read, if any, and its keys as a nested table (for finding origins).
    fn read_file(&self) -> Result<(Option<PathBuf>, Map<String, Value>), SettingsError> {
        let path = match &self.file {
            FileChoice::IfPresent(path) if !path.exists() => return Ok((None, Map::new())),
            FileChoice::IfPresent(path) | FileChoice::Required(path) => path,
        };
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SettingsError::MissingFile { path: path.clone() },
            _ => SettingsError::UnreadableFile { path: path.clone(), reason: e.to_string() },
        })?;
        let keys = File::from_str(&text, FileFormat::Toml).collect().map_err(|e| {
            SettingsError::UnreadableFile { path: path.clone(), reason: one_line(&e.to_string()) }
        })?;
        Ok((Some(path.clone()), keys))
    }

    fn lote_env_vars(&self) -> HashMap<String, String> {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        let all: Box<dyn Iterator<Item = (String, String)>> = match &self.env {
            Some(vars) => Box::new(vars.clone().into_iter()),
            None => Box::new(std::env::vars()),
        };
        all.filter(|(name, _)| name.to_ascii_uppercase().starts_with(&prefix)).collect()
    }
}

/// `LOTE__SERVER__GRPC_ADDR` -> `server.grpc_addr`, as the config crate maps it.
fn env_var_key(var: &str) -> String {
    var[ENV_PREFIX.len() + ENV_SEPARATOR.len()..].to_lowercase().replace(ENV_SEPARATOR, ".")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The keys each layer set, so a failing key can be traced to the layer that set it last.
struct Origins {
    file_path: Option<PathBuf>,
    file_keys: Map<String, Value>,
    /// Dotted key -> the variable that set it.
    env_keys: HashMap<String, String>,
}

impl Origins {
    fn of(&self, key: &str) -> Origin {
        if let Some(var) = self.env_keys.get(key) {
            return Origin::Env(var.clone());
        }
        if let Some(path) = &self.file_path
            && lookup(&self.file_keys, key)
        {
            return Origin::File(path.clone());
        }
        Origin::Defaults
    }

    /// Some layer the user wrote, for errors that name no key.
    fn any(&self) -> Origin {
        match (&self.file_path, self.env_keys.values().next()) {
            (_, Some(var)) => Origin::Env(var.clone()),
            (Some(path), None) => Origin::File(path.clone()),
            (None, None) => Origin::Defaults,
        }
    }

    fn explain(&self, error: serde_path_to_error::Error<config::ConfigError>) -> SettingsError {
        let path = dotted(error.path());
        let reason = one_line(&bare_reason(error.inner()));
        if is_unknown_field(&reason) {
            // serde_path_to_error's path already ends with the unknown key.
            return SettingsError::UnknownKey { origin: self.of(&path), key: path };
        }
        let parent = path;
        let origin = self.of(&parent);
        if let Some(field) = missing_field(error.inner()) {
            let key = if parent.is_empty() { field } else { format!("{parent}.{field}") };
            return SettingsError::BadValue { key, origin, reason: "missing required key".into() };
        }
        SettingsError::BadValue { key: parent, origin, reason }
    }
}

/// The dotted form of a serde path: `models.0.name`.
fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// serde's error for a key that no struct field matches ("unknown field `x`, expected ...").
fn is_unknown_field(message: &str) -> bool {
    message.starts_with("unknown field `")
}

/// The config crate reports a missing struct field as `NotFound("models[0]path")`: the field is
/// the identifier at the end.
fn missing_field(error: &config::ConfigError) -> Option<String> {
    let config::ConfigError::NotFound(path) = error else { return None };
    let start = path.rfind([']', '.']).map_or(0, |i| i + 1);
    Some(path[start..].to_string())
}

/// The error's message without the " for key `...`" the config crate appends (we name the key
/// and its source ourselves).
fn bare_reason(error: &config::ConfigError) -> String {
    match error {
        config::ConfigError::Type { unexpected, expected, .. } => {
            format!("expected {expected}, found {unexpected}")
        }
        config::ConfigError::At { error, .. } => bare_reason(error),
        config::ConfigError::Message(message) => message.clone(),
        other => other.to_string(),
    }
}

/// Whether the nested table holds the dotted key (array indices as numbers).
fn lookup(table: &Map<String, Value>, key: &str) -> bool {
    let mut parts = key.split('.');
    let Some(first) = parts.next() else { return false };
    let Some(mut value) = table.get(first) else { return false };
    for part in parts {
        let next = match &value.kind {
            ValueKind::Table(table) => table.get(part),
            ValueKind::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(next) => value = next,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names_map_to_dotted_keys() {
        assert_eq!(env_var_key("LOTE__SERVER__GRPC_ADDR"), "server.grpc_addr");
        assert_eq!(env_var_key("LOTE__LOG__FORMAT"), "log.format");
    }

    #[test]
    fn unknown_field_errors_are_recognised() {
        assert!(is_unknown_field("unknown field `prot`, expected one of `grpc_addr`"));
        assert!(!is_unknown_field("invalid type: string"));
    }

    #[test]
    fn missing_field_is_the_identifier_after_the_path() {
        let error = config::ConfigError::NotFound("models[0]path".into());
        assert_eq!(missing_field(&error).as_deref(), Some("path"));
        let error = config::ConfigError::NotFound("server.grpc_addr".into());
        assert_eq!(missing_field(&error).as_deref(), Some("grpc_addr"));
    }

    #[test]
    fn origin_display_names_file_and_variable() {
        assert_eq!(Origin::File("a/b.toml".into()).to_string(), "a/b.toml");
        assert_eq!(Origin::Env("LOTE__X".into()).to_string(), "environment variable LOTE__X");
    }
}

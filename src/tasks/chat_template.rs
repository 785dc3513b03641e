//! Chat prompts rendered from the model's `chat_template` exactly as transformers'
//! `apply_chat_template` renders them (4.57, utils/chat_template_utils.py): Jinja with
//! `trim_blocks` and `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, a
//! `tojson` that writes what Python's `json.dumps` writes (non-ASCII kept, `", "` and `": "`
//! separators, `indent`), Python's string and dict methods (minijinja-contrib's pycompat), and
//! the tokenizer's special tokens, `tools=None` and `documents=None` as variables.
//!
//! The template is read where transformers reads it: `chat_template.jinja` (what
//! `save_pretrained` writes since 4.43) over tokenizer_config.json's `chat_template`, which is
//! a string or a list of named templates of which "default" is the one used.

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind, Value, value::Kwargs};
use serde_json::Map;

use crate::tokenize::special_tokens_map;

const NAME: &str = "chat_template";

/// A model's chat template, compiled once.
pub struct ChatTemplate {
    env: Environment<'static>,
    special_tokens: Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    /// The template's own `raise_exception`: the messages are not what it takes.
    #[error("the chat template refused the messages: {0}")]
    Refused(String),
    #[error("the chat template failed on the messages: {0}")]
    Render(String),
}

/// Marks an error as the template's `raise_exception`, not a fault of the template.
#[derive(Debug)]
struct RaisedByTemplate;

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the template")
    }
}

impl std::error::Error for RaisedByTemplate {}

impl ChatTemplate {
    /// The template of the model in `dir`, or None when it has none.
    pub fn load(dir: &Path) -> Result<Option<Self>, ChatTemplateError> {
        let Some(source) = template_source(dir)? else { return Ok(None) };
        Self::new(source, special_tokens_map(dir)).map(Some)
    }

    pub fn new(
        source: String,
        special_tokens: Map<String, serde_json::Value>,
    ) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message).with_source(RaisedByTemplate))
        });
        env.add_function("strftime_now", |format: String| strftime(&format, now_utc()));
        env.add_template_owned(NAME, without_generation_tags(&source))
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        Ok(Self { env, special_tokens })
    }

    /// The prompt for `messages` (a JSON list of `{role, content, ...}`), ending with the
    /// assistant's turn opened when `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        self.render_with_tools(messages, &serde_json::Value::Null, add_generation_prompt)
    }

    /// [`Self::render`] with `tools` (JSON schemas, or null) for the template's tools branch.
    pub fn render_with_tools(
        &self,
        messages: &serde_json::Value,
        tools: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let template = self.env.get_template(NAME).expect("added in new");
        let mut context: Map<String, serde_json::Value> = self.special_tokens.clone();
        context.insert("messages".into(), messages.clone());
        context.insert("tools".into(), tools.clone());
        context.insert("documents".into(), serde_json::Value::Null);
        context.insert("add_generation_prompt".into(), add_generation_prompt.into());
        template.render(Value::from_serialize(&context)).map_err(|e| {
            let raised = std::error::Error::source(&e).is_some_and(|s| s.is::<RaisedByTemplate>());
            if raised {
                ChatTemplateError::Refused(e.detail().unwrap_or_default().to_string())
            } else {
                ChatTemplateError::Render(describe(&e))
            }
        })
    }
}

/// The template text of the model in `dir`, where transformers looks for it.
fn template_source(dir: &Path) -> Result<Option<String>, ChatTemplateError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| ChatTemplateError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let file = dir.join("chat_template.jinja");
    if file.is_file() {
        return read(&file).map(Some);
    }
    let config_path = dir.join("tokenizer_config.json");
    if !config_path.is_file() {
        return Ok(None);
    }
    let config: serde_json::Value = serde_json::from_str(&read(&config_path)?).map_err(|e| {
        ChatTemplateError::Read { path: config_path.display().to_string(), reason: e.to_string() }
    })?;
    Ok(match &config["chat_template"] {
        serde_json::Value::String(source) => Some(source.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(String::from),
        _ => None,
    })
}

/// The error with the line it happened on, as minijinja describes it.
fn describe(error: &Error) -> String {
    match (error.detail(), error.line()) {
        (Some(detail), Some(line)) => format!("{detail} (line {line})"),
        (Some(detail), None) => detail.to_string(),
        _ => error.to_string(),
    }
}

/// transformers' `{% generation %}` ... `{% endgeneration %}` only marks the assistant's spans
/// for training masks; as an always-true block it renders the same, whitespace control kept.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else { break };
        let inner = &tag[2..end];
        let (open, body) = split_control(inner, true);
        let (word, close) = split_control(body.trim_start(), false);
        let replacement = match word.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(statement) => out.push_str(&format!("{{%{open} {statement} {close}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Splits a tag's whitespace-control sign (`-` or `+`) off its start (or its end).
fn split_control(text: &str, at_start: bool) -> (&str, &str) {
    let signed = |c: char| c == '-' || c == '+';
    if at_start {
        match text.chars().next() {
            Some(c) if signed(c) => (&text[..1], &text[1..]),
            _ => ("", text),
        }
    } else {
        let trimmed = text.trim_end();
        match trimmed.chars().last() {
            Some(c) if signed(c) => (&trimmed[..trimmed.len() - 1], &trimmed[trimmed.len() - 1..]),
            _ => (trimmed, ""),
        }
    }
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)` with those keyword arguments.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == minijinja::value::ValueKind::String => {
            Some(v.as_str().unwrap_or_default().to_string())
        }
        Some(v) => {
            let n = i64::try_from(v).map_err(|_| {
                Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer")
            })?;
            Some(" ".repeat(n.max(0) as usize))
        }
    };
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators are two strings",
            ));
        }
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let dumps = PythonJson {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_separator: item,
        key_separator: key,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    dumps.write(&value, 0, &mut out)?;
    Ok(Value::from(out))
}

/// Python's `json.dumps` settings.
struct PythonJson {
    ensure_ascii: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

impl PythonJson {
    fn write(&self, value: &Value, level: usize, out: &mut String) -> Result<(), Error> {
        use minijinja::value::ValueKind;
        match value.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&python_number(value)),
            ValueKind::String | ValueKind::Bytes => {
                self.write_string(value.as_str().unwrap_or_default(), out)
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container(('[', ']'), items.len(), level, out, |i, out| {
                    self.write(&items[i], level + 1, out)
                })?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = value.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                self.write_container(('{', '}'), keys.len(), level, out, |i, out| {
                    let key = &keys[i];
                    match key.as_str() {
                        Some(text) => self.write_string(text, out),
                        None => self.write_string(&key.to_string(), out),
                    }
                    out.push_str(&self.key_separator);
                    self.write(&value.get_item(key)?, level + 1, out)
                })?;
            }
            _ => self.write_string(&value.to_string(), out),
        }
        Ok(())
    }

    fn write_container(
        &self,
        (open, close): (char, char),
        len: usize,
        level: usize,
        out: &mut String,
        mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if len == 0 {
            out.push(close);
            return Ok(());
        }
        for i in 0..len {
            if i > 0 {
                out.push_str(&self.item_separator);
            }
            if let Some(indent) = &self.indent {
                out.push('\n');
                out.push_str(&indent.repeat(level + 1));
            }
            item(i, out)?;
        }
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level));
        }
        out.push(close);
        Ok(())
    }

    fn write_string(&self, text: &str, out: &mut String) {
        let quoted = serde_json::to_string(text).expect("a string serializes");
        if !self.ensure_ascii {
            out.push_str(&quoted);
            return;
        }
        for c in quoted.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
}

/// A number as Python's `json.dumps` writes it (`repr`): floats keep a `.0` or an exponent.
fn python_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    let Ok(x) = f64::try_from(value.clone()) else { return value.to_string() };
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let exponent = if x == 0.0 { 0 } else { x.abs().log10().floor() as i32 };
    if !(-5..16).contains(&exponent) {
        // Python: 1e+16, 1.5e-07.
        let text = format!("{x:e}");
        let (mantissa, power) = text.split_once('e').expect("{:e} has an exponent");
        let power: i32 = power.parse().expect("an integer exponent");
        return format!("{mantissa}e{}{:02}", if power < 0 { '-' } else { '+' }, power.abs());
    }
    let text = format!("{x}");
    if text.contains('.') { text } else { format!("{text}.0") }
}

/// Seconds since the epoch, now.
fn now_utc() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Python's `datetime.strftime` for the codes chat templates use (`%d %b %Y`, Llama 3.1's
/// date line, and the other common ones), in UTC.
fn strftime(format: &str, unix: i64) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] =
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(code) = chars.next() else {
            out.push('%');
            break;
        };
        let month_name = MONTHS[(month - 1) as usize];
        match code {
            'd' => out.push_str(&format!("{day:02}")),
            'm' => out.push_str(&format!("{month:02}")),
            'Y' => out.push_str(&year.to_string()),
            'y' => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            'b' => out.push_str(&month_name[..3]),
            'B' => out.push_str(month_name),
            'a' => out.push_str(&DAYS[weekday][..3]),
            'A' => out.push_str(DAYS[weekday]),
            'j' => out.push_str(&format!("{day_of_year:03}")),
            'H' => out.push_str(&format!("{:02}", seconds / 3600)),
            'M' => out.push_str(&format!("{:02}", seconds / 60 % 60)),
            'S' => out.push_str(&format!("{:02}", seconds % 60)),
            '%' => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: %{other} is not a supported code"),
                ));
            }
        }
    }
    Ok(out)
}

/// (year, month, day) of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(source: &str) -> ChatTemplate {
        let special = json!({"bos_token": "<s>", "eos_token": "</s>"});
        ChatTemplate::new(source.into(), special.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let t = template(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ [] | tojson }}",
        );
        let messages = json!([{"role": "user", "n": [1, 2.5, 1e20], "text": "ação <b>"}]);
        assert_eq!(
            t.render(&messages, false).unwrap(),
            "{\"role\": \"user\", \"n\": [1, 2.5, 1e+20], \"text\": \"ação <b>\"}|{\n  \"role\": \
             \"user\",\n  \"n\": [\n    1,\n    2.5,\n    1e+20\n  ],\n  \"text\": \"ação <b>\"\n}|[]"
        );
        let ascii = template("{{ 'ação' | tojson(ensure_ascii=true) }}");
        assert_eq!(ascii.render(&json!([]), false).unwrap(), "\"a\\u00e7\\u00e3o\"");
    }

    #[test]
    fn raise_exception_is_a_refusal_with_the_templates_message() {
        let t = template(
            "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}ok",
        );
        assert_eq!(t.render(&json!([{"role": "user"}]), true).unwrap(), "ok");
        assert_eq!(
            t.render(&json!([{"role": "system"}]), true).unwrap_err(),
            ChatTemplateError::Refused("user first".into())
        );
    }

    #[test]
    fn generation_tags_render_their_content() {
        let t = template("{%- generation -%}\n  {{ bos_token }}{% endgeneration %}.");
        assert_eq!(t.render(&json!([]), false).unwrap(), "<s>.");
        assert!(
            without_generation_tags("{% if a %}{%+ endgeneration +%}").contains("{%+ endif +%}")
        );
    }

    #[test]
    fn strftime_knows_the_calendar() {
        // 2024-07-23 13:05:09 UTC, a Tuesday.
        let t = 1_721_739_909;
        assert_eq!(strftime("%d %b %Y", t).unwrap(), "23 Jul 2024");
        assert_eq!(strftime("%A %B %j %H:%M:%S %y%%", t).unwrap(), "Tuesday July 205 13:05:09 24%");
        assert!(strftime("%Q", t).is_err());
    }

    #[test]
    fn a_template_that_does_not_compile_says_where() {
        let error = ChatTemplate::new("{% if %}".into(), Map::new()).err().unwrap();
        assert!(matches!(&error, ChatTemplateError::Syntax(m) if m.contains("line 1")), "{error}");
    }
}

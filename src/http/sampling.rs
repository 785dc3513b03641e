//! OpenAI's sampling fields of `/v1/completions` and `/v1/chat/completions`, mapped onto the
//! generation parameters `lote run` takes, with OpenAI's defaults (temperature 1, top_p 1, no
//! top-k; temperature 0 is greedy) rather than transformers' (greedy, top-k 50). Every field is
//! checked here and named in its error; fields lote cannot honour are refused, not ignored,
//! except those that only label a call (`user`, `metadata`, `store`, `service_tier`).
//! vLLM's extensions `top_k`, `repetition_penalty` and `min_tokens` are taken too.

use serde_json::{Map, Value};

use super::error::ApiError;

/// Which route the fields came to: the two differ in a few names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Completions,
    Chat,
}

/// Most choices one call may ask for (`n`), OpenAI's own limit.
pub const MAX_CHOICES: usize = 128;

/// A call's generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Parameters for the pipeline's `parse_params`, one choice's (no seed: see [`Self::seed`]).
    pub params: Map<String, Value>,
    /// None: the route's default (16 new tokens for completions, the rest of the context for
    /// chat).
    pub max_tokens: Option<usize>,
    pub n: usize,
    /// temperature 0: every choice is the same, computed once.
    pub greedy: bool,
    /// Choice j samples with `seed + j`, streamed or not, so a seed repeats every choice.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Top log-probabilities per token asked for: None when not asked.
    pub logprobs: Option<usize>,
    /// Completions' `echo`: the prompt is returned before the completion (with each prompt
    /// token's log-probability when `logprobs` is asked too).
    pub echo: bool,
}

impl Sampling {
    /// `max_tokens: 0` with `echo`: the prompt scored, nothing generated.
    pub fn scores_only(&self) -> bool {
        self.max_tokens == Some(0)
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param), message)
}

/// Takes `key` out of `body`: None when absent or null.
fn take(body: &mut Map<String, Value>, key: &str) -> Option<Value> {
    body.remove(key).filter(|v| !v.is_null())
}

fn number(
    body: &mut Map<String, Value>,
    key: &str,
    range: (f64, f64),
) -> Result<Option<f64>, ApiError> {
    let Some(value) = take(body, key) else { return Ok(None) };
    match value.as_f64() {
        Some(x) if x >= range.0 && x <= range.1 => Ok(Some(x)),
        _ => Err(invalid(
            key,
            format!("`{key}` must be a number between {} and {}, not {value}", range.0, range.1),
        )),
    }
}

fn count(
    body: &mut Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    let Some(value) = take(body, key) else { return Ok(None) };
    match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(
            key,
            format!("`{key}` must be an integer from {min} to {max}, not {value}"),
        )),
    }
}

fn flag(body: &mut Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match take(body, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(other) => Err(invalid(key, format!("`{key}` must be true or false, not {other}"))),
    }
}

/// `stop`: a string or up to 4 non-empty strings.
fn stop_strings(body: &mut Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let bad = || invalid("stop", "`stop` must be a string or a list of up to 4 non-empty strings");
    let stop = match take(body, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(bad());
    }
    Ok(stop)
}

/// Fields that must be absent, null or empty: lote has no such feature.
fn refuse_unless_empty(
    body: &mut Map<String, Value>,
    key: &str,
    why: &str,
) -> Result<(), ApiError> {
    match take(body, key) {
        None => Ok(()),
        Some(Value::Object(map)) if map.is_empty() => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => Ok(()),
        Some(_) => Err(invalid(key, format!("`{key}` is not supported: {why}"))),
    }
}

/// The log-probability fields: completions' `logprobs` (0 to 5 alternatives), chat's
/// `logprobs: true` with `top_logprobs` (0 to 20).
fn logprobs(body: &mut Map<String, Value>, route: Route) -> Result<Option<usize>, ApiError> {
    match route {
        Route::Completions => Ok(count(body, "logprobs", 0, 5)?.map(|n| n as usize)),
        Route::Chat => {
            let wanted = flag(body, "logprobs")?;
            let top = count(body, "top_logprobs", 0, 20)?;
            if top.is_some() && !wanted {
                return Err(invalid("top_logprobs", "`top_logprobs` needs `logprobs: true`"));
            }
            Ok(wanted.then(|| top.unwrap_or(0) as usize))
        }
    }
}

/// Reads and removes every generation field of `body`; anything left over but the prompt
/// (`prompt` or `messages`) and `model` is an unknown field.
pub fn sampling(body: &mut Map<String, Value>, route: Route) -> Result<Sampling, ApiError> {
    let mut params = Map::new();
    let max_tokens = match route {
        Route::Completions => count(body, "max_tokens", 0, u32::MAX as u64)?,
        Route::Chat => match count(body, "max_completion_tokens", 1, u32::MAX as u64)? {
            Some(n) => Some(n),
            None => count(body, "max_tokens", 1, u32::MAX as u64)?,
        },
    };
    let temperature = number(body, "temperature", (0.0, 2.0))?.unwrap_or(1.0);
    let greedy = temperature == 0.0;
    params.insert("do_sample".into(), (!greedy).into());
    if !greedy {
        params.insert("temperature".into(), temperature.into());
        params.insert("top_k".into(), 0.into());
    }
    if let Some(top_p) = take(body, "top_p") {
        match top_p.as_f64() {
            Some(p) if p > 0.0 && p <= 1.0 => params.insert("top_p".into(), p.into()),
            _ => return Err(invalid("top_p", format!("`top_p` must be in (0, 1], not {top_p}"))),
        };
    }
    if let Some(top_k) = take(body, "top_k") {
        match top_k.as_i64() {
            // vLLM: -1 (and 0) turn top-k off.
            Some(k) if k >= -1 => params.insert("top_k".into(), k.max(0).into()),
            _ => {
                return Err(invalid(
                    "top_k",
                    format!("`top_k` must be -1 (off) or positive, not {top_k}"),
                ));
            }
        };
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if let Some(x) = number(body, key, (-2.0, 2.0))? {
            params.insert(key.into(), x.into());
        }
    }
    if let Some(x) = number(body, "repetition_penalty", (f64::MIN_POSITIVE, f64::MAX))? {
        params.insert("repetition_penalty".into(), x.into());
    }
    if let Some(n) = count(body, "min_tokens", 0, u32::MAX as u64)? {
        params.insert("min_new_tokens".into(), n.into());
    }
    let n = count(body, "n", 1, MAX_CHOICES as u64)?.unwrap_or(1) as usize;
    let seed = match take(body, "seed") {
        None => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            invalid("seed", format!("`seed` must be a non-negative integer, not {value}"))
        })?),
    };
    let stop = stop_strings(body)?;
    if !stop.is_empty() {
        params.insert("stop".into(), stop.clone().into());
    }
    let stream = flag(body, "stream")?;
    let include_usage = match take(body, "stream_options") {
        None => false,
        Some(_) if !stream => {
            return Err(invalid("stream_options", "`stream_options` needs `stream: true`"));
        }
        Some(Value::Object(mut options)) => {
            let include = flag(&mut options, "include_usage")?;
            if let Some(other) = options.keys().next() {
                return Err(invalid("stream_options", format!("unknown stream option `{other}`")));
            }
            include
        }
        Some(other) => {
            return Err(invalid(
                "stream_options",
                format!("`stream_options` must be an object, not {other}"),
            ));
        }
    };
    let logprobs = logprobs(body, route)?;
    let echo = route == Route::Completions && flag(body, "echo")?;
    if max_tokens == Some(0) && !echo {
        return Err(invalid(
            "max_tokens",
            "`max_tokens` 0 generates nothing: it needs `echo: true` (the prompt scored)",
        ));
    }
    refuse_unless_empty(body, "logit_bias", "lote does not bias logits")?;
    match route {
        Route::Completions => {
            if let Some(best_of) = count(body, "best_of", 1, MAX_CHOICES as u64)?
                && best_of as usize != n
            {
                return Err(invalid("best_of", "`best_of` other than `n` is not supported"));
            }
            if take(body, "suffix").is_some_and(|s| s != "") {
                return Err(invalid(
                    "suffix",
                    "`suffix` is not supported: lote does not insert text",
                ));
            }
        }
        Route::Chat => {
            refuse_unless_empty(body, "tools", "lote does not call tools")?;
            refuse_unless_empty(body, "functions", "lote does not call functions")?;
            match take(body, "tool_choice") {
                None => {}
                Some(Value::String(s)) if s == "none" || s == "auto" => {}
                Some(_) => return Err(invalid("tool_choice", "`tool_choice` is not supported")),
            }
            match take(body, "response_format") {
                None => {}
                Some(format) if format["type"] == "text" => {}
                Some(format) => {
                    return Err(invalid(
                        "response_format",
                        format!("only `{{\"type\": \"text\"}}` is supported, not {format}"),
                    ));
                }
            }
            body.remove("parallel_tool_calls");
        }
    }
    for label in ["user", "metadata", "store", "service_tier"] {
        body.remove(label);
    }
    let prompt_field = if route == Route::Chat { "messages" } else { "prompt" };
    if let Some(unknown) = body.keys().find(|k| *k != "model" && *k != prompt_field) {
        return Err(invalid(unknown, format!("unknown field `{unknown}`")));
    }
    let max_tokens = max_tokens.map(|n| n as usize);
    Ok(Sampling {
        params,
        max_tokens,
        n,
        greedy,
        seed,
        stop,
        stream,
        include_usage,
        logprobs,
        echo,
    })
}

/// `text` cut before the first of the stop strings in it (OpenAI leaves the stop string out).
pub fn cut_at_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// A stream's text with the stop strings cut out: text that could be the start of a stop
/// string is held back until the next piece tells.
#[derive(Debug, Default)]
pub struct StopFilter {
    stop: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopFilter {
    pub fn new(stop: Vec<String>) -> Self {
        Self { stop, ..Self::default() }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The part of `piece` (after what was held) that can be sent now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(piece);
        if let Some(at) = cut_at_stop(&self.held, &self.stop) {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        // Hold the longest end of the text that begins a stop string.
        let keep = self
            .stop
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let send = self.held.len() - keep;
        let out = self.held[..send].to_string();
        self.held.drain(..send);
        out
    }

    /// What is still held at the end of the stream.
    pub fn finish(&mut self) -> String {
        if self.stopped { String::new() } else { std::mem::take(&mut self.held) }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value, route: Route) -> Result<Sampling, ApiError> {
        sampling(&mut body.as_object().unwrap().clone(), route)
    }

    #[test]
    fn openai_defaults_sample_at_temperature_one_without_top_k() {
        let s = parse(json!({"model": "m", "prompt": "p"}), Route::Completions).unwrap();
        assert_eq!(
            Value::Object(s.params),
            json!({"do_sample": true, "temperature": 1.0, "top_k": 0})
        );
        assert_eq!((s.n, s.greedy, s.max_tokens, s.stream), (1, false, None, false));
        let g = parse(json!({"temperature": 0, "max_tokens": 5, "stop": "\n"}), Route::Completions)
            .unwrap();
        assert_eq!(Value::Object(g.params), json!({"do_sample": false, "stop": ["\n"]}));
        assert!(g.greedy);
        assert_eq!(g.max_tokens, Some(5));
    }

    #[test]
    fn each_bad_field_is_named() {
        let param = |body: Value, route| parse(body, route).unwrap_err().param.unwrap();
        assert_eq!(param(json!({"temperature": 3}), Route::Completions), "temperature");
        assert_eq!(param(json!({"n": 0}), Route::Completions), "n");
        assert_eq!(param(json!({"stop": ["a", "b", "c", "d", "e"]}), Route::Chat), "stop");
        assert_eq!(param(json!({"seed": -1}), Route::Chat), "seed");
        assert_eq!(param(json!({"logit_bias": {"5": 1}}), Route::Chat), "logit_bias");
        assert_eq!(param(json!({"tools": [{"type": "function"}]}), Route::Chat), "tools");
        assert_eq!(
            param(json!({"stream_options": {"include_usage": true}}), Route::Chat),
            "stream_options"
        );
        assert_eq!(param(json!({"echo": true}), Route::Chat), "echo");
        assert_eq!(param(json!({"best_of": 3}), Route::Completions), "best_of");
        assert_eq!(param(json!({"top_logprobs": 2}), Route::Chat), "top_logprobs");
        assert_eq!(param(json!({"logprobs": 6}), Route::Completions), "logprobs");
        assert_eq!(param(json!({"max_tokens": 0}), Route::Completions), "max_tokens");
        assert_eq!(param(json!({"max_tokens": 0}), Route::Chat), "max_tokens");
        let scores =
            parse(json!({"max_tokens": 0, "echo": true, "logprobs": 1}), Route::Completions);
        let scores = scores.unwrap();
        assert!(scores.scores_only() && scores.echo && scores.logprobs == Some(1));
        assert_eq!(
            param(json!({"presence_penalty": -2.5}), Route::Completions),
            "presence_penalty"
        );
        let unknown = parse(json!({"temprature": 1}), Route::Completions).unwrap_err();
        assert_eq!(unknown.message, "unknown field `temprature`");
    }

    #[test]
    fn chat_fields_map_to_generation_params() {
        let s = parse(
            json!({"max_completion_tokens": 7, "top_p": 0.5, "frequency_penalty": 0.5, "n": 3,
                   "seed": 9, "logprobs": true, "top_logprobs": 2, "stream": true,
                   "stream_options": {"include_usage": true}, "user": "ana", "tools": []}),
            Route::Chat,
        )
        .unwrap();
        assert_eq!(s.params["top_p"], json!(0.5));
        assert_eq!(s.params["frequency_penalty"], json!(0.5));
        assert_eq!((s.max_tokens, s.n, s.seed, s.logprobs), (Some(7), 3, Some(9), Some(2)));
        assert!(s.stream && s.include_usage);
    }

    #[test]
    fn stop_strings_are_cut_out_of_streams_even_across_pieces() {
        let mut filter = StopFilter::new(vec!["FIM".into(), "\n\n".into()]);
        assert_eq!(filter.push("olá F"), "olá ");
        assert_eq!(filter.push("I"), "");
        assert_eq!(filter.push("x ação"), "FIx ação");
        assert_eq!(filter.push("\n"), "");
        assert_eq!(filter.push("\nresto"), "");
        assert!(filter.stopped());
        assert_eq!(filter.push("mais"), "");
        let mut open = StopFilter::new(vec!["FIM".into()]);
        assert_eq!(open.push("até F"), "até ");
        assert_eq!(open.finish(), "F");
        assert_eq!(cut_at_stop("a FIM b \n\n", &["\n\n".into(), "FIM".into()]), Some(2));
    }
}

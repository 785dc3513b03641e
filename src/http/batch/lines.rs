//! The lines of a batch input file, checked as OpenAI checks them before a batch runs: each
//! line a JSON object `{custom_id, method: "POST", url, body}`, custom ids unique, every line
//! for the batch's endpoint and for one model this worker serves for that endpoint's task.
//! A file failing any check fails the batch with OpenAI's `errors` entries (code, message,
//! param, 1-based line); nothing of it runs.
//!
//! [`LineSplitter`] cuts the file's stored parts into lines without holding more than the
//! longest line.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::settings::Task;

/// The routes a batch may run, and the task of each.
pub const ENDPOINTS: [(&str, Task); 3] = [
    ("/v1/chat/completions", Task::TextGeneration),
    ("/v1/completions", Task::TextGeneration),
    ("/v1/embeddings", Task::FeatureExtraction),
];

/// The task of a batch endpoint, None for a route batches cannot run.
pub fn endpoint_task(endpoint: &str) -> Option<Task> {
    ENDPOINTS.iter().find(|(route, _)| *route == endpoint).map(|(_, task)| *task)
}

/// One of OpenAI's `errors.data` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// 1-based; None for the file as a whole.
    pub line: Option<usize>,
}

impl LineError {
    pub fn of_file(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), param: None, line: None }
    }

    pub fn entry(&self) -> Value {
        json!({"code": self.code, "message": self.message, "param": self.param, "line": self.line})
    }
}

/// A line that passed: the document it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub custom_id: String,
    pub body: Map<String, Value>,
}

/// Checks the lines of one file in order.
pub struct LineChecker<'a> {
    endpoint: &'a str,
    task: Task,
    /// The task a model is served for, None when it is not served here.
    task_of: &'a (dyn Fn(&str) -> Option<Task> + Sync),
    /// Longest line accepted, in bytes.
    max_line_bytes: usize,
    /// The model of the first line: every line names it.
    model: Option<String>,
    seen: HashSet<String>,
}

impl<'a> LineChecker<'a> {
    pub fn new(
        endpoint: &'a str,
        task: Task,
        task_of: &'a (dyn Fn(&str) -> Option<Task> + Sync),
        max_line_bytes: usize,
    ) -> Self {
        Self { endpoint, task, task_of, max_line_bytes, model: None, seen: HashSet::new() }
    }

    /// The model every line named so far names.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Checks line `number` (1-based); a blank line is skipped (Ok(None)).
    pub fn check(&mut self, number: usize, text: &str) -> Result<Option<Line>, LineError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let error =
            |code, param, message: String| LineError { code, message, param, line: Some(number) };
        if text.len() > self.max_line_bytes {
            return Err(error(
                "line_too_long",
                None,
                format!(
                    "line {number} is {} bytes, over server.limits.max_message_bytes ({})",
                    text.len(),
                    self.max_line_bytes
                ),
            ));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            error("invalid_json_line", None, format!("line {number} is not valid JSON: {e}"))
        })?;
        let Value::Object(mut line) = value else {
            return Err(error(
                "invalid_json_line",
                None,
                format!("line {number} is not a JSON object"),
            ));
        };
        if let Some(unknown) =
            line.keys().find(|k| !["custom_id", "method", "url", "body"].contains(&k.as_str()))
        {
            return Err(error(
                "invalid_request",
                None,
                format!(
                    "line {number}: unknown field `{unknown}`: a line has custom_id, method, url and body"
                ),
            ));
        }
        let custom_id = match line.remove("custom_id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(Value::String(_)) => {
                return Err(error(
                    "missing_required_parameter",
                    Some("custom_id"),
                    format!("line {number}: `custom_id` is empty"),
                ));
            }
            Some(_) => {
                return Err(error(
                    "invalid_request",
                    Some("custom_id"),
                    format!("line {number}: `custom_id` must be a string"),
                ));
            }
            None => {
                return Err(error(
                    "missing_required_parameter",
                    Some("custom_id"),
                    format!("line {number}: `custom_id` is required"),
                ));
            }
        };
        match line.get("method") {
            Some(Value::String(method)) if method == "POST" => {}
            other => {
                return Err(error(
                    "invalid_method",
                    Some("method"),
                    format!("line {number}: `method` must be \"POST\", not {}", shown(other)),
                ));
            }
        }
        match line.get("url") {
            Some(Value::String(url)) if url == self.endpoint => {}
            other => {
                return Err(error(
                    "invalid_url",
                    Some("url"),
                    format!(
                        "line {number}: `url` is {}, but this batch's endpoint is {}",
                        shown(other),
                        self.endpoint
                    ),
                ));
            }
        }
        let Some(Value::Object(body)) = line.remove("body") else {
            return Err(error(
                "missing_required_parameter",
                Some("body"),
                format!("line {number}: `body` must be a JSON object"),
            ));
        };
        let Some(Value::String(model)) = body.get("model") else {
            return Err(error(
                "missing_required_parameter",
                Some("body.model"),
                format!("line {number}: `body.model` is required"),
            ));
        };
        if body.get("stream").is_some_and(|s| s != &Value::Bool(false)) {
            return Err(error(
                "invalid_request",
                Some("body.stream"),
                format!("line {number}: a batch line cannot be streamed (`body.stream`)"),
            ));
        }
        match &self.model {
            Some(first) if first != model => {
                return Err(error(
                    "mismatched_model",
                    Some("body.model"),
                    format!(
                        "line {number}: `body.model` is `{model}`, but the batch's lines are for `{first}`: one model per batch"
                    ),
                ));
            }
            Some(_) => {}
            None => {
                match (self.task_of)(model) {
                    None => {
                        return Err(error(
                            "model_not_found",
                            Some("body.model"),
                            format!("line {number}: no model named `{model}` is served here"),
                        ));
                    }
                    Some(task) if task != self.task => {
                        return Err(error(
                            "invalid_request",
                            Some("body.model"),
                            format!(
                                "line {number}: model `{model}` serves {task}, not {} ({})",
                                self.task, self.endpoint
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                self.model = Some(model.clone());
            }
        }
        if !self.seen.insert(custom_id.clone()) {
            return Err(error(
                "duplicate_custom_id",
                Some("custom_id"),
                format!("line {number}: custom_id `{custom_id}` is used by an earlier line"),
            ));
        }
        Ok(Some(Line { custom_id, body }))
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "missing".to_string(), Value::to_string)
}

/// Cuts text arriving in parts into lines (`\n`, an optional `\r` before it dropped).
#[derive(Default)]
pub struct LineSplitter {
    pending: String,
}

impl LineSplitter {
    /// The lines completed by `part`.
    pub fn push(&mut self, part: &str) -> Vec<String> {
        self.pending.push_str(part);
        let Some(last) = self.pending.rfind('\n') else { return Vec::new() };
        let rest = self.pending.split_off(last + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        complete.lines().map(String::from).collect()
    }

    /// The last line, if the file does not end with a newline.
    pub fn finish(self) -> Option<String> {
        (!self.pending.is_empty()).then_some(self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(model: &str) -> Option<Task> {
        match model {
            "gen" => Some(Task::TextGeneration),
            "emb" => Some(Task::FeatureExtraction),
            _ => None,
        }
    }

    fn checker() -> LineChecker<'static> {
        LineChecker::new("/v1/chat/completions", Task::TextGeneration, &served, 200)
    }

    fn line(custom_id: &str, model: &str) -> String {
        json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": model, "messages": []}})
        .to_string()
    }

    #[test]
    fn good_lines_become_documents_and_blank_lines_are_skipped() {
        let mut check = checker();
        let first = check.check(1, &line("a", "gen")).unwrap().unwrap();
        assert_eq!(first.custom_id, "a");
        assert_eq!(first.body["model"], "gen");
        assert_eq!(check.check(2, "  ").unwrap(), None);
        assert!(check.check(3, &line("b", "gen")).unwrap().is_some());
        assert_eq!(check.model(), Some("gen"));
    }

    #[test]
    fn each_bad_line_is_named_with_openai_s_code() {
        let cases = [
            ("{not json", "invalid_json_line", "line 2 is not valid JSON"),
            ("[1]", "invalid_json_line", "line 2 is not a JSON object"),
            (&line("a", "gen"), "duplicate_custom_id", "line 2: custom_id `a` is used"),
            (&line("b", "other"), "mismatched_model", "line 2: `body.model` is `other`"),
            (
                &line("b", "gen").replace("/v1/chat/completions", "/v1/embeddings"),
                "invalid_url",
                "line 2: `url` is \"/v1/embeddings\", but this batch's endpoint is /v1/chat/completions",
            ),
            (
                &line("b", "gen").replace("POST", "GET"),
                "invalid_method",
                "line 2: `method` must be",
            ),
            (
                r#"{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions"}"#,
                "missing_required_parameter",
                "line 2: `body` must be a JSON object",
            ),
            (
                r#"{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gen", "stream": true}}"#,
                "invalid_request",
                "line 2: a batch line cannot be streamed",
            ),
            (
                &line("b", "gen").replace("custom_id", "customid"),
                "invalid_request",
                "line 2: unknown field `customid`",
            ),
            (&format!("{:201}", line("b", "gen")), "line_too_long", "line 2 is 201 bytes"),
        ];
        for (text, code, message) in cases {
            let mut check = checker();
            check.check(1, &line("a", "gen")).unwrap();
            let error = check.check(2, text).unwrap_err();
            assert_eq!((error.code, error.line), (code, Some(2)), "{text}");
            assert!(error.message.starts_with(message), "{}", error.message);
        }
        let unknown = checker().check(1, &line("a", "nope")).unwrap_err();
        assert_eq!(unknown.code, "model_not_found");
        let wrong = checker().check(1, &line("a", "emb")).unwrap_err();
        assert_eq!(
            wrong.message,
            "line 1: model `emb` serves feature-extraction, not text-generation (/v1/chat/completions)"
        );
    }

    #[test]
    fn lines_are_cut_across_parts() {
        let mut split = LineSplitter::default();
        assert!(split.push("{\"a\": ").is_empty());
        assert_eq!(split.push("1}\r\n{\"b\"").as_slice(), ["{\"a\": 1}"]);
        assert_eq!(split.push(": 2}\n\n{").as_slice(), ["{\"b\": 2}", ""]);
        assert_eq!(split.finish().as_deref(), Some("{"));
        assert_eq!(LineSplitter::default().finish(), None);
    }
}

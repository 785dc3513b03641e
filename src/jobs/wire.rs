//! A document on the queue: one message per document, JSON (`application/json`, the default)
//! or protobuf (`application/x-protobuf`, `lote.v1.QueuedDocument`), with the same fields:
//! `job_id`, `custom_id`, the input (`text` and maybe `text_pair`, `question` and `context`,
//! or `query` and `documents`) and optional
//! `params` (JSON) / `params_json` (protobuf). Anything else is a permanent failure: the
//! message goes to the dead-letter queue.

use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::DocumentRecord;
use crate::grpc::pb;

pub const JSON: &str = "application/json";
pub const PROTOBUF: &str = "application/x-protobuf";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentMessage {
    pub job_id: String,
    pub custom_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
}

/// Why a message cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("undecodable JSON document: {0}")]
    Json(String),
    #[error("undecodable protobuf document: {0}")]
    Protobuf(String),
    #[error("unknown content type `{0}`: use application/json or application/x-protobuf")]
    ContentType(String),
    #[error("bad document: {0}")]
    Invalid(String),
}

impl DocumentMessage {
    /// Reads a message body by its content type (JSON when none is given).
    pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<Self, WireError> {
        let message = match content_type.map(|t| t.split(';').next().unwrap_or("").trim()) {
            None | Some("") | Some(JSON) => serde_json::from_slice::<DocumentMessage>(body)
                .map_err(|e| WireError::Json(e.to_string()))?,
            Some(PROTOBUF) => {
                let queued = pb::QueuedDocument::decode(body)
                    .map_err(|e| WireError::Protobuf(e.to_string()))?;
                let params = match queued.params_json.as_deref() {
                    None | Some("") => None,
                    Some(text) => match serde_json::from_str(text) {
                        Ok(Value::Object(map)) => Some(map),
                        _ => {
                            return Err(WireError::Invalid(
                                "params_json must be a JSON object".into(),
                            ));
                        }
                    },
                };
                DocumentMessage {
                    job_id: queued.job_id,
                    custom_id: queued.custom_id,
                    text: queued.text,
                    question: queued.question,
                    context: queued.context,
                    text_pair: queued.text_pair,
                    query: queued.query,
                    documents: (!queued.documents.is_empty()).then_some(queued.documents),
                    params,
                }
            }
            Some(other) => return Err(WireError::ContentType(other.to_string())),
        };
        if message.job_id.is_empty() || message.custom_id.is_empty() {
            return Err(WireError::Invalid("job_id and custom_id must not be empty".into()));
        }
        // A message without input names a stored document (a batch line's body is stored
        // only); a document published by its sender needs its input (see `has_input`).
        Ok(message)
    }

    pub fn encode_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a document message serializes")
    }

    pub fn encode_protobuf(&self) -> Vec<u8> {
        pb::QueuedDocument {
            job_id: self.job_id.clone(),
            custom_id: self.custom_id.clone(),
            text: self.text.clone(),
            question: self.question.clone(),
            context: self.context.clone(),
            params_json: self.params.as_ref().map(|p| Value::Object(p.clone()).to_string()),
            text_pair: self.text_pair.clone(),
            query: self.query.clone(),
            documents: self.documents.clone().unwrap_or_default(),
        }
        .encode_to_vec()
    }

    /// The stored document's message.
    pub fn from_record(document: &DocumentRecord) -> Self {
        let field = |name: &str| document.input[name].as_str().map(String::from);
        Self {
            job_id: document.job_id.clone(),
            custom_id: document.custom_id.clone(),
            text: field("text"),
            question: field("question"),
            context: field("context"),
            text_pair: field("text_pair"),
            query: field("query"),
            documents: document.input["documents"]
                .as_array()
                .map(|items| items.iter().filter_map(|d| d.as_str().map(String::from)).collect()),
            params: document.params.as_ref().and_then(|p| p.as_object().cloned()),
        }
    }

    /// Whether the message carries input fields (a document published by its sender must).
    pub fn has_input(&self) -> bool {
        self.text.is_some() || self.question.is_some() || self.query.is_some()
    }

    /// The input fields as stored: `{"text"}`, `{"text", "text_pair"}`, `{"question",
    /// "context"}` or `{"query", "documents"}`.
    pub fn input(&self) -> Value {
        match (&self.text, &self.question, &self.query) {
            (Some(text), ..) => match &self.text_pair {
                Some(pair) => json!({ "text": text, "text_pair": pair }),
                None => json!({ "text": text }),
            },
            (None, Some(question), _) => {
                json!({ "question": question, "context": self.context.clone().unwrap_or_default() })
            }
            (None, None, Some(query)) => {
                json!({ "query": query, "documents": self.documents.clone().unwrap_or_default() })
            }
            (None, None, None) => json!({}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> DocumentMessage {
        DocumentMessage {
            job_id: "job_1".into(),
            custom_id: "a".into(),
            text: Some("Olá, você".into()),
            question: None,
            text_pair: None,
            query: None,
            documents: None,
            context: None,
            params: Some(serde_json::from_str(r#"{"top_k": 2}"#).unwrap()),
        }
    }

    #[test]
    fn json_and_protobuf_carry_the_same_document() {
        let message = message();
        assert_eq!(DocumentMessage::decode(&message.encode_json(), None).unwrap(), message);
        assert_eq!(DocumentMessage::decode(&message.encode_json(), Some(JSON)).unwrap(), message);
        let body = message.encode_protobuf();
        assert_eq!(DocumentMessage::decode(&body, Some(PROTOBUF)).unwrap(), message);
    }

    #[test]
    fn a_message_without_input_names_a_stored_document() {
        let message =
            DocumentMessage::decode(br#"{"job_id": "j", "custom_id": "c"}"#, None).unwrap();
        assert!(!message.has_input());
        assert_eq!(message.input(), json!({}));
        assert!(self::tests::message().has_input());
    }

    #[test]
    fn malformed_messages_are_permanent_errors_with_reasons() {
        let cases: Vec<(&[u8], Option<&str>)> = vec![
            (b"not json", None),
            (br#"{"job_id": "j", "custom_id": "c", "text": 3}"#, None),
            (br#"{"job_id": "j", "custom_id": "c", "text": "x", "extra": 1}"#, None),
            (b"{\"job_id\": \"j\", \"custom_id\": \"c\", \"text\": \"\xff\"}", None),
            (br#"{"job_id": "", "custom_id": "c", "text": "x"}"#, None),
            (b"\xff\xff\xff", Some(PROTOBUF)),
            (b"{}", Some("text/plain")),
        ];
        for (body, content_type) in cases {
            let error = DocumentMessage::decode(body, content_type).unwrap_err();
            assert!(!error.to_string().is_empty(), "{body:?}");
        }
    }
}

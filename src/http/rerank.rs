//! `POST /v1/rerank` in the Cohere / Jina shape: `query`, `documents` (strings, or objects with
//! `text`), `top_n`, `return_documents`; `results` of `{index, relevance_score, document?}` best
//! first, through the rerank task (TEI's /rerank semantics, scores as CrossEncoder.predict).

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Map, Value, json};

use super::{HttpState, error::ApiError, model_name, served_encoder, usage};
use crate::{
    engine::call::EngineError,
    settings::Task,
    tasks::{TaskInput, TaskOutput, rerank},
};

fn documents(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = |message: String| ApiError::invalid(Some("documents"), message);
    let Some(Value::Array(items)) = value else {
        return Err(bad("`documents` must be a list of strings or of {\"text\": ...}".into()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => Ok(text.clone()),
            Value::Object(object) => match object.get("text") {
                Some(Value::String(text)) => Ok(text.clone()),
                _ => Err(bad(format!("`documents[{i}].text` must be a string"))),
            },
            _ => Err(bad(format!("`documents[{i}]` must be a string or {{\"text\": ...}}"))),
        })
        .collect()
}

pub async fn create(
    State(state): State<Arc<HttpState>>,
    body: Result<Json<Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let model = &model_name(&body)?;
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(Some("query"), "`query` must be a string"))?
        .to_string();
    let documents = documents(body.get("documents"))?;
    rerank::check_documents(&documents, state.limits.max_inputs_per_call)
        .map_err(|e| ApiError::invalid(Some("documents"), e.to_string()))?;
    let mut params = Map::new();
    if let Some(top_n) = body.get("top_n").filter(|v| !v.is_null()) {
        params.insert("top_n".into(), top_n.clone());
    }
    let return_documents = body.get("return_documents").and_then(Value::as_bool).unwrap_or(false);
    let service = served_encoder(&state, model, Task::Rerank)?;
    let params = service
        .pipeline()
        .parse_params(&Value::Object(params))
        .map_err(|e| ApiError::invalid(Some("top_n"), e.to_string()))?;
    let input = TaskInput::Query { query, documents: documents.clone() };
    let answered = state.calls.answer(service, vec![(input, params)]).await?;
    let result = answered.results.into_iter().next().expect("one result for one input");
    let result = result.map_err(|e| ApiError::from(EngineError::Invalid(e.to_string())))?;
    let TaskOutput::Ranking(ranked) = result.output else { unreachable!("rerank gives a ranking") };
    let results: Vec<Value> = ranked
        .into_iter()
        .map(|r| {
            let mut item = json!({"index": r.index, "relevance_score": r.score});
            if return_documents {
                item["document"] = json!({"text": documents[r.index]});
            }
            item
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "model": model,
        "results": results,
        "usage": usage(answered.report.input_tokens),
    })))
}

//! OpenAI's log-probability objects, from the engine's per-token log-probabilities (the
//! model's log-softmax before any processor, as vLLM reports them): completions' legacy
//! `{tokens, token_logprobs, top_logprobs, text_offset}` and chat's `{content: [{token,
//! logprob, bytes, top_logprobs}]}`. A token's text is its own decoding, special tokens kept.

use serde_json::{Map, Value, json};

use crate::{generation::TokenLogprob, tokenize::TextTokenizer};

fn text_of(tokenizer: &TextTokenizer, token: u32) -> String {
    tokenizer.decode(&[token], false).unwrap_or_default()
}

/// Completions' object; `offset` is where the first token starts in the choice's text (in
/// characters: after an echoed prompt, or after the chunks already streamed).
pub fn completion(tokenizer: &TextTokenizer, steps: &[TokenLogprob], mut offset: usize) -> Value {
    let (mut tokens, mut logprobs, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for step in steps {
        let text = text_of(tokenizer, step.token);
        let mut top = Map::new();
        top.insert(text.clone(), json!(step.logprob));
        for (token, logprob) in &step.top {
            top.entry(text_of(tokenizer, *token)).or_insert(json!(logprob));
        }
        offsets.push(offset);
        offset += text.chars().count();
        tokens.push(text);
        logprobs.push(step.logprob);
        tops.push(Value::Object(top));
    }
    json!({"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets})
}

fn chat_entry(tokenizer: &TextTokenizer, token: u32, logprob: f32) -> Map<String, Value> {
    let text = text_of(tokenizer, token);
    let bytes: Vec<u8> = text.as_bytes().to_vec();
    let mut entry = Map::new();
    entry.insert("token".into(), text.into());
    entry.insert("logprob".into(), json!(logprob));
    entry.insert("bytes".into(), json!(bytes));
    entry
}

/// Chat's object.
pub fn chat(tokenizer: &TextTokenizer, steps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = steps
        .iter()
        .map(|step| {
            let mut entry = chat_entry(tokenizer, step.token, step.logprob);
            let top: Vec<Value> = step
                .top
                .iter()
                .map(|(token, logprob)| Value::Object(chat_entry(tokenizer, *token, *logprob)))
                .collect();
            entry.insert("top_logprobs".into(), top.into());
            Value::Object(entry)
        })
        .collect();
    json!({"content": content})
}

/// How many of `steps` start before byte `cut` of their joined texts (the tokens a stop string
/// leaves in the answer).
pub fn before(tokenizer: &TextTokenizer, steps: &[TokenLogprob], cut: usize) -> usize {
    let mut at = 0;
    steps
        .iter()
        .take_while(|step| {
            let starts = at;
            at += text_of(tokenizer, step.token).len();
            starts < cut
        })
        .count()
}

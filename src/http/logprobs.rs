//! OpenAI's log-probability objects, from the engine's per-token log-probabilities (the
//! model's log-softmax before any processor, as vLLM reports them): completions' legacy
//! `{tokens, token_logprobs, top_logprobs, text_offset}` and chat's `{content: [{token,
//! logprob, bytes, top_logprobs}]}`. A token's text is its own decoding, special tokens kept.

use serde_json::{Map, Value, json};

use crate::{
    generation::{PromptLogprobs, TokenLogprob},
    tokenize::TextTokenizer,
};

fn text_of(tokenizer: &TextTokenizer, token: u32) -> String {
    tokenizer.decode(&[token], false).unwrap_or_default()
}

/// Completions' object, its four lists built a token at a time.
#[derive(Default)]
struct Completion {
    tokens: Vec<String>,
    logprobs: Vec<Value>,
    tops: Vec<Value>,
    offsets: Vec<usize>,
}

impl Completion {
    /// A token starting at character `offset`; returns where the next one starts.
    fn push(&mut self, text: String, logprob: Value, top: Value, offset: usize) -> usize {
        let next = offset + text.chars().count();
        self.tokens.push(text);
        self.logprobs.push(logprob);
        self.tops.push(top);
        self.offsets.push(offset);
        next
    }

    fn push_step(
        &mut self,
        tokenizer: &TextTokenizer,
        step: &TokenLogprob,
        offset: usize,
    ) -> usize {
        let text = text_of(tokenizer, step.token);
        let mut top = Map::new();
        top.insert(text.clone(), json!(step.logprob));
        for (token, logprob) in &step.top {
            top.entry(text_of(tokenizer, *token)).or_insert(json!(logprob));
        }
        self.push(text, json!(step.logprob), Value::Object(top), offset)
    }
}

/// Completions' object: an echoed prompt's tokens first when given (the first with null
/// log-probabilities, as OpenAI gives it: nothing predicts it), from character 0; then
/// `steps`, from character `offset` of the choice's text (after the echoed prompt, or after
/// the chunks already streamed).
pub fn completion(
    tokenizer: &TextTokenizer,
    prompt: Option<&PromptLogprobs>,
    steps: &[TokenLogprob],
    mut offset: usize,
) -> Value {
    let mut object = Completion::default();
    if let Some(prompt) = prompt {
        let first = text_of(tokenizer, prompt.first);
        let mut at = object.push(first, Value::Null, Value::Null, 0);
        for step in &prompt.rest {
            at = object.push_step(tokenizer, step, at);
        }
    }
    for step in steps {
        offset = object.push_step(tokenizer, step, offset);
    }
    json!({
        "tokens": object.tokens, "token_logprobs": object.logprobs,
        "top_logprobs": object.tops, "text_offset": object.offsets,
    })
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

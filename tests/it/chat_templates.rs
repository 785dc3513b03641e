//! Chat templates rendered by lote equal transformers' `apply_chat_template` on ten real
//! templates (tests/fixtures/make_chat_models.py: ChatML/Qwen 2.5 and 3, Llama 2 and 3,
//! Mistral v0.1 and v0.3, Zephyr, Gemma, Phi-3 and a whitespace probe), every case character
//! for character, and every `raise_exception` case refused with the template's own message;
//! a model saved by transformers (chat_template.jinja) renders and tokenizes its prompts as
//! transformers does.

use crate::common::fixture_model;
use lote::{
    tasks::chat_template::{ChatTemplate, ChatTemplateError},
    tokenize::TextTokenizer,
};
use serde_json::{Map, Value};

fn read(path: std::path::PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn every_template_renders_every_case_as_transformers_does() {
    let fixtures = fixture_model("chat/llama-chat").parent().unwrap().to_path_buf();
    let cases = read(fixtures.join("templates.json"));
    let mut checked = 0;
    for template in cases["templates"].as_array().unwrap() {
        let name = template["name"].as_str().unwrap();
        let special: Map<String, Value> = template["special_tokens"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let source = template["template"].as_str().unwrap().to_string();
        let compiled = ChatTemplate::new(source, special).unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in template["cases"].as_array().unwrap() {
            let what = format!("{name} / {}", case["name"]);
            let messages = &case["messages"];
            let generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
            let tools = case.get("tools").cloned().unwrap_or_default();
            let rendered = compiled.render_with_tools(messages, &tools, generation_prompt);
            match case.get("error") {
                Some(error) => assert_eq!(
                    rendered,
                    Err(ChatTemplateError::Refused(error.as_str().unwrap().into())),
                    "{what}"
                ),
                None => assert_eq!(
                    rendered.unwrap_or_else(|e| panic!("{what}: {e}")),
                    case["rendered"].as_str().unwrap(),
                    "{what}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 88);
}

#[test]
fn a_saved_chat_model_renders_and_tokenizes_its_prompts_as_transformers() {
    let dir = fixture_model("chat/llama-chat");
    let reference = read(dir.join("reference.json"));
    let template = ChatTemplate::load(&dir).unwrap().expect("chat_template.jinja is read");
    let tokenizer = TextTokenizer::load(&dir, None).unwrap();
    for chat in reference["chat"].as_array().unwrap() {
        let prompt = template.render(&chat["messages"], true).unwrap();
        assert_eq!(prompt, chat["prompt"].as_str().unwrap(), "{}", chat["name"]);
        let ids: Vec<u64> =
            tokenizer.encode_plain(&prompt).unwrap().into_iter().map(u64::from).collect();
        let expected: Vec<u64> =
            chat["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, expected, "{}", chat["name"]);
    }
    // A model without a template has none, and says so rather than failing to load.
    assert!(ChatTemplate::load(&fixture_model("generation/gpt2")).unwrap().is_none());
}

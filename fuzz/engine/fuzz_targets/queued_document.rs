//! Arbitrary bytes as a document message off the queue, JSON or protobuf (`lote.v1.QueuedDocument`)
//! by the first byte, then its input read as each task reads it: a message is either read or
//! refused with a reason (a permanent failure, never a panic that would crash-loop the worker),
//! and what is read survives re-encoding in both formats with the same input and params.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lote::{
    jobs::wire::{DocumentMessage, JSON, PROTOBUF},
    settings::Task,
    tasks::input_from_fields,
};
use serde_json::Value;

const TASKS: [&str; 10] = [
    "question-answering",
    "fill-mask",
    "text-classification",
    "token-classification",
    "feature-extraction",
    "rerank",
    "zero-shot-classification",
    "summarization",
    "translation",
    "text-generation",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let content_type = match selector % 4 {
        0 => None,
        1 => Some(JSON),
        2 => Some(PROTOBUF),
        _ => Some("application/x-protobuf; charset=binary"),
    };
    let message = match DocumentMessage::decode(body, content_type) {
        Ok(message) => message,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    for (encoded, format) in
        [(message.encode_json(), JSON), (message.encode_protobuf(), PROTOBUF)]
    {
        let again = DocumentMessage::decode(&encoded, Some(format))
            .unwrap_or_else(|e| panic!("{format}: its own encoding does not decode: {e}"));
        assert_eq!(again.job_id, message.job_id, "{format}");
        assert_eq!(again.custom_id, message.custom_id, "{format}");
        assert_eq!(again.input(), message.input(), "{format}");
        assert_eq!(again.params, message.params, "{format}");
    }
    let Value::Object(input) = message.input() else { panic!("input() is an object") };
    for task in TASKS {
        let task: Task = task.parse().expect("a task name");
        let _ = input_from_fields(task, &mut input.clone(), 64);
    }
});

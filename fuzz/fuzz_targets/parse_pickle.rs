//! Arbitrary bytes as a `data.pkl`: never a panic, and what is accepted is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "../../src/models/pickle.rs"]
#[allow(dead_code)]
mod pickle;

use pickle::parse_pickle;

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = parse_pickle(data) {
        assert!(!checkpoint.tensors.is_empty());
        for tensor in &checkpoint.tensors {
            let storage = &checkpoint.storages[&tensor.storage];
            assert_eq!(storage.dtype, tensor.dtype);
            let span = tensor.storage_bytes().expect("checked extent");
            assert!(span.start <= span.end && span.end <= storage.len);
            assert_eq!(tensor.shape.len(), tensor.strides.len());
        }
    }
});

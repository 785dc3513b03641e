//! Arbitrary bytes as a whole checkpoint file: never a panic, and every tensor it accepts
//! reads only bytes inside the file.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
#[path = "../../src/models/pickle.rs"]
#[allow(dead_code)]
mod pickle;

use pickle::read_checkpoint_from;

fuzz_target!(|data: &[u8]| {
    if let Ok(checkpoint) = read_checkpoint_from(Cursor::new(data)) {
        for tensor in &checkpoint.tensors {
            let range = checkpoint.file_range(tensor).expect("checked extent");
            assert!(range.end <= data.len() as u64);
        }
    }
});

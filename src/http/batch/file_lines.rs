//! The lines of an uploaded file, read from the store one part at a time (a line may span
//! parts; no more than the longest line is held).

use std::collections::VecDeque;

use super::lines::LineSplitter;
use crate::jobs::store::{JobStore, StoreError};

/// The lines of a stored file, read one part at a time.
pub struct FileLines {
    store: JobStore,
    file_id: String,
    after: i64,
    splitter: Option<LineSplitter>,
    ready: VecDeque<String>,
    number: usize,
}

impl FileLines {
    pub fn new(store: JobStore, file_id: &str) -> Self {
        Self {
            store,
            file_id: file_id.to_string(),
            after: -1,
            splitter: Some(LineSplitter::default()),
            ready: VecDeque::new(),
            number: 0,
        }
    }

    /// The next line and its 1-based number.
    pub async fn next(&mut self) -> Result<Option<(usize, String)>, StoreError> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                self.number += 1;
                return Ok(Some((self.number, line)));
            }
            let Some(splitter) = self.splitter.as_mut() else { return Ok(None) };
            match self.store.file_parts(&self.file_id, self.after, 1).await?.pop() {
                Some((seq, data)) => {
                    self.after = seq;
                    self.ready.extend(splitter.push(&data));
                }
                None => self.ready.extend(self.splitter.take().and_then(LineSplitter::finish)),
            }
        }
    }
}

//! Token streaming that never hands out half a character: each new token's text is the growth of
//! the decoded sequence, held back while the decoding ends in U+FFFD (a multi-byte UTF-8
//! character whose remaining bytes are in tokens not yet generated), as transformers'
//! TextStreamer does.

/// Turns one row's tokens into text pieces as they arrive.
pub struct TextStream<F: Fn(&[u32]) -> String> {
    decode: F,
    tokens: Vec<u32>,
    emitted: usize,
}

impl<F: Fn(&[u32]) -> String> TextStream<F> {
    pub fn new(decode: F) -> Self {
        Self { decode, tokens: Vec::new(), emitted: 0 }
    }

    /// Adds a token; returns the new text it completes, if any.
    pub fn push(&mut self, token: u32) -> Option<String> {
        self.tokens.push(token);
        let text = (self.decode)(&self.tokens);
        if text.ends_with('\u{FFFD}') {
            return None;
        }
        self.take_from(text)
    }

    /// Whatever is left at the end (a trailing replacement character included).
    pub fn finish(&mut self) -> Option<String> {
        let text = (self.decode)(&self.tokens);
        self.take_from(text)
    }

    fn take_from(&mut self, text: String) -> Option<String> {
        let start = self.emitted.min(text.len());
        if !text.is_char_boundary(start) || text.len() <= start {
            return None;
        }
        self.emitted = text.len();
        Some(text[start..].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level "tokenizer": each token is one byte; lossy decoding like a BPE decoder.
    fn bytes(tokens: &[u32]) -> String {
        String::from_utf8_lossy(&tokens.iter().map(|&t| t as u8).collect::<Vec<_>>()).into_owned()
    }

    #[test]
    fn a_split_multibyte_character_is_held_until_complete() {
        let mut stream = TextStream::new(bytes);
        let text = "ação é";
        let mut pieces = Vec::new();
        for byte in text.bytes() {
            if let Some(piece) = stream.push(u32::from(byte)) {
                assert!(!piece.contains('\u{FFFD}'), "half a character emitted: {piece:?}");
                pieces.push(piece);
            }
        }
        pieces.extend(stream.finish());
        assert_eq!(pieces.concat(), text);
        assert!(pieces.contains(&"ç".to_string()), "{pieces:?}");
    }
}

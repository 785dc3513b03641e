//! Slicing text by character, as Python's `str` indexes it: the pipelines report offsets in
//! characters, and Portuguese accents, emoji and CJK are several bytes each.

/// A string indexed by characters (Python `str` indices), not bytes.
pub struct CharText<'a> {
    text: &'a str,
    /// Byte offset of every character, then the length in bytes.
    bounds: Vec<usize>,
}

impl<'a> CharText<'a> {
    pub fn new(text: &'a str) -> Self {
        let bounds =
            text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len())).collect();
        Self { text, bounds }
    }

    /// `text[start:end]` with Python's clamping: out-of-range ends shrink, reversed spans are "".
    pub fn slice(&self, start: usize, end: usize) -> &'a str {
        let chars = self.bounds.len() - 1;
        let (start, end) = (start.min(chars), end.min(chars));
        if start >= end { "" } else { &self.text[self.bounds[start]..self.bounds[end]] }
    }
}

#[cfg(test)]
mod tests {
    use super::CharText;

    #[test]
    fn slices_by_character_with_python_clamping() {
        let text = CharText::new("São 😀 東京");
        assert_eq!(text.slice(0, 3), "São");
        assert_eq!(text.slice(4, 5), "😀");
        assert_eq!(text.slice(6, 99), "東京");
        assert_eq!(text.slice(5, 2), "");
    }
}

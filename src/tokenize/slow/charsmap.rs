//! A check of a SentencePiece model's precompiled normalizer charsmap before it is used.
//!
//! `tokenizers`' `Precompiled` only checks that the charsmap splits into a trie and a UTF-8
//! string; a damaged trie loads fine and then panics (an index out of bounds) on the first text
//! that walks into the damaged part. This walks every path the normalizer can take, keys of up
//! to five bytes as `Precompiled` looks them up, so a damaged file is refused when it is loaded.
//! The layout is darts-clone's double array, as `spm_precompiled` reads it.

use std::collections::HashSet;

/// `Precompiled::transform` only looks up graphemes shorter than six bytes.
const LONGEST_KEY: usize = 5;

/// Why the charsmap would make the normalizer fail, if it would.
pub(crate) fn check(charsmap: &[u8]) -> Result<(), String> {
    let (units, normalized) = split(charsmap)?;
    let normalized = std::str::from_utf8(normalized)
        .map_err(|_| "its normalized strings are not UTF-8".to_owned())?;
    let unit = |index: usize| {
        units.get(index).copied().ok_or_else(|| format!("its trie points past its end ({index})"))
    };
    let mut seen = HashSet::new();
    let mut frontier = vec![offset(unit(0)?)];
    for _ in 0..LONGEST_KEY {
        let mut next = Vec::new();
        for base in frontier {
            if !seen.insert(base) {
                continue;
            }
            for byte in 1..=255usize {
                let child = unit(base ^ byte)?;
                if label(child) != byte {
                    continue;
                }
                let child_base = (base ^ byte) ^ offset(child);
                if has_leaf(child) {
                    check_value(value(unit(child_base)?), normalized)?;
                }
                next.push(child_base);
            }
        }
        frontier = next;
    }
    Ok(())
}

/// The trie's 32-bit units and the normalized strings after them.
fn split(charsmap: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    let truncated = || "it is truncated".to_owned();
    let (size, rest) = charsmap.split_first_chunk::<4>().ok_or_else(truncated)?;
    let trie_bytes = (u32::from_le_bytes(*size) / 4) as usize * 4;
    let (trie, normalized) = rest.split_at_checked(trie_bytes).ok_or_else(truncated)?;
    let units = trie
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    Ok((units, normalized))
}

/// A leaf's value is where its replacement starts in the normalized strings.
fn check_value(start: usize, normalized: &str) -> Result<(), String> {
    if start <= normalized.len() && normalized.is_char_boundary(start) {
        Ok(())
    } else {
        Err(format!("a replacement starts at {start}, outside its normalized strings"))
    }
}

fn has_leaf(unit: usize) -> bool {
    (unit >> 8) & 1 == 1
}

fn value(unit: usize) -> usize {
    unit & ((1 << 31) - 1)
}

fn label(unit: usize) -> usize {
    unit & ((1 << 31) | 0xFF)
}

fn offset(unit: usize) -> usize {
    (unit >> 10) << ((unit & (1 << 9)) >> 6)
}

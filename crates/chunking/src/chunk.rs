//! The chunker itself: pure functions over slices.

use std::ops::Range;

use crate::config::{ChunkConfig, SpecialTokens};

/// One chunk, unpadded: `[CLS] window [SEP]`, its attention mask (all ones) and
/// token type ids (all zeros), the same length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<u8>,
    pub token_type_ids: Vec<u8>,
}

/// The windows of a text of `len` ids (after `maximal_text_length`), as belt_nlp's
/// `split_overlapping`: `i..min(i + chunk_size, len)` for `i = 0, stride, ...` while
/// `i < len`; with more than one window, those shorter than `minimal_chunk_length`
/// are dropped. An empty text has no window.
///
/// Where every window is shorter than `minimal_chunk_length` (a text longer than the
/// stride but shorter than the minimum), the first window is kept: belt_nlp would be
/// left with no chunk and fail in `torch.stack`, and dropping the whole text would
/// silently classify it as if it were empty.
pub fn window_ranges(len: usize, cfg: &ChunkConfig) -> Vec<Range<usize>> {
    let len = cfg.maximal_text_length().map_or(len, |m| len.min(m));
    let all: Vec<Range<usize>> = (0..len)
        .step_by(cfg.stride())
        .map(|i| i..(i + cfg.chunk_size()).min(len))
        .collect();
    if all.len() > 1 {
        let first = all[0].clone();
        let kept: Vec<Range<usize>> = all
            .into_iter()
            .filter(|r| r.len() >= cfg.minimal_chunk_length())
            .collect();
        if kept.is_empty() { vec![first] } else { kept }
    } else {
        all
    }
}

/// The chunks of `ids` (a text tokenized without special tokens), each wrapped in
/// `[CLS] .. [SEP]`. An empty text yields exactly one chunk, `[CLS][SEP]`.
pub fn chunk_ids(ids: &[u32], cfg: &ChunkConfig, special: &SpecialTokens) -> Vec<Vec<u32>> {
    let windows = window_ranges(ids.len(), cfg);
    if windows.is_empty() {
        return vec![vec![special.cls, special.sep]];
    }
    windows
        .into_iter()
        .map(|r| {
            let mut c = Vec::with_capacity(r.len() + 2);
            c.push(special.cls);
            c.extend_from_slice(&ids[r]);
            c.push(special.sep);
            c
        })
        .collect()
}

/// [`chunk_ids`] with each chunk's attention mask and token type ids.
pub fn chunk(ids: &[u32], cfg: &ChunkConfig, special: &SpecialTokens) -> Vec<Chunk> {
    chunk_ids(ids, cfg, special)
        .into_iter()
        .map(|input_ids| Chunk {
            attention_mask: vec![1; input_ids.len()],
            token_type_ids: vec![0; input_ids.len()],
            input_ids,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SP: SpecialTokens = SpecialTokens {
        cls: 101,
        sep: 102,
        pad: 0,
    };

    fn cfg(size: usize, stride: usize, min: usize, max_text: Option<usize>) -> ChunkConfig {
        ChunkConfig::new(size, stride, min, max_text, 512).unwrap()
    }

    #[test]
    fn empty_text_is_one_cls_sep_chunk() {
        assert_eq!(
            chunk_ids(&[], &cfg(510, 510, 1, None), &SP),
            vec![vec![101, 102]]
        );
        let c = chunk(&[], &cfg(4, 2, 1, None), &SP);
        assert_eq!(c[0].attention_mask, vec![1, 1]);
        assert_eq!(c[0].token_type_ids, vec![0, 0]);
    }

    #[test]
    fn overlapping_windows_with_literal_ids() {
        // len 10, chunk 4, stride 2: windows at 0, 2, 4, 6, 8 (the last is 2 long).
        let ids: Vec<u32> = (1..=10).collect();
        assert_eq!(
            chunk_ids(&ids, &cfg(4, 2, 1, None), &SP),
            vec![
                vec![101, 1, 2, 3, 4, 102],
                vec![101, 3, 4, 5, 6, 102],
                vec![101, 5, 6, 7, 8, 102],
                vec![101, 7, 8, 9, 10, 102],
                vec![101, 9, 10, 102],
            ]
        );
        // minimal_chunk_length 3 drops the short tail window.
        assert_eq!(chunk_ids(&ids, &cfg(4, 2, 3, None), &SP).len(), 4);
    }

    #[test]
    fn a_single_short_window_is_kept_whatever_its_length() {
        assert_eq!(
            chunk_ids(&[7, 8], &cfg(510, 510, 100, None), &SP),
            vec![vec![101, 7, 8, 102]]
        );
    }

    #[test]
    fn a_text_whose_every_window_is_under_the_minimum_keeps_its_first() {
        // len 5, chunk 4, stride 2, minimum 4: of 0..4, 2..5 and 4..5 only the full
        // first window is long enough, as belt_nlp keeps it.
        let ids: Vec<u32> = (1..=5).collect();
        assert_eq!(
            chunk_ids(&ids, &cfg(4, 2, 4, None), &SP),
            vec![vec![101, 1, 2, 3, 4, 102]]
        );
        // len 3, chunk 8, stride 2, minimum 8: windows 0..3 and 2..3, both short.
        assert_eq!(window_ranges(3, &cfg(8, 2, 8, None)), vec![0..3]);
        assert_eq!(
            chunk_ids(&[7, 8, 9], &cfg(8, 2, 8, None), &SP),
            vec![vec![101, 7, 8, 9, 102]]
        );
    }

    #[test]
    fn maximal_text_length_truncates_first() {
        let ids: Vec<u32> = (1..=10).collect();
        assert_eq!(
            chunk_ids(&ids, &cfg(3, 3, 1, Some(5)), &SP),
            vec![vec![101, 1, 2, 3, 102], vec![101, 4, 5, 102]]
        );
    }

    #[test]
    fn belt_default_510_on_a_long_review() {
        let ids: Vec<u32> = (0..1200).collect();
        let chunks = chunk_ids(&ids, &cfg(510, 510, 1, Some(2040)), &SP);
        let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![512, 512, 182]);
    }

    proptest! {
        #[test]
        fn chunk_invariants(
            len in 0usize..400,
            size in 1usize..64,
            stride_frac in 0.0f64..1.0,
            min_frac in 0.0f64..1.0,
            max_text in proptest::option::of(0usize..300),
        ) {
            let stride = 1 + ((size - 1) as f64 * stride_frac) as usize;
            let min = (size as f64 * min_frac) as usize;
            let c = cfg(size, stride, min, max_text);
            let ids: Vec<u32> = (0..len as u32).map(|i| i + 1000).collect();
            let chunks = chunk_ids(&ids, &c, &SP);
            let kept = max_text.map_or(len, |m| len.min(m));

            // Same input, same output.
            prop_assert_eq!(&chunks, &chunk_ids(&ids, &c, &SP));
            prop_assert!(!chunks.is_empty());
            for ch in &chunks {
                prop_assert!(ch.len() <= size + 2);
                prop_assert_eq!(ch[0], SP.cls);
                prop_assert_eq!(*ch.last().unwrap(), SP.sep);
            }
            // The window count before the minimal-length filter is ceil(len / stride).
            let unfiltered = cfg(size, stride, 0, max_text);
            prop_assert_eq!(window_ranges(len, &unfiltered).len(), kept.div_ceil(stride));
            // Consecutive full windows overlap by chunk_size - stride.
            let w = window_ranges(len, &unfiltered);
            for pair in w.windows(2) {
                if pair[1].end - pair[1].start == size {
                    prop_assert_eq!(pair[0].end.saturating_sub(pair[1].start), size - stride);
                }
            }
            // Every token of the truncated text lies in some chunk. (With
            // minimal_chunk_length > 1 belt_nlp deliberately drops a short tail window, so
            // coverage holds for the filter-free setting; the filter only ever removes
            // windows shorter than the minimum.)
            let cover = window_ranges(len, &cfg(size, stride, 1, max_text));
            for t in 0..kept {
                prop_assert!(cover.iter().any(|r| r.contains(&t)), "token {} uncovered", t);
            }
            let filtered = window_ranges(len, &c);
            // A non-empty text always keeps a window: no text is read as empty.
            prop_assert_eq!(filtered.is_empty(), kept == 0);
            if w.len() > 1 && filtered.len() > 1 {
                let dropped: Vec<_> = w.iter().filter(|r| !filtered.contains(r)).collect();
                prop_assert!(dropped.iter().all(|r| r.len() < min));
            }
        }
    }
}

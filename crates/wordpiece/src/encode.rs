//! The encoder: added-token split, normalization, pre-tokenization and LinMaxMatch
//! fused into one pass over the text's bytes, then truncation and the template.

use std::cell::RefCell;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Result, WordPieceError};
use crate::normalize::{Ascii, Class, ascii_table, class_of, normalize_into};
use crate::spec::{
    AddedToken, Normalization, Piece, Spec, Template, Truncation, TruncationSide,
    TruncationStrategy,
};
use crate::trie::{NONE, ROOT, Trie};

/// How to encode: `tokenizers`' `add_special_tokens` and truncation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    pub add_special_tokens: bool,
    pub truncation: Option<Truncation>,
}

impl Default for EncodeOptions {
    /// Special tokens on, no truncation.
    fn default() -> Self {
        EncodeOptions {
            add_special_tokens: true,
            truncation: None,
        }
    }
}

/// Ids and type ids of encoded texts, appended by [`WordPiece::encode_into`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Encoding {
    pub fn clear(&mut self) {
        self.ids.clear();
        self.type_ids.clear();
    }
}

/// Many encodings in flat buffers: row `i` is `ids[offsets[i]..offsets[i + 1]]`
/// (and the same range of `type_ids`), the layout of an Arrow list column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchEncoding {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub offsets: Vec<usize>,
}

impl BatchEncoding {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of row `i`.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The type ids of row `i`.
    pub fn type_row(&self, i: usize) -> &[u32] {
        &self.type_ids[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// A BERT WordPiece tokenizer that gives the ids `tokenizers` gives for the same
/// tokenizer.json, with the file's padding and truncation off (pass truncation in
/// [`EncodeOptions`]).
#[derive(Clone, Debug)]
pub struct WordPiece {
    spec: Spec,
    ascii: [Ascii; 128],
    trie: Trie,
    /// Added tokens, longest first, so the first match at a position is the longest.
    added: Vec<AddedToken>,
    added_first_byte: [bool; 256],
}

/// Per-thread scratch: the two texts of a pair, a normalized non-ASCII run, and the
/// two texts' pre-token ends (recorded when a pair is truncated).
#[derive(Default)]
struct Scratch {
    first: Vec<u32>,
    second: Vec<u32>,
    norm: String,
    first_ends: Vec<PreToken>,
    second_ends: Vec<PreToken>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Where one of `tokenizers`' pre-tokens (a word, a punctuation mark or an added token
/// found in the text) ends in a text's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PreToken {
    end: usize,
    /// An added token: `tokenizers` has its id before the model runs, so reaching the
    /// limit on it does not stop tokenization there.
    added: bool,
}

/// What the tokenizer tells about pre-tokens as it ends them: nothing (`()`, the
/// usual case, compiled away) or a list of [`PreToken`]s.
trait PreTokens {
    fn push(&mut self, end: usize, added: bool);
}

impl PreTokens for () {
    #[inline(always)]
    fn push(&mut self, _: usize, _: bool) {}
}

impl PreTokens for Vec<PreToken> {
    fn push(&mut self, end: usize, added: bool) {
        Vec::push(self, PreToken { end, added });
    }
}

/// The pieces of the word being read.
struct Word {
    node: u32,
    /// Where the word's ids start in the output.
    start: usize,
    chars: usize,
    failed: bool,
}

impl WordPiece {
    /// Builds the tokenizer from a tokenizer.json's text; `Unsupported` names what it
    /// cannot reproduce exactly.
    pub fn from_json(json: &str) -> Result<WordPiece> {
        Ok(WordPiece::from_spec(Spec::from_json(json)?))
    }

    /// Reads a tokenizer.json file.
    pub fn from_file(path: &Path) -> Result<WordPiece> {
        let text = std::fs::read_to_string(path).map_err(|source| WordPieceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        WordPiece::from_json(&text)
    }

    pub fn from_spec(spec: Spec) -> WordPiece {
        let trie = Trie::new(
            spec.vocab.iter().map(|(k, id)| (k.as_str(), *id)),
            &spec.continuing_subword_prefix,
        );
        let mut added = spec.added_tokens.clone();
        // Stable: of two equal contents the first registered keeps its place.
        added.sort_by_key(|t| std::cmp::Reverse(t.content.len()));
        let mut added_first_byte = [false; 256];
        for t in &added {
            added_first_byte[t.content.as_bytes()[0] as usize] = true;
        }
        WordPiece {
            ascii: ascii_table(&spec.normalization),
            trie,
            added,
            added_first_byte,
            spec,
        }
    }

    /// What the tokenizer.json asked for.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn normalization(&self) -> &Normalization {
        &self.spec.normalization
    }

    pub fn template(&self) -> &Template {
        &self.spec.template
    }

    /// Appends the word-piece ids of `text` (no special tokens, no truncation).
    pub fn tokenize_into(&self, text: &str, ids: &mut Vec<u32>) {
        SCRATCH.with(|s| {
            let norm = &mut s.borrow_mut().norm;
            self.tokenize_with(text, ids, norm, &mut ());
        })
    }

    fn tokenize_with<E: PreTokens>(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        norm: &mut String,
        ends: &mut E,
    ) {
        if self.added.is_empty() {
            return self.tokenize_piece(text, ids, norm, ends);
        }
        let bytes = text.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            if self.added_first_byte[bytes[i] as usize]
                && let Some(t) = self
                    .added
                    .iter()
                    .find(|t| bytes[i..].starts_with(t.content.as_bytes()))
            {
                self.tokenize_piece(&text[start..i], ids, norm, ends);
                ids.push(t.id);
                ends.push(ids.len(), true);
                i += t.content.len();
                start = i;
                continue;
            }
            i += 1;
        }
        self.tokenize_piece(&text[start..], ids, norm, ends);
    }

    /// One piece of text between added tokens: normalized, split and matched in one
    /// pass. ASCII bytes go through the table; a run of non-ASCII characters (with any
    /// characters `clean_text` removes inside it) is normalized exactly, then read.
    fn tokenize_piece<E: PreTokens>(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        norm: &mut String,
        ends: &mut E,
    ) {
        let bytes = text.as_bytes();
        let mut w = Word {
            node: ROOT,
            start: ids.len(),
            chars: 0,
            failed: false,
        };
        let mut run: Option<usize> = None;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b < 0x80 {
                let class = self.ascii[b as usize];
                if class != Ascii::Drop {
                    if let Some(s) = run.take() {
                        self.read_run(&text[s..i], &mut w, ids, norm, ends);
                    }
                    match class {
                        Ascii::Word(c) => self.push_bytes(&mut w, &[c], ids),
                        Ascii::Space => self.end_word(&mut w, ids, ends),
                        Ascii::Punct(c) => {
                            self.end_word(&mut w, ids, ends);
                            self.push_bytes(&mut w, &[c], ids);
                            self.end_word(&mut w, ids, ends);
                        }
                        Ascii::Drop => {}
                    }
                }
                i += 1;
            } else {
                run.get_or_insert(i);
                i += match b {
                    0xF0.. => 4,
                    0xE0.. => 3,
                    _ => 2,
                };
            }
        }
        if let Some(s) = run {
            self.read_run(&text[s..], &mut w, ids, norm, ends);
        }
        self.end_word(&mut w, ids, ends);
    }

    #[cold]
    fn read_run<E: PreTokens>(
        &self,
        raw: &str,
        w: &mut Word,
        ids: &mut Vec<u32>,
        norm: &mut String,
        ends: &mut E,
    ) {
        norm.clear();
        normalize_into(&self.spec.normalization, raw, norm);
        for c in norm.chars() {
            match class_of(c) {
                Class::Space => self.end_word(w, ids, ends),
                Class::Punct => {
                    self.end_word(w, ids, ends);
                    self.push_char(w, c, ids);
                    self.end_word(w, ids, ends);
                }
                Class::Word => self.push_char(w, c, ids),
            }
        }
    }

    /// One character of the word, given as its UTF-8 bytes.
    #[inline]
    fn push_bytes(&self, w: &mut Word, bytes: &[u8], ids: &mut Vec<u32>) {
        w.chars += 1;
        for &b in bytes {
            if !w.failed {
                w.node = self.trie.step(w.node, b, ids);
                w.failed = w.node == NONE || w.chars > self.spec.max_input_chars_per_word;
            }
        }
    }

    fn push_char(&self, w: &mut Word, c: char, ids: &mut Vec<u32>) {
        let mut buf = [0u8; 4];
        self.push_bytes(w, c.encode_utf8(&mut buf).as_bytes(), ids);
    }

    #[inline]
    fn end_word<E: PreTokens>(&self, w: &mut Word, ids: &mut Vec<u32>, ends: &mut E) {
        if w.chars == 0 {
            return;
        }
        if w.failed || !self.trie.finish(w.node, ids) {
            ids.truncate(w.start);
            ids.push(self.spec.unk_id);
        }
        ends.push(ids.len(), false);
        w.node = ROOT;
        w.start = ids.len();
        w.chars = 0;
        w.failed = false;
    }

    /// Encodes one text or a pair, appending ids and type ids to `out`.
    pub fn encode_into(
        &self,
        first: &str,
        second: Option<&str>,
        opts: &EncodeOptions,
        out: &mut Encoding,
    ) -> Result<()> {
        let template = &self.spec.template;
        let pair = second.is_some();
        let pieces = if pair {
            &template.pair
        } else {
            &template.single
        };
        let limit = match opts.truncation {
            None => None,
            Some(t) => {
                let added = if opts.add_special_tokens {
                    template.added(pair)
                } else {
                    0
                };
                let max = t.max_length.checked_sub(added).ok_or_else(|| {
                    WordPieceError::Truncation(format!(
                        "max_length {} is smaller than the {added} special tokens added",
                        t.max_length
                    ))
                })?;
                Some((t, max))
            }
        };
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let (a, b, norm) = (&mut s.first, &mut s.second, &mut s.norm);
            a.clear();
            b.clear();
            // `tokenizers` caps the texts at a pre-token's end before truncating (see
            // `capped_len`). That changes what a pair keeps, never what a single text
            // keeps, so only a truncated pair's pre-token ends are recorded.
            let (ea, eb) = (&mut s.first_ends, &mut s.second_ends);
            let record = pair && limit.is_some();
            if let (true, Some(second)) = (record, second) {
                ea.clear();
                eb.clear();
                self.tokenize_with(first, a, norm, ea);
                self.tokenize_with(second, b, norm, eb);
            } else {
                self.tokenize_with(first, a, norm, &mut ());
                if let Some(second) = second {
                    self.tokenize_with(second, b, norm, &mut ());
                }
            }
            if let Some((t, max)) = limit {
                let (n_a, n_b) = if record {
                    // The first text under `only_second` is not capped.
                    let n_a = match t.strategy {
                        TruncationStrategy::OnlySecond => a.len(),
                        _ => capped_len(ea, t.max_length, t.side),
                    };
                    (n_a, capped_len(eb, t.max_length, t.side))
                } else {
                    (a.len(), b.len())
                };
                let (n1, n2) = truncated_lengths(t.strategy, max, n_a, second.map(|_| n_b))?;
                cut(a, n1, t.side);
                cut(b, n2.unwrap_or(0), t.side);
            }
            for piece in pieces {
                match piece {
                    Piece::Special { ids, type_id } => {
                        if opts.add_special_tokens {
                            out.ids.extend_from_slice(ids);
                            out.type_ids.resize(out.ids.len(), *type_id);
                        }
                    }
                    Piece::Sequence { second, type_id } => {
                        out.ids.extend_from_slice(if *second { b } else { a });
                        out.type_ids.resize(out.ids.len(), *type_id);
                    }
                }
            }
            Ok(())
        })
    }

    /// Encodes one text or a pair into a new [`Encoding`].
    pub fn encode(
        &self,
        first: &str,
        second: Option<&str>,
        opts: &EncodeOptions,
    ) -> Result<Encoding> {
        let mut out = Encoding::default();
        self.encode_into(first, second, opts, &mut out)?;
        Ok(out)
    }

    /// Encodes many texts (and their pairs, when `second` is given: one per text) on
    /// rayon's threads, into flat buffers in input order.
    pub fn encode_batch(
        &self,
        first: &[&str],
        second: Option<&[&str]>,
        opts: &EncodeOptions,
    ) -> Result<BatchEncoding> {
        if let Some(s) = second
            && s.len() != first.len()
        {
            return Err(WordPieceError::Invalid(format!(
                "{} texts but {} second texts",
                first.len(),
                s.len()
            )));
        }
        // Contiguous slices of rows per task, each into its own buffers, then one copy.
        let per_task = first
            .len()
            .div_ceil(rayon::current_num_threads() * 4)
            .max(16);
        let parts: Vec<(Encoding, Vec<usize>)> = first
            .par_chunks(per_task)
            .enumerate()
            .map(|(k, texts)| {
                let mut enc = Encoding::default();
                let mut lens = Vec::with_capacity(texts.len());
                for (j, t) in texts.iter().enumerate() {
                    let pair = second.map(|s| s[k * per_task + j]);
                    let before = enc.ids.len();
                    self.encode_into(t, pair, opts, &mut enc)
                        .map_err(|e| WordPieceError::Row {
                            row: k * per_task + j,
                            source: Box::new(e),
                        })?;
                    lens.push(enc.ids.len() - before);
                }
                Ok((enc, lens))
            })
            // All results in order, then the first error: the lowest bad row, every run.
            .collect::<Vec<Result<_>>>()
            .into_iter()
            .collect::<Result<_>>()?;
        let total: usize = parts.iter().map(|(e, _)| e.ids.len()).sum();
        let mut out = BatchEncoding {
            ids: Vec::with_capacity(total),
            type_ids: Vec::with_capacity(total),
            offsets: Vec::with_capacity(first.len() + 1),
        };
        out.offsets.push(0);
        for (enc, lens) in parts {
            out.ids.extend_from_slice(&enc.ids);
            out.type_ids.extend_from_slice(&enc.type_ids);
            for l in lens {
                out.offsets
                    .push(out.offsets.last().copied().unwrap_or(0) + l);
            }
        }
        Ok(out)
    }
}

/// `tokenizers`' `truncate_encodings` on lengths: how many ids of each text stay.
fn truncated_lengths(
    strategy: TruncationStrategy,
    max: usize,
    n_first: usize,
    n_second: Option<usize>,
) -> Result<(usize, Option<usize>)> {
    if max == 0 {
        return Ok((0, n_second.map(|_| 0)));
    }
    let total = n_first + n_second.unwrap_or(0);
    if total <= max {
        return Ok((n_first, n_second));
    }
    let to_remove = total - max;
    match strategy {
        TruncationStrategy::LongestFirst => match n_second {
            None => Ok((max, None)),
            Some(n_second) => {
                let (mut n1, mut n2) = (n_first, n_second);
                let swap = n1 > n2;
                if swap {
                    std::mem::swap(&mut n1, &mut n2);
                }
                n2 = if n1 > max { n1 } else { n1.max(max - n1) };
                if n1 + n2 > max {
                    n1 = max / 2;
                    n2 = n1 + max % 2;
                }
                if swap {
                    std::mem::swap(&mut n1, &mut n2);
                }
                Ok((n1.min(n_first), Some(n2.min(n_second))))
            }
        },
        TruncationStrategy::OnlyFirst | TruncationStrategy::OnlySecond => {
            let second = strategy == TruncationStrategy::OnlySecond;
            let target = if second {
                n_second.ok_or_else(|| {
                    WordPieceError::Truncation("only_second truncation needs a second text".into())
                })?
            } else {
                n_first
            };
            if target <= to_remove {
                return Err(WordPieceError::Truncation(format!(
                    "the {} text has {target} ids, not more than the {to_remove} to remove",
                    if second { "second" } else { "first" }
                )));
            }
            Ok(if second {
                (n_first, Some(target - to_remove))
            } else {
                (target - to_remove, n_second)
            })
        }
    }
}

/// How many of a text's ids `tokenizers` 0.23 hands to truncation. With truncation on,
/// it tokenizes each text (both of a pair, but not the first or only one under
/// `only_second`) only until it has `max_length` ids, the limit before the special
/// tokens are taken off, and stops at the end of the pre-token that reaches it, from
/// the end of the text when cutting on the left (`PreTokenizedString::
/// tokenize_with_limit`). An added token counts, but does not stop it: the next word
/// in reading order (the one before it when cutting on the left) is still read.
/// Truncation then works on these lengths, and cutting the whole ids to what it keeps
/// gives the capped ids' cut, since it keeps the same end.
///
/// Mostly the cap changes nothing, as a capped text still has at least `max_length`
/// ids, as many as can stay or more; a single text's result never changes. Where it
/// does: `longest_first` on a pair with both texts that long (which keeps the odd id
/// is decided on the capped lengths), and an empty first text under `only_first` with
/// no special tokens, whose second text capped at exactly `max_length` is kept instead
/// of refused. So `encode_into` caps pairs only.
fn capped_len(ends: &[PreToken], max_length: usize, side: TruncationSide) -> usize {
    let n = ends.last().map_or(0, |p| p.end);
    match side {
        TruncationSide::Right => ends
            .iter()
            .find(|p| !p.added && p.end >= max_length)
            .map_or(n, |p| p.end),
        TruncationSide::Left => (0..ends.len())
            .rev()
            .map(|i| (ends[i].added, n - if i == 0 { 0 } else { ends[i - 1].end }))
            .find(|&(added, kept)| !added && kept >= max_length)
            .map_or(n, |(_, kept)| kept),
    }
}

/// Keeps `n` ids of `v`: the first ones when cutting on the right, the last on the left.
fn cut(v: &mut Vec<u32>, n: usize, side: TruncationSide) {
    if n >= v.len() {
        return;
    }
    match side {
        TruncationSide::Right => v.truncate(n),
        TruncationSide::Left => {
            v.drain(..v.len() - n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_matches_tokenizers_cases() {
        let lf = TruncationStrategy::LongestFirst;
        // Case 2: only the longer text is cut.
        assert_eq!(
            truncated_lengths(lf, 10, 3, Some(20)).unwrap(),
            (3, Some(7))
        );
        // Case 3: both, the second gets the odd one.
        assert_eq!(
            truncated_lengths(lf, 9, 12, Some(12)).unwrap(),
            (4, Some(5))
        );
        assert_eq!(truncated_lengths(lf, 6, 6, Some(6)).unwrap(), (3, Some(3)));
        // The first longer: swapped back.
        assert_eq!(
            truncated_lengths(lf, 10, 20, Some(3)).unwrap(),
            (7, Some(3))
        );
        assert_eq!(truncated_lengths(lf, 5, 4, None).unwrap(), (4, None));
        assert_eq!(truncated_lengths(lf, 3, 4, None).unwrap(), (3, None));
        assert_eq!(truncated_lengths(lf, 0, 4, Some(2)).unwrap(), (0, Some(0)));
        let os = TruncationStrategy::OnlySecond;
        assert_eq!(truncated_lengths(os, 10, 4, Some(9)).unwrap(), (4, Some(6)));
        assert!(truncated_lengths(os, 3, 4, Some(2)).is_err());
        assert!(truncated_lengths(os, 3, 4, None).is_err());
    }

    #[test]
    fn the_cap_stops_at_the_end_of_the_pre_token_that_reaches_the_limit() {
        let p = |end, added| PreToken { end, added };
        // Words of 2, 3 and 1 ids, an added token, then words of 2 and 2 ids.
        let ends = [
            p(2, false),
            p(5, false),
            p(6, false),
            p(7, true),
            p(9, false),
            p(11, false),
        ];
        let (r, l) = (TruncationSide::Right, TruncationSide::Left);
        assert_eq!(capped_len(&ends, 0, r), 2);
        assert_eq!(capped_len(&ends, 2, r), 2);
        assert_eq!(capped_len(&ends, 3, r), 5);
        assert_eq!(capped_len(&ends, 6, r), 6);
        // Reached on the added token: the next word is read too.
        assert_eq!(capped_len(&ends, 7, r), 9);
        assert_eq!(capped_len(&ends, 11, r), 11);
        assert_eq!(capped_len(&ends, 12, r), 11);
        // From the end: 2, 4, then the added token (5 ids), reached on the word before it.
        assert_eq!(capped_len(&ends, 1, l), 2);
        assert_eq!(capped_len(&ends, 3, l), 4);
        assert_eq!(capped_len(&ends, 5, l), 6);
        assert_eq!(capped_len(&ends, 7, l), 9);
        assert_eq!(capped_len(&ends, 10, l), 11);
        assert_eq!(capped_len(&ends, 40, l), 11);
        assert_eq!(capped_len(&[], 3, r), 0);
        assert_eq!(capped_len(&[], 3, l), 0);
    }

    #[test]
    fn cut_keeps_the_right_end() {
        let mut v = vec![1, 2, 3, 4];
        cut(&mut v, 2, TruncationSide::Left);
        assert_eq!(v, vec![3, 4]);
        cut(&mut v, 1, TruncationSide::Right);
        assert_eq!(v, vec![3]);
    }
}

//! LinMaxMatch (Song et al., "Fast WordPiece Tokenization", EMNLP 2021): a byte trie of
//! the vocabulary with failure links and failure pops, so that WordPiece's greedy
//! longest-match-first runs in time linear in the word's length, reading each byte
//! once. Two tries share one node array: word-initial pieces from [`ROOT`], and
//! continuation pieces (the `##` prefix stripped) from [`SUFFIX_ROOT`].
//!
//! A node `v` spelling `s` (not a token) stores what greedy matching of `s` emits
//! before the rest of `s` is a prefix of a continuation piece (`pops`), and the node of
//! that rest in the suffix trie (`fail`). A token node pops itself and fails to the
//! suffix root. When no edge leaves the current node, matching emits its pops and
//! moves to its failure node; a node without one means the word has no
//! segmentation, so it becomes `[UNK]`, as in `tokenizers`.

use std::collections::VecDeque;

pub(crate) const ROOT: u32 = 0;
pub(crate) const SUFFIX_ROOT: u32 = 1;
pub(crate) const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    /// Children: `edge_bytes[first..first + len]` (sorted) and `edge_targets`.
    first: u32,
    len: u32,
    fail: u32,
    pops_first: u32,
    pops_len: u32,
}

/// The vocabulary as a LinMaxMatch automaton.
#[derive(Clone, Debug)]
pub(crate) struct Trie {
    nodes: Vec<Node>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
    pops: Vec<u32>,
    /// Dense transitions of the two roots, the busiest nodes.
    root_next: Box<[u32; 256]>,
    suffix_next: Box<[u32; 256]>,
}

/// A trie under construction: children as sorted vectors.
struct Builder {
    children: Vec<Vec<(u8, u32)>>,
    token: Vec<u32>,
}

impl Builder {
    fn insert(&mut self, from: u32, bytes: &[u8], id: u32) {
        let mut u = from;
        for &b in bytes {
            let kids = &self.children[u as usize];
            u = match kids.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => kids[i].1,
                Err(i) => {
                    let v = self.token.len() as u32;
                    self.children[u as usize].insert(i, (b, v));
                    self.children.push(Vec::new());
                    self.token.push(NONE);
                    v
                }
            };
        }
        // The first id wins if the vocabulary has the same string twice; the roots
        // themselves (an empty piece) are never tokens, as `tokenizers` never looks up "".
        if u != from && self.token[u as usize] == NONE {
            self.token[u as usize] = id;
        }
    }

    fn goto(&self, u: u32, b: u8) -> u32 {
        let kids = &self.children[u as usize];
        match kids.binary_search_by_key(&b, |&(c, _)| c) {
            Ok(i) => kids[i].1,
            Err(_) => NONE,
        }
    }
}

impl Trie {
    /// Builds the automaton from `(piece, id)` pairs; pieces starting with `prefix` are
    /// also continuation pieces (without it).
    pub(crate) fn new<'a>(vocab: impl IntoIterator<Item = (&'a str, u32)>, prefix: &str) -> Trie {
        let mut b = Builder {
            children: vec![Vec::new(), Vec::new()],
            token: vec![NONE, NONE],
        };
        for (piece, id) in vocab {
            b.insert(ROOT, piece.as_bytes(), id);
            if let Some(rest) = piece.strip_prefix(prefix) {
                b.insert(SUFFIX_ROOT, rest.as_bytes(), id);
            }
        }
        let n = b.token.len();
        let mut fail = vec![NONE; n];
        let mut pops: Vec<Vec<u32>> = vec![Vec::new(); n];
        // Breadth first, so a node's parent and every shorter failure target are done.
        let mut queue: VecDeque<u32> = VecDeque::from([ROOT, SUFFIX_ROOT]);
        while let Some(u) = queue.pop_front() {
            for &(c, v) in &b.children[u as usize] {
                let vi = v as usize;
                if b.token[vi] != NONE {
                    fail[vi] = SUFFIX_ROOT;
                    pops[vi] = vec![b.token[vi]];
                } else {
                    let mut p = pops[u as usize].clone();
                    let mut z = fail[u as usize];
                    while z != NONE && b.goto(z, c) == NONE {
                        p.extend_from_slice(&pops[z as usize]);
                        z = fail[z as usize];
                    }
                    fail[vi] = if z == NONE { NONE } else { b.goto(z, c) };
                    pops[vi] = p;
                }
                queue.push_back(v);
            }
        }
        let mut nodes = Vec::with_capacity(n);
        let mut edge_bytes = Vec::new();
        let mut edge_targets = Vec::new();
        let mut flat_pops = Vec::new();
        for u in 0..n {
            nodes.push(Node {
                first: edge_bytes.len() as u32,
                len: b.children[u].len() as u32,
                fail: fail[u],
                pops_first: flat_pops.len() as u32,
                pops_len: pops[u].len() as u32,
            });
            for &(c, v) in &b.children[u] {
                edge_bytes.push(c);
                edge_targets.push(v);
            }
            flat_pops.extend_from_slice(&pops[u]);
        }
        let dense = |root: u32| {
            let mut t = Box::new([NONE; 256]);
            for &(c, v) in &b.children[root as usize] {
                t[c as usize] = v;
            }
            t
        };
        Trie {
            root_next: dense(ROOT),
            suffix_next: dense(SUFFIX_ROOT),
            nodes,
            edge_bytes,
            edge_targets,
            pops: flat_pops,
        }
    }

    /// The child of `u` along byte `b`, or [`NONE`].
    #[inline]
    pub(crate) fn goto(&self, u: u32, b: u8) -> u32 {
        match u {
            ROOT => self.root_next[b as usize],
            SUFFIX_ROOT => self.suffix_next[b as usize],
            _ => {
                let node = &self.nodes[u as usize];
                let first = node.first as usize;
                let bytes = &self.edge_bytes[first..first + node.len as usize];
                match bytes.iter().position(|&c| c == b) {
                    Some(i) => self.edge_targets[first + i],
                    None => NONE,
                }
            }
        }
    }

    #[inline]
    pub(crate) fn fail(&self, u: u32) -> u32 {
        self.nodes[u as usize].fail
    }

    #[inline]
    pub(crate) fn pops(&self, u: u32) -> &[u32] {
        let node = &self.nodes[u as usize];
        &self.pops[node.pops_first as usize..(node.pops_first + node.pops_len) as usize]
    }

    /// Moves from `u` along byte `b`, emitting into `out` what failure transitions pop.
    /// `NONE` when the word has no segmentation.
    #[inline]
    pub(crate) fn step(&self, mut u: u32, b: u8, out: &mut Vec<u32>) -> u32 {
        loop {
            let v = self.goto(u, b);
            if v != NONE {
                return v;
            }
            let f = self.fail(u);
            if f == NONE {
                return NONE;
            }
            out.extend_from_slice(self.pops(u));
            u = f;
        }
    }

    /// Ends a word at `u`: emits the rest of its pieces; false when they do not cover it.
    #[inline]
    pub(crate) fn finish(&self, mut u: u32, out: &mut Vec<u32>) -> bool {
        while u != SUFFIX_ROOT {
            let f = self.fail(u);
            if f == NONE {
                return false;
            }
            out.extend_from_slice(self.pops(u));
            u = f;
        }
        true
    }

    /// Pieces of one word by the automaton, or `None` for `[UNK]` (tests).
    #[cfg(test)]
    pub(crate) fn segment(&self, word: &str) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        let mut u = ROOT;
        for &b in word.as_bytes() {
            u = self.step(u, b, &mut out);
            if u == NONE {
                return None;
            }
        }
        (u != ROOT && self.finish(u, &mut out)).then_some(out)
    }
}

/// `tokenizers`' WordPiece on one word, as it writes it (greedy longest match with a
/// hash lookup per candidate): the slow reference the automaton is tested against.
pub fn max_match_reference(
    vocab: &std::collections::HashMap<String, u32>,
    prefix: &str,
    word: &str,
) -> Option<Vec<u32>> {
    let mut start = 0;
    let mut out = Vec::new();
    while start < word.len() {
        let mut end = word.len();
        let mut found = None;
        while start < end {
            let sub = &word[start..end];
            let key = if start > 0 {
                format!("{prefix}{sub}")
            } else {
                sub.to_string()
            };
            if let Some(&id) = vocab.get(&key) {
                found = Some(id);
                break;
            }
            end -= sub.chars().last().map_or(1, char::len_utf8);
        }
        out.push(found?);
        start = end;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn vocab(words: &[&str]) -> HashMap<String, u32> {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32))
            .collect()
    }

    fn trie(v: &HashMap<String, u32>) -> Trie {
        Trie::new(v.iter().map(|(k, &id)| (k.as_str(), id)), "##")
    }

    #[test]
    fn greedy_longest_match_with_fallback_to_a_shorter_piece() {
        let v = vocab(&[
            "a", "ab", "abcd", "##c", "##bc", "##d", "un", "##aff", "##able",
        ]);
        let t = trie(&v);
        // "abc": "abcd" is not a prefix, so "ab" then "##c".
        assert_eq!(t.segment("abc"), Some(vec![v["ab"], v["##c"]]));
        assert_eq!(t.segment("abcd"), Some(vec![v["abcd"]]));
        assert_eq!(t.segment("abcdd"), Some(vec![v["abcd"], v["##d"]]));
        assert_eq!(
            t.segment("unaffable"),
            Some(vec![v["un"], v["##aff"], v["##able"]])
        );
        assert_eq!(t.segment("abx"), None);
        assert_eq!(t.segment("xa"), None);
    }

    fn small_word() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just('c'), Just('é')],
            1..12,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Random small vocabularies over a tiny alphabet make every failure-link
        /// case appear; the automaton must equal the hash-lookup MaxMatch.
        #[test]
        fn automaton_equals_max_match(
            pieces in proptest::collection::vec(small_word(), 1..24),
            conts in proptest::collection::vec(small_word(), 0..24),
            words in proptest::collection::vec(small_word(), 1..16),
        ) {
            let mut all: Vec<String> = pieces;
            all.extend(conts.into_iter().map(|c| format!("##{c}")));
            let mut v = HashMap::new();
            for (i, p) in all.into_iter().enumerate() {
                v.entry(p).or_insert(i as u32);
            }
            let t = trie(&v);
            for w in &words {
                prop_assert_eq!(t.segment(w), max_match_reference(&v, "##", w), "word {:?}", w);
            }
        }
    }
}

//! Next-sentence-prediction pairs over tokenized documents (document -> sentences ->
//! ids without special tokens), encoded `[CLS] A [SEP] B [SEP]`.

use rand::Rng;

/// Why NSP pairs cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NspError {
    #[error("NSP needs at least two documents with sentences to draw random next sentences")]
    TooFewDocuments,
    #[error("max_length {0} leaves no room for two segments and 3 special tokens")]
    MaxLengthTooSmall(usize),
}

/// NSP parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NspConfig {
    /// Total length including `[CLS]` and two `[SEP]`s; pairs are truncated
    /// `longest_first` to fit.
    pub max_length: usize,
    /// Probability that B is the true next sentence (label 0, IsNext).
    pub next_probability: f64,
    /// Pack consecutive sentences into segments up to `max_length`, as HF
    /// `TextDatasetForNextSentencePrediction` does; otherwise one pair per consecutive
    /// sentence pair.
    pub pack: bool,
    /// With `pack`, probability of a shorter random target length (HF: 0.1).
    pub short_seq_probability: f64,
}

impl Default for NspConfig {
    fn default() -> Self {
        NspConfig {
            max_length: 512,
            next_probability: 0.5,
            pack: false,
            short_seq_probability: 0.1,
        }
    }
}

/// One pair: the two segments (no special tokens) and `next_sentence_label`
/// (0 = B follows A, 1 = B is random).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NspPair {
    pub a: Vec<u32>,
    pub b: Vec<u32>,
    pub label: u8,
    /// Index of the document A comes from.
    pub document: usize,
}

/// Builds NSP pairs from `documents` (each a list of tokenized sentences).
///
/// Without packing: for every consecutive sentence pair (A, B) of a document, B stays
/// with probability `next_probability` (label 0), else is replaced by a uniformly drawn
/// sentence of another document (label 1). With packing: HF's algorithm (segments
/// filled to a target length, A = a random prefix of them, B = the rest or random
/// text from another document). Both truncate `longest_first` to fit `max_length`.
pub fn nsp_pairs(
    documents: &[Vec<Vec<u32>>],
    cfg: &NspConfig,
    rng: &mut impl Rng,
) -> Result<Vec<NspPair>, NspError> {
    if cfg.max_length < 5 {
        return Err(NspError::MaxLengthTooSmall(cfg.max_length));
    }
    let usable: Vec<usize> = (0..documents.len())
        .filter(|&d| !documents[d].is_empty())
        .collect();
    if usable.len() < 2 {
        return Err(NspError::TooFewDocuments);
    }
    let budget = cfg.max_length - 3;
    let mut pairs = Vec::new();
    for (d, doc) in documents.iter().enumerate() {
        if cfg.pack {
            pack_document(documents, &usable, d, budget, cfg, rng, &mut pairs);
            continue;
        }
        for i in 0..doc.len().saturating_sub(1) {
            let a = doc[i].clone();
            let (b, label) = if rng.random::<f64>() < cfg.next_probability {
                (doc[i + 1].clone(), 0)
            } else {
                let other = other_document(&usable, d, rng);
                let s = rng.random_range(0..documents[other].len());
                (documents[other][s].clone(), 1)
            };
            pairs.push(truncated(a, b, label, d, budget));
        }
    }
    Ok(pairs)
}

fn other_document(usable: &[usize], d: usize, rng: &mut impl Rng) -> usize {
    loop {
        let o = usable[rng.random_range(0..usable.len())];
        if o != d {
            return o;
        }
    }
}

fn pack_document(
    documents: &[Vec<Vec<u32>>],
    usable: &[usize],
    d: usize,
    budget: usize,
    cfg: &NspConfig,
    rng: &mut impl Rng,
    pairs: &mut Vec<NspPair>,
) {
    let doc = &documents[d];
    let target = if rng.random::<f64>() < cfg.short_seq_probability {
        rng.random_range(2..=budget.max(2))
    } else {
        budget
    };
    let mut chunk: Vec<&Vec<u32>> = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while i < doc.len() {
        chunk.push(&doc[i]);
        len += doc[i].len();
        if i == doc.len() - 1 || len >= target {
            let a_end = if chunk.len() >= 2 {
                rng.random_range(1..chunk.len())
            } else {
                1
            };
            let a: Vec<u32> = chunk[..a_end]
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            let (b, label) = if chunk.len() == 1 || rng.random::<f64>() >= cfg.next_probability {
                let target_b = target.saturating_sub(a.len()).max(1);
                let other = other_document(usable, d, rng);
                let od = &documents[other];
                let mut b = Vec::new();
                for s in &od[rng.random_range(0..od.len())..] {
                    b.extend_from_slice(s);
                    if b.len() >= target_b {
                        break;
                    }
                }
                // The unused segments go back into the stream, as HF does.
                i -= chunk.len() - a_end;
                (b, 1)
            } else {
                (
                    chunk[a_end..]
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect(),
                    0,
                )
            };
            if !a.is_empty() && !b.is_empty() {
                pairs.push(truncated(a, b, label, d, budget));
            }
            chunk.clear();
            len = 0;
        }
        i += 1;
    }
}

fn truncated(
    mut a: Vec<u32>,
    mut b: Vec<u32>,
    label: u8,
    document: usize,
    budget: usize,
) -> NspPair {
    // longest_first: drop from the end of the longer segment until both fit.
    while a.len() + b.len() > budget {
        if a.len() > b.len() {
            a.pop();
        } else {
            b.pop();
        }
    }
    NspPair {
        a,
        b,
        label,
        document,
    }
}

/// `[CLS] A [SEP] B [SEP]` with token type ids 0 for `[CLS] A [SEP]` and 1 after.
pub fn encode_pair(pair: &NspPair, cls: u32, sep: u32) -> (Vec<u32>, Vec<u8>) {
    let mut ids = Vec::with_capacity(pair.a.len() + pair.b.len() + 3);
    ids.push(cls);
    ids.extend_from_slice(&pair.a);
    ids.push(sep);
    let first = ids.len();
    ids.extend_from_slice(&pair.b);
    ids.push(sep);
    let mut types = vec![0u8; first];
    types.resize(ids.len(), 1);
    (ids, types)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlm::rng_for;

    fn docs() -> Vec<Vec<Vec<u32>>> {
        (0..50u32)
            .map(|d| {
                (0..6u32)
                    .map(|s| vec![d * 100 + s * 10, d * 100 + s * 10 + 1])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn is_next_pairs_are_consecutive_and_random_ones_come_from_other_documents() {
        let docs = docs();
        let pairs = nsp_pairs(&docs, &NspConfig::default(), &mut rng_for(3, 0)).unwrap();
        assert_eq!(pairs.len(), 50 * 5);
        for p in &pairs {
            let da = p.a[0] / 100;
            let db = p.b[0] / 100;
            if p.label == 0 {
                assert_eq!(da, db);
                assert_eq!(p.b[0], p.a[0] + 10);
            } else {
                assert_ne!(da, db);
            }
        }
        let next = pairs.iter().filter(|p| p.label == 0).count() as f64 / pairs.len() as f64;
        assert!((next - 0.5).abs() < 0.08, "{next}");
    }

    #[test]
    fn encoding_and_truncation() {
        let p = truncated(vec![1, 2, 3, 4, 5], vec![6, 7], 0, 0, 4);
        assert_eq!((p.a.clone(), p.b.clone()), (vec![1, 2], vec![6, 7]));
        let (ids, types) = encode_pair(&p, 101, 102);
        assert_eq!(ids, vec![101, 1, 2, 102, 6, 7, 102]);
        assert_eq!(types, vec![0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn packing_fills_segments_up_to_the_budget() {
        let docs = docs();
        let cfg = NspConfig {
            max_length: 11,
            pack: true,
            short_seq_probability: 0.0,
            ..NspConfig::default()
        };
        let pairs = nsp_pairs(&docs, &cfg, &mut rng_for(1, 0)).unwrap();
        assert!(!pairs.is_empty());
        for p in &pairs {
            assert!(p.a.len() + p.b.len() <= 8);
            assert!(!p.a.is_empty() && !p.b.is_empty());
        }
        assert!(
            pairs.iter().any(|p| p.a.len() + p.b.len() == 8),
            "segments packed to the budget"
        );
    }

    #[test]
    fn one_document_is_an_error() {
        let one = vec![vec![vec![1], vec![2]]];
        assert_eq!(
            nsp_pairs(&one, &NspConfig::default(), &mut rng_for(0, 0)),
            Err(NspError::TooFewDocuments)
        );
    }
}

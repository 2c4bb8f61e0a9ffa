//! MLM masking, as HF `DataCollatorForLanguageModeling.torch_mask_tokens`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The label of a position the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// The ids masking needs, read from the tokenizer by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskingTokens {
    /// `[MASK]`.
    pub mask: u32,
    /// `[PAD]`: never selected.
    pub pad: u32,
    /// Every special id (`[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]`, ...): never selected.
    pub special_ids: Vec<u32>,
    /// Random replacements are drawn uniformly from `0..vocab_size`.
    pub vocab_size: u32,
}

impl MaskingTokens {
    fn is_special(&self, id: u32) -> bool {
        id == self.pad || self.special_ids.contains(&id)
    }
}

/// Which masking recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MaskStrategy {
    /// HF's: of the selected, `mask_replace_prob` become `[MASK]`,
    /// `random_replace_prob` a random id, the rest stay as they are.
    #[default]
    Hf,
    /// The articles' method: every selected token becomes `[MASK]`
    /// (`rand < 0.15` and not `[CLS]`/`[SEP]`/`[PAD]`).
    Plain,
}

/// Why an MLM configuration is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MlmError {
    #[error("{name} = {value} must be within [0, 1]")]
    Probability { name: &'static str, value: f64 },
    #[error("mask_replace_prob + random_replace_prob = {0} exceeds 1")]
    SumAboveOne(f64),
}

/// MLM parameters, HF's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MlmConfig {
    pub mlm_probability: f64,
    pub mask_replace_prob: f64,
    pub random_replace_prob: f64,
    pub strategy: MaskStrategy,
    /// Select (and replace) all pieces of a word together.
    pub whole_word: bool,
}

impl Default for MlmConfig {
    fn default() -> Self {
        MlmConfig {
            mlm_probability: 0.15,
            mask_replace_prob: 0.8,
            random_replace_prob: 0.1,
            strategy: MaskStrategy::Hf,
            whole_word: false,
        }
    }
}

impl MlmConfig {
    pub fn validate(&self) -> Result<(), MlmError> {
        for (name, value) in [
            ("mlm_probability", self.mlm_probability),
            ("mask_replace_prob", self.mask_replace_prob),
            ("random_replace_prob", self.random_replace_prob),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(MlmError::Probability { name, value });
            }
        }
        let sum = self.mask_replace_prob + self.random_replace_prob;
        if sum > 1.0 + 1e-12 {
            return Err(MlmError::SumAboveOne(sum));
        }
        Ok(())
    }
}

/// A masked sequence: the ids fed to the model and the labels (original id where
/// selected, [`IGNORE_INDEX`] elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masked {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

/// The RNG for example `index` under `seed`: each example's masks depend on the seed
/// and its index only, not on batching or threads.
pub fn rng_for(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// Which vocabulary ids continue a word (WordPiece `##` pieces): the one place
/// whole-word masking learns where words start, shared by the dataset op, the
/// trainer's collation and `berth pretrain-data`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContinuationTable(std::sync::Arc<Vec<bool>>);

impl ContinuationTable {
    /// `table[id]` is whether id continues a word.
    pub fn new(table: Vec<bool>) -> Self {
        ContinuationTable(std::sync::Arc::new(table))
    }

    /// Whether `id` continues a word (ids outside the table do not).
    pub fn continues(&self, id: u32) -> bool {
        self.0.get(id as usize).copied().unwrap_or(false)
    }

    /// How many ids continue a word (for fingerprints).
    pub fn count(&self) -> usize {
        self.0.iter().filter(|&&c| c).count()
    }

    /// Word starts of `ids`, for [`mask_tokens`]' `word_starts`.
    pub fn word_starts(&self, ids: &[u32]) -> Vec<bool> {
        word_starts_from_continuations(ids, |id| self.continues(id))
    }
}

/// Word starts from WordPiece continuations: a piece starts a word unless
/// `is_continuation(id)` (its token begins with `##`). Specials always start one.
pub fn word_starts_from_continuations(
    ids: &[u32],
    is_continuation: impl Fn(u32) -> bool,
) -> Vec<bool> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| i == 0 || !is_continuation(id))
        .collect()
}

/// Masks one sequence.
///
/// Selection: each non-special, non-pad position with probability `mlm_probability`
/// (with `whole_word`, each word — a start position and its continuations, from
/// `word_starts` — is selected as a unit). Replacement (HF strategy): `[MASK]` with
/// probability `mask_replace_prob`, else a random id with probability
/// `random_replace_prob / (1 - mask_replace_prob)`, else unchanged; decided per word
/// with `whole_word`, as HF's whole-word mode does. Random ids are uniform over the
/// whole vocabulary, specials included, as HF's `randint(len(tokenizer))`.
pub fn mask_tokens(
    ids: &[u32],
    word_starts: Option<&[bool]>,
    cfg: &MlmConfig,
    tokens: &MaskingTokens,
    rng: &mut impl Rng,
) -> Masked {
    let n = ids.len();
    // Group positions into units: single tokens, or whole words.
    let mut units: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        // A special token is a unit of its own: what follows it starts a word even
        // where the tokenizer marks no start (a byte-level BPE text's first word has
        // no `Ġ`).
        if cfg.whole_word
            && !tokens.is_special(ids[i])
            && let Some(starts) = word_starts
        {
            while j < n && !starts.get(j).copied().unwrap_or(true) && !tokens.is_special(ids[j]) {
                j += 1;
            }
        }
        units.push((i, j));
        i = j;
    }
    let mut input_ids = ids.to_vec();
    let mut labels = vec![IGNORE_INDEX; n];
    let random_scaled = if cfg.mask_replace_prob < 1.0 {
        (cfg.random_replace_prob / (1.0 - cfg.mask_replace_prob)).min(1.0)
    } else {
        0.0
    };
    for (s, e) in units {
        // Draw for every unit, special or not, so a position's fate does not depend
        // on its neighbours' ids.
        let select = rng.random::<f64>() < cfg.mlm_probability;
        let replace = rng.random::<f64>();
        let random = rng.random::<f64>();
        if !select || tokens.is_special(ids[s]) {
            continue;
        }
        for p in s..e {
            labels[p] = ids[p] as i64;
        }
        match cfg.strategy {
            MaskStrategy::Plain => input_ids[s..e].fill(tokens.mask),
            MaskStrategy::Hf => {
                if replace < cfg.mask_replace_prob {
                    input_ids[s..e].fill(tokens.mask);
                } else if random < random_scaled {
                    for id in &mut input_ids[s..e] {
                        *id = rng.random_range(0..tokens.vocab_size);
                    }
                }
            }
        }
    }
    Masked { input_ids, labels }
}

/// Masking at collate time: each (epoch, example) draws fresh masks, reproducibly, so
/// every epoch sees different masks of the same text (HF's dynamic masking).
#[derive(Clone, Debug)]
pub struct DynamicMasker {
    cfg: MlmConfig,
    tokens: MaskingTokens,
    seed: u64,
}

impl DynamicMasker {
    pub fn new(cfg: MlmConfig, tokens: MaskingTokens, seed: u64) -> Result<Self, MlmError> {
        cfg.validate()?;
        Ok(DynamicMasker { cfg, tokens, seed })
    }

    /// Masks example `index` for `epoch`.
    pub fn mask(
        &self,
        ids: &[u32],
        word_starts: Option<&[bool]>,
        epoch: u64,
        index: u64,
    ) -> Masked {
        let seed = self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        mask_tokens(
            ids,
            word_starts,
            &self.cfg,
            &self.tokens,
            &mut rng_for(seed, index),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn toks() -> MaskingTokens {
        MaskingTokens {
            mask: 103,
            pad: 0,
            special_ids: vec![0, 100, 101, 102, 103],
            vocab_size: 30522,
        }
    }

    /// `[CLS]` + 1022 ordinary ids + `[SEP]` + 2 pads, like a padded row.
    fn row(k: u32) -> Vec<u32> {
        let mut v = vec![101];
        v.extend((0..1022).map(|i| 1000 + (i * 7 + k) % 20000));
        v.extend([102, 0, 0]);
        v
    }

    #[test]
    fn statistics_over_100k_tokens_match_hf() {
        let cfg = MlmConfig::default();
        let (mut candidates, mut selected, mut masked, mut random, mut kept) = (0, 0, 0, 0, 0);
        for k in 0..100u32 {
            let ids = row(k);
            let out = mask_tokens(&ids, None, &cfg, &toks(), &mut rng_for(7, k as u64));
            for (p, (&orig, &now)) in ids.iter().zip(&out.input_ids).enumerate() {
                let special = toks().is_special(orig);
                if special {
                    assert_eq!(out.labels[p], IGNORE_INDEX, "special selected");
                    assert_eq!(now, orig, "special changed");
                    continue;
                }
                candidates += 1;
                if out.labels[p] == IGNORE_INDEX {
                    assert_eq!(now, orig, "unselected position changed");
                    continue;
                }
                assert_eq!(out.labels[p], orig as i64);
                selected += 1;
                if now == 103 {
                    masked += 1;
                } else if now == orig {
                    kept += 1;
                } else {
                    random += 1;
                }
            }
        }
        assert!(candidates >= 100_000);
        let rate = selected as f64 / candidates as f64;
        assert!((rate - 0.15).abs() <= 0.005, "selection rate {rate}");
        let f = |x: usize| x as f64 / selected as f64;
        assert!((f(masked) - 0.8).abs() <= 0.01, "mask share {}", f(masked));
        // A random id equal to the original counts as kept: expected 0.1 * (1 - 1/V).
        assert!(
            (f(random) - 0.1).abs() <= 0.01,
            "random share {}",
            f(random)
        );
        assert!((f(kept) - 0.1).abs() <= 0.01, "kept share {}", f(kept));
    }

    #[test]
    fn plain_strategy_masks_every_selected_token() {
        let cfg = MlmConfig {
            strategy: MaskStrategy::Plain,
            ..MlmConfig::default()
        };
        let ids = row(3);
        let out = mask_tokens(&ids, None, &cfg, &toks(), &mut rng_for(1, 0));
        let mut n = 0;
        for (p, &l) in out.labels.iter().enumerate() {
            if l != IGNORE_INDEX {
                assert_eq!(out.input_ids[p], 103);
                n += 1;
            } else {
                assert_eq!(out.input_ids[p], ids[p]);
            }
        }
        assert!(n > 100);
    }

    #[test]
    fn whole_words_are_selected_and_replaced_together() {
        // Words: [CLS] | 5 6 7 | 8 | 9 10 | [SEP], pieces 6, 7 and 10 are continuations.
        let ids = [101, 5, 6, 7, 8, 9, 10, 102];
        let starts = word_starts_from_continuations(&ids, |id| id == 6 || id == 7 || id == 10);
        assert_eq!(
            starts,
            vec![true, true, false, false, true, true, false, true]
        );
        let cfg = MlmConfig {
            mlm_probability: 0.5,
            whole_word: true,
            ..MlmConfig::default()
        };
        for seed in 0..200 {
            let out = mask_tokens(&ids, Some(&starts), &cfg, &toks(), &mut rng_for(seed, 0));
            for word in [1..4, 4..5, 5..7] {
                let sel: Vec<bool> = out.labels[word.clone()]
                    .iter()
                    .map(|&l| l != IGNORE_INDEX)
                    .collect();
                assert!(
                    sel.iter().all(|&s| s == sel[0]),
                    "seed {seed}: word split {sel:?}"
                );
                let masked: Vec<bool> = out.input_ids[word].iter().map(|&i| i == 103).collect();
                assert!(masked.iter().all(|&m| m == masked[0]), "seed {seed}");
            }
        }
    }

    #[test]
    fn dynamic_masks_differ_by_epoch_and_repeat_by_seed() {
        let m = DynamicMasker::new(MlmConfig::default(), toks(), 5).unwrap();
        let ids = row(1);
        assert_eq!(m.mask(&ids, None, 0, 3), m.mask(&ids, None, 0, 3));
        assert_ne!(m.mask(&ids, None, 0, 3), m.mask(&ids, None, 1, 3));
    }

    #[test]
    fn invalid_probabilities_are_rejected() {
        let bad = MlmConfig {
            mlm_probability: 1.5,
            ..MlmConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = MlmConfig {
            mask_replace_prob: 0.9,
            random_replace_prob: 0.2,
            ..MlmConfig::default()
        };
        assert_eq!(bad.validate(), Err(MlmError::SumAboveOne(0.9 + 0.2)));
    }

    proptest! {
        #[test]
        fn lengths_kept_specials_untouched_and_deterministic(
            ids in proptest::collection::vec(prop_oneof![Just(0u32), Just(101), Just(102), 1000u32..30000], 0..200),
            seed in any::<u64>(),
            wwm in any::<bool>(),
        ) {
            let cfg = MlmConfig { whole_word: wwm, mlm_probability: 0.3, ..MlmConfig::default() };
            let starts = word_starts_from_continuations(&ids, |id| id % 3 == 0);
            let a = mask_tokens(&ids, Some(&starts), &cfg, &toks(), &mut rng_for(seed, 9));
            let b = mask_tokens(&ids, Some(&starts), &cfg, &toks(), &mut rng_for(seed, 9));
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.input_ids.len(), ids.len());
            prop_assert_eq!(a.labels.len(), ids.len());
            for (p, &id) in ids.iter().enumerate() {
                if toks().is_special(id) {
                    prop_assert_eq!(a.input_ids[p], id);
                    prop_assert_eq!(a.labels[p], IGNORE_INDEX);
                }
                if a.labels[p] == IGNORE_INDEX {
                    prop_assert_eq!(a.input_ids[p], id);
                } else {
                    prop_assert_eq!(a.labels[p], id as i64);
                }
            }
        }
    }
}

#[cfg(test)]
mod pinned {
    use super::*;

    /// Pins the exact output for one seed, so "same seed, same bytes" also holds across
    /// releases (a change here changes every dataset built with Berth's masks).
    #[test]
    fn seeded_masks_are_pinned() {
        let tokens = MaskingTokens {
            mask: 103,
            pad: 0,
            special_ids: vec![0, 100, 101, 102, 103],
            vocab_size: 30522,
        };
        let ids: Vec<u32> = std::iter::once(101)
            .chain(2000..2030)
            .chain([102, 0])
            .collect();
        let cfg = MlmConfig {
            mlm_probability: 0.3,
            ..MlmConfig::default()
        };
        let out = mask_tokens(&ids, None, &cfg, &tokens, &mut rng_for(2024, 5));
        assert_eq!(out.input_ids, PINNED_IDS.to_vec());
        assert_eq!(out.labels, PINNED_LABELS.to_vec());
    }

    // Selected: 2004 (kept), 2007, 2009, 2015, 2021, 2027 ([MASK]), 2014 (random 26100),
    // 2024 (kept).
    const PINNED_IDS: [u32; 33] = [
        101, 2000, 2001, 2002, 2003, 2004, 2005, 2006, 103, 2008, 103, 2010, 2011, 2012, 2013,
        26100, 103, 2016, 2017, 2018, 2019, 2020, 103, 2022, 2023, 2024, 2025, 2026, 103, 2028,
        2029, 102, 0,
    ];
    const PINNED_LABELS: [i64; 33] = [
        -100, -100, -100, -100, -100, 2004, -100, -100, 2007, -100, 2009, -100, -100, -100, -100,
        2014, 2015, -100, -100, -100, -100, -100, 2021, -100, -100, 2024, -100, -100, 2027, -100,
        -100, -100, -100,
    ];
}

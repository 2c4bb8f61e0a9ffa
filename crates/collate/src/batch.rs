//! Padding rows into tensors: single/pair examples and pooled chunk batches.

use candle_core::{Device, Tensor};

use crate::error::CollateError;

type Result<T> = std::result::Result<T, CollateError>;

/// How far to pad, as HF's `padding=` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// To the longest row of the batch, rounded up to a multiple when given
    /// (`pad_to_multiple_of`, e.g. 8 for tensor cores).
    Longest { multiple_of: Option<usize> },
    /// To exactly this length (a longer row is an error, never cut silently).
    MaxLength(usize),
}

impl Padding {
    fn target(&self, longest: usize) -> usize {
        match *self {
            Padding::Longest {
                multiple_of: Some(m),
            } if m > 1 => longest.div_ceil(m) * m,
            Padding::Longest { .. } => longest,
            Padding::MaxLength(n) => n,
        }
    }
}

/// A row's label.
#[derive(Clone, Debug, PartialEq)]
pub enum Label {
    /// A class index (cross-entropy).
    Class(i64),
    /// A regression target (MSE), as HF with `num_labels == 1`.
    Value(f32),
    /// Per-token labels (MLM), `-100` where ignored; padded with -100.
    Tokens(Vec<i64>),
}

/// One unpadded row.
#[derive(Clone, Debug, PartialEq)]
pub struct Example<'a> {
    pub input_ids: &'a [u32],
    /// Absent: all zeros.
    pub token_type_ids: Option<&'a [u8]>,
    /// Absent: all ones.
    pub attention_mask: Option<&'a [u8]>,
    pub label: Option<Label>,
    /// NSP label (0 IsNext, 1 NotNext) for pre-training.
    pub next_sentence_label: Option<i64>,
}

impl<'a> Example<'a> {
    pub fn new(input_ids: &'a [u32]) -> Self {
        Example {
            input_ids,
            token_type_ids: None,
            attention_mask: None,
            label: None,
            next_sentence_label: None,
        }
    }

    pub fn with_token_types(mut self, types: &'a [u8]) -> Self {
        self.token_type_ids = Some(types);
        self
    }

    pub fn with_label(mut self, class: i64) -> Self {
        self.label = Some(Label::Class(class));
        self
    }
}

/// Padded tensors, `[B, L]` u32 for ids/mask/types.
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    /// `[B]` i64 classes, `[B]` f32 targets, or `[B, L]` i64 token labels.
    pub labels: Option<Tensor>,
    /// `[B]` i64.
    pub next_sentence_label: Option<Tensor>,
    /// Real (non-pad) tokens in the batch.
    pub real_tokens: usize,
}

/// Pads `rows` into a [`Batch`]: ids with `pad_id`, mask and types with 0, token
/// labels with -100.
pub fn collate(rows: &[Example], padding: &Padding, pad_id: u32, device: &Device) -> Result<Batch> {
    if rows.is_empty() {
        return Err(CollateError::Empty);
    }
    let longest = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    let len = padding.target(longest);
    let b = rows.len();
    let mut ids = vec![pad_id; b * len];
    let mut mask = vec![0u32; b * len];
    let mut types = vec![0u32; b * len];
    let mut real_tokens = 0;
    for (r, row) in rows.iter().enumerate() {
        let n = row.input_ids.len();
        if n > len {
            return Err(CollateError::TooLong {
                row: r,
                len: n,
                max_length: len,
            });
        }
        let check = |what, got: usize| {
            if got == n {
                Ok(())
            } else {
                Err(CollateError::LengthMismatch {
                    row: r,
                    what,
                    got,
                    expected: n,
                })
            }
        };
        let at = r * len;
        ids[at..at + n].copy_from_slice(row.input_ids);
        match row.attention_mask {
            Some(m) => {
                check("attention_mask", m.len())?;
                for (d, &s) in mask[at..at + n].iter_mut().zip(m) {
                    *d = s as u32;
                }
                real_tokens += m.iter().filter(|&&v| v != 0).count();
            }
            None => {
                mask[at..at + n].fill(1);
                real_tokens += n;
            }
        }
        if let Some(t) = row.token_type_ids {
            check("token_type_ids", t.len())?;
            for (d, &s) in types[at..at + n].iter_mut().zip(t) {
                *d = s as u32;
            }
        }
        if let Some(Label::Tokens(l)) = &row.label {
            check("labels", l.len())?;
        }
    }
    let labels = labels_tensor(rows, len, device)?;
    let nsp = match rows
        .iter()
        .map(|r| r.next_sentence_label)
        .collect::<Option<Vec<i64>>>()
    {
        Some(v) => Some(Tensor::from_vec(v, b, device)?),
        None => None,
    };
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (b, len), device)?,
        attention_mask: Tensor::from_vec(mask, (b, len), device)?,
        token_type_ids: Tensor::from_vec(types, (b, len), device)?,
        labels,
        next_sentence_label: nsp,
        real_tokens,
    })
}

fn labels_tensor(rows: &[Example], len: usize, device: &Device) -> Result<Option<Tensor>> {
    let b = rows.len();
    match &rows[0].label {
        None => {
            if let Some(r) = rows.iter().position(|r| r.label.is_some()) {
                return Err(CollateError::MixedLabels { row: r });
            }
            Ok(None)
        }
        Some(Label::Class(_)) => {
            let v = rows
                .iter()
                .enumerate()
                .map(|(r, x)| match x.label {
                    Some(Label::Class(c)) => Ok(c),
                    _ => Err(CollateError::MixedLabels { row: r }),
                })
                .collect::<Result<Vec<i64>>>()?;
            Ok(Some(Tensor::from_vec(v, b, device)?))
        }
        Some(Label::Value(_)) => {
            let v = rows
                .iter()
                .enumerate()
                .map(|(r, x)| match x.label {
                    Some(Label::Value(c)) => Ok(c),
                    _ => Err(CollateError::MixedLabels { row: r }),
                })
                .collect::<Result<Vec<f32>>>()?;
            Ok(Some(Tensor::from_vec(v, b, device)?))
        }
        Some(Label::Tokens(_)) => {
            let mut v = vec![berth_masking::IGNORE_INDEX; b * len];
            for (r, x) in rows.iter().enumerate() {
                match &x.label {
                    Some(Label::Tokens(l)) => v[r * len..r * len + l.len()].copy_from_slice(l),
                    _ => return Err(CollateError::MixedLabels { row: r }),
                }
            }
            Ok(Some(Tensor::from_vec(v, (b, len), device)?))
        }
    }
}

/// HF's `DataCollatorForLanguageModeling` (with next-sentence labels on the rows, its
/// pre-training form): masks each row afresh for an epoch (dynamic masking: every
/// epoch sees new masks of the same text) and pads them. The one MLM collation: the
/// trainer's masked-LM and pre-training tasks both batch through it.
#[derive(Clone, Debug)]
pub struct MlmCollator {
    pub masker: berth_masking::DynamicMasker,
    /// Whole-word masking: which ids continue a word (see
    /// [`berth_masking::ContinuationTable`]); without it every piece is its own word.
    pub words: Option<berth_masking::ContinuationTable>,
    pub padding: Padding,
    pub pad_id: u32,
}

impl MlmCollator {
    /// `rows[i]` is dataset row `indices[i]`: its masks depend on (seed, epoch, index)
    /// only, not on its batch. Token types and next-sentence labels are kept; token
    /// labels are the masker's (-100 where not selected, and on padding).
    pub fn collate(
        &self,
        rows: &[Example],
        indices: &[usize],
        epoch: u64,
        device: &Device,
    ) -> Result<Batch> {
        let masked: Vec<berth_masking::Masked> = rows
            .iter()
            .zip(indices)
            .map(|(row, &i)| {
                let starts = self.words.as_ref().map(|w| w.word_starts(row.input_ids));
                self.masker
                    .mask(row.input_ids, starts.as_deref(), epoch, i as u64)
            })
            .collect();
        let examples: Vec<Example> = masked
            .iter()
            .zip(rows)
            .map(|(m, row)| Example {
                input_ids: &m.input_ids,
                label: Some(Label::Tokens(m.labels.clone())),
                ..row.clone()
            })
            .collect();
        collate(&examples, &self.padding, self.pad_id, device)
    }
}

/// One long text's chunks (each `[CLS] .. [SEP]`, unpadded) and its class.
#[derive(Clone, Debug, PartialEq)]
pub struct Document<'a> {
    pub chunks: Vec<&'a [u32]>,
    pub label: Option<i64>,
}

/// B texts with K_1..K_B chunks: chunk tensors `[ΣK, L]` padded to the batch's
/// longest chunk, `doc_offsets` `[B+1]` (text b owns chunk rows
/// `doc_offsets[b]..doc_offsets[b+1]`), labels `[B]`.
#[derive(Debug)]
pub struct ChunkBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    pub doc_offsets: Vec<usize>,
    pub labels: Option<Tensor>,
    pub real_tokens: usize,
}

impl ChunkBatch {
    pub fn num_docs(&self) -> usize {
        self.doc_offsets.len() - 1
    }
}

/// Pads every chunk of every document of the batch into one tensor.
pub fn collate_chunks(
    docs: &[Document],
    padding: &Padding,
    pad_id: u32,
    device: &Device,
) -> Result<ChunkBatch> {
    if docs.is_empty() {
        return Err(CollateError::Empty);
    }
    let mut rows = Vec::new();
    let mut doc_offsets = vec![0];
    for (d, doc) in docs.iter().enumerate() {
        if doc.chunks.is_empty() {
            return Err(CollateError::EmptyDocument { doc: d });
        }
        rows.extend(doc.chunks.iter().map(|c| Example::new(c)));
        doc_offsets.push(rows.len());
    }
    let batch = collate(&rows, padding, pad_id, device)?;
    let labels = match docs.iter().map(|d| d.label).collect::<Option<Vec<i64>>>() {
        Some(v) => Some(Tensor::from_vec(v, docs.len(), device)?),
        None => None,
    };
    Ok(ChunkBatch {
        input_ids: batch.input_ids,
        attention_mask: batch.attention_mask,
        token_type_ids: batch.token_type_ids,
        doc_offsets,
        labels,
        real_tokens: batch.real_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: Device = Device::Cpu;

    #[test]
    fn pads_to_the_longest_row_like_hf() {
        let types = [0u8, 0, 1, 1];
        let rows = [
            Example::new(&[101, 5, 102, 6])
                .with_token_types(&types)
                .with_label(1),
            Example::new(&[101, 102]).with_label(0),
        ];
        let b = collate(&rows, &Padding::Longest { multiple_of: None }, 0, &CPU).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![101, 5, 102, 6], vec![101, 102, 0, 0]]
        );
        assert_eq!(
            b.token_type_ids.to_vec2::<u32>().unwrap(),
            vec![vec![0, 0, 1, 1], vec![0, 0, 0, 0]]
        );
        assert_eq!(
            b.attention_mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1, 1, 1], vec![1, 1, 0, 0]]
        );
        assert_eq!(b.labels.unwrap().to_vec1::<i64>().unwrap(), vec![1, 0]);
        assert_eq!(b.real_tokens, 6);
    }

    #[test]
    fn multiple_of_and_max_length() {
        let rows = [Example::new(&[1, 2, 3, 4, 5])];
        let b = collate(
            &rows,
            &Padding::Longest {
                multiple_of: Some(8),
            },
            9,
            &CPU,
        )
        .unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![1, 2, 3, 4, 5, 9, 9, 9]]
        );
        let b = collate(&rows, &Padding::MaxLength(6), 9, &CPU).unwrap();
        assert_eq!(b.input_ids.dims(), &[1, 6]);
        let err = collate(&rows, &Padding::MaxLength(4), 9, &CPU).unwrap_err();
        assert_eq!(err.to_string(), "row 0 has 5 ids, more than max_length 4");
    }

    #[test]
    fn token_labels_pad_with_minus_100() {
        let mut a = Example::new(&[101, 103, 102]);
        a.label = Some(Label::Tokens(vec![-100, 2023, -100]));
        let mut b = Example::new(&[101, 102]);
        b.label = Some(Label::Tokens(vec![-100, -100]));
        a.next_sentence_label = Some(1);
        b.next_sentence_label = Some(0);
        let out = collate(&[a, b], &Padding::Longest { multiple_of: None }, 0, &CPU).unwrap();
        assert_eq!(
            out.labels.unwrap().to_vec2::<i64>().unwrap(),
            vec![vec![-100, 2023, -100], vec![-100, -100, -100]]
        );
        assert_eq!(
            out.next_sentence_label.unwrap().to_vec1::<i64>().unwrap(),
            vec![1, 0]
        );
    }

    #[test]
    fn mismatched_lengths_and_mixed_labels_are_errors() {
        let mask = [1u8];
        let mut a = Example::new(&[1, 2]);
        a.attention_mask = Some(&mask);
        let err = collate(&[a], &Padding::Longest { multiple_of: None }, 0, &CPU).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 0: attention_mask has 1 values, input_ids has 2"
        );
        let rows = [Example::new(&[1]).with_label(0), Example::new(&[1])];
        assert!(matches!(
            collate(&rows, &Padding::Longest { multiple_of: None }, 0, &CPU),
            Err(CollateError::MixedLabels { row: 1 })
        ));
    }

    #[test]
    fn mlm_batches_get_fresh_masks_each_epoch() {
        let masker = berth_masking::DynamicMasker::new(
            berth_masking::MlmConfig {
                mlm_probability: 0.5,
                ..Default::default()
            },
            berth_masking::MaskingTokens {
                mask: 103,
                pad: 0,
                special_ids: vec![0, 101, 102, 103],
                vocab_size: 1000,
            },
            11,
        )
        .unwrap();
        let a: Vec<u32> = std::iter::once(101).chain(200..260).chain([102]).collect();
        let b = [101u32, 300, 301, 102];
        let collator = MlmCollator {
            masker,
            words: None,
            padding: Padding::Longest { multiple_of: None },
            pad_id: 0,
        };
        let collate_mlm = |rows: &[&[u32]], indices: &[usize], epoch: u64, device: &Device| {
            let rows: Vec<Example> = rows.iter().map(|r| Example::new(r)).collect();
            collator.collate(&rows, indices, epoch, device)
        };
        let e0 = collate_mlm(&[&a, &b], &[4, 9], 0, &CPU).unwrap();
        let e0_again = collate_mlm(&[&a, &b], &[4, 9], 0, &CPU).unwrap();
        let e1 = collate_mlm(&[&a, &b], &[4, 9], 1, &CPU).unwrap();
        let labels = |x: &Batch| x.labels.as_ref().unwrap().to_vec2::<i64>().unwrap();
        assert_eq!(labels(&e0), labels(&e0_again));
        assert_ne!(labels(&e0), labels(&e1));
        // Padding positions of the short row carry -100.
        assert!(labels(&e0)[1][4..].iter().all(|&l| l == -100));
        // A row's masks do not depend on its batch-mates.
        let alone = collate_mlm(&[&b], &[9], 0, &CPU).unwrap();
        assert_eq!(labels(&alone)[0], labels(&e0)[1][..4].to_vec());
    }

    #[test]
    fn chunk_batches_carry_doc_offsets() {
        let (c1, c2, c3) = ([101u32, 1, 2, 102], [101u32, 3, 102], [101u32, 102]);
        let docs = [
            Document {
                chunks: vec![&c1, &c2],
                label: Some(1),
            },
            Document {
                chunks: vec![&c3],
                label: Some(0),
            },
        ];
        let b = collate_chunks(&docs, &Padding::Longest { multiple_of: None }, 0, &CPU).unwrap();
        assert_eq!(b.input_ids.dims(), &[3, 4]);
        assert_eq!(b.doc_offsets, vec![0, 2, 3]);
        assert_eq!(b.num_docs(), 2);
        assert_eq!(b.labels.unwrap().to_vec1::<i64>().unwrap(), vec![1, 0]);
        assert_eq!(b.real_tokens, 9);
        let empty = [Document {
            chunks: vec![],
            label: None,
        }];
        assert!(matches!(
            collate_chunks(&empty, &Padding::Longest { multiple_of: None }, 0, &CPU),
            Err(CollateError::EmptyDocument { doc: 0 })
        ));
    }
}

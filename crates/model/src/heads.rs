//! The heads, as transformers' `<Family>ForSequenceClassification`,
//! `<Family>ForMaskedLM` and `BertForPreTraining`, plus belt_nlp's chunk-pooled
//! classifier. Each family's layout (names, order of dropouts, activation) is in its
//! own file; the heads here run it.

use candle_core::{D, DType, Tensor};

use crate::activation::Activation;
use crate::config::EncoderConfig;
use crate::encoder::Encoder;
use crate::error::{ModelError, Result};
use crate::family::{Family, HeadKind};
use crate::fused::Ops;
use crate::layers::{LayerNorm, Linear, Mode, linear_act};
use crate::layout::{ClassifierHead, layer_norm, linear};
use crate::loss::{IGNORE_INDEX, cross_entropy, mse};
use crate::params::{Init, Params};

/// The classification head of `config`'s family, from its file.
fn classifier_head(config: &EncoderConfig, p: &mut Params) -> Result<ClassifierHead> {
    match config.family {
        Family::Bert => crate::bert::classifier(config, p),
        Family::Roberta | Family::XlmRoberta | Family::Camembert => {
            crate::roberta::classifier(config, p)
        }
        Family::DistilBert => crate::distilbert::classifier(config, p),
        Family::Electra => crate::electra::classifier(config, p),
    }
}

/// The encoder and its family's sequence-classification head (`BertFor...`,
/// `RobertaFor...`, `DistilBertFor...`, `ElectraForSequenceClassification`).
/// `num_labels == 1` is a regressor (MSE), as HF.
pub struct SequenceClassifier {
    pub encoder: Encoder,
    head: ClassifierHead,
    num_labels: usize,
}

impl SequenceClassifier {
    pub fn new(config: &EncoderConfig, p: &mut Params) -> Result<Self> {
        let encoder = Encoder::new(config, p, true, config.family == Family::Bert)?;
        let head = classifier_head(config, p)?;
        Ok(SequenceClassifier {
            encoder,
            head,
            num_labels: config.num_labels(),
        })
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// Logits `[B, num_labels]`. Every head reads only the first token, so the last
    /// layer computes nothing else after its attention
    /// ([`Encoder::forward_first_token`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<Tensor> {
        let out =
            self.encoder
                .forward_first_token(input_ids, token_type_ids, attention_mask, mode)?;
        let first = match (&self.head.dense, out.pooled) {
            (None, Some(pooled)) => pooled,
            (None, None) => {
                return Err(ModelError::Checkpoint("classifier needs a pooler".into()));
            }
            (Some(_), _) => out.sequence.narrow(1, 0, 1)?.squeeze(1)?,
        };
        self.head.forward(&first, mode)
    }

    /// Cross-entropy against class labels `[B]` (i64), or MSE against targets `[B]`
    /// (f32) for a regressor.
    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        if self.num_labels == 1 {
            mse(&logits.squeeze(1)?, labels)
        } else {
            cross_entropy(logits, labels)
        }
    }
}

/// How chunk logits of one text are reduced (`mean` or `max` in a config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Mean,
    Max,
}

impl std::str::FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean" => Ok(Pool::Mean),
            "max" => Ok(Pool::Max),
            other => Err(format!("pooling must be mean or max, not '{other}'")),
        }
    }
}

/// Reduces chunk logits `[ΣK, C]` to text logits `[B, C]`: text `b` owns rows
/// `doc_offsets[b]..doc_offsets[b+1]`. Differentiable, so one loss per text trains all
/// of its chunks in one backward pass.
pub fn pool_chunks(chunk_logits: &Tensor, doc_offsets: &[usize], pool: Pool) -> Result<Tensor> {
    let mut docs = Vec::with_capacity(doc_offsets.len().saturating_sub(1));
    for w in doc_offsets.windows(2) {
        let k = w[1] - w[0];
        if k == 0 {
            return Err(ModelError::Checkpoint(
                "a text with no chunks cannot be pooled".into(),
            ));
        }
        let rows = chunk_logits.narrow(0, w[0], k)?;
        docs.push(match pool {
            Pool::Mean => rows.mean(0)?,
            Pool::Max => rows.max(0)?,
        });
    }
    Ok(Tensor::stack(&docs, 0)?)
}

/// belt_nlp's classifier for long texts: the sequence classifier over every chunk,
/// logits pooled per text, loss on the pooled logits.
pub struct ChunkPooledClassifier {
    pub inner: SequenceClassifier,
    pub pool: Pool,
}

impl ChunkPooledClassifier {
    pub fn new(config: &EncoderConfig, p: &mut Params, pool: Pool) -> Result<Self> {
        Ok(ChunkPooledClassifier {
            inner: SequenceClassifier::new(config, p)?,
            pool,
        })
    }

    /// Text logits `[B, C]` from chunk tensors `[ΣK, L]`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        doc_offsets: &[usize],
        mode: &Mode,
    ) -> Result<Tensor> {
        let chunk_logits = self
            .inner
            .forward(input_ids, token_type_ids, attention_mask, mode)?;
        pool_chunks(&chunk_logits, doc_offsets, self.pool)
    }

    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        self.inner.loss(logits, labels)
    }
}

/// A family's MLM head: dense + activation + LayerNorm, then the decoder tied to the
/// word embeddings, plus a bias (`cls.predictions`, `lm_head`, `vocab_*`).
struct MlmHead {
    dense: Linear,
    norm: LayerNorm,
    bias: Tensor,
    activation: Activation,
}

impl MlmHead {
    fn new(config: &EncoderConfig, p: &mut Params) -> Result<Self> {
        let names = match config.family {
            Family::Bert => &crate::bert::MLM_NAMES,
            Family::Roberta | Family::XlmRoberta | Family::Camembert => &crate::roberta::MLM_NAMES,
            Family::DistilBert => &crate::distilbert::MLM_NAMES,
            Family::Electra => return Err(no_head(config.family, HeadKind::MaskedLm)),
        };
        let h = config.hidden_size;
        let e = config.embedding_size();
        let activation = match names.activation {
            Some(a) => a,
            None => Activation::parse(&config.hidden_act).map_err(ModelError::Checkpoint)?,
        };
        Ok(MlmHead {
            dense: linear(p, names.dense, e, h)?,
            norm: layer_norm(p, names.norm, e, names.eps.unwrap_or(config.layer_norm_eps))?,
            bias: p.get(names.bias, &[config.vocab_size], Init::Zeros)?,
            activation,
        })
    }

    fn forward(&self, sequence: &Tensor, word_embeddings: &Tensor, ops: Ops) -> Result<Tensor> {
        let h = linear_act(&self.dense, self.activation, sequence, ops)?;
        let x = self.norm.forward_with(&h, ops)?;
        let decoder = Linear {
            weight: word_embeddings.clone(),
            bias: Some(self.bias.clone()),
        };
        decoder.forward_with(&x, ops)
    }

    /// Logits `[M, V]` of the positions whose label is not -100 only, with those
    /// labels `[M]`: HF projects every position onto the vocabulary, which for a small
    /// encoder costs more than the encoder itself; the loss and every gradient are the
    /// same. With no labelled position, every position (so the shapes stay valid).
    fn forward_labelled(
        &self,
        sequence: &Tensor,
        word_embeddings: &Tensor,
        labels: &Tensor,
        ops: Ops,
    ) -> Result<(Tensor, Tensor)> {
        let h = sequence.dim(D::Minus1)?;
        let flat_labels = labels.to_dtype(DType::I64)?.flatten_all()?;
        let host = flat_labels.to_vec1::<i64>()?;
        let keep: Vec<u32> = (0..host.len() as u32)
            .filter(|&i| host[i as usize] != IGNORE_INDEX)
            .collect();
        let rows = sequence.reshape(((), h))?;
        if keep.is_empty() {
            return Ok((self.forward(&rows, word_embeddings, ops)?, flat_labels));
        }
        let kept_labels: Vec<i64> = keep.iter().map(|&i| host[i as usize]).collect();
        let n = keep.len();
        let idx = Tensor::from_vec(keep, n, sequence.device())?;
        let picked = rows.index_select(&idx, 0)?;
        Ok((
            self.forward(&picked, word_embeddings, ops)?,
            Tensor::from_vec(kept_labels, n, sequence.device())?,
        ))
    }
}

fn mlm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    cross_entropy(&logits.reshape(((), v))?, &labels.flatten_all()?)
}

/// The error for a head the family does not have.
pub(crate) fn no_head(family: Family, head: HeadKind) -> ModelError {
    let arch = family.architecture(head);
    let why = match (family, head) {
        (Family::Electra, HeadKind::MaskedLm) => format!(
            "an {} discriminator has no masked-LM head ({arch} is ELECTRA's generator, another model)",
            family.name()
        ),
        (Family::Electra, HeadKind::PreTraining) => format!(
            "{arch} is ELECTRA's replaced-token detection head, which Berth does not train (next-sentence prediction is BERT's)"
        ),
        (_, HeadKind::PreTraining) => {
            format!("next-sentence prediction is BERT's; transformers has no {arch}")
        }
        _ => format!("a {} model has no such head", family.name()),
    };
    ModelError::Checkpoint(format!("Berth does not build {arch}: {why}"))
}

/// HF `BertForMaskedLM`, `RobertaForMaskedLM`, `DistilBertForMaskedLM`, ... (no
/// pooler).
pub struct MaskedLm {
    pub encoder: Encoder,
    head: MlmHead,
}

impl MaskedLm {
    pub fn new(config: &EncoderConfig, p: &mut Params) -> Result<Self> {
        if !config.family.has_head(HeadKind::MaskedLm) {
            return Err(no_head(config.family, HeadKind::MaskedLm));
        }
        Ok(MaskedLm {
            encoder: Encoder::new(config, p, true, false)?,
            head: MlmHead::new(config, p)?,
        })
    }

    /// Token logits `[B, L, V]`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<Tensor> {
        let out = self
            .encoder
            .forward(input_ids, token_type_ids, attention_mask, mode)?;
        self.head
            .forward(&out.sequence, self.encoder.word_embeddings(), mode.ops())
    }

    /// Logits `[M, V]` of the M positions whose label is not -100 (in row-major order
    /// over `[B, L]`) and their labels `[M]`: what the loss and MLM accuracy need,
    /// without projecting unlabelled positions onto the vocabulary.
    pub fn forward_labelled(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        labels: &Tensor,
        mode: &Mode,
    ) -> Result<(Tensor, Tensor)> {
        let out = self
            .encoder
            .forward(input_ids, token_type_ids, attention_mask, mode)?;
        self.head.forward_labelled(
            &out.sequence,
            self.encoder.word_embeddings(),
            labels,
            mode.ops(),
        )
    }

    /// Cross-entropy over positions whose label is not -100.
    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        mlm_loss(logits, labels)
    }
}

/// HF `BertForPreTraining`: MLM + NSP (`cls.seq_relationship`), loss their sum.
/// BERT's only.
pub struct PreTraining {
    pub encoder: Encoder,
    head: MlmHead,
    seq_relationship: Linear,
}

impl PreTraining {
    pub fn new(config: &EncoderConfig, p: &mut Params) -> Result<Self> {
        if !config.family.has_head(HeadKind::PreTraining) {
            return Err(no_head(config.family, HeadKind::PreTraining));
        }
        Ok(PreTraining {
            encoder: Encoder::new(config, p, true, true)?,
            head: MlmHead::new(config, p)?,
            seq_relationship: linear(p, "cls.seq_relationship", 2, config.hidden_size)?,
        })
    }

    /// The encoder's sequence output and the next-sentence logits `[B, 2]`.
    fn encode(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<(Tensor, Tensor)> {
        let out = self
            .encoder
            .forward(input_ids, token_type_ids, attention_mask, mode)?;
        let pooled = out
            .pooled
            .ok_or_else(|| ModelError::Checkpoint("pre-training needs a pooler".into()))?;
        Ok((
            out.sequence,
            self.seq_relationship.forward_with(&pooled, mode.ops())?,
        ))
    }

    /// (token logits `[B, L, V]`, next-sentence logits `[B, 2]`).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &Mode,
    ) -> Result<(Tensor, Tensor)> {
        let (sequence, nsp) = self.encode(input_ids, token_type_ids, attention_mask, mode)?;
        let logits = self
            .head
            .forward(&sequence, self.encoder.word_embeddings(), mode.ops())?;
        Ok((logits, nsp))
    }

    /// (MLM logits `[M, V]` of the labelled positions, their labels `[M]`,
    /// next-sentence logits `[B, 2]`); see [`MaskedLm::forward_labelled`].
    pub fn forward_labelled(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        labels: &Tensor,
        mode: &Mode,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (sequence, nsp) = self.encode(input_ids, token_type_ids, attention_mask, mode)?;
        let (logits, kept) = self.head.forward_labelled(
            &sequence,
            self.encoder.word_embeddings(),
            labels,
            mode.ops(),
        )?;
        Ok((logits, kept, nsp))
    }

    /// MLM loss + NSP loss.
    pub fn loss(
        &self,
        mlm_logits: &Tensor,
        nsp_logits: &Tensor,
        labels: &Tensor,
        next_sentence_label: &Tensor,
    ) -> Result<Tensor> {
        let (mlm, nsp) = self.loss_parts(mlm_logits, nsp_logits, labels, next_sentence_label)?;
        Ok((mlm + nsp)?)
    }

    /// The two means whose sum is [`PreTraining::loss`]: MLM over the scored tokens,
    /// NSP over the pairs (a trainer weighs them apart across accumulated batches).
    pub fn loss_parts(
        &self,
        mlm_logits: &Tensor,
        nsp_logits: &Tensor,
        labels: &Tensor,
        next_sentence_label: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        Ok((
            mlm_loss(mlm_logits, labels)?,
            cross_entropy(nsp_logits, next_sentence_label)?,
        ))
    }
}

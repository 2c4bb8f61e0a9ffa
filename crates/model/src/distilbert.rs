//! DistilBERT (transformers `modeling_distilbert.py`): no token types, no pooler,
//! its own layer names under `distilbert.transformer.layer`, no dropout on the
//! attention output, optional fixed sinusoidal positions, `pre_classifier` + ReLU,
//! and `vocab_transform` / `vocab_layer_norm` / `vocab_projector`.

use candle_core::Tensor;

use crate::config::EncoderConfig;
use crate::error::Result;
use crate::layout::{ClassifierHead, LayerNames, MlmNames, Squash, linear};
use crate::params::{Init, Params};

pub(crate) const LAYER_NAMES: LayerNames = LayerNames {
    stack: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    out_norm: "output_layer_norm",
    attn_output_dropout: false,
};

/// The position table, a variable; with `sinusoidal_pos_embds` one that starts, when
/// the checkpoint lacks it, from the table transformers' `create_sinusoidal_embeddings`
/// writes (transformers 5 copies that table into a trainable parameter, so it trains
/// and is saved).
pub(crate) fn position_embeddings(p: &mut Params, at: &str, cfg: &EncoderConfig) -> Result<Tensor> {
    let (n, dim) = (cfg.max_position_embeddings, cfg.hidden_size);
    let name = format!("{at}.position_embeddings.weight");
    if cfg.sinusoidal_pos_embds != Some(true) {
        return p.get(&name, &[n, dim], Init::Normal);
    }
    p.get_or_table(&name, &[n, dim], sinusoidal(n, dim))
}

/// `out[pos, j] = sin/cos(pos / 10000^(2 (j / 2) / dim))`, sin at even `j`.
pub(crate) fn sinusoidal(n: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * dim);
    for pos in 0..n {
        for j in 0..dim {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            out.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    out
}

/// `DistilBertForSequenceClassification`: first token -> `pre_classifier` -> ReLU
/// -> dropout (`seq_classif_dropout`) -> `classifier`.
pub(crate) fn classifier(cfg: &EncoderConfig, p: &mut Params) -> Result<ClassifierHead> {
    let h = cfg.hidden_size;
    Ok(ClassifierHead {
        dense: Some((linear(p, "pre_classifier", h, h)?, Squash::Relu)),
        dropout_before_dense: false,
        out: linear(p, "classifier", cfg.num_labels(), h)?,
        dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
    })
}

/// `vocab_transform` -> `activation` -> `vocab_layer_norm` (eps 1e-12) ->
/// `vocab_projector`, tied to the word embeddings.
pub(crate) const MLM_NAMES: MlmNames = MlmNames {
    dense: "vocab_transform",
    norm: "vocab_layer_norm",
    bias: "vocab_projector.bias",
    activation: None,
    eps: Some(1e-12),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_positions_are_transformers_table() {
        // create_sinusoidal_embeddings(n_pos=3, dim=4): row 1 is
        // sin(1), cos(1), sin(1 / 100), cos(1 / 100); row 0 is 0, 1, 0, 1.
        let t = sinusoidal(3, 4);
        let want = [
            0.0,
            1.0,
            0.0,
            1.0,
            1f64.sin(),
            1f64.cos(),
            0.01f64.sin(),
            0.01f64.cos(),
        ];
        for (got, want) in t.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-7, "{t:?}");
        }
        assert!((t[8] as f64 - 2f64.sin()).abs() < 1e-7);
    }

    #[test]
    fn a_missing_sinusoidal_table_starts_as_transformers_table_and_is_a_parameter() {
        let mut cfg = EncoderConfig::tiny();
        cfg.family = crate::Family::DistilBert;
        cfg.type_vocab_size = 0;
        cfg.sinusoidal_pos_embds = Some(true);
        let mut p = Params::random(&candle_core::Device::Cpu, 0, 0.02);
        crate::Encoder::new(&cfg, &mut p, true, false).unwrap();
        let (varmap, _) = p.finish();
        let data = varmap.data().lock().unwrap();
        let table = data["distilbert.embeddings.position_embeddings.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(
            table,
            sinusoidal(cfg.max_position_embeddings, cfg.hidden_size)
        );
        // The next parameter is drawn as usual, not from the table.
        let ln = data["distilbert.embeddings.LayerNorm.weight"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert!(ln.iter().all(|&v| v == 1.0));
    }
}

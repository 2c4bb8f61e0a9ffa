//! `berth-model`: trainable candle encoders equal to transformers' (BERT, RoBERTa,
//! XLM-RoBERTa, CamemBERT, DistilBERT, ELECTRA; one [`Encoder`] chosen by
//! `config.json`'s `model_type`), their heads (sequence classification, chunk-pooled
//! classification, masked LM, BERT pre-training), and HF-compatible checkpoints.
//!
//! Every parameter is an f32 `Var` in a `VarMap`, so all are trainable. On the CPU the
//! forward pass runs Berth's fused ops ([`fused`]), each with its own backward; the
//! composed path beside them (candle primitives only, never candle's own fused
//! LayerNorm or softmax, which record no backward) is the reference the tests compare
//! against, selected with [`Ops::Composed`] or `BERTH_OPS=composed`.
//!
//! ```
//! use berth_model::{EncoderConfig, Mode, Params, SequenceClassifier};
//! use candle_core::{Device, Tensor};
//!
//! let cfg = EncoderConfig::tiny();
//! let mut params = Params::random(&Device::Cpu, 0, cfg.initializer_range);
//! let model = SequenceClassifier::new(&cfg, &mut params).unwrap();
//! let ids = Tensor::new(&[[1u32, 5, 9, 2]], &Device::Cpu).unwrap();
//! let logits = model.forward(&ids, None, None, &Mode::eval()).unwrap();
//! assert_eq!(logits.dims(), &[1, 2]);
//! ```

mod activation;
mod attention;
mod bert;
mod checkpoint;
mod config;
mod distilbert;
mod electra;
mod encoder;
mod error;
mod family;
pub mod fused;
mod heads;
mod layers;
mod layout;
mod loss;
mod params;
mod roberta;

pub use activation::Activation;
pub use checkpoint::{
    io_error as checkpoint_io_error, open_dir, resolve_model_dir, save, save_into,
    write_dir_atomically,
};
pub use config::EncoderConfig;
pub use encoder::{Encoder, EncoderOutput};
pub use error::{ModelError, Result};
pub use family::{Family, HeadKind};
pub use fused::Ops;
pub use heads::{
    ChunkPooledClassifier, MaskedLm, Pool, PreTraining, SequenceClassifier, pool_chunks,
};
pub use layers::{LayerNorm, Linear, Mode, linear_act, softmax_last};
pub use loss::{
    IGNORE_INDEX, bce_with_logits, cross_entropy, cross_entropy_composed, cross_entropy_with, mse,
};
pub use params::{Counts, Init, LoadReport, Params};

#[cfg(test)]
mod tests;

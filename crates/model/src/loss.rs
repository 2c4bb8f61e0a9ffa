//! Losses with PyTorch's semantics: cross-entropy that skips label -100 (candle's has
//! no ignore index) and mean squared error.

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::fused::Ops;

/// The label PyTorch's cross-entropy skips (`ignore_index`): the masker's, so there is
/// one definition.
pub use berth_masking::IGNORE_INDEX;

/// PyTorch's `BCEWithLogitsLoss` (mean over every element): `logits` and 0/1
/// `targets` `[B, C]`, in the stable form `max(x, 0) - x·y + log(1 + e^-|x|)`. HF's
/// loss for `problem_type = "multi_label_classification"`.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let x = logits.to_dtype(DType::F32)?;
    let y = targets.to_dtype(DType::F32)?;
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((x.relu()? - (&x * &y)?)? + soft)?.mean_all()?)
}

/// Mean cross-entropy of `logits` `[N, C]` against `labels` `[N]` (i64), over the
/// rows whose label is not -100. With no such row the loss is 0 (PyTorch gives NaN).
/// The fused op on a CPU tensor (unless `BERTH_OPS=composed`), else
/// [`cross_entropy_composed`].
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    cross_entropy_with(logits, labels, Ops::from_env())
}

/// [`cross_entropy`] with the ops chosen by the caller.
pub fn cross_entropy_with(logits: &Tensor, labels: &Tensor, ops: Ops) -> Result<Tensor> {
    if ops.fused_on(logits.device()) {
        let labels = labels
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        return Ok(crate::fused::cross_entropy(logits, &labels)?);
    }
    cross_entropy_composed(logits, labels)
}

/// The reference cross-entropy from candle primitives (log-softmax, gather, mask).
pub fn cross_entropy_composed(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let labels = labels.to_dtype(DType::I64)?;
    let keep = labels.ne(IGNORE_INDEX)?;
    let safe = keep.where_cond(&labels, &labels.zeros_like()?)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probs.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    let keep_f = keep.to_dtype(DType::F32)?;
    let count = keep_f.sum_all()?.to_scalar::<f32>()?;
    let total = (picked * &keep_f)?.sum_all()?;
    Ok((total.neg()? / count.max(1.0) as f64)?)
}

/// Mean squared error of `pred` `[N]` against `target` `[N]`.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let pred = pred.to_dtype(DType::F32)?;
    Ok(pred.sub(&target.to_dtype(DType::F32)?)?.sqr()?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_hand_values_and_skips_minus_100() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2f32, 0., 0.], [0., 1., 0.], [5., 5., 5.]], &dev).unwrap();
        let labels = Tensor::new(&[0i64, 2, -100], &dev).unwrap();
        for ops in [Ops::Fused, Ops::Composed] {
            let got = cross_entropy_with(&logits, &labels, ops)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let l0 = -(2f32.exp() / (2f32.exp() + 2.)).ln();
            let l1 = -(1. / (1f32.exp() + 2.)).ln();
            assert!((got - (l0 + l1) / 2.).abs() < 1e-6, "{ops:?}: {got}");
            let none = Tensor::new(&[-100i64, -100, -100], &dev).unwrap();
            assert_eq!(
                cross_entropy_with(&logits, &none, ops)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                0.0
            );
        }
    }

    #[test]
    fn mse_is_the_mean_square() {
        let dev = Device::Cpu;
        let a = Tensor::new(&[1f32, 2., 3.], &dev).unwrap();
        let b = Tensor::new(&[1f32, 0., 0.], &dev).unwrap();
        assert!((mse(&a, &b).unwrap().to_scalar::<f32>().unwrap() - 13. / 3.).abs() < 1e-6);
    }

    #[test]
    fn bce_with_logits_equals_torch() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.5f32, -1.0, 30.0], [2.0, 0.0, -40.0]], &dev).unwrap();
        let y = Tensor::new(&[[1f32, 0.0, 1.0], [0.0, 1.0, 0.0]], &dev).unwrap();
        let l = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        // torch.nn.BCEWithLogitsLoss()(x, y) with torch 2.11.
        assert!((l - 0.601_235_7).abs() < 1e-6, "{l}");
    }
}

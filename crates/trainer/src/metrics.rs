//! Evaluation metrics, as scikit-learn / `evaluate` compute them.

use std::collections::BTreeMap;

/// Classification metrics from predicted and true classes (`num_classes` >= 2).
/// Binary tasks (2 classes) report precision/recall/F1 of class 1 (sklearn's
/// `average="binary"`) plus macro F1; more classes report macro averages.
pub fn classification(preds: &[i64], labels: &[i64], num_classes: usize) -> BTreeMap<String, f64> {
    let k = num_classes.max(2);
    let mut cm = vec![vec![0u64; k]; k];
    for (&p, &l) in preds.iter().zip(labels) {
        if (0..k as i64).contains(&p) && (0..k as i64).contains(&l) {
            cm[l as usize][p as usize] += 1;
        }
    }
    let n = preds.len() as f64;
    let correct: u64 = (0..k).map(|i| cm[i][i]).sum();
    let mut out = BTreeMap::new();
    out.insert(
        "accuracy".into(),
        if n > 0.0 { correct as f64 / n } else { 0.0 },
    );

    let per_class: Vec<(f64, f64, f64)> = (0..k)
        .map(|c| {
            let tp = cm[c][c] as f64;
            let predicted: f64 = (0..k).map(|l| cm[l][c] as f64).sum();
            let actual: f64 = cm[c].iter().map(|&x| x as f64).sum();
            let precision = if predicted > 0.0 { tp / predicted } else { 0.0 };
            let recall = if actual > 0.0 { tp / actual } else { 0.0 };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            (precision, recall, f1)
        })
        .collect();
    let macro_of = |f: fn(&(f64, f64, f64)) -> f64| per_class.iter().map(f).sum::<f64>() / k as f64;
    if k == 2 {
        out.insert("precision".into(), per_class[1].0);
        out.insert("recall".into(), per_class[1].1);
        out.insert("f1".into(), per_class[1].2);
    } else {
        out.insert("precision".into(), macro_of(|x| x.0));
        out.insert("recall".into(), macro_of(|x| x.1));
        out.insert("f1".into(), macro_of(|x| x.2));
    }
    out.insert("f1_macro".into(), macro_of(|x| x.2));
    out.insert("mcc".into(), mcc(&cm));
    out
}

/// Matthews correlation (sklearn's multiclass form; 0 when undefined).
fn mcc(cm: &[Vec<u64>]) -> f64 {
    let k = cm.len();
    let s: f64 = cm.iter().flatten().map(|&x| x as f64).sum();
    let c: f64 = (0..k).map(|i| cm[i][i] as f64).sum();
    let t: Vec<f64> = (0..k).map(|i| cm[i].iter().sum::<u64>() as f64).collect();
    let p: Vec<f64> = (0..k)
        .map(|j| (0..k).map(|i| cm[i][j]).sum::<u64>() as f64)
        .collect();
    let tp: f64 = t.iter().zip(&p).map(|(a, b)| a * b).sum();
    let num = c * s - tp;
    let den = ((s * s - p.iter().map(|x| x * x).sum::<f64>())
        * (s * s - t.iter().map(|x| x * x).sum::<f64>()))
    .sqrt();
    if den == 0.0 { 0.0 } else { num / den }
}

/// Index of the largest value (first on ties, as numpy's argmax): the one argmax of
/// evaluation and `berth predict`, so they agree on every row.
pub fn argmax(row: &[f32]) -> i64 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as i64
}

/// Running sums for MLM (and NSP) evaluation.
#[derive(Clone, Debug, Default)]
pub struct LmCounts {
    pub mlm_loss_sum: f64,
    pub mlm_tokens: u64,
    pub mlm_correct: u64,
    pub nsp_correct: u64,
    pub nsp_total: u64,
}

impl LmCounts {
    /// `mlm_accuracy`, `perplexity` = exp(mean token loss), and `nsp_accuracy` when
    /// NSP was scored.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if self.mlm_tokens > 0 {
            let mean = self.mlm_loss_sum / self.mlm_tokens as f64;
            out.insert("mlm_loss".into(), mean);
            out.insert("perplexity".into(), mean.exp());
            out.insert(
                "mlm_accuracy".into(),
                self.mlm_correct as f64 / self.mlm_tokens as f64,
            );
        }
        if self.nsp_total > 0 {
            out.insert(
                "nsp_accuracy".into(),
                self.nsp_correct as f64 / self.nsp_total as f64,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn binary_metrics_by_hand() {
        // labels 1 1 1 1 0 0 0 0 0 0, preds 1 1 1 0 1 0 0 0 0 0:
        // tp 3, fn 1, fp 1, tn 5.
        let labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0];
        let preds = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0];
        let m = classification(&preds, &labels, 2);
        close(m["accuracy"], 0.8);
        close(m["precision"], 0.75);
        close(m["recall"], 0.75);
        close(m["f1"], 0.75);
        // class 0: precision 5/6, recall 5/6, f1 5/6; macro (0.75 + 5/6) / 2
        close(m["f1_macro"], (0.75 + 5.0 / 6.0) / 2.0);
        // (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 14 / sqrt(4*4*6*6) = 14/24
        close(m["mcc"], 14.0 / 24.0);
    }

    #[test]
    fn degenerate_predictions_give_zero_not_nan() {
        let m = classification(&[0, 0, 0], &[0, 1, 1], 2);
        close(m["precision"], 0.0);
        close(m["f1"], 0.0);
        close(m["mcc"], 0.0);
        close(m["accuracy"], 1.0 / 3.0);
    }

    #[test]
    fn multiclass_macro_and_mcc() {
        // sklearn: matthews_corrcoef([0,1,2,2,1,0], [0,2,2,2,1,1])
        // cm rows = true: [1,1,0],[0,1,1],[0,0,2]; c=4, s=6, t=[2,2,2], p=[1,2,3]
        // num = 4*6 - (2+4+6) = 12; den = sqrt((36-14)*(36-12)) = sqrt(528)
        let m = classification(&[0, 2, 2, 2, 1, 1], &[0, 1, 2, 2, 1, 0], 3);
        close(m["mcc"], 12.0 / 528f64.sqrt());
        close(m["accuracy"], 4.0 / 6.0);
        // precision per class [1, 1/2, 2/3], recall [1/2, 1/2, 1]
        close(m["precision"], (1.0 + 0.5 + 2.0 / 3.0) / 3.0);
        close(m["recall"], (0.5 + 0.5 + 1.0) / 3.0);
    }

    #[test]
    fn perplexity_is_exp_of_mean_token_loss() {
        let c = LmCounts {
            mlm_loss_sum: 20.0,
            mlm_tokens: 10,
            mlm_correct: 4,
            nsp_correct: 3,
            nsp_total: 4,
        };
        let m = c.metrics();
        close(m["perplexity"], 2f64.exp());
        close(m["mlm_accuracy"], 0.4);
        close(m["nsp_accuracy"], 0.75);
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
    }
}

//! Whole-model tests: every parameter of every head gets a gradient, the gradients
//! match finite differences, checkpoints round-trip, and MiniLM's real weights load.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::*;

fn batch(dev: &Device) -> (Tensor, Tensor, Tensor) {
    let ids = Tensor::new(&[[1u32, 7, 9, 12, 2, 0], [1, 30, 31, 2, 0, 0]], dev).unwrap();
    let types = Tensor::new(&[[0u32, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], dev).unwrap();
    (ids, types, mask)
}

fn vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_all_grads(varmap: &VarMap, loss: &Tensor, except: &[&str]) {
    let grads = loss.backward().unwrap();
    for (name, var) in vars(varmap) {
        if except.iter().any(|e| name.contains(e)) {
            continue;
        }
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let g = g
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|&x| x != 0.0), "{name}: zero gradient");
    }
}

#[test]
fn every_parameter_of_every_head_gets_a_gradient() {
    let dev = Device::Cpu;
    let cfg = EncoderConfig::tiny();
    let (ids, types, mask) = batch(&dev);
    let mode = Mode::train(1);

    let mut p = Params::random(&dev, 0, cfg.initializer_range);
    let cls = SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (vm, _) = p.finish();
    let logits = cls.forward(&ids, Some(&types), Some(&mask), &mode).unwrap();
    let loss = cls
        .loss(&logits, &Tensor::new(&[1i64, 0], &dev).unwrap())
        .unwrap();
    // Position rows past the batch length get no gradient; check the table as a whole.
    assert_all_grads(&vm, &loss, &[]);

    let mut p = Params::random(&dev, 0, cfg.initializer_range);
    let pooled = ChunkPooledClassifier::new(&cfg, &mut p, Pool::Max).unwrap();
    let (vm, _) = p.finish();
    let logits = pooled
        .forward(&ids, Some(&types), Some(&mask), &[0, 1, 2], &mode)
        .unwrap();
    assert_eq!(logits.dims(), &[2, 2]);
    let loss = pooled
        .loss(&logits, &Tensor::new(&[1i64, 0], &dev).unwrap())
        .unwrap();
    assert_all_grads(&vm, &loss, &[]);

    let labels = Tensor::new(
        &[
            [-100i64, 7, -100, 12, -100, -100],
            [-100, -100, 31, -100, -100, -100],
        ],
        &dev,
    )
    .unwrap();
    let mut p = Params::random(&dev, 0, cfg.initializer_range);
    let mlm = MaskedLm::new(&cfg, &mut p).unwrap();
    let (vm, _) = p.finish();
    let logits = mlm.forward(&ids, Some(&types), Some(&mask), &mode).unwrap();
    assert_eq!(logits.dims(), &[2, 6, cfg.vocab_size]);
    assert_all_grads(&vm, &mlm.loss(&logits, &labels).unwrap(), &[]);

    let mut p = Params::random(&dev, 0, cfg.initializer_range);
    let pre = PreTraining::new(&cfg, &mut p).unwrap();
    let (vm, _) = p.finish();
    let (m, n) = pre.forward(&ids, Some(&types), Some(&mask), &mode).unwrap();
    let loss = pre
        .loss(&m, &n, &labels, &Tensor::new(&[0i64, 1], &dev).unwrap())
        .unwrap();
    assert_all_grads(&vm, &loss, &[]);
}

#[test]
fn gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let mut cfg = EncoderConfig::tiny();
    cfg.hidden_dropout_prob = 0.0;
    cfg.attention_probs_dropout_prob = 0.0;
    let (ids, types, mask) = batch(&dev);
    let labels = Tensor::new(&[1i64, 0], &dev).unwrap();
    let mut p = Params::random(&dev, 3, 0.2);
    let model = SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (vm, _) = p.finish();
    let loss_of = || -> f64 {
        let logits = model
            .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
            .unwrap();
        model
            .loss(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let logits = model
        .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
        .unwrap();
    let grads = model.loss(&logits, &labels).unwrap().backward().unwrap();
    let eps = 1e-2f64;
    let mut checked = 0;
    for (name, var) in vars(&vm) {
        // One element of each kind of parameter, across the whole network.
        if !(name.contains("layer.1.attention.self.query.weight")
            || name.contains("layer.0.output.LayerNorm.weight")
            || name.contains("word_embeddings")
            || name.contains("pooler.dense.bias")
            || name.contains("classifier.weight")
            || name.contains("layer.0.intermediate.dense.weight"))
        {
            continue;
        }
        let orig = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // The element with the largest gradient, where the check is most telling.
        let i = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        let set = |delta: f64| {
            let mut v = orig.clone();
            v[i] = (v[i] as f64 + delta) as f32;
            var.set(&Tensor::from_vec(v, var.as_tensor().shape(), &dev).unwrap())
                .unwrap();
        };
        set(eps);
        let up = loss_of();
        set(-eps);
        let down = loss_of();
        set(0.0);
        let numeric = (up - down) / (2.0 * eps);
        let analytic = g[i] as f64;
        let tol = 2e-2 * analytic.abs().max(1e-2);
        assert!(
            (numeric - analytic).abs() <= tol,
            "{name}[{i}]: numeric {numeric} vs analytic {analytic}"
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn a_saved_checkpoint_loads_back_to_identical_outputs() {
    let dev = Device::Cpu;
    let mut cfg = EncoderConfig::tiny();
    cfg.set_labels(&["neg".into(), "neu".into(), "pos".into()]);
    let mut p = Params::random(&dev, 9, cfg.initializer_range);
    let model = SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (vm, _) = p.finish();
    let (ids, types, mask) = batch(&dev);
    let before = model
        .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ckpt");
    save(&out, &cfg, "BertForSequenceClassification", &vm).unwrap();
    let (cfg2, mut p2) = open_dir(&out, &dev, 0).unwrap();
    assert_eq!(cfg2.num_labels(), 3);
    assert_eq!(cfg2.label_name(2), Some("pos"));
    assert_eq!(
        cfg2.architectures.as_deref(),
        Some(&["BertForSequenceClassification".to_string()][..])
    );
    let loaded = SequenceClassifier::new(&cfg2, &mut p2).unwrap();
    let (_, report) = p2.finish();
    assert_eq!(report, LoadReport::default());
    let after = loaded
        .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
        .unwrap();
    assert_eq!(
        before.to_vec2::<f32>().unwrap(),
        after.to_vec2::<f32>().unwrap()
    );
    // Only the checkpoint directory is left: no temp directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn minilm_loads_with_new_heads_listed_and_runs() {
    let Some(dir) = berth_testkit::minilm_dir() else {
        return;
    };
    let dev = Device::Cpu;
    let (cfg, mut p) = open_dir(&dir, &dev, 0).unwrap();
    let model = SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (_, report) = p.finish();
    // MiniLM is a bare BertModel (no "bert." prefix): only the classifier is new.
    assert_eq!(
        report.newly_initialized,
        vec!["classifier.weight", "classifier.bias"]
    );
    assert_eq!(report.unexpected, Vec::<String>::new());
    let (ids, types, mask) = batch(&dev);
    let out = model
        .encoder
        .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
        .unwrap();
    assert_eq!(out.sequence.dims(), &[2, 6, 384]);
    let pooled = out.pooled.unwrap().to_vec2::<f32>().unwrap();
    assert!(
        pooled
            .iter()
            .flatten()
            .all(|v| v.is_finite() && v.abs() <= 1.0)
    );
    // bf16 compute gives the same hidden states to bf16 precision.
    let mut bf = model;
    bf.encoder.set_compute_dtype(DType::BF16);
    let low = bf
        .encoder
        .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
        .unwrap();
    let diff = (low.sequence.to_dtype(DType::F32).unwrap() - &out.sequence)
        .unwrap()
        .abs()
        .unwrap();
    let max = diff
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(max < 0.25, "bf16 drifts {max}");
}

#[test]
fn pooling_reduces_chunks_per_text() {
    let dev = Device::Cpu;
    let logits = Tensor::new(&[[1f32, 4.], [3., 0.], [5., 5.]], &dev).unwrap();
    let mean = pool_chunks(&logits, &[0, 2, 3], Pool::Mean).unwrap();
    assert_eq!(
        mean.to_vec2::<f32>().unwrap(),
        vec![vec![2., 2.], vec![5., 5.]]
    );
    let max = pool_chunks(&logits, &[0, 2, 3], Pool::Max).unwrap();
    assert_eq!(
        max.to_vec2::<f32>().unwrap(),
        vec![vec![3., 4.], vec![5., 5.]]
    );
    assert!(pool_chunks(&logits, &[0, 0, 3], Pool::Mean).is_err());
}

#[test]
fn a_hub_id_resolves_offline_from_an_hf_hub_cache() {
    let Some(minilm) = berth_testkit::minilm_dir() else {
        return;
    };
    let hub = tempfile::tempdir().unwrap();
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    let repo = hub
        .path()
        .join("models--sentence-transformers--all-MiniLM-L6-v2");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
    ] {
        // hf-hub's snapshots hold symlinks into blobs/; a link to the fixture is the same shape.
        std::os::unix::fs::symlink(minilm.join(f), snap.join(f)).unwrap();
    }
    let opts = berth_hub::HubOptions::offline(hub.path());
    let dir = resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", &opts).unwrap();
    assert_eq!(dir, snap);
    let (cfg, _) = open_dir(&dir, &Device::Cpu, 0).unwrap();
    assert_eq!(cfg.hidden_size, 384);
    let err = resolve_model_dir("nobody/nothing", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nobody/nothing") && err.contains("not in the cache"),
        "{err}"
    );
}

#[test]
fn minilm_matches_transformers_within_1e_4() {
    let Some(dir) = berth_testkit::minilm_dir() else {
        return;
    };
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let dev = Device::Cpu;
    let grid = |key: &str| -> Tensor {
        let rows: Vec<Vec<u32>> = serde_json::from_value(reference[key].clone()).unwrap();
        let (b, l) = (rows.len(), rows[0].len());
        Tensor::from_vec(rows.concat(), (b, l), &dev).unwrap()
    };
    let (ids, types, mask) = (
        grid("input_ids"),
        grid("token_type_ids"),
        grid("attention_mask"),
    );
    let (cfg, mut p) = open_dir(&dir, &dev, 0).unwrap();
    let model = Encoder::new(&cfg, &mut p, false, true).unwrap();
    let out = model
        .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
        .unwrap();
    let want_hidden: Vec<Vec<Vec<f64>>> =
        serde_json::from_value(reference["hidden_first16"].clone()).unwrap();
    let got_hidden = out
        .sequence
        .narrow(2, 0, 16)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let want_pooled: Vec<Vec<f64>> = serde_json::from_value(reference["pooled"].clone()).unwrap();
    let got_pooled = out.pooled.unwrap().to_vec2::<f32>().unwrap();
    let mut worst = 0f64;
    for (g, w) in got_hidden
        .iter()
        .flatten()
        .flatten()
        .zip(want_hidden.iter().flatten().flatten())
    {
        worst = worst.max((*g as f64 - w).abs());
    }
    for (g, w) in got_pooled
        .iter()
        .flatten()
        .zip(want_pooled.iter().flatten())
    {
        worst = worst.max((*g as f64 - w).abs());
    }
    assert_eq!(got_pooled.len() * got_pooled[0].len(), 2 * 384);
    assert!(
        worst < 1e-4,
        "largest difference from the reference: {worst}"
    );

    // BertForSequenceClassification logits, with the classifier weights transformers
    // used (stored in the reference).
    let mut tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &dev).unwrap();
    let w: Vec<Vec<f32>> = serde_json::from_value(reference["classifier_weight"].clone()).unwrap();
    let b: Vec<f32> = serde_json::from_value(reference["classifier_bias"].clone()).unwrap();
    tensors.insert(
        "classifier.weight".into(),
        Tensor::from_vec(w.concat(), (w.len(), w[0].len()), &dev).unwrap(),
    );
    tensors.insert("classifier.bias".into(), Tensor::new(b, &dev).unwrap());
    let mut p = Params::with_checkpoint(tensors, dir.join("model.safetensors"), &dev, 0, 0.02);
    let clf = SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (_, report) = p.finish();
    assert!(report.newly_initialized.is_empty(), "{report:?}");
    let logits = clf
        .forward(&ids, Some(&types), Some(&mask), &Mode::eval())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(reference["logits"].clone()).unwrap();
    let worst_logit = logits
        .iter()
        .flatten()
        .zip(want.iter().flatten())
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0f64, f64::max);
    eprintln!(
        "largest difference from transformers: hidden/pooled {worst:.2e}, logits {worst_logit:.2e}"
    );
    assert!(
        worst_logit < 1e-4,
        "logits {logits:?} vs transformers {want:?}"
    );
}

#[test]
fn a_detached_view_shares_weights_but_records_no_graph() {
    let cfg = EncoderConfig::tiny();
    let mut p = Params::random(&Device::Cpu, 3, cfg.initializer_range);
    let train = SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (varmap, _) = p.finish();
    let view = SequenceClassifier::new(
        &cfg,
        &mut Params::detached_view(&varmap, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 2]], &Device::Cpu).unwrap();
    let a = train.forward(&ids, None, None, &Mode::eval()).unwrap();
    let b = view.forward(&ids, None, None, &Mode::eval()).unwrap();
    assert!(a.track_op() && !b.track_op());
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    // An update through the Var shows in the view.
    let var = varmap.data().lock().unwrap()["classifier.bias"].clone();
    var.set(&Tensor::new(&[5f32, -5.0], &Device::Cpu).unwrap())
        .unwrap();
    let c = view.forward(&ids, None, None, &Mode::eval()).unwrap();
    assert_ne!(c.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    assert!(
        Params::detached_view(&varmap, &Device::Cpu)
            .unwrap()
            .get("nope", &[1], Init::Zeros)
            .is_err()
    );
}

/// max |a - b| / max(1e-3, max |b|): relative to the tensor's scale.
fn scaled_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let scale = b.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// One training step's logits and every parameter's gradient, fused against composed.
fn fused_step_matches_composed(
    cfg: &EncoderConfig,
    mut params: impl FnMut() -> Params,
    mode: impl Fn(Ops) -> Mode,
    tol: f64,
) {
    let dev = Device::Cpu;
    let (ids, types, mask) = batch(&dev);
    let labels = Tensor::new(&[1i64, 0], &dev).unwrap();
    let mut run = |ops: Ops| {
        let mut p = params();
        let model = SequenceClassifier::new(cfg, &mut p).unwrap();
        let (vm, _) = p.finish();
        let logits = model
            .forward(&ids, Some(&types), Some(&mask), &mode(ops))
            .unwrap();
        let loss = cross_entropy_with(&logits, &labels, ops).unwrap();
        let grads = loss.backward().unwrap();
        let g: Vec<(String, Tensor)> = vars(&vm)
            .into_iter()
            .filter_map(|(n, v)| grads.get(v.as_tensor()).map(|g| (n, g.clone())))
            .collect();
        (logits, loss, g)
    };
    let (lf, lossf, gf) = run(Ops::Fused);
    let (lc, lossc, gc) = run(Ops::Composed);
    assert!(
        scaled_diff(&lf, &lc) < tol,
        "logits differ by {}",
        scaled_diff(&lf, &lc)
    );
    assert!(scaled_diff(&lossf, &lossc) < tol);
    assert_eq!(gf.len(), gc.len(), "the same parameters get gradients");
    assert!(gf.len() > 10);
    for ((n, a), (m, b)) in gf.iter().zip(&gc) {
        assert_eq!(n, m);
        let d = scaled_diff(a, b);
        assert!(d < tol, "{n}: gradient differs by {d}");
    }
}

#[test]
fn fused_training_step_matches_composed_on_minilm() {
    let Some(dir) = berth_testkit::minilm_dir() else {
        return;
    };
    let dev = Device::Cpu;
    let cfg = open_dir(&dir, &dev, 0).unwrap().0;
    fused_step_matches_composed(
        &cfg,
        || open_dir(&dir, &dev, 0).unwrap().1,
        |ops| Mode::eval().with_ops(ops),
        1e-4,
    );
}

#[test]
fn fused_training_step_matches_composed_with_dropout() {
    // The counter-based masks are the same on both paths, so even with dropout on the
    // two steps agree to rounding.
    let cfg = EncoderConfig::tiny();
    fused_step_matches_composed(
        &cfg,
        || Params::random(&Device::Cpu, 0, cfg.initializer_range),
        |ops| Mode::train(5).with_ops(ops),
        1e-4,
    );
}

#[test]
fn mlm_loss_on_labelled_positions_equals_the_full_projection() {
    let dev = Device::Cpu;
    let cfg = EncoderConfig::tiny();
    let (ids, types, mask) = batch(&dev);
    let labels = Tensor::new(
        &[
            [-100i64, 7, -100, 12, -100, -100],
            [-100, -100, 31, -100, -100, -100],
        ],
        &dev,
    )
    .unwrap();
    for ops in [Ops::Fused, Ops::Composed] {
        let run = |labelled: bool| {
            let mut p = Params::random(&dev, 0, cfg.initializer_range);
            let mlm = MaskedLm::new(&cfg, &mut p).unwrap();
            let (vm, _) = p.finish();
            let mode = Mode::train(3).with_ops(ops);
            let (logits, loss) = if labelled {
                let (logits, kept) = mlm
                    .forward_labelled(&ids, Some(&types), Some(&mask), &labels, &mode)
                    .unwrap();
                assert_eq!(kept.to_vec1::<i64>().unwrap(), vec![7, 12, 31]);
                let loss = mlm.loss(&logits, &kept).unwrap();
                (logits, loss)
            } else {
                let logits = mlm.forward(&ids, Some(&types), Some(&mask), &mode).unwrap();
                let loss = mlm.loss(&logits, &labels).unwrap();
                // The labelled rows of the full projection, in row-major order.
                let rows = logits.reshape(((), cfg.vocab_size)).unwrap();
                let idx = Tensor::new(&[1u32, 3, 8], &dev).unwrap();
                (rows.index_select(&idx, 0).unwrap(), loss)
            };
            let grads = loss.backward().unwrap();
            let g: Vec<Tensor> = vars(&vm)
                .into_iter()
                .map(|(n, v)| {
                    grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("{n}: no gradient"))
                        .clone()
                })
                .collect();
            (logits, loss, g)
        };
        let (la, lossa, ga) = run(true);
        let (lb, lossb, gb) = run(false);
        assert!(scaled_diff(&la, &lb) < 1e-5, "{ops:?}: logits");
        assert!(scaled_diff(&lossa, &lossb) < 1e-6, "{ops:?}: loss");
        for (a, b) in ga.iter().zip(&gb) {
            assert!(
                scaled_diff(a, b) < 1e-5,
                "{ops:?}: gradient differs by {}",
                scaled_diff(a, b)
            );
        }
    }
}

#[test]
fn the_first_token_forward_equals_the_full_forward_with_dropout() {
    // The classifier's shortcut: the last layer computes only [CLS] after its attention.
    // Its pooled output, its [CLS] row and every parameter's gradient must be the full
    // forward's, dropout on (the mapped masks are the full tensor's), on both paths.
    let dev = Device::Cpu;
    let cfg = EncoderConfig::tiny();
    let (ids, types, mask) = batch(&dev);
    for ops in [Ops::Fused, Ops::Composed] {
        let run = |first: bool| {
            let mut p = Params::random(&dev, 0, cfg.initializer_range);
            let bert = Encoder::new(&cfg, &mut p, true, true).unwrap();
            let (vm, _) = p.finish();
            let mode = Mode::train(11).with_ops(ops);
            let out = if first {
                bert.forward_first_token(&ids, Some(&types), Some(&mask), &mode)
            } else {
                bert.forward(&ids, Some(&types), Some(&mask), &mode)
            }
            .unwrap();
            let pooled = out.pooled.unwrap();
            let cls = out.sequence.narrow(1, 0, 1).unwrap();
            // A loss that weighs every pooled value and every [CLS] value differently.
            let w = Tensor::arange(0f32, pooled.elem_count() as f32, &dev)
                .unwrap()
                .reshape(pooled.shape())
                .unwrap();
            let loss = ((pooled * &w).unwrap().sum_all().unwrap()
                + cls.sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let g: Vec<(String, Tensor)> = vars(&vm)
                .into_iter()
                .map(|(n, v)| {
                    let g = grads.get(v.as_tensor()).cloned();
                    (n.clone(), g.unwrap_or_else(|| panic!("{n}: no gradient")))
                })
                .collect();
            (out.sequence.dims().to_vec(), cls, loss, g)
        };
        let (dims_first, cls_first, loss_first, g_first) = run(true);
        let (dims_full, cls_full, loss_full, g_full) = run(false);
        assert_eq!(dims_first, vec![2, 1, cfg.hidden_size]);
        assert_eq!(dims_full, vec![2, 6, cfg.hidden_size]);
        assert!(scaled_diff(&cls_first, &cls_full) < 1e-6, "{ops:?}: [CLS]");
        assert!(scaled_diff(&loss_first, &loss_full) < 1e-6, "{ops:?}: loss");
        for ((n, a), (_, b)) in g_first.iter().zip(&g_full) {
            let d = scaled_diff(a, b);
            assert!(d < 1e-5, "{ops:?} {n}: gradient differs by {d}");
        }
    }
}

#[test]
fn candle_stores_the_first_gradient_without_a_copy() {
    // vendor/candle-core's one change: autograd keeps a tensor's first gradient as the
    // op's backward returned it (upstream adds it to a fresh zero tensor, a copy of
    // every gradient of every step). Fails if the patch is lost in a candle upgrade.
    use candle_core::{CpuStorage, CustomOp1, Layout, Shape, TensorId};
    use std::sync::{Arc, Mutex};

    struct Doubles(Arc<Mutex<Option<TensorId>>>);
    impl CustomOp1 for Doubles {
        fn name(&self) -> &'static str {
            "doubles-in-backward"
        }
        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            assert_eq!(l.contiguous_offsets(), Some((0, l.shape().elem_count())));
            Ok((s.clone(), l.shape().clone()))
        }
        fn bwd(
            &self,
            _arg: &Tensor,
            _res: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<Option<Tensor>> {
            let g = (grad * 2.0)?;
            *self.0.lock().unwrap() = Some(g.id());
            Ok(Some(g))
        }
    }

    let x = Var::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
    let seen = Arc::new(Mutex::new(None));
    let y = x.as_tensor().apply_op1(Doubles(seen.clone())).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let g = grads.get(x.as_tensor()).unwrap();
    assert_eq!(
        Some(g.id()),
        *seen.lock().unwrap(),
        "the gradient was copied"
    );
    assert_eq!(g.to_vec1::<f32>().unwrap(), vec![2., 2., 2.]);

    // A second contribution to the same tensor is still added.
    let y = x.as_tensor().apply_op1(Doubles(seen.clone())).unwrap();
    let loss = (y.sum_all().unwrap() + x.as_tensor().sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).unwrap();
    assert_eq!(g.to_vec1::<f32>().unwrap(), vec![3., 3., 3.]);
}

#[test]
fn a_pytorch_pickle_checkpoint_loads_as_transformers_loads_it() {
    // scripts/make_pytorch_fixture.py: a tiny BertModel saved with torch.save, with
    // the original BERT checkpoints' LayerNorm.gamma/beta names, and its output.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-pytorch");
    assert!(!dir.join("model.safetensors").exists());
    let (cfg, mut p) = crate::open_dir(&dir, &Device::Cpu, 0).unwrap();
    let model = Encoder::new(&cfg, &mut p, true, true).unwrap();
    let (_, report) = p.finish();
    assert!(
        report.newly_initialized.is_empty(),
        "{:?}",
        report.newly_initialized
    );
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids: Vec<u32> = expected["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let got = model
        .forward(&input, None, None, &Mode::eval())
        .unwrap()
        .sequence
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (row, want) in got
        .iter()
        .zip(expected["last_hidden_state"].as_array().unwrap())
    {
        for (a, b) in row.iter().zip(want.as_array().unwrap()) {
            let b = b.as_f64().unwrap() as f32;
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

#[test]
fn a_batch_run_in_groups_of_samples_drops_what_one_pass_drops() {
    // Chunk classification's bounded-memory step runs a batch's chunks in groups:
    // with `starting_at_sample`, each group's masks are the whole batch's, so the
    // logits are the same rows, on both paths; without it they differ.
    let dev = Device::Cpu;
    let mut cfg = EncoderConfig::tiny();
    cfg.hidden_dropout_prob = 0.3;
    cfg.attention_probs_dropout_prob = 0.3;
    let ids = Tensor::new(
        &[
            [1u32, 7, 9, 12, 2, 0],
            [1, 30, 31, 2, 0, 0],
            [1, 5, 6, 7, 8, 2],
            [1, 44, 2, 0, 0, 0],
            [1, 9, 9, 9, 2, 0],
        ],
        &dev,
    )
    .unwrap();
    let mask = ids.ne(0u32).unwrap().to_dtype(DType::U32).unwrap();
    let types = ids.zeros_like().unwrap();
    let mut p = Params::random(&dev, 0, cfg.initializer_range);
    let cls = SequenceClassifier::new(&cfg, &mut p).unwrap();
    for ops in [Ops::Fused, Ops::Composed] {
        let run = |s: usize, n: usize, offset: bool| {
            let mode = Mode::train(21).with_ops(ops);
            let mode = if offset {
                mode.starting_at_sample(s)
            } else {
                mode
            };
            let part = |t: &Tensor| t.narrow(0, s, n).unwrap();
            cls.forward(&part(&ids), Some(&part(&types)), Some(&part(&mask)), &mode)
                .unwrap()
        };
        let full = run(0, 5, true);
        for (s, n) in [(0, 2), (2, 2), (4, 1), (1, 3)] {
            let d = scaled_diff(&run(s, n, true), &full.narrow(0, s, n).unwrap());
            assert!(d < 1e-6, "{ops:?}: samples {s}..{}: {d}", s + n);
        }
        let d = scaled_diff(&run(2, 2, false), &full.narrow(0, 2, 2).unwrap());
        assert!(
            d > 1e-3,
            "{ops:?}: without the offset the masks should differ"
        );
    }
}

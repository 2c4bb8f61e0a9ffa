//! Every encoder family against transformers itself: tiny random-init models saved by
//! `save_pretrained` with transformers' logits and one step's gradients
//! (`scripts/make_family_fixtures.py`, committed, so no torch is needed here).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use berth_model::{
    EncoderConfig, Family, MaskedLm, Mode, Ops, Params, PreTraining, SequenceClassifier, open_dir,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

const HEADS: [(&str, &str); 12] = [
    ("bert", "seqcls"),
    ("bert", "mlm"),
    ("bert", "pretraining"),
    ("roberta", "seqcls"),
    ("roberta", "mlm"),
    ("xlm-roberta", "seqcls"),
    ("xlm-roberta", "mlm"),
    ("camembert", "seqcls"),
    ("camembert", "mlm"),
    ("distilbert", "seqcls"),
    ("distilbert", "mlm"),
    ("electra", "seqcls"),
];

fn fixture(family: &str, head: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(family)
        .join(head);
    assert!(
        dir.join("expected.safetensors").is_file(),
        "missing fixture {} (scripts/make_family_fixtures.py writes it)",
        dir.display()
    );
    dir
}

fn expected(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap()
}

/// The model of one fixture head, as one enum so each test runs every head.
enum Model {
    Cls(SequenceClassifier),
    Mlm(MaskedLm),
    Pre(PreTraining),
}

impl Model {
    fn load(dir: &Path, head: &str) -> (Model, VarMap, EncoderConfig) {
        let (cfg, mut p) = open_dir(dir, &Device::Cpu, 0).unwrap();
        let model = build(&cfg, &mut p, head);
        let (varmap, report) = p.finish();
        assert!(
            report.newly_initialized.is_empty() && report.unexpected.is_empty(),
            "{}: {report:?}",
            dir.display()
        );
        (model, varmap, cfg)
    }

    /// (logits, loss) of the fixture's batch.
    fn run(&self, e: &HashMap<String, Tensor>, mode: &Mode) -> (Vec<Tensor>, Tensor) {
        let u32_of = |k: &str| e[k].to_dtype(DType::U32).unwrap();
        let (ids, mask, types) = (
            u32_of("input_ids"),
            u32_of("attention_mask"),
            u32_of("token_type_ids"),
        );
        let labels = &e["labels"];
        match self {
            Model::Cls(m) => {
                let logits = m.forward(&ids, Some(&types), Some(&mask), mode).unwrap();
                let loss = m.loss(&logits, labels).unwrap();
                (vec![logits], loss)
            }
            Model::Mlm(m) => {
                let logits = m.forward(&ids, Some(&types), Some(&mask), mode).unwrap();
                let loss = m.loss(&logits, labels).unwrap();
                (vec![logits], loss)
            }
            Model::Pre(m) => {
                let (logits, nsp) = m.forward(&ids, Some(&types), Some(&mask), mode).unwrap();
                let loss = m
                    .loss(&logits, &nsp, labels, &e["next_sentence_label"])
                    .unwrap();
                (vec![logits, nsp], loss)
            }
        }
    }
}

fn build(cfg: &EncoderConfig, p: &mut Params, head: &str) -> Model {
    match head {
        "seqcls" => Model::Cls(SequenceClassifier::new(cfg, p).unwrap()),
        "mlm" => Model::Mlm(MaskedLm::new(cfg, p).unwrap()),
        "pretraining" => Model::Pre(PreTraining::new(cfg, p).unwrap()),
        other => panic!("unknown head {other}"),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn every_head_of_every_family_gives_transformers_logits_within_1e_5() {
    for (family, head) in HEADS {
        let dir = fixture(family, head);
        let e = expected(&dir);
        let (model, _, cfg) = Model::load(&dir, head);
        assert_eq!(cfg.family.model_type(), family);
        let want: Vec<&Tensor> = match head {
            "pretraining" => vec![&e["logits"], &e["seq_relationship_logits"]],
            _ => vec![&e["logits"]],
        };
        for ops in [Ops::Fused, Ops::Composed] {
            let (logits, loss) = model.run(&e, &Mode::eval().with_ops(ops));
            for (got, want) in logits.iter().zip(&want) {
                assert_eq!(got.dims(), want.dims(), "{family}/{head}");
                let d = max_abs_diff(got, want);
                assert!(d < 1e-5, "{family}/{head} {ops:?}: logits differ by {d}");
            }
            let d = max_abs_diff(&loss.reshape(1).unwrap(), &e["loss"]);
            assert!(d < 1e-5, "{family}/{head} {ops:?}: loss differs by {d}");
        }
    }
}

#[test]
fn one_step_gradients_of_every_parameter_match_pytorch_within_1e_4() {
    for (family, head) in HEADS {
        let dir = fixture(family, head);
        let e = expected(&dir);
        let (model, varmap, _) = Model::load(&dir, head);
        let largest = e
            .iter()
            .filter(|(k, _)| k.starts_with("grad."))
            .map(|(_, t)| max_abs(t))
            .fold(0f32, f32::max);
        for ops in [Ops::Fused, Ops::Composed] {
            let (_, loss) = model.run(&e, &Mode::eval().with_ops(ops));
            let grads = loss.backward().unwrap();
            let vars = varmap.data().lock().unwrap();
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in names {
                let want = e
                    .get(&format!("grad.{name}"))
                    .unwrap_or_else(|| panic!("{family}/{head}: PyTorch has no parameter {name}"));
                let got = grads
                    .get(vars[name].as_tensor())
                    .unwrap_or_else(|| panic!("{family}/{head}: no gradient for {name}"));
                // The attention key bias's gradient is zero in exact arithmetic
                // (softmax ignores a shift of a row): both are rounding noise.
                if name.ends_with("key.bias") || name.ends_with("k_lin.bias") {
                    let noise = 1e-6 * largest;
                    assert!(
                        max_abs(got) <= noise && max_abs(want) <= noise,
                        "{family}/{head} {ops:?}: {name}'s gradient is not ~0"
                    );
                    continue;
                }
                let scale = max_abs(want).max(1e-12);
                let d = max_abs_diff(got, want) / scale;
                assert!(
                    d <= 1e-4,
                    "{family}/{head} {ops:?}: gradient of {name} differs by {d} of its largest value {scale}"
                );
            }
        }
    }
}

#[test]
fn a_saved_model_has_exactly_the_keys_transformers_saves() {
    for (family, head) in HEADS {
        let dir = fixture(family, head);
        let (_, varmap, cfg) = Model::load(&dir, head);
        let out = tempfile::tempdir().unwrap();
        let arch = cfg.architectures.as_ref().unwrap()[0].clone();
        berth_model::save(&out.path().join("m"), &cfg, &arch, &varmap).unwrap();
        let keys = |f: PathBuf| -> BTreeSet<String> {
            candle_core::safetensors::load(f, &Device::Cpu)
                .unwrap()
                .into_keys()
                .collect()
        };
        assert_eq!(
            keys(out.path().join("m/model.safetensors")),
            keys(dir.join("model.safetensors")),
            "{family}/{head}"
        );
        // The config reads back the same, in the family's own key names.
        let theirs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let ours: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("m/config.json")).unwrap(),
        )
        .unwrap();
        for (k, v) in theirs.as_object().unwrap() {
            assert_eq!(ours.get(k), Some(v), "{family}/{head}: config key {k}");
        }
    }
}

#[test]
fn an_unsupported_model_type_is_refused_with_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("bert", "seqcls");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = "deberta-v2".into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = open_dir(dir.path(), &Device::Cpu, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json")
            && err.contains("model_type 'deberta-v2' is not supported")
            && err.contains("bert, roberta, xlm-roberta, camembert, distilbert, electra"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_without_any_of_the_encoder_weights_is_an_error() {
    // RoBERTa's config over a BERT checkpoint: every `roberta.` weight is missing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("roberta", "seqcls").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        fixture("bert", "seqcls").join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let (cfg, mut p) = open_dir(dir.path(), &Device::Cpu, 0).unwrap();
    assert_eq!(cfg.family, Family::Roberta);
    let err = SequenceClassifier::new(&cfg, &mut p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("none of the RoBERTa encoder's weights")
            && err.contains("roberta.embeddings.word_embeddings.weight"),
        "{err}"
    );
    // A head alone may be new, as transformers initialises it: the MLM checkpoint
    // loads into a classifier with only the classifier fresh.
    let (cfg, mut p) = open_dir(&fixture("roberta", "mlm"), &Device::Cpu, 0).unwrap();
    SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (_, report) = p.finish();
    assert!(
        report
            .newly_initialized
            .iter()
            .all(|n| n.starts_with("classifier.")),
        "{report:?}"
    );
}

#[test]
fn families_without_a_head_say_so() {
    let (cfg, mut p) = open_dir(&fixture("electra", "seqcls"), &Device::Cpu, 0).unwrap();
    let err = MaskedLm::new(&cfg, &mut p).err().unwrap().to_string();
    assert!(
        err.contains("does not build ElectraForMaskedLM") && err.contains("discriminator"),
        "{err}"
    );
    let (cfg, mut p) = open_dir(&fixture("roberta", "seqcls"), &Device::Cpu, 0).unwrap();
    let err = PreTraining::new(&cfg, &mut p).err().unwrap().to_string();
    assert!(
        err.contains("transformers has no RobertaForPreTraining"),
        "{err}"
    );
}

#[test]
fn every_family_loads_from_a_pytorch_pickle_too() {
    for family in Family::ALL.map(Family::model_type) {
        let src = fixture(family, "seqcls");
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "pytorch_model.bin"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let e = expected(&src);
        let (model, _, _) = Model::load(dir.path(), "seqcls");
        let (logits, _) = model.run(&e, &Mode::eval());
        let d = max_abs_diff(&logits[0], &e["logits"]);
        assert!(
            d < 1e-5,
            "{family} from pytorch_model.bin: logits differ by {d}"
        );
    }
}

#[test]
fn every_family_drops_out_the_same_elements_fused_and_composed() {
    // Training mode: each family's own dropout sites (RoBERTa's and ELECTRA's before
    // the head's dense layer, none on DistilBERT's attention output) draw the same
    // masks on both paths, so the logits agree and differ from eval's.
    for (family, head) in HEADS {
        let dir = fixture(family, head);
        let e = expected(&dir);
        let (model, _, _) = Model::load(&dir, head);
        let fused = model.run(&e, &Mode::train(5).with_ops(Ops::Fused)).0;
        let composed = model.run(&e, &Mode::train(5).with_ops(Ops::Composed)).0;
        let eval = model.run(&e, &Mode::eval()).0;
        for ((f, c), ev) in fused.iter().zip(&composed).zip(&eval) {
            let d = max_abs_diff(f, c);
            assert!(
                d < 1e-4,
                "{family}/{head}: fused and composed dropout differ by {d}"
            );
            assert!(
                max_abs_diff(f, ev) > 1e-3,
                "{family}/{head}: dropout changed nothing"
            );
        }
    }
}

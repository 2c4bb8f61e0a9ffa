//! The trainer end to end on a tiny random BERT: it learns, resumes exactly, stops
//! on NaN, and leaves HF-shaped state behind.

use std::path::{Path, PathBuf};

use berth_data::tokenizers::Tokenizer;
use berth_model::{Encoder, EncoderConfig, Params};
use candle_core::Device;

use crate::task::{Documents, LabelledSequences, Pairs, Sequences, Texts};
use crate::*;

const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A word-level tokenizer over the tiny config's 64 ids: 5 specials, then w5..w63.
fn tiny_tokenizer() -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, s) in SPECIAL.iter().enumerate() {
        vocab.insert(s.to_string(), i.into());
        added.push(
            serde_json::json!({"id": i, "content": s, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
        );
    }
    for i in 5..64 {
        vocab.insert(format!("w{i}"), i.into());
    }
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    json.to_string().parse().expect("tokenizer json")
}

/// A random tiny BERT (encoder + pooler only) saved as an HF directory.
fn tiny_model_dir(root: &Path) -> PathBuf {
    model_dir(root, "tiny-bert", &EncoderConfig::tiny())
}

/// A random BERT of `cfg` (encoder + pooler only) saved as `root/name`.
fn model_dir(root: &Path, name: &str, cfg: &EncoderConfig) -> PathBuf {
    let dir = root.join(name);
    let mut p = Params::random(&Device::Cpu, 7, cfg.initializer_range);
    Encoder::new(cfg, &mut p, true, true).unwrap();
    let (varmap, _) = p.finish();
    berth_model::save(&dir, cfg, "BertModel", &varmap).unwrap();
    dir
}

/// 32 sequences; the class is whether the first word is from the lower half.
fn separable_rows(n: usize) -> Rows {
    Rows::new(separable(n))
}

fn separable(n: usize) -> Sequences {
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let label = (i % 2) as i64;
        let first = if label == 1 {
            5 + (i % 10) as u32
        } else {
            40 + (i % 10) as u32
        };
        let len = 4 + i % 5;
        let mut row = vec![2, first];
        row.extend((0..len).map(|k| 20 + ((i * 7 + k * 3) % 15) as u32));
        row.push(3);
        ids.push(row);
        labels.push(label);
    }
    let types = ids.iter().map(|r: &Vec<u32>| vec![0u8; r.len()]).collect();
    Sequences { ids, types, labels }
}

fn config(out: &Path, extra: &[&str]) -> RunConfig {
    let mut overrides: Vec<String> = vec![
        format!("output_dir={:?}", out.display().to_string()),
        "disable_tqdm=true".into(),
        "logging_steps=2".into(),
        "save_strategy=\"no\"".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    RunConfig::from_toml(
        "task = \"classification\"\nmodel = \"unused\"\n[data]\ntrain = \"unused\"\n",
        &overrides,
        "test",
    )
    .unwrap()
}

fn trainer(cfg: RunConfig, dir: &Path, rows: Rows) -> Trainer {
    let data = TaskData {
        train: Split {
            name: "train".into(),
            source: "synthetic".into(),
            rows: rows.clone(),
        },
        eval: Some(Split {
            name: "eval".into(),
            source: "synthetic".into(),
            rows,
        }),
        test: None,
        class_names: vec!["neg".into(), "pos".into()],
    };
    Trainer::with_data(cfg, data, tiny_tokenizer(), dir.to_path_buf(), Device::Cpu).unwrap()
}

#[test]
fn overfits_32_examples_to_full_training_accuracy() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let out = root.path().join("run");
    let cfg = config(
        &out,
        &[
            "learning_rate=5e-3",
            "num_train_epochs=40",
            "per_device_train_batch_size=8",
            "per_device_eval_batch_size=16",
            "eval_strategy=\"epoch\"",
            "lr_scheduler_type=\"constant\"",
        ],
    );
    let mut t = trainer(cfg, &dir, separable_rows(32));
    let before = t.evaluate(&t.data.train.clone(), "train").unwrap();
    let summary = t.train().unwrap();
    let after = t.evaluate(&t.data.train.clone(), "train").unwrap();
    assert_eq!(summary.global_step, 160);
    assert_eq!(
        after["train_accuracy"], 1.0,
        "before {before:?}, after {after:?}"
    );
    assert!(after["train_loss"] < 0.1, "{after:?}");
    assert!(after["train_loss"] < before["train_loss"] / 5.0);

    // What a run leaves: HF-shaped state, the metrics log, the curve, the report and
    // a model `berth predict` / transformers can load.
    let state = TrainerState::read(&out.join("trainer_state.json")).unwrap();
    assert_eq!(state.global_step, 160);
    let losses: Vec<_> = state
        .log_history
        .iter()
        .filter(|e| e.contains_key("loss"))
        .collect();
    assert_eq!(losses.len(), 80);
    assert!(losses[0].contains_key("learning_rate") && losses[0].contains_key("epoch"));
    assert_eq!(
        state
            .log_history
            .iter()
            .filter(|e| e.contains_key("eval_accuracy"))
            .count(),
        40
    );
    let lines = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, state.log_history.len());
    let png = std::fs::read(out.join("loss_curve.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("eval_accuracy"), "{report}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(cfg["id2label"]["1"], "pos");
    assert!(out.join("model.safetensors").is_file() && out.join("tokenizer.json").is_file());
    assert!(summary_table(&summary).contains("eval_accuracy"));
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<_> = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

#[test]
fn a_resumed_run_ends_with_the_same_weights() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "learning_rate=1e-3",
            "max_steps=12",
            "per_device_train_batch_size=4",
            "gradient_accumulation_steps=2",
            "warmup_steps=3",
            "weight_decay=0.01",
            "save_strategy=\"steps\"",
            "save_steps=5",
        ];
        args.extend_from_slice(extra);
        // 20 rows, 5 batches, 3 optimizer steps per epoch: the checkpoint at step 5
        // stops mid-epoch.
        let mut rows = separable_rows(20);
        rows.truncate(20);
        trainer(config(out, &args), &dir, rows).train().unwrap()
    };
    let a = root.path().join("a");
    run(&a, &[]);
    // A run killed after step 5: its output dir holds checkpoint-5 only.
    let b = root.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    copy_dir(&a.join("checkpoint-5"), &b.join("checkpoint-5"));
    let resumed = run(&b, &["resume_from_checkpoint=\"latest\""]);
    assert_eq!(resumed.global_step, 12);
    let (wa, wb) = (
        weights(&a.join("model.safetensors")),
        weights(&b.join("model.safetensors")),
    );
    assert_eq!(wa.len(), wb.len());
    for ((ka, va), (kb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(ka, kb);
        assert_eq!(va, vb, "{ka} differs after resume");
    }
    // And the checkpoint holds everything a resume needs.
    for f in [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "scheduler.json",
        "rng_state.json",
        "trainer_state.json",
    ] {
        assert!(a.join("checkpoint-10").join(f).is_file(), "{f}");
    }
    let pos: Position = serde_json::from_str(
        &std::fs::read_to_string(a.join("checkpoint-5/rng_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!((pos.epoch_index, pos.steps_in_epoch), (1, 2));

    // A different seed does not silently continue someone else's run: refused
    // before the run starts, naming the key with both values (from the checkpoint's
    // training_config.toml).
    let c = root.path().join("c");
    std::fs::create_dir_all(&c).unwrap();
    copy_dir(&a.join("checkpoint-5"), &c.join("checkpoint-5"));
    let data = TaskData {
        train: Split {
            name: "train".into(),
            source: "synthetic".into(),
            rows: separable_rows(20),
        },
        eval: None,
        test: None,
        class_names: vec!["neg".into(), "pos".into()],
    };
    let args = [
        "learning_rate=1e-3",
        "max_steps=12",
        "per_device_train_batch_size=4",
        "gradient_accumulation_steps=2",
        "warmup_steps=3",
        "weight_decay=0.01",
        "save_strategy=\"steps\"",
        "save_steps=5",
        "resume_from_checkpoint=\"latest\"",
        "seed=1",
    ];
    let err = Trainer::with_data(config(&c, &args), data, tiny_tokenizer(), dir, Device::Cpu)
        .err()
        .expect("a resume with another seed is refused")
        .to_string();
    assert!(
        err.contains("was trained with another configuration: training.seed 42 -> 1;"),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let out = root.path().join("run");
    let cfg = config(
        &out,
        &[
            "learning_rate=1e30",
            "max_grad_norm=0.0",
            "lr_scheduler_type=\"constant\"",
            "max_steps=20",
            "save_strategy=\"steps\"",
            "save_steps=1",
            "save_total_limit=2",
        ],
    );
    let err = trainer(cfg, &dir, separable_rows(32)).train().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{msg}");
    assert!(
        msg.contains("Last good checkpoint") && msg.contains("checkpoint-"),
        "{msg}"
    );
    let kept = checkpoints(&out);
    assert!(!kept.is_empty() && kept.len() <= 2, "{kept:?}");
    assert!(
        msg.contains(&kept.last().unwrap().1.display().to_string()),
        "{msg}"
    );
}

#[test]
fn mlm_and_nsp_rows_train_and_report_their_metrics() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let Sequences { ids, types, .. } = separable(16);
    for (task, rows) in [
        ("mlm", Rows::new(Texts { ids: ids.clone() })),
        (
            "nsp",
            Rows::new(Pairs {
                next: (0..ids.len() as i64).map(|i| i % 2).collect(),
                ids,
                types,
            }),
        ),
    ] {
        let out = root.path().join(task);
        let mut cfg = config(
            &out,
            &[
                "max_steps=4",
                "per_device_train_batch_size=4",
                "eval_strategy=\"epoch\"",
            ],
        );
        cfg.task = if task == "mlm" {
            TaskConfig::Mlm {
                mlm: MlmConfig::default(),
            }
        } else {
            TaskConfig::Nsp {
                mlm: MlmConfig::default(),
            }
        };
        let data = TaskData {
            train: Split {
                name: "train".into(),
                source: "synthetic".into(),
                rows: rows.clone(),
            },
            eval: Some(Split {
                name: "eval".into(),
                source: "synthetic".into(),
                rows,
            }),
            test: None,
            class_names: vec![],
        };
        let mut t =
            Trainer::with_data(cfg, data, tiny_tokenizer(), dir.clone(), Device::Cpu).unwrap();
        let s = t.train().unwrap();
        assert!(
            s.eval["eval_perplexity"].is_finite() && s.eval["eval_perplexity"] > 1.0,
            "{task}: {:?}",
            s.eval
        );
        assert!((0.0..=1.0).contains(&s.eval["eval_mlm_accuracy"]));
        assert_eq!(s.eval.contains_key("eval_nsp_accuracy"), task == "nsp");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        let arch = if task == "mlm" {
            "BertForMaskedLM"
        } else {
            "BertForPreTraining"
        };
        assert_eq!(cfg["architectures"][0], arch);
    }
}

/// One window's gradients, named, with the loss the step logs.
fn window_gradients(t: &Trainer, group: &[Vec<usize>]) -> (Vec<(String, Vec<f32>)>, f64) {
    let opt = AdamW::new(&t.model.varmap, AdamWConfig::default()).unwrap();
    let w = t.window_step(&opt, group, 0, 0).unwrap();
    assert!(w.non_finite.is_none());
    let names: Vec<String> = opt
        .decay_table()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    let grads = names
        .into_iter()
        .zip(w.grads.0)
        .map(|(n, g)| {
            let g = g.unwrap_or_else(|| panic!("{n}: no gradient"));
            (n, g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        })
        .collect();
    (grads, w.loss)
}

/// The same loss (1e-6 relative) and every parameter's gradient within 1e-5 of the
/// largest of its reference.
fn assert_same_step(
    what: &str,
    (got, loss): &(Vec<(String, Vec<f32>)>, f64),
    (want, want_loss): &(Vec<(String, Vec<f32>)>, f64),
) {
    assert!(
        (loss - want_loss).abs() < 1e-6 * want_loss.abs().max(1.0),
        "{what}: loss {loss} vs {want_loss}"
    );
    assert_eq!(got.len(), want.len());
    for ((name, a), (_, b)) in got.iter().zip(want) {
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        assert!(d < 1e-5, "{what} {name}: gradients differ by {d}");
    }
}

#[test]
fn accumulated_micro_batches_give_the_gradients_of_one_batch() {
    // transformers' num_items_in_batch: the loss of an accumulation window is the
    // mean over all its items, so 4 x 4 (masked LM: micro-batches with different
    // numbers of masked tokens) and 4 + 4 + 4 + 2 (classification: a short last
    // batch) train as one batch. Dropout off, so both batchings draw nothing.
    let root = tempfile::tempdir().unwrap();
    let mut cfg = EncoderConfig::tiny();
    cfg.hidden_dropout_prob = 0.0;
    cfg.attention_probs_dropout_prob = 0.0;
    let dir = model_dir(root.path(), "tiny-bert-no-dropout", &cfg);

    let Sequences { ids, .. } = separable(16);
    let mlm = TaskConfig::Mlm {
        mlm: MlmConfig::default(),
    };
    for (task, n) in [(TaskConfig::Classification {}, 14usize), (mlm, 16)] {
        let out = root.path().join(task.name());
        let mut run = config(&out, &["per_device_train_batch_size=4"]);
        run.task = task.clone();
        let rows = match task {
            TaskConfig::Mlm { .. } => Rows::new(Texts { ids: ids.clone() }),
            _ => separable_rows(n),
        };
        let t = trainer(run, &dir, rows);
        let micro: Vec<Vec<usize>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(4)
            .map(|c| c.to_vec())
            .collect();
        let whole = vec![(0..n).collect::<Vec<usize>>()];
        assert_same_step(
            &format!("{task:?}"),
            &window_gradients(&t, &micro),
            &window_gradients(&t, &whole),
        );
    }
}

/// Nine texts of 1 to 9 chunks (3 to 8 ids each), labelled 0/1 alternately.
fn chunked_texts() -> Documents {
    let chunks: Vec<Vec<Vec<u32>>> = (0..9usize)
        .map(|d| {
            (0..=d)
                .map(|c| {
                    let len = 3 + (d * 5 + c * 3) % 6;
                    let mut row = vec![2];
                    row.extend((0..len).map(|k| 5 + ((d * 11 + c * 7 + k * 3) % 59) as u32));
                    row.push(3);
                    row
                })
                .collect()
        })
        .collect();
    Documents {
        chunks,
        labels: (0..9).map(|d| (d % 2) as i64).collect(),
    }
}

#[test]
fn grouped_chunks_give_the_gradients_of_one_pass() {
    // chunk_group_size: every chunk without a graph, the pooled loss's gradient per
    // chunk, then groups with a graph. Every parameter's gradient must be one pass's
    // over all chunks, for mean and max pooling, dropout off and on (each group
    // draws the whole batch's masks).
    let root = tempfile::tempdir().unwrap();
    for dropout in [0.0, 0.2] {
        let mut cfg = EncoderConfig::tiny();
        cfg.hidden_dropout_prob = dropout;
        cfg.attention_probs_dropout_prob = dropout;
        let dir = model_dir(root.path(), &format!("tiny-dropout-{dropout}"), &cfg);
        for pool in [berth_model::Pool::Mean, berth_model::Pool::Max] {
            // Chunk classification, or chunked multi-label (BCE on the pooled logits).
            let run = |group: Option<usize>, multi: bool| {
                let mut run = config(&root.path().join("out"), &[]);
                let chunking = ChunkingConfig {
                    pool,
                    chunk_group_size: group,
                    ..ChunkingConfig::default()
                };
                let rows = if multi {
                    run.task = TaskConfig::MultiLabelClassification {
                        multi_label: MultiLabelConfig::default(),
                        chunking: Some(chunking),
                    };
                    let d = chunked_texts();
                    Rows::new(Documents {
                        labels: (0..9)
                            .map(|i| vec![(i % 2) as f32, (i % 3 == 0) as u8 as f32])
                            .collect(),
                        chunks: d.chunks,
                    })
                } else {
                    run.task = TaskConfig::ChunkClassification { chunking };
                    Rows::new(chunked_texts())
                };
                let t = trainer(run, &dir, rows);
                window_gradients(&t, &[(0..9).collect()])
            };
            let one = [run(None, false), run(None, true)];
            for (group, multi) in [(1, false), (2, false), (3, false), (2, true)] {
                let what = format!("dropout {dropout} {pool:?} group {group} multi-label {multi}");
                assert_same_step(&what, &run(Some(group), multi), &one[multi as usize]);
            }
        }
    }
}

#[test]
fn evaluation_in_groups_of_the_eval_batch_gives_one_forwards_pooled_logits() {
    // 9 texts of 1 to 9 chunks (45 rows): evaluated 2 rows per forward, a text's
    // chunks spanning up to 5 forwards, the pooled logits and loss are those of one
    // forward over every row.
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let evaluate = |rows_per_forward: usize, pool: berth_model::Pool| {
        let mut run = config(
            &root.path().join("out"),
            &[&format!("per_device_eval_batch_size={rows_per_forward}")],
        );
        run.task = TaskConfig::ChunkClassification {
            chunking: ChunkingConfig {
                pool,
                ..ChunkingConfig::default()
            },
        };
        let t = trainer(run, &dir, Rows::new(chunked_texts()));
        let batch = t
            .task
            .batch(&t.data.train.rows, &(0..9).collect::<Vec<_>>(), 0)
            .unwrap();
        let out = t.model.forward(&batch, &berth_model::Mode::eval()).unwrap();
        (
            out.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            out.loss.unwrap().to_scalar::<f32>().unwrap(),
        )
    };
    for pool in [berth_model::Pool::Mean, berth_model::Pool::Max] {
        let (one, loss_one) = evaluate(64, pool);
        let (grouped, loss_grouped) = evaluate(2, pool);
        assert_eq!(one.len(), 9 * 2);
        for (a, b) in one.iter().zip(&grouped) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{pool:?}: {a} vs {b}"
            );
        }
        assert!((loss_one - loss_grouped).abs() <= 1e-5, "{pool:?}");
    }
}

#[test]
fn train_chunks_per_doc_samples_per_epoch_and_evaluation_reads_every_chunk() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let mut run = config(&root.path().join("out"), &[]);
    run.task = TaskConfig::ChunkClassification {
        chunking: ChunkingConfig {
            train_chunks_per_doc: Some(2),
            ..ChunkingConfig::default()
        },
    };
    let t = trainer(run, &dir, Rows::new(chunked_texts()));
    let rows = &t.data.train.rows;
    let all: Vec<usize> = (0..9).collect();
    let offsets = |b: &TaskBatch| b.doc_offsets.clone().unwrap();
    let chunks_of = |b: &TaskBatch| {
        let ids = b.input_ids.to_vec2::<u32>().unwrap();
        offsets(b)
            .windows(2)
            .map(|w| ids[w[0]..w[1]].iter().map(|r| r[1]).collect::<Vec<u32>>())
            .collect::<Vec<_>>()
    };
    let e0 = t.task.train_batch(rows, &all, 0).unwrap();
    let e0_again = t.task.train_batch(rows, &all, 0).unwrap();
    let e1 = t.task.train_batch(rows, &all, 1).unwrap();
    // k = 2 of each text with more, all of a shorter one; in the text's order.
    let per: Vec<usize> = offsets(&e0).windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(per, vec![1, 2, 2, 2, 2, 2, 2, 2, 2]);
    let docs = chunked_texts();
    for (d, picked) in chunks_of(&e0).iter().enumerate() {
        let firsts: Vec<u32> = docs.chunks[d].iter().map(|c| c[1]).collect();
        let pos: Vec<usize> = picked
            .iter()
            .map(|f| firsts.iter().position(|x| x == f).unwrap())
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "text {d}: {pos:?}");
    }
    assert_eq!(chunks_of(&e0), chunks_of(&e0_again), "seeded");
    assert_ne!(chunks_of(&e0), chunks_of(&e1), "a new draw each epoch");
    // Evaluation batches every chunk.
    let eval = t.task.batch(rows, &all, 0).unwrap();
    assert_eq!(*offsets(&eval).last().unwrap(), 45);
}

/// Records each step it sees and stops the run at `stop_at`.
struct StopAt {
    stop_at: usize,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(usize, bool)>>>,
}

impl Callback for StopAt {
    fn on_step_end(
        &mut self,
        _: &mut Session<'_>,
        step: &StepEnd,
        control: &mut Control,
    ) -> Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push((step.step, control.should_evaluate));
        if step.step == self.stop_at {
            control.should_stop = true;
        }
        Ok(())
    }
}

#[test]
fn callbacks_see_every_step_and_can_stop_the_run() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let out = root.path().join("run");
    let cfg = config(
        &out,
        &[
            "max_steps=10",
            "per_device_train_batch_size=8",
            "eval_strategy=\"steps\"",
            "eval_steps=2",
            "save_strategy=\"steps\"",
            "save_steps=100",
        ],
    );
    let mut t = trainer(cfg, &dir, separable_rows(32));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    t.add_callback(Box::new(StopAt {
        stop_at: 5,
        seen: seen.clone(),
    }));
    let summary = t.train().unwrap();
    assert_eq!(summary.global_step, 5);
    // It runs after the flow (evaluation due at steps 2 and 4) ...
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(1, false), (2, true), (3, false), (4, true), (5, false)]
    );
    // ... and before saving: the stop it asked for is checkpointed.
    let kept: Vec<usize> = checkpoints(&out).iter().map(|c| c.0).collect();
    assert_eq!(kept, vec![5]);
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let out = root.path().join("run");
    // A learning rate of 0: the eval loss never improves after the first evaluation.
    let cfg = config(
        &out,
        &[
            "learning_rate=0.0",
            "max_steps=20",
            "per_device_train_batch_size=8",
            "eval_strategy=\"steps\"",
            "eval_steps=2",
            "save_strategy=\"steps\"",
            "save_steps=2",
            "early_stopping_patience=2",
        ],
    );
    let summary = trainer(cfg, &dir, separable_rows(32)).train().unwrap();
    // Evaluations at 2 (best), 4 and 6 (no improvement twice): stopped at 6.
    assert_eq!(summary.global_step, 6);
    let state = TrainerState::read(&out.join("trainer_state.json")).unwrap();
    assert_eq!(state.best_global_step, Some(2));
    let pos = Position::read(&out.join("checkpoint-6/rng_state.json")).unwrap();
    assert_eq!(pos.evals_without_improvement, 2);
    assert!(
        summary
            .best_model_checkpoint
            .as_deref()
            .is_some_and(|b| b.ends_with("checkpoint-2")),
        "{summary:?}"
    );
    assert!(out.join("checkpoint-6").is_dir());
}

#[test]
fn a_run_directory_and_its_checkpoints_are_hf_model_repos() {
    let root = tempfile::tempdir().unwrap();
    let dir = tiny_model_dir(root.path());
    let out = root.path().join("run");
    let cfg = config(
        &out,
        &[
            "max_steps=4",
            "per_device_train_batch_size=8",
            "eval_strategy=\"steps\"",
            "eval_steps=2",
            "save_strategy=\"steps\"",
            "save_steps=2",
        ],
    );
    let rows = separable_rows(32);
    let split = |name: &str| Split {
        name: name.into(),
        source: "synthetic".into(),
        rows: rows.clone(),
    };
    let data = TaskData {
        train: split("train"),
        eval: Some(split("eval")),
        test: Some(split("test")),
        class_names: vec!["neg".into(), "pos".into()],
    };
    let summary = Trainer::with_data(cfg, data, tiny_tokenizer(), dir.clone(), Device::Cpu)
        .unwrap()
        .train()
        .unwrap();
    // transformers 5.24's TrainerState fields: TrainerState(**json) refuses others.
    let hf_fields = [
        "epoch",
        "global_step",
        "max_steps",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "train_batch_size",
        "num_train_epochs",
        "num_input_tokens_seen",
        "total_flos",
        "log_history",
        "best_metric",
        "best_global_step",
        "best_model_checkpoint",
        "is_local_process_zero",
        "is_world_process_zero",
        "is_hyper_param_search",
        "trial_name",
        "trial_params",
        "stateful_callbacks",
    ];
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    for d in [out.join("checkpoint-2"), out.clone()] {
        let state = read(d.join("trainer_state.json"));
        for k in state.as_object().unwrap().keys() {
            assert!(hf_fields.contains(&k.as_str()), "{}: {k}", d.display());
        }
        let tc = read(d.join("tokenizer_config.json"));
        assert_eq!(
            tc["model_max_length"],
            EncoderConfig::tiny().max_position_embeddings
        );
        assert_eq!(tc["cls_token"], "[CLS]");
        assert_eq!(
            read(d.join("special_tokens_map.json"))["mask_token"],
            "[MASK]"
        );
        assert!(d.join("tokenizer.json").is_file() && d.join("config.json").is_file());
        // A word-level tokenizer has no vocab.txt.
        assert!(!d.join("vocab.txt").exists());
        let card = std::fs::read_to_string(d.join("README.md")).unwrap();
        assert!(
            card.contains("base_model: unused") && card.contains("eval_accuracy"),
            "{card}"
        );
    }
    // Berth's position lives beside, in rng_state.json.
    let pos: Position = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint-2/rng_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pos.seed, 42);
    let all = read(out.join("all_results.json"));
    assert_eq!(all["eval_accuracy"], summary.eval["eval_accuracy"]);
    assert!(all["train_loss"].as_f64().unwrap() > 0.0);
    assert_eq!(read(out.join("train_results.json"))["epoch"], all["epoch"]);
    assert_eq!(
        read(out.join("test_results.json"))["test_accuracy"],
        summary.test["test_accuracy"]
    );
    // The report: curves as SVG (no font needed), the test confusion matrix.
    let svg = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains(">grad_norm<") && svg.contains(">eval_accuracy<")
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("confusion matrix") && report.contains("| neg |"),
        "{report}"
    );
    let support: u64 = report
        .lines()
        .skip_while(|l| !l.starts_with("| class |"))
        .skip(2)
        .take(2)
        .map(|l| {
            l.trim_end_matches(" |")
                .rsplit("| ")
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(support, 32, "{report}");
}

#[test]
fn a_multi_label_set_converges_and_saves_its_problem_type() {
    let root = tempfile::tempdir().unwrap();
    // Wider than the tiny config: at 16 hidden units the first class learned takes
    // the whole pooled representation and the second never separates.
    let mut bert = EncoderConfig::tiny();
    bert.hidden_size = 64;
    bert.intermediate_size = 128;
    let dir = model_dir(root.path(), "small-bert", &bert);
    let out = root.path().join("run");
    let mut cfg = config(
        &out,
        &[
            "learning_rate=1e-3",
            "num_train_epochs=40",
            "per_device_train_batch_size=8",
            "per_device_eval_batch_size=16",
            "lr_scheduler_type=\"constant\"",
        ],
    );
    cfg.task = TaskConfig::MultiLabelClassification {
        multi_label: MultiLabelConfig::default(),
        chunking: None,
    };
    // Two independent classes, both read from the first word (one of five words
    // per combination), then filler.
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for i in 0..32usize {
        let (a, b) = (i % 2 == 1, (i / 2) % 2 == 1);
        let first = 5 + 10 * (a as u32 + 2 * b as u32) + (i % 5) as u32;
        ids.push(vec![2, first, 50 + (i % 7) as u32, 3]);
        labels.push(vec![a as u8 as f32, b as u8 as f32]);
    }
    let types = ids.iter().map(|r: &Vec<u32>| vec![0u8; r.len()]).collect();
    let rows = Rows::new(LabelledSequences { ids, types, labels });
    let split = |name: &str| Split {
        name: name.into(),
        source: "synthetic".into(),
        rows: rows.clone(),
    };
    let data = TaskData {
        train: split("train"),
        eval: Some(split("eval")),
        test: None,
        class_names: vec!["a".into(), "b".into()],
    };
    let mut t = Trainer::with_data(cfg, data, tiny_tokenizer(), dir.clone(), Device::Cpu).unwrap();
    let before = t.evaluate(&t.data.train.clone(), "train").unwrap();
    t.train().unwrap();
    let after = t.evaluate(&t.data.train.clone(), "train").unwrap();
    assert_eq!(
        after["train_exact_match"], 1.0,
        "before {before:?}, after {after:?}"
    );
    assert_eq!(after["train_f1_micro"], 1.0);
    assert!(
        after["train_loss"] < before["train_loss"] / 5.0,
        "{before:?} {after:?}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["problem_type"], "multi_label_classification");
    assert_eq!(saved["id2label"]["1"], "b");
}

/// What preparing the data of a classification run on `files` (name, contents) says,
/// with `sets` as config overrides.
fn prepare_error(files: &[(&str, &str)], sets: &[&str]) -> (String, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut overrides = vec![format!("data.data_dir={:?}", dir.display().to_string())];
    overrides.extend(sets.iter().map(|s| s.to_string()));
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let cfg = config(&dir.join("run"), &overrides);
    let tok = tiny_tokenizer();
    let task = crate::setup::build_task(&cfg, &tok, &Device::Cpu).unwrap();
    let e = crate::prepare(&cfg, task.as_ref(), &tok, 40).unwrap_err();
    // The files outlive the message only as a name: keep the directory for it.
    (e.to_string(), root.keep())
}

#[test]
fn a_bad_label_names_the_file_line_value_and_classes_after_a_shuffle() {
    let rows: String = (0..40)
        .map(|i| {
            let label = match i {
                17 => "-3".to_string(),
                25 => "7".to_string(),
                _ => (i % 2).to_string(),
            };
            format!("w{} w{},{label}\n", 5 + i % 50, 6 + i % 50)
        })
        .collect();
    let (e, dir) = prepare_error(
        &[("bad.csv", &format!("text,label\n{rows}"))],
        &["data.train=\"bad.csv\"", "data.format=\"csv\""],
    );
    // Row 17 of the file is its line 19 (the header is line 1), whatever the shuffle.
    assert_eq!(
        e,
        format!(
            "{}: line 19, column 'label': label -3 is not a class id: class ids count from 0 (labels seen: {{-3, 0, 1, 7}})",
            dir.join("bad.csv").display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_eval_label_outside_the_train_classes_names_them() {
    let (e, dir) = prepare_error(
        &[
            (
                "train.jsonl",
                "{\"text\": \"w5\", \"label\": \"neg\"}\n{\"text\": \"w6\", \"label\": \"pos\"}\n",
            ),
            (
                "dev.jsonl",
                "{\"text\": \"w5\", \"label\": \"pos\"}\n\n{\"text\": \"w6\", \"label\": \"meh\"}\n",
            ),
        ],
        &["data.train=\"train.jsonl\"", "data.eval=\"dev.jsonl\""],
    );
    assert_eq!(
        e,
        format!(
            "{}: line 3, column 'label': label 'meh' is not one of [\"neg\", \"pos\"]",
            dir.join("dev.jsonl").display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn nan_and_inf_labels_are_not_class_ids() {
    for (value, shown) in [
        ("nan", "NaN"),
        ("inf", "inf"),
        ("0.5", "0.5"),
        // Whole, but past any integer: the cast would make it a missing label.
        ("1e30", "1e30"),
    ] {
        let (e, dir) = prepare_error(
            &[(
                "f.csv",
                &format!("text,label\nw5,0.0\nw6,1.0\nw7,{value}\nw8,1.0\n"),
            )],
            &["data.train=\"f.csv\""],
        );
        assert_eq!(
            e,
            format!(
                "{}: line 4, column 'label': label {shown} is not a class id (an integer from 0)",
                dir.join("f.csv").display()
            ),
            "{value}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_null_text_a_wrong_column_type_and_a_missing_split_say_so() {
    let (e, dir) = prepare_error(
        &[(
            "t.jsonl",
            "{\"text\": \"w5\", \"label\": 0}\n{\"text\": null, \"label\": 1}\n",
        )],
        &["data.train=\"t.jsonl\""],
    );
    assert_eq!(
        e,
        format!(
            "{}: line 2, column 'text': text is null",
            dir.join("t.jsonl").display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();

    let (e, dir) = prepare_error(
        &[(
            "n.jsonl",
            "{\"text\": 5, \"label\": 0}\n{\"text\": 6, \"label\": 1}\n",
        )],
        &["data.train=\"n.jsonl\""],
    );
    assert_eq!(
        e,
        format!(
            "{}: column 'text' must be a string column, found Int64",
            dir.join("n.jsonl").display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();

    let (e, dir) = prepare_error(
        &[("train.csv", "text,label\nw5,0\nw6,1\n")],
        &["data.train=\"train.csv\"", "data.eval=\"dev.csv\""],
    );
    assert_eq!(
        e,
        format!(
            "config: data file {} does not exist (data_dir {}; set data.data_dir or BERTH_DATA_DIR, or data.hub)",
            dir.join("dev.csv").display(),
            dir.display()
        )
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scorer_states_merge_into_the_scorer_of_all_batches() {
    use crate::task::{ClassScorer, LmScorer, Scorer};
    // Classification: ranks' predictions and labels, concatenated.
    let mut whole = ClassScorer::new(3);
    whole
        .merge(&[5.0, 0.0, 1.0, 2.0, 2.0, 1.0, 0.0, 1.0, 1.0, 2.0, 0.0])
        .unwrap();
    let (mut a, mut b) = (ClassScorer::new(3), ClassScorer::new(3));
    a.merge(&[2.0, 0.0, 1.0, 0.0, 1.0]).unwrap();
    b.merge(&[3.0, 2.0, 2.0, 1.0, 1.0, 2.0, 0.0]).unwrap();
    let mut gathered = ClassScorer::new(3);
    for s in [a.state(), b.state()] {
        gathered.merge(&s).unwrap();
    }
    assert_eq!(gathered.metrics(), whole.metrics());
    assert_eq!(gathered.state(), whole.state());
    assert!(whole.metrics()["accuracy"] > 0.0);
    // Language modelling: the counts add.
    let mut lm = LmScorer::default();
    lm.merge(&[6.0, 3.0, 2.0, 1.0, 2.0]).unwrap();
    lm.merge(&[3.0, 1.0, 1.0, 0.0, 2.0]).unwrap();
    assert_eq!(lm.state(), vec![9.0, 4.0, 3.0, 1.0, 4.0]);
    assert_eq!(lm.metrics()["mlm_accuracy"], 0.75);
    assert_eq!(lm.metrics()["nsp_accuracy"], 0.25);
    // A state of the wrong shape (ranks out of step) is an error, not a wrong metric.
    assert!(ClassScorer::new(2).merge(&[2.0, 1.0]).is_err());
    assert!(LmScorer::default().merge(&[1.0]).is_err());
}

#[test]
fn a_checkpoint_s_architecture_picks_its_task_in_every_family() {
    use crate::config::TaskConfig;
    let task = |arch: &str, problem: Option<&str>| {
        TaskConfig::for_checkpoint(arch, problem, None)
            .unwrap()
            .name()
            .to_string()
    };
    assert_eq!(task("RobertaForMaskedLM", None), "mlm");
    assert_eq!(task("DistilBertForMaskedLM", None), "mlm");
    assert_eq!(task("BertForPreTraining", None), "nsp");
    assert_eq!(
        task(
            "XLMRobertaForSequenceClassification",
            Some("multi_label_classification")
        ),
        "multi_label_classification"
    );
    // Every google/electra-*-discriminator names ElectraForPreTraining (replaced-token
    // detection, not NSP): it starts a classifier, as a bare encoder does.
    assert_eq!(task("ElectraForPreTraining", None), "classification");
    assert_eq!(task("RobertaModel", None), "classification");
}

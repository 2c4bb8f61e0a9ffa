//! `berth predict` on a checkpoint written by berth-model: rows in input order, label
//! names from id2label, and chunked prediction equal to plain prediction for texts
//! that fit in one chunk.

mod common;

use berth_model::{EncoderConfig, Params, SequenceClassifier};
use candle_core::Device;

use common::{berth_ok, jsonl_rows as rows};

fn berth(args: &[&str], cache: &std::path::Path) {
    berth_ok(args, cache);
}

#[test]
fn predicts_in_order_with_label_names_and_pools_chunks() {
    let Some(minilm) = berth_testkit::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // A small random model over MiniLM's vocabulary, with named classes.
    let model = tmp.path().join("model");
    let mut cfg: EncoderConfig = EncoderConfig::tiny();
    cfg.vocab_size = 30522;
    cfg.max_position_embeddings = 64;
    cfg.set_labels(&["neg".into(), "pos".into()]);
    let mut p = Params::random(&Device::Cpu, 5, 0.5);
    SequenceClassifier::new(&cfg, &mut p).unwrap();
    let (vm, _) = p.finish();
    berth_model::save(&model, &cfg, "BertForSequenceClassification", &vm).unwrap();
    std::fs::copy(minilm.join("tokenizer.json"), model.join("tokenizer.json")).unwrap();

    let input = tmp.path().join("in.jsonl");
    let texts = [
        "A fine film.",
        "Dull, slow and far too long for what it says.",
        "",
        "ok",
    ];
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();

    let plain = tmp.path().join("plain.jsonl");
    let m = model.to_str().unwrap();
    let i = input.to_str().unwrap();
    berth(
        &[
            "predict",
            "--model",
            m,
            "--input",
            i,
            "--batch-size",
            "3",
            "--output",
            plain.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let chunked = tmp.path().join("chunked.jsonl");
    berth(
        &[
            "predict",
            "--model",
            m,
            "--input",
            i,
            "--chunk-size",
            "62",
            "--stride",
            "62",
            "--output",
            chunked.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let (p, c) = (rows(&plain), rows(&chunked));
    assert_eq!(p.len(), 4);
    for (a, b) in p.iter().zip(&c) {
        let la: Vec<f64> = a["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let lb: Vec<f64> = b["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(la.len(), 2);
        for (x, y) in la.iter().zip(&lb) {
            assert!(
                (x - y).abs() < 1e-4,
                "one chunk must equal the plain prediction: {la:?} vs {lb:?}"
            );
        }
        let label = a["label"].as_u64().unwrap() as usize;
        assert_eq!(label, if la[0] >= la[1] { 0 } else { 1 });
        assert_eq!(a["label_name"], ["neg", "pos"][label]);
    }
    // pipeline()-like: the input's columns are kept, with the probabilities and the
    // predicted label's score.
    for (row, text) in p.iter().zip(texts) {
        assert_eq!(row["text"], text);
        let probs: Vec<f64> = row["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{probs:?}");
        let label = row["label"].as_u64().unwrap() as usize;
        assert!((row["score"].as_f64().unwrap() - probs[label]).abs() < 1e-6);
        assert!(probs.iter().all(|&q| q <= probs[label]));
    }
    // `-` reads JSON Lines on stdin and writes them on stdout, the same rows.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "predict",
            "--model",
            m,
            "--input",
            "-",
            "--batch-size",
            "3",
            "--output",
            "-",
        ])
        .env("BERTH_CACHE", tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(std::fs::read(&input).unwrap().as_slice())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let piped: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(piped, p);

    // Several chunks per text are pooled into one row per text.
    let small = tmp.path().join("small.jsonl");
    berth(
        &[
            "predict",
            "--model",
            m,
            "--input",
            i,
            "--chunk-size",
            "3",
            "--stride",
            "2",
            "--pool",
            "max",
            "--output",
            small.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(rows(&small).len(), 4);
}

#[test]
fn a_masked_lm_checkpoint_predicts_the_top_k_fills_of_each_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("mlm");
    let tok = tiny_checkpoint(&model, "BertForMaskedLM", 9, |cfg, p| {
        berth_model::MaskedLm::new(cfg, p).unwrap();
    });
    let input = tmp.path().join("in.jsonl");
    let texts = ["The [MASK] sat on the [MASK].", "No mask here.", "[MASK]"];
    let rows_in: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }))
        .collect();
    write_jsonl(&input, &rows_in);
    let out = tmp.path().join("fills.jsonl");
    berth(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--top-k",
            "3",
            "--batch-size",
            "2",
            "--output",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let got = rows(&out);
    assert_eq!(got.len(), 3);

    // The reference: the model's own logits at each [MASK], softmaxed, top 3.
    let (config, mut params) = berth_model::open_dir(&model, &Device::Cpu, 0).unwrap();
    let lm = berth_model::MaskedLm::new(&config, &mut params).unwrap();
    for (text, row) in texts.iter().zip(&got) {
        let ids = tok.encode(*text, true).unwrap().get_ids().to_vec();
        let masks: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == 103).collect();
        let positions: Vec<usize> = row["mask_positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(positions, masks, "{text}");
        let input = candle_core::Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = lm
            .forward(&input, None, None, &berth_model::Mode::eval())
            .unwrap()
            .squeeze(0)
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&logits)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (k, &pos) in masks.iter().enumerate() {
            let ids_k: Vec<usize> = row["fill_token_ids"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let scores: Vec<f32> = row["fill_scores"][k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let mut order: Vec<usize> = (0..probs[pos].len()).collect();
            order.sort_by(|&a, &b| probs[pos][b].total_cmp(&probs[pos][a]));
            assert_eq!(ids_k, order[..3].to_vec(), "{text} mask {k}");
            for (s, &id) in scores.iter().zip(&ids_k) {
                assert!(
                    (s - probs[pos][id]).abs() < 1e-5,
                    "{s} vs {}",
                    probs[pos][id]
                );
            }
            let tokens = &row["fill_tokens"][k];
            assert_eq!(
                tokens[0].as_str().unwrap(),
                tok.id_to_token(ids_k[0] as u32).unwrap()
            );
        }
    }
}

#[test]
fn a_pre_training_checkpoint_predicts_fills_and_the_next_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("pretraining");
    let tok = tiny_checkpoint(&model, "BertForPreTraining", 4, |cfg, p| {
        berth_model::PreTraining::new(cfg, p).unwrap();
    });
    let input = tmp.path().join("pairs.jsonl");
    let pairs = [
        ("The cat sat on the [MASK].", "It was warm there."),
        ("Stocks fell today.", "The [MASK] was [MASK]."),
    ];
    let rows_in: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(a, b)| serde_json::json!({ "a": a, "b": b }))
        .collect();
    write_jsonl(&input, &rows_in);
    let out = tmp.path().join("nsp.jsonl");
    berth(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--text-column",
            "a",
            "--pair-column",
            "b",
            "--top-k",
            "2",
            "--output",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let got = rows(&out);
    assert_eq!(got.len(), 2);

    // The reference: the model's own NSP logits for the encoded pair.
    let (config, mut params) = berth_model::open_dir(&model, &Device::Cpu, 0).unwrap();
    let pt = berth_model::PreTraining::new(&config, &mut params).unwrap();
    for ((a, b), row) in pairs.iter().zip(&got) {
        let enc = tok.encode((*a, *b), true).unwrap();
        let ids = enc.get_ids().to_vec();
        let types: Vec<u32> = enc.get_type_ids().to_vec();
        let masks: Vec<u64> = (0..ids.len() as u64)
            .filter(|&i| ids[i as usize] == 103)
            .collect();
        let positions: Vec<u64> = row["mask_positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(positions, masks, "{a} / {b}");
        assert_eq!(row["fill_tokens"].as_array().unwrap().len(), masks.len());
        assert!(row["fill_tokens"][0].as_array().unwrap().len() == 2);
        let tensor = |v: &[u32]| {
            candle_core::Tensor::new(v, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap()
        };
        let (_, nsp) = pt
            .forward(
                &tensor(&ids),
                Some(&tensor(&types)),
                None,
                &berth_model::Mode::eval(),
            )
            .unwrap();
        let want = nsp.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        let logits: Vec<f32> = row["nsp_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (x, y) in logits.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{logits:?} vs {want:?}");
        }
        let label = row["next_sentence_label"].as_u64().unwrap();
        assert_eq!(label, if logits[0] >= logits[1] { 0 } else { 1 });
    }
}

/// A random tiny model over MiniLM's vocabulary saved as `arch` in `dir`, with
/// MiniLM's tokenizer; `build` declares its parameters. Also that tokenizer, without
/// the padding MiniLM's tokenizer.json asks for, to compute references with.
fn tiny_checkpoint(
    dir: &std::path::Path,
    arch: &str,
    seed: u64,
    build: impl FnOnce(&EncoderConfig, &mut Params),
) -> berth_data::tokenizers::Tokenizer {
    let Some(minilm) = berth_testkit::minilm_dir() else {
        panic!("MiniLM fixture missing: run `cargo xtask fixtures`");
    };
    let mut cfg: EncoderConfig = EncoderConfig::tiny();
    cfg.vocab_size = 30522;
    cfg.max_position_embeddings = 64;
    let mut p = Params::random(&Device::Cpu, seed, 0.5);
    build(&cfg, &mut p);
    let (vm, _) = p.finish();
    berth_model::save(dir, &cfg, arch, &vm).unwrap();
    std::fs::copy(minilm.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let mut tok =
        berth_data::tokenizers::Tokenizer::from_file(minilm.join("tokenizer.json")).unwrap();
    tok.with_padding(None);
    tok
}

/// Rows of `{column: value}` objects as a JSON Lines file.
fn write_jsonl(path: &std::path::Path, rows: &[serde_json::Value]) {
    let lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

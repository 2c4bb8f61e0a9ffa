//! `berth chunk` and `berth pretrain-data` end to end on the shared datasets.

mod common;

use std::path::Path;
use std::process::Command;

use common::{berth_ok as berth, jsonl_rows};

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn chunks_the_imdb_sample_in_input_order() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("chunks.jsonl");
    let input = data.join("imdb/sample/train.jsonl");
    berth(
        &[
            "chunk",
            "--tokenizer",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--chunk-size",
            "510",
            "--stride",
            "510",
            "--min-chunk-len",
            "1",
            "--output",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let rows = jsonl_rows(&out);
    assert_eq!(rows.len(), 2_000);
    let originals = jsonl_rows(&input);
    for (r, o) in rows.iter().zip(&originals) {
        assert_eq!(r["id"], o["id"], "rows keep the input order");
        assert_eq!(r["label"], o["label"]);
        assert!(r.get("text").is_none());
        let chunks = r["chunks"].as_array().unwrap();
        assert_eq!(chunks.len() as u64, r["num_chunks"].as_u64().unwrap());
        for c in chunks {
            let c = ids(c);
            assert!(c.len() <= 512);
            assert_eq!((c[0], c[c.len() - 1]), (101, 102));
        }
    }
    // The data README: 315 of the 2,000 train reviews exceed 510 word-pieces.
    let long = rows
        .iter()
        .filter(|r| r["num_chunks"].as_u64().unwrap() > 1)
        .count();
    assert_eq!(long, 315);
}

#[test]
fn chunk_rejects_a_stride_longer_than_the_chunk() {
    let Some(model) = berth_testkit::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("t.jsonl");
    std::fs::write(&input, "{\"text\": \"a b c\"}\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["chunk", "--tokenizer", model.to_str().unwrap(), "--input"])
        .arg(&input)
        .args(["--chunk-size", "100", "--stride", "200", "--output"])
        .arg(tmp.path().join("o.jsonl"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stride 200 must be between 1 and chunk_size 100"),
        "{err}"
    );
}

#[test]
fn nsp_pairs_from_meditations_are_balanced() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nsp.jsonl");
    berth(
        &[
            "pretrain-data",
            "--tokenizer",
            model.to_str().unwrap(),
            "--input",
            data.join("meditations/meditations.txt").to_str().unwrap(),
            "--nsp",
            "--max-length",
            "128",
            "--seed",
            "42",
            "--output",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let rows = jsonl_rows(&out);
    assert!(rows.len() > 1_000, "{} pairs", rows.len());
    let not_next = rows
        .iter()
        .filter(|r| r["next_sentence_label"] == 1)
        .count();
    let share = not_next as f64 / rows.len() as f64;
    assert!((share - 0.5).abs() <= 0.03, "NotNext share {share}");
    for r in &rows {
        let (input, labels, types) = (
            ids(&r["input_ids"]),
            r["labels"].as_array().unwrap(),
            ids(&r["token_type_ids"]),
        );
        assert!(input.len() <= 128);
        assert_eq!(input.len(), labels.len());
        assert_eq!(input.len(), types.len());
        assert_eq!(input[0], 101);
        assert_eq!(input.iter().filter(|&&i| i == 102).count(), 2);
    }
}

#[test]
fn plain_mlm_masks_every_selected_token() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mlm.parquet");
    let args = |out: &Path| {
        vec![
            "pretrain-data".to_string(),
            "--tokenizer".into(),
            model.to_str().unwrap().into(),
            "--input".into(),
            data.join("meditations/meditations.txt")
                .to_str()
                .unwrap()
                .into(),
            "--mask-strategy".into(),
            "plain".into(),
            "--max-length".into(),
            "256".into(),
            "--seed".into(),
            "1".into(),
            "--output".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let a: Vec<String> = args(&out);
    berth(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    let jl = tmp.path().join("mlm.jsonl");
    let a: Vec<String> = args(&jl);
    berth(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    );
    let rows = jsonl_rows(&jl);
    assert_eq!(rows.len(), 507);
    let (mut selected, mut candidates) = (0, 0);
    for r in &rows {
        let input = ids(&r["input_ids"]);
        let labels: Vec<i64> = r["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        for (i, l) in input.iter().zip(&labels) {
            if *l == -100 {
                assert_ne!(*i, 103);
            } else {
                assert_eq!(*i, 103, "plain masking replaces every selected token");
                selected += 1;
            }
            if ![0, 101, 102].contains(i) || *l != -100 {
                candidates += 1;
            }
        }
    }
    let rate = selected as f64 / candidates as f64;
    assert!((rate - 0.15).abs() < 0.01, "selection rate {rate}");
    assert!(out.exists());
}

/// `berth chunk` streams a Parquet input (no --cache-dir); the result equals the
/// cached dataset path's, row for row, on all of IMDB train.
#[test]
fn streamed_chunks_equal_the_cached_dataset_path() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = data.join("imdb/train.parquet");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "chunk",
            "--tokenizer",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        berth(&args, tmp.path());
    };
    let streamed = tmp.path().join("streamed.parquet");
    let cached = tmp.path().join("cached.parquet");
    let cache = tmp.path().join("cache");
    run(&streamed, &[]);
    run(&cached, &["--cache-dir", cache.to_str().unwrap()]);
    let load = |p: &Path| {
        berth_data::load_parquet(p.to_str().unwrap(), &berth_data::LoadOptions::in_memory())
            .unwrap()
    };
    let (a, b) = (load(&streamed), load(&cached));
    assert_eq!(a.num_rows(), 25_000);
    assert_eq!(a.column_names(), vec!["label", "chunks", "num_chunks"]);
    assert_eq!(a.column_names(), b.column_names());
    for name in a.column_names() {
        let (x, y) = (a.column(&name).unwrap(), b.column(&name).unwrap());
        assert!(x.as_ref() == y.as_ref(), "column {name} differs");
    }
}

/// A bad row in a streamed Parquet input is named, and no output is left behind.
#[test]
fn streamed_bad_row_is_named_and_writes_nothing() {
    let Some(model) = berth_testkit::minilm_dir() else {
        return;
    };
    use berth_data::arrow::array::{ArrayRef, RecordBatch, StringArray};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("nulls.parquet");
    let texts: Vec<Option<&str>> = (0..2500)
        .map(|i| if i == 2100 { None } else { Some("a review") })
        .collect();
    let batch = RecordBatch::try_from_iter([(
        "text",
        std::sync::Arc::new(StringArray::from(texts)) as ArrayRef,
    )])
    .unwrap();
    berth_data::Dataset::from_batch(batch, "nulls")
        .unwrap()
        .to_parquet(&input)
        .unwrap();
    let out = tmp.path().join("out.parquet");
    let cache = tempfile::tempdir().unwrap();
    let o = common::berth_output(
        &[
            "chunk",
            "--tokenizer",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        cache.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("row 2100 (0-based), column 'text': text is null"),
        "{err}"
    );
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "nulls.parquet")
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

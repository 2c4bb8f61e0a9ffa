//! Every shared dataset loads through its own format with its exact row count, and
//! the hub loader reads a dataset repo from an offline cache laid out as hf-hub does.

use std::path::Path;

use berth_data::arrow::array::{Array, StringArray};
use berth_data::arrow::datatypes::DataType;
use berth_data::{
    CacheMode, CsvOptions, HubOptions, LoadOptions, SampleBy, load, load_csv, load_hub,
    load_hub_split, load_jsonl, load_parquet, load_text,
};

fn opts(dir: &Path) -> LoadOptions {
    LoadOptions {
        cache: CacheMode::Dir(dir.to_path_buf()),
        batch_size: 1000,
    }
}

#[test]
fn imdb_parquet_has_25k_rows_per_split() {
    let Some(data) = berth_testkit::data_dir() else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        let p = data.join(format!("imdb/{split}.parquet"));
        let ds = load_parquet(p.to_str().unwrap(), &opts(cache.path())).unwrap();
        assert_eq!(ds.num_rows(), 25_000, "{split}");
        assert_eq!(ds.column_names(), vec!["text", "label"]);
        assert_eq!(ds.schema().field(1).data_type(), &DataType::Int64);
        assert!(
            ds.cache_file().is_some(),
            "loaded datasets are memory-mapped from the cache"
        );
    }
    // A second load reuses the cache file.
    let p = data.join("imdb/train.parquet");
    let a = load_parquet(p.to_str().unwrap(), &opts(cache.path())).unwrap();
    let b = load_parquet(p.to_str().unwrap(), &opts(cache.path())).unwrap();
    assert_eq!(a.cache_file(), b.cache_file());
}

#[test]
fn mrpc_tsv_keeps_unbalanced_quotes_and_strips_the_bom() {
    let Some(data) = berth_testkit::data_dir() else {
        return;
    };
    let o = LoadOptions::in_memory();
    let train = load_csv(&data.join("mrpc/train.tsv"), &CsvOptions::tsv(), &o).unwrap();
    assert_eq!(train.num_rows(), 3_668);
    assert_eq!(
        train.column_names(),
        vec!["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    );
    assert_eq!(train.schema().field(0).data_type(), &DataType::Int64);
    let dev = load(data.join("mrpc/dev.tsv").to_str().unwrap(), None, &o).unwrap();
    assert_eq!(dev.num_rows(), 408);
    let test = load(data.join("mrpc/test.tsv").to_str().unwrap(), None, &o).unwrap();
    assert_eq!(test.num_rows(), 1_725);
    // Some strings hold a lone double quote: quoting off keeps them verbatim.
    let s = train.column("#1 String").unwrap();
    let s = s.as_any().downcast_ref::<StringArray>().unwrap();
    assert!((0..s.len()).any(|i| s.value(i).matches('"').count() % 2 == 1));
}

#[test]
fn imdb_sample_jsonl_splits() {
    let Some(data) = berth_testkit::data_dir() else {
        return;
    };
    for (split, n) in [("train", 2_000), ("validation", 500), ("test", 1_000)] {
        let ds = load_jsonl(
            &data.join(format!("imdb/sample/{split}.jsonl")),
            &LoadOptions::in_memory(),
        )
        .unwrap();
        assert_eq!(ds.num_rows(), n, "{split}");
        assert_eq!(ds.column_names(), vec!["id", "rating", "label", "text"]);
    }
}

#[test]
fn meditations_is_one_row_per_line() {
    let Some(data) = berth_testkit::data_dir() else {
        return;
    };
    let p = data.join("meditations/meditations.txt");
    let ds = load_text(&p, SampleBy::Line, &LoadOptions::in_memory()).unwrap();
    assert_eq!(ds.num_rows(), 507);
    let text = ds.column("text").unwrap();
    let text = text.as_any().downcast_ref::<StringArray>().unwrap();
    assert!((0..text.len()).all(|i| !text.value(i).is_empty()));
}

#[test]
fn hub_dataset_loads_offline_from_an_hf_hub_cache() {
    let Some(data) = berth_testkit::data_dir() else {
        return;
    };
    let sample = load_jsonl(
        &data.join("imdb/sample/validation.jsonl"),
        &LoadOptions::in_memory(),
    )
    .unwrap();
    // As the hub's parquet files do, carry HF `datasets` features in the schema
    // metadata, so the label column keeps its class names.
    let features =
        r#"{"info": {"features": {"label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}}"#;
    let schema = std::sync::Arc::new(sample.schema().as_ref().clone().with_metadata(
        std::collections::HashMap::from([("huggingface".to_string(), features.to_string())]),
    ));
    let batches = sample
        .batches()
        .iter()
        .map(|b| b.clone().with_schema(schema.clone()).unwrap())
        .collect();
    let sample = berth_data::Dataset::from_batches(schema, batches, "sample").unwrap();
    let hub = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = hub.path().join("datasets--stanfordnlp--imdb");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit).join("plain_text");
    std::fs::create_dir_all(&snap).unwrap();
    let halves = sample
        .train_test_split(berth_data::SplitSize::Rows(200), 0)
        .unwrap();
    halves
        .split("train")
        .unwrap()
        .to_parquet(&snap.join("train-00000-of-00001.parquet"))
        .unwrap();
    halves
        .split("test")
        .unwrap()
        .to_parquet(&snap.join("test-00000-of-00001.parquet"))
        .unwrap();
    std::fs::write(snap.parent().unwrap().join("README.md"), "card").unwrap();

    let cache = tempfile::tempdir().unwrap();
    let dict = load_hub(
        "stanfordnlp/imdb",
        None,
        &HubOptions::offline(hub.path()),
        &opts(cache.path()),
    )
    .unwrap();
    assert_eq!(dict.names(), vec!["train", "test"]);
    assert_eq!(dict.split("train").unwrap().num_rows(), 300);
    assert_eq!(dict.split("test").unwrap().num_rows(), 200);
    assert_eq!(
        dict.split("train").unwrap().class_names("label"),
        Some(vec!["neg".to_string(), "pos".to_string()])
    );
    assert_eq!(dict.split("train").unwrap().class_names("text"), None);
    // One split alone, as `load_dataset(..., split="test")`.
    let test = load_hub_split(
        "stanfordnlp/imdb",
        None,
        "test",
        &HubOptions::offline(hub.path()),
        &opts(cache.path()),
    )
    .unwrap();
    assert_eq!(test.num_rows(), 200);
    assert_eq!(test.source_name(), "stanfordnlp/imdb/plain_text/test");
    let err = load_hub_split(
        "stanfordnlp/imdb",
        None,
        "validation",
        &HubOptions::offline(hub.path()),
        &opts(cache.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("stanfordnlp/imdb") && err.contains("split 'validation'"),
        "{err}"
    );
    let err = load_hub(
        "stanfordnlp/imdb",
        Some("nope"),
        &HubOptions::offline(hub.path()),
        &opts(cache.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("config 'nope'") && err.contains("plain_text"),
        "{err}"
    );
}

//! Shared set-up of Berth's criterion benches (`benches/*.rs` beside this file): the
//! IMDB texts and the MiniLM tokenizer they run on.

use berth_data::arrow::array::{Array, Int64Array, StringArray};
use berth_data::tokenizers::Tokenizer;
use berth_data::{HubOptions, LoadOptions};

/// `BERTH_BENCH_IMDB`, or `$BERTH_DATA_DIR/imdb/train.parquet`.
pub fn imdb_path() -> String {
    std::env::var("BERTH_BENCH_IMDB").unwrap_or_else(|_| {
        berth_testkit::data_dir_path()
            .join("imdb/train.parquet")
            .display()
            .to_string()
    })
}

/// `BERTH_BENCH_ROWS`, or `default`.
pub fn bench_rows(default: usize) -> usize {
    std::env::var("BERTH_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The MiniLM tokenizer from `cargo xtask fixtures`, padding and truncation off.
pub fn tokenizer() -> Tokenizer {
    let model = berth_testkit::minilm_dir().expect("run `cargo xtask fixtures` first");
    let mut tok =
        berth_data::load_tokenizer(model.to_str().expect("utf-8 path"), &HubOptions::from_env())
            .expect("tokenizer");
    tok.with_padding(None);
    tok.with_truncation(None).expect("truncation off");
    tok
}

/// The first `rows` IMDB reviews of a seed-0 shuffle (both labels, all lengths).
pub fn imdb_texts(rows: usize) -> (Vec<String>, Vec<i64>) {
    let full =
        berth_data::load_parquet(&imdb_path(), &LoadOptions::in_memory()).expect("load imdb");
    let sample = full.shuffle(0).expect("shuffle");
    let batch = sample.slice(0, rows.min(sample.num_rows())).expect("slice");
    let text = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("text column");
    let label = batch
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("label column");
    (
        (0..text.len()).map(|i| text.value(i).to_string()).collect(),
        label.values().to_vec(),
    )
}

/// The reviews tokenized without special tokens (input to the chunker).
pub fn imdb_ids(rows: usize) -> (Vec<Vec<u32>>, Vec<i64>) {
    let (texts, labels) = imdb_texts(rows);
    let tok = tokenizer();
    let enc = tok
        .encode_batch_fast(texts.iter().map(String::as_str).collect::<Vec<_>>(), false)
        .expect("encode");
    (enc.iter().map(|e| e.get_ids().to_vec()).collect(), labels)
}

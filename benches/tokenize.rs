//! The tokenize map over IMDB reviews beside the raw `tokenizers` batch encoders on
//! the same texts, in tokens/s. `BERTH_BENCH_IMDB` names the parquet file (default
//! `$BERTH_DATA_DIR/imdb/train.parquet`), `BERTH_BENCH_ROWS` how many reviews (2000).

use std::sync::Arc;

use berth_data::arrow::array::{Array, RecordBatch, StringArray};
use berth_data::{
    CacheMode, Dataset, HubOptions, LoadOptions, MapOptions, TokenizeConfig, TokenizeOp,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn setup() -> (berth_data::tokenizers::Tokenizer, Dataset, Vec<String>) {
    let model = berth_testkit::minilm_dir().expect("run `cargo xtask fixtures` first");
    let path = std::env::var("BERTH_BENCH_IMDB").unwrap_or_else(|_| {
        berth_testkit::data_dir_path()
            .join("imdb/train.parquet")
            .display()
            .to_string()
    });
    let rows: usize = std::env::var("BERTH_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let full = berth_data::load_parquet(&path, &LoadOptions::in_memory()).expect("load imdb");
    // A shuffled sample so both labels and all lengths are represented.
    let sample = full.shuffle(0).expect("shuffle");
    let batch: RecordBatch = sample.slice(0, rows.min(sample.num_rows())).expect("slice");
    let ds = Dataset::from_batch(batch.clone(), "imdb-sample")
        .expect("dataset")
        .with_cache(CacheMode::InMemory);
    let col = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("text column");
    let texts = (0..col.len()).map(|i| col.value(i).to_string()).collect();
    let tok =
        berth_data::load_tokenizer(model.to_str().expect("utf-8 path"), &HubOptions::from_env())
            .expect("tokenizer");
    (tok, ds, texts)
}

fn bench(c: &mut Criterion) {
    let (tok, ds, texts) = setup();
    let op = Arc::new(TokenizeOp::new(&tok, TokenizeConfig::new("text")).expect("op"));
    let raw = op.tokenizer().clone();
    let strs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = raw
        .encode_batch_fast(strs.clone(), true)
        .expect("encode")
        .iter()
        .map(|e| e.get_ids().len())
        .sum();
    println!("tokenize bench: {} reviews, {tokens} tokens", texts.len());
    let mut g = c.benchmark_group("tokenize_imdb");
    g.sample_size(10);
    g.throughput(Throughput::Elements(tokens as u64));
    g.bench_function("raw_encode_batch", |b| {
        b.iter(|| raw.encode_batch(strs.clone(), true).expect("encode"))
    });
    g.bench_function("raw_encode_batch_fast", |b| {
        b.iter(|| raw.encode_batch_fast(strs.clone(), true).expect("encode"))
    });
    g.bench_function("map_tokenize_op", |b| {
        b.iter(|| {
            ds.map_batched(op.as_ref(), &MapOptions::default())
                .expect("map")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

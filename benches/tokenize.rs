//! Tokenization of IMDB reviews in tokens/s: berth-wordpiece beside the raw
//! `tokenizers` batch encoders on the same texts, on one thread and on all of them, and
//! the tokenize map op. `BERTH_BENCH_IMDB` names the parquet file (default
//! `$BERTH_DATA_DIR/imdb/train.parquet`), `BERTH_BENCH_ROWS` how many reviews (2000).

use std::sync::Arc;

use berth_data::arrow::array::{ArrayRef, RecordBatch, StringArray};
use berth_data::tokenizers::TruncationParams;
use berth_data::{Dataset, MapOptions, TokenizeConfig, TokenizeOp};
use berth_wordpiece::{EncodeOptions, Truncation, WordPiece};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn setup() -> (berth_data::tokenizers::Tokenizer, Dataset, Vec<String>) {
    let (texts, _) = berth_benches::imdb_texts(berth_benches::bench_rows(2000));
    let column: ArrayRef = Arc::new(StringArray::from(texts.clone()));
    let batch = RecordBatch::try_from_iter([("text", column)]).expect("batch");
    let ds = Dataset::from_batch(batch, "imdb-sample").expect("dataset");
    (berth_benches::tokenizer(), ds, texts)
}

/// Checks that both libraries gave the same ids, row by row; returns how many.
fn same_ids(
    ours: &berth_wordpiece::BatchEncoding,
    theirs: &[berth_data::tokenizers::Encoding],
) -> usize {
    assert_eq!(ours.len(), theirs.len());
    for (i, e) in theirs.iter().enumerate() {
        assert_eq!(
            ours.row(i),
            e.get_ids(),
            "berth-wordpiece and tokenizers disagree on row {i}"
        );
    }
    ours.ids.len()
}

fn bench(c: &mut Criterion) {
    let (tok, ds, texts) = setup();
    let op = Arc::new(TokenizeOp::new(&tok, TokenizeConfig::new("text")).expect("op"));
    let raw = op.tokenizer().clone();
    let wp = WordPiece::from_json(&raw.to_string(false).expect("json")).expect("wordpiece");
    let strs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let opts = EncodeOptions::default();
    let ours = wp.encode_batch(&strs, None, &opts).expect("encode");
    let theirs = raw.encode_batch_fast(strs.clone(), true).expect("encode");
    let tokens = same_ids(&ours, &theirs);
    println!("tokenize bench: {} reviews, {tokens} tokens", texts.len());
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut g = c.benchmark_group("tokenize_imdb");
    g.sample_size(10);
    g.throughput(Throughput::Elements(tokens as u64));
    g.bench_function("wordpiece_encode_batch_1_thread", |b| {
        b.iter(|| one.install(|| wp.encode_batch(&strs, None, &opts).expect("encode")))
    });
    g.bench_function("tokenizers_encode_batch_fast_1_thread", |b| {
        b.iter(|| one.install(|| raw.encode_batch_fast(strs.clone(), true).expect("encode")))
    });
    g.bench_function("wordpiece_encode_batch", |b| {
        b.iter(|| wp.encode_batch(&strs, None, &opts).expect("encode"))
    });
    g.bench_function("tokenizers_encode_batch_fast", |b| {
        b.iter(|| raw.encode_batch_fast(strs.clone(), true).expect("encode"))
    });
    g.bench_function("tokenizers_encode_batch", |b| {
        b.iter(|| raw.encode_batch(strs.clone(), true).expect("encode"))
    });
    g.bench_function("map_tokenize_op", |b| {
        b.iter(|| {
            ds.map_batched(op.as_ref(), &MapOptions::default())
                .expect("map")
        })
    });
    g.finish();

    // Truncated to 512 ids, as a fine-tuning run reads IMDB: `tokenizers` 0.23 stops
    // tokenizing a text once it has 512 ids (at a pre-token's end).
    let t = Truncation::longest_first(512);
    let opts_t = EncodeOptions {
        truncation: Some(t),
        ..EncodeOptions::default()
    };
    let mut raw_t = raw.clone();
    raw_t
        .with_truncation(Some(TruncationParams {
            max_length: t.max_length,
            ..TruncationParams::default()
        }))
        .expect("truncation");
    let ours = wp.encode_batch(&strs, None, &opts_t).expect("encode");
    let theirs = raw_t.encode_batch_fast(strs.clone(), true).expect("encode");
    let tokens = same_ids(&ours, &theirs);
    println!("tokenize bench, truncated to 512: {tokens} tokens");
    let mut g = c.benchmark_group("tokenize_imdb_truncated_512");
    g.sample_size(10);
    g.throughput(Throughput::Elements(tokens as u64));
    g.bench_function("wordpiece_encode_batch_1_thread", |b| {
        b.iter(|| one.install(|| wp.encode_batch(&strs, None, &opts_t).expect("encode")))
    });
    g.bench_function("tokenizers_encode_batch_fast_1_thread", |b| {
        b.iter(|| one.install(|| raw_t.encode_batch_fast(strs.clone(), true).expect("encode")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Chunking and collation throughput over IMDB (belt chunks 510/510/1), and the
//! padding efficiency of each sampler on the chunked reviews, printed as a table.
//! `BERTH_BENCH_ROWS` reviews (default: all 25,000).

use berth_collate::{
    BatchSampler, Document, ItemShape, LengthGroupedSampler, Padding, RandomSampler,
    SequentialSampler, TokenBudgetSampler, collate_chunks, padding_efficiency,
};
use berth_data::berth_chunking::{ChunkConfig, SpecialTokens, chunk_ids};
use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let (ids, labels) = berth_benches::imdb_ids(berth_benches::bench_rows(25_000));
    let special: SpecialTokens =
        berth_data::special_tokens(&berth_benches::tokenizer()).expect("special tokens");
    let cfg = ChunkConfig::new(510, 510, 1, None, 512).expect("config");
    let tokens: usize = ids.iter().map(Vec::len).sum();

    let mut g = c.benchmark_group("chunking_imdb");
    g.sample_size(10);
    g.throughput(Throughput::Elements(tokens as u64));
    g.bench_function("chunk_ids_510_510_1", |b| {
        b.iter(|| {
            ids.iter()
                .map(|t| chunk_ids(t, &cfg, &special))
                .collect::<Vec<_>>()
        })
    });
    g.finish();

    let chunked: Vec<Vec<Vec<u32>>> = ids.iter().map(|t| chunk_ids(t, &cfg, &special)).collect();
    let shapes: Vec<ItemShape> = chunked
        .iter()
        .map(|c| ItemShape::of_rows(&c.iter().map(Vec::len).collect::<Vec<_>>()))
        .collect();
    let n = chunked.len();
    padding_table(&shapes);

    let batches = RandomSampler {
        len: n,
        batch_size: 16,
        seed: 0,
        drop_last: false,
    }
    .batches(0);
    let mut g = c.benchmark_group("collate_imdb");
    g.sample_size(10);
    g.throughput(Throughput::Elements(tokens as u64));
    g.bench_function("collate_chunks_16_texts_cpu", |b| {
        b.iter(|| {
            for batch in &batches {
                let docs: Vec<Document> = batch
                    .iter()
                    .map(|&i| Document {
                        chunks: chunked[i].iter().map(Vec::as_slice).collect(),
                        label: Some(labels[i]),
                    })
                    .collect();
                collate_chunks(
                    &docs,
                    &Padding::Longest {
                        multiple_of: Some(8),
                    },
                    special.pad,
                    &Device::Cpu,
                )
                .expect("collate");
            }
        })
    });
    g.finish();
}

/// The padding efficiency of each sampler over the chunked reviews' shapes, as a
/// table.
fn padding_table(shapes: &[ItemShape]) {
    let n = shapes.len();
    let samplers: Vec<(&str, Box<dyn BatchSampler>)> = vec![
        (
            "sequential (16 texts)",
            Box::new(SequentialSampler {
                len: n,
                batch_size: 16,
                drop_last: false,
            }),
        ),
        (
            "random (16 texts)",
            Box::new(RandomSampler {
                len: n,
                batch_size: 16,
                seed: 0,
                drop_last: false,
            }),
        ),
        (
            "length-grouped (16 texts)",
            Box::new(LengthGroupedSampler {
                lengths: shapes.iter().map(|s| s.rows * s.max_len).collect(),
                batch_size: 16,
                seed: 0,
                drop_last: false,
            }),
        ),
        (
            "token budget 16384, random",
            Box::new(
                TokenBudgetSampler::new(shapes.to_vec(), 16_384, 64, 0, false).expect("sampler"),
            ),
        ),
        (
            "token budget 16384, grouped",
            Box::new(
                TokenBudgetSampler::new(shapes.to_vec(), 16_384, 64, 0, true).expect("sampler"),
            ),
        ),
    ];
    println!("\npadding efficiency on {n} IMDB reviews (real tokens / padded tokens):");
    println!("| sampler | batches | efficiency | largest batch (padded tokens) |");
    println!("| --- | --- | --- | --- |");
    for (name, s) in &samplers {
        let batches = s.batches(0);
        let largest = batches
            .iter()
            .map(|b| {
                b.iter().map(|&i| shapes[i].rows).sum::<usize>()
                    * b.iter().map(|&i| shapes[i].max_len).max().unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        println!(
            "| {name} | {} | {:.3} | {largest} |",
            batches.len(),
            padding_efficiency(&batches, shapes)
        );
    }
    println!();
}

criterion_group!(benches, bench);
criterion_main!(benches);

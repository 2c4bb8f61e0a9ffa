//! MLM masking throughput (tokens/s) over tokenized IMDB reviews, HF strategy, with and
//! without whole-word masking. `BERTH_BENCH_ROWS` reviews (default 5,000).

use berth_data::berth_masking::{MlmConfig, mask_tokens, rng_for};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let tok = berth_benches::tokenizer();
    let tokens_cfg = berth_data::masking_tokens(&tok).expect("masking tokens");
    let table =
        berth_data::continuation_table(&tok).expect("a WordPiece tokenizer marks its words");
    let (ids, _) = berth_benches::imdb_ids(berth_benches::bench_rows(5_000));
    let total: usize = ids.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("mlm_masking_imdb");
    g.sample_size(10);
    g.throughput(Throughput::Elements(total as u64));
    for (name, whole_word) in [("hf_80_10_10", false), ("hf_whole_word", true)] {
        let cfg = MlmConfig {
            whole_word,
            ..MlmConfig::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                ids.iter()
                    .enumerate()
                    .map(|(i, row)| {
                        let starts = whole_word.then(|| table.word_starts(row));
                        mask_tokens(
                            row,
                            starts.as_deref(),
                            &cfg,
                            &tokens_cfg,
                            &mut rng_for(0, i as u64),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

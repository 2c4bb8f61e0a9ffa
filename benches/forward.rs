//! MiniLM-L6 forward throughput on CPU (eval mode, f32), tokens/s, at sequence 128
//! (batch 8) and 512 (batch 2), on random ids: the cost does not depend on the ids.

use berth_model::{Mode, SequenceClassifier};
use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = berth_testkit::minilm_dir().expect("run `cargo xtask fixtures` first");
    let dev = Device::Cpu;
    let (cfg, mut params) = berth_model::open_dir(&dir, &dev, 0).expect("MiniLM");
    let model = SequenceClassifier::new(&cfg, &mut params).expect("model");
    let mut g = c.benchmark_group("minilm_forward_cpu");
    g.sample_size(10);
    for (batch, seq) in [(8usize, 128usize), (2, 512)] {
        let ids: Vec<u32> = (0..batch * seq)
            .map(|i| 1000 + (i as u32 * 7919) % 28000)
            .collect();
        let ids = Tensor::from_vec(ids, (batch, seq), &dev).expect("ids");
        g.throughput(Throughput::Elements((batch * seq) as u64));
        g.bench_function(format!("batch{batch}_seq{seq}"), |b| {
            b.iter(|| {
                model
                    .forward(&ids, None, None, &Mode::eval())
                    .expect("forward")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

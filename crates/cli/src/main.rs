//! `berth`: thin commands over Berth's crates.

// The clap doc comments are `--help` text, where `[CLS]`, `[MASK]` and `[data]` are
// literal, not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

use anyhow::Result;
use clap::{Parser, Subcommand};

mod chunk;
mod input;
mod launch;
mod predict;
mod pretrain;
mod tokenize;
mod train;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Fine-tune BERT-style encoders: data, chunking, masking, training"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize a text column (or a pair of columns) into unpadded input_ids,
    /// token_type_ids and attention_mask, keeping the other columns.
    Tokenize(tokenize::TokenizeArgs),
    /// Tokenize whole texts and cut them into overlapping [CLS] .. [SEP] chunks, as
    /// belt_nlp does: one row per text with `chunks` (unpadded) and `num_chunks`.
    Chunk(chunk::ChunkArgs),
    /// Build MLM (and with --nsp, MLM + NSP) pre-training examples: input_ids,
    /// token_type_ids, attention_mask, labels (and next_sentence_label).
    PretrainData(pretrain::PretrainArgs),
    /// Predict for each input row with the checkpoint's task: logits, label and
    /// label_name for classifiers (pooling chunk logits per text when chunk options
    /// are given), the top-k fills of each [MASK] for masked-LM checkpoints.
    Predict(predict::PredictArgs),
    /// Fine-tune or pre-train as HF `Trainer` does, from a TOML config with
    /// `--set key=value` overrides; writes checkpoints, trainer_state.json,
    /// metrics.jsonl, loss_curve.png and report.md into training.output_dir.
    Train(train::TrainArgs),
    /// Evaluate a trained model on the eval/test data of a config.
    Eval(train::EvalArgs),
    /// Start N data-parallel ranks of a berth command, as torchrun does:
    /// `berth launch --nproc-per-node 2 -- train --config run.toml`. Ranks meet
    /// through MPI (`mpirun`; a berth built with the `mpi` feature).
    Launch(launch::LaunchArgs),
}

fn main() -> Result<()> {
    berth_trainer::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only where a person reads it, not into a redirected log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // `.init()` also routes the `log` records of hf-hub and tokenizers here
        // (tracing-subscriber's `tracing-log` feature), so RUST_LOG shows them.
        .init();
    match Cli::parse().command {
        Command::Tokenize(a) => tokenize::run(a),
        Command::Chunk(a) => chunk::run(a),
        Command::PretrainData(a) => pretrain::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Train(a) => train::train(a),
        Command::Eval(a) => train::eval(a),
        Command::Launch(a) => launch::launch(a),
    }
}

//! `berth`: thin commands over Berth's crates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_data::{Format, HubOptions, LoadOptions, MapOptions, TokenizeConfig, TokenizeOp};
use clap::{Args, Parser, Subcommand};

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
    Tokenize(TokenizeArgs),
}

/// Where rows come from: shared by every command that reads a dataset.
#[derive(Args)]
struct InputArgs {
    /// Input file (or directory/glob of parquet shards).
    #[arg(long)]
    input: String,
    /// parquet, csv, tsv, jsonl or text; by default from the extension.
    #[arg(long)]
    format: Option<String>,
    /// Cache directory for loaded and derived datasets (default $BERTH_CACHE/datasets).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

impl InputArgs {
    fn load(&self) -> Result<berth_data::Dataset> {
        let format = self.format.as_deref().map(Format::from_name).transpose()?;
        let mut opts = LoadOptions::default();
        if let Some(dir) = &self.cache_dir {
            opts.cache = berth_data::CacheMode::Dir(dir.clone());
        }
        Ok(berth_data::load(&self.input, format, &opts)?)
    }
}

#[derive(Args)]
struct TokenizeArgs {
    /// tokenizer.json, a model directory, or a hub id (owner/name).
    #[arg(long)]
    tokenizer: String,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Second text of a pair (token_type_ids 1).
    #[arg(long)]
    pair_column: Option<String>,
    /// Truncate to this many ids (longest_first for pairs).
    #[arg(long)]
    max_length: Option<usize>,
    /// Leave out [CLS]/[SEP].
    #[arg(long)]
    no_special_tokens: bool,
    /// Rows per map batch.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Output file: .parquet or .jsonl.
    #[arg(long)]
    output: PathBuf,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Tokenize(a) => tokenize(a),
    }
}

fn check_output(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet" | "jsonl" | "json" | "ndjson") => Ok(()),
        _ => bail!("{}: output must end in .parquet or .jsonl", path.display()),
    }
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    check_output(&a.output)?;
    let started = Instant::now();
    let tokenizer = berth_data::load_tokenizer(&a.tokenizer, &HubOptions::from_env())?;
    let ds = a.input.load()?;
    let config = TokenizeConfig {
        text_column: a.text_column,
        pair_column: a.pair_column,
        max_length: a.max_length,
        add_special_tokens: !a.no_special_tokens,
    };
    let op = TokenizeOp::new(&tokenizer, config)?;
    let out = ds.map_batched(
        &op,
        &MapOptions {
            batch_size: a.batch_size,
            num_workers: 1,
        },
    )?;
    out.save(&a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!(
        "tokenized {} rows of {} into {} in {:.1}s",
        out.num_rows(),
        a.input.input,
        a.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

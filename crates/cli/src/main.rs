//! `berth`: thin commands over Berth's crates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_data::berth_chunking::ChunkConfig;
use berth_data::berth_masking::{MaskStrategy, MlmConfig, NspConfig};
use berth_data::{Format, HubOptions, LoadOptions, MapOptions, MlmOp, TokenizeConfig, TokenizeOp};
use clap::{Args, Parser, Subcommand};

mod launch;
mod predict;
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
    Tokenize(TokenizeArgs),
    /// Tokenize whole texts and cut them into overlapping [CLS] .. [SEP] chunks, as
    /// belt_nlp does: one row per text with `chunks` (unpadded) and `num_chunks`.
    Chunk(ChunkArgs),
    /// Build MLM (and with --nsp, MLM + NSP) pre-training examples: input_ids,
    /// token_type_ids, attention_mask, labels (and next_sentence_label).
    PretrainData(PretrainArgs),
    /// Predict for each input row with the checkpoint's task: logits, label and
    /// label_name for classifiers (pooling chunk logits per text when chunk options
    /// are given), the top-k fills of each [MASK] for masked-LM checkpoints.
    Predict(PredictArgs),
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

/// Where rows come from: shared by every command that reads a dataset.
#[derive(Args)]
struct InputArgs {
    /// Input file (or directory/glob of parquet shards); for `predict`, `-` reads JSON
    /// Lines from stdin.
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
    /// Whether the input is Parquet (by --format, else by extension, a directory or a
    /// glob of shards), which the streaming path reads.
    fn is_parquet(&self) -> Result<bool> {
        let format = match self.format.as_deref() {
            Some(f) => Some(Format::from_name(f)?),
            None => Format::of_input(&self.input),
        };
        Ok(format == Some(Format::Parquet))
    }

    /// Streams a Parquet input through `ops` into `output` when nothing asks for the
    /// cache (no --cache-dir): memory stays flat and reading, tokenizing and writing
    /// overlap. `Ok(false)` when the input is not Parquet.
    fn stream(
        &self,
        ops: &[&dyn berth_data::BatchOp],
        drop_columns: &[&str],
        output: &Path,
        batch_size: usize,
        (verb, what): (&str, &str),
        started: Instant,
    ) -> Result<bool> {
        if self.cache_dir.is_some() || !self.is_parquet()? {
            return Ok(false);
        }
        let stats = berth_data::stream_parquet(&self.input, ops, drop_columns, output, batch_size)
            .with_context(|| format!("writing {}", output.display()))?;
        eprintln!(
            "{verb} {} {what} of {} into {} in {:.1}s",
            stats.rows_out,
            self.input,
            output.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(true)
    }

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

#[derive(Args)]
struct ChunkArgs {
    /// tokenizer.json, a model directory, or a hub id (owner/name).
    #[arg(long)]
    tokenizer: String,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Ids per chunk, without [CLS]/[SEP].
    #[arg(long, default_value_t = 510)]
    chunk_size: usize,
    /// Ids between chunk starts (chunk_size: no overlap).
    #[arg(long, default_value_t = 510)]
    stride: usize,
    /// With several chunks, drop those shorter than this.
    #[arg(long = "min-chunk-len", default_value_t = 1)]
    minimal_chunk_length: usize,
    /// Cut each text to this many ids before chunking.
    #[arg(long = "max-text-len")]
    maximal_text_length: Option<usize>,
    /// The model's positions (default: max_position_embeddings of the model
    /// directory's config.json, else 512).
    #[arg(long)]
    max_positions: Option<usize>,
    /// Output file: .parquet or .jsonl.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
struct PretrainArgs {
    /// tokenizer.json, a model directory, or a hub id (owner/name).
    #[arg(long)]
    tokenizer: String,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value_t = 0.15)]
    mlm_probability: f64,
    /// hf (80% [MASK], 10% random, 10% kept) or plain (every selected token [MASK]).
    #[arg(long, default_value = "hf")]
    mask_strategy: String,
    /// Mask all pieces of a word together.
    #[arg(long)]
    whole_word_mask: bool,
    /// Next-sentence pairs: each input row is a document (paragraph) of sentences.
    #[arg(long)]
    nsp: bool,
    /// With --nsp, pack consecutive sentences up to --max-length (HF's dataset).
    #[arg(long)]
    pack: bool,
    #[arg(long, default_value_t = 512)]
    max_length: usize,
    #[arg(long)]
    seed: u64,
    /// Output file: .parquet or .jsonl.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
struct PredictArgs {
    /// A model directory (config.json, model.safetensors, tokenizer.json) or hub id.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long)]
    pair_column: Option<String>,
    /// Chunk long texts (belt_nlp) instead of truncating them.
    #[arg(long)]
    chunk_size: Option<usize>,
    #[arg(long)]
    stride: Option<usize>,
    #[arg(long = "min-chunk-len", default_value_t = 1)]
    minimal_chunk_length: usize,
    #[arg(long = "max-text-len")]
    maximal_text_length: Option<usize>,
    /// How chunk logits of a text are reduced: mean or max.
    #[arg(long, default_value = "mean")]
    pool: String,
    /// At most this many chunks per forward pass, however long a text (bounded
    /// memory); by default `--batch-size` chunks.
    #[arg(long)]
    chunk_group_size: Option<usize>,
    /// Texts per batch; with chunking, chunks per forward pass too (a long text's
    /// chunks span several).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// The branch, tag or commit of a hub `--model`.
    #[arg(long)]
    revision: Option<String>,
    /// Masked-LM checkpoints: fills written per [MASK] (HF fill-mask's top_k).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// auto (a GPU when the binary has CUDA and one is there), cpu, cuda or cuda:N
    /// (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output file: .parquet or .jsonl, or `-` for JSON Lines on stdout.
    #[arg(long)]
    output: PathBuf,
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
        Command::Tokenize(a) => tokenize(a),
        Command::Chunk(a) => chunk(a),
        Command::PretrainData(a) => pretrain_data(a),
        Command::Predict(a) => predict::run(a),
        Command::Train(a) => train::train(a),
        Command::Eval(a) => train::eval(a),
        Command::Launch(a) => launch::launch(a),
    }
}

/// Saves `out` (format by extension) and reports what was done on stderr.
pub(crate) fn write_output(
    out: &berth_data::Dataset,
    path: &Path,
    verb: &str,
    what: &str,
    input: &str,
    started: Instant,
) -> Result<()> {
    out.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "{verb} {} {what} of {input} into {} in {:.1}s",
        out.num_rows(),
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
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
    let config = TokenizeConfig {
        text_column: a.text_column,
        pair_column: a.pair_column,
        max_length: a.max_length,
        add_special_tokens: !a.no_special_tokens,
    };
    let op = TokenizeOp::new(&tokenizer, config)?;
    if a.input.stream(
        &[&op],
        &[],
        &a.output,
        a.batch_size,
        ("tokenized", "rows"),
        started,
    )? {
        return Ok(());
    }
    let out = a.input.load()?.map_batched(
        &op,
        &MapOptions {
            batch_size: a.batch_size,
            num_workers: 1,
        },
    )?;
    write_output(
        &out,
        &a.output,
        "tokenized",
        "rows",
        &a.input.input,
        started,
    )?;
    Ok(())
}

/// `max_position_embeddings` from a model directory's config.json, if there is one.
fn model_max_positions(tokenizer_spec: &str) -> Option<usize> {
    let p = Path::new(tokenizer_spec);
    let dir = if p.is_dir() { p } else { p.parent()? };
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("max_position_embeddings")?
        .as_u64()
        .map(|n| n as usize)
}

fn chunk(a: ChunkArgs) -> Result<()> {
    check_output(&a.output)?;
    let started = Instant::now();
    let max_positions = a
        .max_positions
        .or_else(|| model_max_positions(&a.tokenizer))
        .unwrap_or(512);
    let config = ChunkConfig::new(
        a.chunk_size,
        a.stride,
        a.minimal_chunk_length,
        a.maximal_text_length,
        max_positions,
    )?;
    let tokenizer = berth_data::load_tokenizer(&a.tokenizer, &HubOptions::from_env())?;
    let intermediate = [
        a.text_column.as_str(),
        "input_ids",
        "token_type_ids",
        "attention_mask",
    ];
    let mut tok_cfg = TokenizeConfig::new(a.text_column.clone());
    tok_cfg.add_special_tokens = false;
    let tokenize = TokenizeOp::new(&tokenizer, tok_cfg)?;
    let chunk =
        berth_data::ChunkOp::new(config, berth_data::special_tokens(&tokenizer)?, "input_ids");
    if a.input.stream(
        &[&tokenize, &chunk],
        &intermediate,
        &a.output,
        1000,
        ("chunked", "texts"),
        started,
    )? {
        return Ok(());
    }
    let chunked = a
        .input
        .load()?
        .chunk_texts(&tokenizer, &a.text_column, config)?;
    let out = chunked.remove_columns(&intermediate)?;
    write_output(&out, &a.output, "chunked", "texts", &a.input.input, started)?;
    Ok(())
}

fn pretrain_data(a: PretrainArgs) -> Result<()> {
    check_output(&a.output)?;
    let started = Instant::now();
    let strategy = match a.mask_strategy.as_str() {
        "hf" => MaskStrategy::Hf,
        "plain" => MaskStrategy::Plain,
        other => bail!("--mask-strategy must be hf or plain, not '{other}'"),
    };
    let mlm = MlmConfig {
        mlm_probability: a.mlm_probability,
        strategy,
        whole_word: a.whole_word_mask,
        ..MlmConfig::default()
    };
    let tokenizer = berth_data::load_tokenizer(&a.tokenizer, &HubOptions::from_env())?;
    let ds = a.input.load()?;
    let examples = if a.nsp {
        let nsp = NspConfig {
            max_length: a.max_length,
            pack: a.pack,
            ..NspConfig::default()
        };
        ds.nsp_pairs(&a.text_column, &tokenizer, &nsp, a.seed)?
    } else {
        let mut cfg = TokenizeConfig::new(a.text_column.clone());
        cfg.max_length = Some(a.max_length);
        let tokenized =
            ds.map_batched(&TokenizeOp::new(&tokenizer, cfg)?, &MapOptions::default())?;
        tokenized.select_columns(&["input_ids", "token_type_ids", "attention_mask"])?
    };
    let table = a
        .whole_word_mask
        .then(|| berth_data::continuation_table(&tokenizer));
    let op = MlmOp::new(mlm, berth_data::masking_tokens(&tokenizer)?, a.seed, table)?;
    let out = examples.map_batched(&op, &MapOptions::default())?;
    write_output(
        &out,
        &a.output,
        "wrote",
        "examples",
        &a.input.input,
        started,
    )
}

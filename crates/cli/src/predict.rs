//! `berth predict`: what the model's task predicts for every input row, in order.
//! Classifiers (and chunk-pooled classifiers, with chunk options) write logits, label
//! and label name; masked-LM and pre-training checkpoints write the top-k fills of
//! each `[MASK]` (pre-training adds the next-sentence logits and label).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use berth_data::Dataset;
use berth_data::arrow::array::{ArrayRef, RecordBatch};
use berth_data::arrow::compute::concat_batches;
use berth_model::EncoderConfig;
use berth_trainer::{ChunkingConfig, DataConfig, Inference, Precision, TaskConfig};
use clap::Args;

use crate::input::{InputArgs, check_output, write_output};

#[derive(Args)]
pub(crate) struct PredictArgs {
    /// A model directory (config.json, model.safetensors, tokenizer.json) or hub id.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long)]
    pair_column: Option<String>,
    /// Truncate each text (a pair `longest_first`) to N ids, specials included, as
    /// the tokenizer's `truncation=True, max_length=N`; by default where the model's
    /// positions end. Not with chunk options (those chunk long texts instead).
    #[arg(long)]
    max_length: Option<usize>,
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

/// The task a checkpoint was saved for, from its `architectures` (chunk options make
/// a sequence classifier pool chunks).
fn task_of(a: &PredictArgs, config: &EncoderConfig) -> Result<TaskConfig> {
    let arch = config
        .architectures
        .as_ref()
        .and_then(|v| v.first())
        .map_or("", String::as_str);
    let chunked = a.chunk_size.is_some() || a.stride.is_some() || a.maximal_text_length.is_some();
    if a.chunk_group_size.is_some() && !chunked {
        bail!(
            "--chunk-group-size bounds the chunks per forward of chunked prediction; add --chunk-size, --stride or --max-text-len"
        );
    }
    if chunked && a.pair_column.is_some() {
        bail!("--pair-column cannot be combined with chunking");
    }
    if chunked && a.max_length.is_some() {
        bail!(
            "--max-length truncates texts; with --chunk-size, --stride or --max-text-len they are chunked instead"
        );
    }
    if a.max_length == Some(0) {
        bail!("--max-length must be at least 1");
    }
    let chunking = chunked.then(|| chunking(a, config)).transpose()?;
    Ok(TaskConfig::for_checkpoint(
        arch,
        config.problem_type.as_deref(),
        chunking,
    )?)
}

/// The chunking that `predict`'s chunk options ask for.
fn chunking(a: &PredictArgs, config: &EncoderConfig) -> Result<ChunkingConfig> {
    let size = a
        .chunk_size
        .unwrap_or(config.max_tokens().saturating_sub(2).max(1));
    Ok(ChunkingConfig {
        chunk_size: size,
        stride: a.stride.unwrap_or(size),
        min_chunk_len: a.minimal_chunk_length,
        max_text_len: a.maximal_text_length,
        eval_max_text_len: None,
        pool: a.pool.parse().map_err(anyhow::Error::msg)?,
        chunk_group_size: a.chunk_group_size,
        train_chunks_per_doc: None,
    })
}

pub(crate) fn run(a: PredictArgs) -> Result<()> {
    crate::train::one_process("predict")?;
    let stdout = a.output.as_os_str() == "-";
    if !stdout {
        check_output(&a.output)?;
    }
    let started = Instant::now();
    let hub = berth_data::HubOptions::from_env().at_revision(a.revision.as_deref());
    let dir = berth_model::resolve_model_dir(&a.model, &hub)?;
    let config = EncoderConfig::from_file(&dir.join("config.json"))?;
    let task = task_of(&a, &config)?;
    let model = Inference::for_prediction(
        task,
        dir.to_str()
            .ok_or_else(|| anyhow::anyhow!("non-UTF-8 model path"))?,
        a.revision.as_deref(),
        a.device.parse()?,
        Precision::F32,
        a.batch_size,
    )?;
    // `--input -`: JSON Lines on stdin, kept in a temp file for the loader.
    let stdin_copy = (a.input.input == "-")
        .then(|| -> Result<tempfile_path::TempPath> {
            let path = tempfile_path::TempPath::new("stdin", "jsonl");
            let mut file = std::fs::File::create(&path.0)?;
            std::io::copy(&mut std::io::stdin().lock(), &mut file)?;
            Ok(path)
        })
        .transpose()?;
    let ds = match &stdin_copy {
        Some(p) => berth_data::load(
            p.0.to_str().unwrap_or_default(),
            Some(berth_data::Format::Json),
            &berth_data::LoadOptions::default(),
        )?,
        None => a.input.load()?,
    };
    let mut data = DataConfig::for_columns(&a.text_column, a.pair_column.as_deref());
    data.max_length = a.max_length;
    let predicted = model.predict(&ds, &data, a.batch_size, a.top_k)?;
    // Row i of the output is row i of the input: its columns, then the predictions
    // (an input column a prediction is named like is kept as `<name>_input`).
    let input = concat_batches(&ds.schema(), ds.batches())?;
    let names: Vec<&str> = predicted.iter().map(|(n, _)| n.as_str()).collect();
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    for (field, col) in input.schema().fields().iter().zip(input.columns()) {
        let mut name = field.name().clone();
        if names.contains(&name.as_str()) {
            eprintln!("predict: the input's column '{name}' is kept as '{name}_input'");
            name = format!("{name}_input");
        }
        columns.push((name, col.clone()));
    }
    columns.extend(predicted);
    let batch = RecordBatch::try_from_iter(columns)?;
    let out = Dataset::from_batch(batch, &a.input.input)?;
    if stdout {
        let tmp = tempfile_path::TempPath::new("stdout", "jsonl");
        out.save(&tmp.0)?;
        let mut file = std::fs::File::open(&tmp.0)?;
        std::io::copy(&mut file, &mut std::io::stdout().lock())?;
        eprintln!(
            "predicted {} rows of {} in {:.1}s",
            out.num_rows(),
            a.input.input,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    write_output(
        &out,
        &a.output,
        "predicted",
        "rows",
        &a.input.input,
        started,
    )?;
    Ok(())
}

/// A file in the temp dir, removed when dropped.
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);

    impl TempPath {
        pub fn new(what: &str, ext: &str) -> Self {
            TempPath(
                std::env::temp_dir()
                    .join(format!("berth-predict-{what}-{}.{ext}", std::process::id())),
            )
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

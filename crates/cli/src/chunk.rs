//! `berth chunk`: whole texts tokenized and cut into overlapping `[CLS] .. [SEP]`
//! chunks, as belt_nlp does.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use berth_data::berth_chunking::ChunkConfig;
use berth_data::{HubOptions, TokenizeConfig, TokenizeOp};
use clap::Args;

use crate::input::{InputArgs, check_output, write_output};

#[derive(Args)]
pub(crate) struct ChunkArgs {
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
    /// The model's positions (default: the tokens the positions of the model
    /// directory's config.json cover, else 512).
    #[arg(long)]
    max_positions: Option<usize>,
    /// Output file: .parquet or .jsonl.
    #[arg(long)]
    output: PathBuf,
}

/// The tokens a model directory's config.json positions cover
/// (`max_position_embeddings`, less RoBERTa's unused first positions), if there is
/// one.
fn model_max_positions(tokenizer_spec: &str) -> Option<usize> {
    let p = Path::new(tokenizer_spec);
    let dir = if p.is_dir() { p } else { p.parent()? };
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match berth_model::EncoderConfig::from_value(v.clone()) {
        Ok(config) => Some(config.max_tokens()),
        Err(_) => v
            .get("max_position_embeddings")?
            .as_u64()
            .map(|n| n as usize),
    }
}

pub(crate) fn run(a: ChunkArgs) -> Result<()> {
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

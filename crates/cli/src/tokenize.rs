//! `berth tokenize`: a text column (or a pair) into unpadded `input_ids`,
//! `token_type_ids` and `attention_mask`, the other columns kept.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use berth_data::{HubOptions, MapOptions, TokenizeConfig, TokenizeOp};
use clap::Args;

use crate::input::{InputArgs, check_output, write_output};

#[derive(Args)]
pub(crate) struct TokenizeArgs {
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

pub(crate) fn run(a: TokenizeArgs) -> Result<()> {
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

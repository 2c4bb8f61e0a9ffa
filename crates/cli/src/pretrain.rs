//! `berth pretrain-data`: MLM (and with `--nsp`, MLM + NSP) pre-training examples.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use berth_data::berth_masking::{MaskStrategy, MlmConfig, NspConfig};
use berth_data::{HubOptions, MapOptions, MlmOp, TokenizeConfig, TokenizeOp};
use clap::Args;

use crate::input::{InputArgs, check_output, write_output};

#[derive(Args)]
pub(crate) struct PretrainArgs {
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

pub(crate) fn run(a: PretrainArgs) -> Result<()> {
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
        .then(|| berth_data::continuation_table(&tokenizer))
        .transpose()?;
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

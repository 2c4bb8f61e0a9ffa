//! `berth predict`: what the model's task predicts for every input row, in order.
//! Classifiers (and chunk-pooled classifiers, with chunk options) write logits, label
//! and label name; masked-LM and pre-training checkpoints write the top-k fills of
//! each `[MASK]` (pre-training adds the next-sentence logits and label).

use std::time::Instant;

use anyhow::{Result, bail};
use berth_data::Dataset;
use berth_data::arrow::array::RecordBatch;
use berth_model::BertConfig;
use berth_trainer::{ChunkingConfig, DataConfig, Inference, MlmConfig, Precision, TaskConfig};

use crate::{PredictArgs, check_output, write_output};

/// The task a checkpoint was saved for, from its `architectures` (chunk options make
/// a sequence classifier pool chunks).
fn task_of(a: &PredictArgs, config: &BertConfig) -> Result<TaskConfig> {
    let arch = config
        .architectures
        .as_ref()
        .and_then(|v| v.first())
        .map_or("", String::as_str);
    let chunked = a.chunk_size.is_some() || a.stride.is_some() || a.maximal_text_length.is_some();
    let lm = |task: TaskConfig| {
        if chunked {
            bail!("chunk options apply to sequence classifiers, not to a {arch}");
        }
        Ok(task)
    };
    match arch {
        "BertForMaskedLM" => lm(TaskConfig::Mlm {
            mlm: MlmConfig::default(),
        }),
        "BertForPreTraining" => lm(TaskConfig::Nsp {
            mlm: MlmConfig::default(),
        }),
        // Any other checkpoint is read as a sequence classifier; one without a
        // classifier (a bare BertModel) gets a fresh one, named in a warning, as
        // transformers does.
        _ if chunked => {
            if a.pair_column.is_some() {
                bail!("--pair-column cannot be combined with chunking");
            }
            let size = a.chunk_size.unwrap_or(config.max_position_embeddings - 2);
            Ok(TaskConfig::ChunkClassification {
                chunking: ChunkingConfig {
                    chunk_size: size,
                    stride: a.stride.unwrap_or(size),
                    min_chunk_len: a.minimal_chunk_length,
                    max_text_len: a.maximal_text_length,
                    eval_max_text_len: None,
                    pool: a.pool.parse().map_err(anyhow::Error::msg)?,
                },
            })
        }
        _ => Ok(TaskConfig::Classification {}),
    }
}

pub(crate) fn run(a: PredictArgs) -> Result<()> {
    check_output(&a.output)?;
    let started = Instant::now();
    let dir = berth_model::resolve_model_dir(&a.model, &berth_data::HubOptions::from_env())?;
    let config = BertConfig::from_file(&dir.join("config.json"))?;
    let task = task_of(&a, &config)?;
    let model = Inference::for_prediction(
        task,
        dir.to_str()
            .ok_or_else(|| anyhow::anyhow!("non-UTF-8 model path"))?,
        a.device.parse()?,
        Precision::F32,
    )?;
    let ds = a.input.load()?;
    let data = DataConfig::for_columns(&a.text_column, a.pair_column.as_deref());
    let columns = model.predict(&ds, &data, a.batch_size, a.top_k)?;
    // Row i of the output is row i of the input.
    let batch = RecordBatch::try_from_iter(columns)?;
    let out = Dataset::from_batch(batch, &a.input.input)?;
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

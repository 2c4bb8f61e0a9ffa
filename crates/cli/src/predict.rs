//! `berth predict`: logits, label and label name for every input row, in order.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_collate::{Document, Example, Padding, collate, collate_chunks};
use berth_data::arrow::array::RecordBatch;
use berth_data::arrow::array::{ArrayRef, Float32Builder, Int64Array, ListBuilder, StringArray};
use berth_data::arrow::datatypes::{UInt8Type, UInt32Type};
use berth_data::berth_chunking::ChunkConfig;
use berth_data::{Dataset, HubOptions, MapOptions, TokenizeConfig, TokenizeOp};
use berth_model::{ChunkPooledClassifier, Mode, Params, Pool, SequenceClassifier};
use candle_core::Device;

use crate::{PredictArgs, check_output, write_output};

pub(crate) fn run(a: PredictArgs) -> Result<()> {
    check_output(&a.output)?;
    let started = Instant::now();
    let device: Device = berth_trainer::parse_device(&a.device)?;
    let dir = berth_model::resolve_model_dir(&a.model, &HubOptions::from_env())?;
    let (config, mut params) = berth_model::open_dir(&dir, &device, 0)?;
    let tokenizer = berth_data::load_tokenizer(
        dir.to_str().context("non-UTF-8 model path")?,
        &HubOptions::from_env(),
    )?;
    let ds = a.input.load()?;
    let pool: Pool = a.pool.parse().map_err(anyhow::Error::msg)?;
    let mode = Mode::eval();
    let mut logits: Vec<Vec<f32>> = Vec::with_capacity(ds.num_rows());

    if a.chunk_size.is_some() || a.stride.is_some() || a.maximal_text_length.is_some() {
        if a.pair_column.is_some() {
            bail!("--pair-column cannot be combined with chunking");
        }
        let size = a.chunk_size.unwrap_or(config.max_position_embeddings - 2);
        let chunk_cfg = ChunkConfig::new(
            size,
            a.stride.unwrap_or(size),
            a.minimal_chunk_length,
            a.maximal_text_length,
            config.max_position_embeddings,
        )?;
        ChunkPooledClassifier::new(&config, &mut params, pool)?;
        // Inference from detached views: no autograd graph holding activations.
        let (varmap, _) = params.finish();
        let model = ChunkPooledClassifier::new(
            &config,
            &mut Params::detached_view(&varmap, &device)?,
            pool,
        )?;
        let special = berth_data::special_tokens(&tokenizer)?;
        let chunked = ds.chunk_texts(&tokenizer, &a.text_column, chunk_cfg)?;
        let per_doc = chunked.nested_list_rows::<UInt32Type>("chunks")?;
        for batch in per_doc.chunks(a.batch_size.max(1)) {
            let docs: Vec<Document> = batch
                .iter()
                .map(|c| Document {
                    chunks: c.iter().map(Vec::as_slice).collect(),
                    label: None,
                })
                .collect();
            let b = collate_chunks(
                &docs,
                &Padding::Longest { multiple_of: None },
                special.pad,
                &device,
            )?;
            let out = model.forward(
                &b.input_ids,
                Some(&b.token_type_ids),
                Some(&b.attention_mask),
                &b.doc_offsets,
                &mode,
            )?;
            logits.extend(out.to_vec2::<f32>()?);
        }
    } else {
        SequenceClassifier::new(&config, &mut params)?;
        let (varmap, _) = params.finish();
        let model =
            SequenceClassifier::new(&config, &mut Params::detached_view(&varmap, &device)?)?;
        let mut tok_cfg = TokenizeConfig::new(a.text_column.clone());
        tok_cfg.pair_column = a.pair_column.clone();
        tok_cfg.max_length = Some(config.max_position_embeddings);
        let tokenized = ds.map_batched(
            &TokenizeOp::new(&tokenizer, tok_cfg)?,
            &MapOptions::default(),
        )?;
        let pad = berth_data::special_tokens(&tokenizer)?.pad;
        let ids = tokenized.list_rows::<UInt32Type>("input_ids")?;
        let types = tokenized.list_rows::<UInt8Type>("token_type_ids")?;
        let size = a.batch_size.max(1);
        for (ids, types) in ids.chunks(size).zip(types.chunks(size)) {
            let rows: Vec<Example> = ids
                .iter()
                .zip(types)
                .map(|(i, t)| Example::new(i).with_token_types(t))
                .collect();
            let b = collate(&rows, &Padding::Longest { multiple_of: None }, pad, &device)?;
            let out = model.forward(
                &b.input_ids,
                Some(&b.token_type_ids),
                Some(&b.attention_mask),
                &mode,
            )?;
            logits.extend(out.to_vec2::<f32>()?);
        }
    }

    // The evaluation's argmax (first maximum on ties, as numpy), so `predict` and
    // `eval` agree on every row.
    let labels: Vec<i64> = logits.iter().map(|l| berth_trainer::argmax(l)).collect();
    let mut builder = ListBuilder::new(Float32Builder::new());
    for l in &logits {
        builder.values().append_slice(l);
        builder.append(true);
    }
    // Row i of the output is row i of the input: logits, label (argmax), label_name.
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("logits", Arc::new(builder.finish())),
        ("label", Arc::new(Int64Array::from(labels.clone()))),
    ];
    if config.id2label.is_some() {
        let names: StringArray = labels
            .iter()
            .map(|&i| config.label_name(i as usize))
            .collect();
        columns.push(("label_name", Arc::new(names)));
    }
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

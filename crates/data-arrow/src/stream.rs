//! Streaming a Parquet input through batch ops into a Parquet or JSON Lines output,
//! one record batch at a time, so memory stays flat however large the input is. Three
//! stages overlap on their own threads: reading and decompressing, the ops (which
//! spread each batch over rayon's threads), and encoding and writing. Nothing is
//! cached; the output is written under a temp name and renamed when complete.

use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{DataError, Result};
use crate::load::{open, parquet_err, resolve_files};
use crate::ops::BatchOp;
use crate::save::{is_jsonl_output, write_jsonl, write_parquet};

/// What a stream did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStats {
    pub rows_in: usize,
    pub rows_out: usize,
}

/// Reads `input` (a Parquet file, a directory of shards or a glob) in batches of
/// `batch_size` rows, applies `ops` in order to each, drops the columns named in
/// `drop_columns`, and writes `output` (`.parquet`, snappy, row groups of at most
/// 10,000 rows; or `.jsonl`).
pub fn stream_parquet(
    input: &str,
    ops: &[&dyn BatchOp],
    drop_columns: &[&str],
    output: &Path,
    batch_size: usize,
) -> Result<StreamStats> {
    let files = resolve_files(input)?;
    let jsonl = is_jsonl_output(output)?;
    std::thread::scope(|scope| {
        // Two batches in flight between stages: enough to overlap, little memory.
        let (read_tx, read_rx) = sync_channel::<Result<RecordBatch>>(2);
        let (write_tx, write_rx) = sync_channel::<Option<RecordBatch>>(2);
        let reader = scope.spawn(move || -> Result<()> {
            for file in &files {
                let builder = ParquetRecordBatchReaderBuilder::try_new(open(file)?)
                    .map_err(|e| parquet_err(file, e))?
                    .with_batch_size(batch_size.max(1));
                let schema = builder.schema().clone();
                let mut sent = false;
                for batch in builder.build().map_err(|e| parquet_err(file, e))? {
                    let batch = batch.map_err(|e| DataError::arrow(file.display().to_string(), e));
                    if read_tx.send(batch).is_err() {
                        return Ok(()); // the consumer stopped on an error of its own
                    }
                    sent = true;
                }
                // An empty input still gives the output its schema.
                if !sent && read_tx.send(Ok(RecordBatch::new_empty(schema))).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        let writer = scope.spawn(move || write_all(write_rx, output, jsonl));
        let processed = process(read_rx, &write_tx, ops, drop_columns, input);
        drop(write_tx);
        let read = reader.join().unwrap_or_else(|_| {
            Err(DataError::InvalidArgument(
                "the reader thread panicked".into(),
            ))
        });
        let written = writer.join().unwrap_or_else(|_| {
            Err(DataError::InvalidArgument(
                "the writer thread panicked".into(),
            ))
        });
        // The first failure is the one to report: reading, then processing, then writing.
        read?;
        let stats = processed?;
        written?;
        Ok(stats)
    })
}

fn process(
    batches: Receiver<Result<RecordBatch>>,
    out: &std::sync::mpsc::SyncSender<Option<RecordBatch>>,
    ops: &[&dyn BatchOp],
    drop_columns: &[&str],
    source: &str,
) -> Result<StreamStats> {
    let mut stats = StreamStats {
        rows_in: 0,
        rows_out: 0,
    };
    // Each op's output rows are numbered on their own, as `map_batched` numbers them.
    let mut first_rows = vec![0usize; ops.len()];
    for batch in batches {
        let mut batch = batch?;
        stats.rows_in += batch.num_rows();
        for (op, first) in ops.iter().zip(first_rows.iter_mut()) {
            let rows = batch.num_rows();
            batch = op.apply(&batch, *first, source)?;
            *first += rows;
        }
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| !drop_columns.contains(&batch.schema().field(i).name().as_str()))
            .collect();
        let batch = batch
            .project(&keep)
            .map_err(|e| DataError::arrow("dropping columns", e))?;
        stats.rows_out += batch.num_rows();
        if out.send(Some(batch)).is_err() {
            return Ok(stats); // the writer failed; its error is reported
        }
    }
    // The end marker: without it the writer discards what it wrote.
    let _ = out.send(None);
    Ok(stats)
}

/// Writes batches until the end marker (`None`); a channel closed before it means
/// processing failed, and the temp file is removed instead of renamed into place.
fn write_all(batches: Receiver<Option<RecordBatch>>, path: &Path, jsonl: bool) -> Result<()> {
    let Ok(Some(first)) = batches.recv() else {
        return Ok(()); // processing failed (or gave nothing) before the first batch
    };
    let schema = first.schema();
    let mut done = false;
    let rest = std::iter::from_fn(|| {
        if done {
            return None;
        }
        match batches.recv() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => {
                done = true;
                None
            }
            Err(_) => {
                done = true;
                Some(Err(DataError::InvalidArgument(
                    "stream stopped before its end".into(),
                )))
            }
        }
    });
    let all = std::iter::once(Ok(first)).chain(rest);
    if jsonl {
        write_jsonl(path, all)
    } else {
        write_parquet(path, schema, all)
    }
}

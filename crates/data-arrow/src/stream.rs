//! Streaming a Parquet input through batch ops into a Parquet or JSON Lines output,
//! one record batch at a time, so memory stays flat however large the input is. Three
//! stages overlap on their own threads: reading and decompressing, the ops (which
//! spread each batch over rayon's threads), and encoding and writing. Nothing is
//! cached; the output is written under a temp name and renamed when complete.

use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};

use arrow::array::RecordBatch;

use crate::error::{DataError, Result};
use crate::load::{read_shards, resolve_files};
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
        // `None` marks the end of the input: a channel closed without it is a failure.
        let (read_tx, read_rx) = sync_channel::<Option<Result<RecordBatch>>>(2);
        let (write_tx, write_rx) = sync_channel::<Option<RecordBatch>>(2);
        let reader = scope.spawn(move || {
            let end = match read_files(&files, batch_size, &read_tx) {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            };
            let _ = read_tx.send(end);
        });
        let writer = scope.spawn(move || write_all(write_rx, output, jsonl));
        let processed = process(read_rx, &write_tx, ops, drop_columns, input);
        drop(write_tx);
        let read = reader
            .join()
            .map_err(|_| DataError::InvalidArgument("the reader thread panicked".into()));
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

/// Sends every batch of `files` (then returns; the caller sends the end marker).
fn read_files(
    files: &[std::path::PathBuf],
    batch_size: usize,
    out: &std::sync::mpsc::SyncSender<Option<Result<RecordBatch>>>,
) -> Result<()> {
    read_shards(files, batch_size, |batch| {
        // A closed channel: the consumer stopped on an error of its own, reported there.
        out.send(Some(Ok(batch)))
            .map_err(|_| DataError::InvalidArgument("the stream stopped".into()))
    })
}

fn process(
    batches: Receiver<Option<Result<RecordBatch>>>,
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
    loop {
        let mut batch = match batches.recv() {
            Ok(Some(batch)) => batch?,
            Ok(None) => break,
            Err(_) => {
                return Err(DataError::InvalidArgument(
                    "the reader stopped before the end of the input".into(),
                ));
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;
    use crate::load::{LoadOptions, load_parquet};
    use crate::ops::FnOp;
    use arrow::array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn shard(path: &Path, values: Vec<i64>) {
        let batch =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(values)) as ArrayRef)])
                .unwrap();
        Dataset::from_batch(batch, "shard")
            .unwrap()
            .to_parquet(path)
            .unwrap();
    }

    fn doubled() -> impl BatchOp {
        FnOp::new("double", "", |b: &RecordBatch| {
            let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let d: ArrayRef = Arc::new(Int64Array::from_iter_values(
                n.values().iter().map(|v| v * 2),
            ));
            Ok(RecordBatch::try_from_iter([("n", b.column(0).clone()), ("d", d)]).unwrap())
        })
    }

    #[test]
    fn streams_every_shard_through_the_ops_in_order() {
        let dir = tempfile::tempdir().unwrap();
        shard(&dir.path().join("a.parquet"), (0..2500).collect());
        shard(&dir.path().join("b.parquet"), (2500..3000).collect());
        let out = dir.path().join("out/result.parquet");
        let op = doubled();
        let stats =
            stream_parquet(dir.path().to_str().unwrap(), &[&op], &["n"], &out, 1000).unwrap();
        assert_eq!(
            stats,
            StreamStats {
                rows_in: 3000,
                rows_out: 3000
            }
        );
        let ds = load_parquet(out.to_str().unwrap(), &LoadOptions::in_memory()).unwrap();
        assert_eq!(ds.column_names(), vec!["d"]);
        let d = ds.column("d").unwrap();
        let d = d.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            d.values().to_vec(),
            (0..3000).map(|v| v * 2).collect::<Vec<_>>()
        );
    }

    /// A shard that fails to read, after a good one, must not replace the output with
    /// the good shard's rows, nor leave a temp file.
    #[test]
    fn a_bad_shard_keeps_the_old_output_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let shards = dir.path().join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        shard(&shards.join("a.parquet"), (0..2500).collect());
        std::fs::write(shards.join("b.parquet"), b"not parquet at all").unwrap();
        let out = dir.path().join("out.parquet");
        std::fs::write(&out, b"the previous output").unwrap();
        let op = doubled();
        let err = stream_parquet(shards.to_str().unwrap(), &[&op], &[], &out, 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.parquet"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"the previous output");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "temp files left: {names:?}");
    }
}

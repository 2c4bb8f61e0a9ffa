//! Writing datasets out: Parquet, JSON Lines, and `save_to_disk`/`load_from_disk`
//! (Arrow IPC + a small state file). Every write goes to a temp name and is renamed,
//! so a failed write never leaves a partial file where the output should be.

use std::io::{BufWriter, Write};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::path::Path;

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::dataset::{CacheMode, Dataset, DatasetDict};
use crate::error::{DataError, Result};
use crate::fingerprint::Fingerprint;
use berth_fs::AtomicFile;

use crate::storage::{IpcSink, read_ipc_mmap};

const DATA_FILE: &str = "data.arrow";
const STATE_FILE: &str = "state.json";
const DICT_FILE: &str = "dataset_dict.json";

#[derive(Serialize, Deserialize)]
struct State {
    fingerprint: String,
    source: String,
    num_rows: usize,
}

/// Writes batches as Parquet (snappy, as HF `to_parquet`), in row groups of at most
/// 10,000 rows, under a temp name renamed into place when complete. An `Err` from
/// `batches` stops the write and removes the temp file.
pub(crate) fn write_parquet<B: std::borrow::Borrow<RecordBatch>>(
    path: &Path,
    schema: SchemaRef,
    batches: impl IntoIterator<Item = Result<B>>,
) -> Result<()> {
    let (atomic, file) = AtomicFile::create(path)?;
    // Bounded row groups: the writer buffers a whole group, so this keeps memory
    // flat however many rows are written.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(10_000))
        .set_max_row_group_bytes(Some(64 << 20))
        .build();
    let perr = |source| DataError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut writer =
        ArrowWriter::try_new(BufWriter::new(file), schema, Some(props)).map_err(perr)?;
    for b in batches {
        writer.write(b?.borrow()).map_err(perr)?;
    }
    writer.close().map_err(perr)?;
    Ok(atomic.commit()?)
}

/// Writes batches as JSON Lines, one object per row (nulls written as `null`).
pub(crate) fn write_jsonl<B: std::borrow::Borrow<RecordBatch>>(
    path: &Path,
    batches: impl IntoIterator<Item = Result<B>>,
) -> Result<()> {
    let (atomic, file) = AtomicFile::create(path)?;
    let mut out = BufWriter::new(file);
    let aerr = |e| DataError::arrow(format!("writing {}", path.display()), e);
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut out);
        for b in batches {
            writer.write(b?.borrow()).map_err(aerr)?;
        }
        writer.finish().map_err(aerr)?;
    }
    out.flush().map_err(|e| DataError::io(path, e))?;
    drop(out);
    Ok(atomic.commit()?)
}

/// Whether `path` names a JSON Lines output (else Parquet); an error for anything else.
pub(crate) fn is_jsonl_output(path: &Path) -> Result<bool> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("parquet") => Ok(false),
        Some("jsonl" | "json" | "ndjson") => Ok(true),
        _ => Err(DataError::InvalidArgument(format!(
            "{}: output must end in .parquet or .jsonl",
            path.display()
        ))),
    }
}

impl Dataset {
    /// Writes Parquet (snappy, as HF `to_parquet`), in row groups of at most 10,000 rows.
    pub fn to_parquet(&self, path: &Path) -> Result<()> {
        write_parquet(path, self.schema(), self.batches().iter().map(Ok))
    }

    /// Writes JSON Lines, one object per row (nulls written as `null`).
    pub fn to_jsonl(&self, path: &Path) -> Result<()> {
        write_jsonl(path, self.batches().iter().map(Ok))
    }

    /// Writes `.parquet` or `.jsonl`/`.json`/`.ndjson`, by the path's extension.
    pub fn save(&self, path: &Path) -> Result<()> {
        if is_jsonl_output(path)? {
            self.to_jsonl(path)
        } else {
            self.to_parquet(path)
        }
    }

    /// Saves the dataset as a directory (`data.arrow` + `state.json`), replacing
    /// what was there only once the new directory is complete.
    pub fn save_to_disk(&self, dir: &Path) -> Result<()> {
        berth_fs::replace_dir(dir, |tmp| self.write_dir(tmp))
    }

    fn write_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let mut sink = IpcSink::create(&dir.join(DATA_FILE), &self.schema())?;
        for b in self.batches() {
            sink.write(b)?;
        }
        sink.finish()?;
        let state = State {
            fingerprint: self.fingerprint().to_string(),
            source: self.source_name().to_string(),
            num_rows: self.num_rows(),
        };
        write_json(&dir.join(STATE_FILE), &state)
    }

    /// Loads a directory written by [`Dataset::save_to_disk`] (memory-mapped).
    pub fn load_from_disk(dir: &Path, cache: CacheMode) -> Result<Dataset> {
        let state: State = read_json(&dir.join(STATE_FILE))?;
        let data = dir.join(DATA_FILE);
        let (schema, batches) = read_ipc_mmap(&data)?;
        let ds = Dataset::assemble(
            schema,
            batches,
            Fingerprint::of_source("saved", &[&state.fingerprint]),
            state.source.into(),
            cache,
            Some(data),
        );
        if ds.num_rows() != state.num_rows {
            return Err(DataError::InvalidArgument(format!(
                "{}: holds {} rows, state.json says {}",
                dir.display(),
                ds.num_rows(),
                state.num_rows
            )));
        }
        Ok(ds)
    }
}

impl DatasetDict {
    /// Saves every split in a subdirectory of `dir`, plus `dataset_dict.json`.
    pub fn save_to_disk(&self, dir: &Path) -> Result<()> {
        berth_fs::replace_dir(dir, |tmp| {
            for (name, ds) in self.iter() {
                ds.write_dir(&tmp.join(name))?;
            }
            write_json(
                &tmp.join(DICT_FILE),
                &serde_json::json!({ "splits": self.names() }),
            )
        })
    }

    /// Loads a directory written by [`DatasetDict::save_to_disk`].
    pub fn load_from_disk(dir: &Path, cache: CacheMode) -> Result<DatasetDict> {
        let meta: serde_json::Value = read_json(&dir.join(DICT_FILE))?;
        let mut dict = DatasetDict::new();
        for split in meta["splits"].as_array().into_iter().flatten() {
            let name = split.as_str().unwrap_or_default();
            dict.insert(
                name,
                Dataset::load_from_disk(&dir.join(name), cache.clone())?,
            );
        }
        Ok(dict)
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let (atomic, file) = AtomicFile::create(path)?;
    serde_json::to_writer_pretty(BufWriter::new(file), value)
        .map_err(|e| DataError::io(path, std::io::Error::other(e)))?;
    Ok(atomic.commit()?)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DataError::Parse {
        path: path.to_path_buf(),
        line: e.line() as u64,
        column: None,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadOptions, load_jsonl, load_parquet};
    use arrow::array::{
        ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, UInt32Builder,
    };
    use std::sync::Arc;

    fn sample() -> Dataset {
        let mut ids = ListBuilder::new(UInt32Builder::new());
        ids.values().append_slice(&[101, 7, 102]);
        ids.append(true);
        ids.values().append_slice(&[101, 102]);
        ids.append(true);
        let batch = RecordBatch::try_from_iter([
            (
                "text",
                Arc::new(StringArray::from(vec!["a \"q\"", "é"])) as ArrayRef,
            ),
            ("label", Arc::new(Int64Array::from(vec![1, 0])) as ArrayRef),
            ("input_ids", Arc::new(ids.finish()) as ArrayRef),
        ])
        .unwrap();
        Dataset::from_batch(batch, "sample").unwrap()
    }

    #[test]
    fn parquet_and_jsonl_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ds = sample();
        let pq = dir.path().join("o.parquet");
        ds.save(&pq).unwrap();
        let back = load_parquet(pq.to_str().unwrap(), &LoadOptions::in_memory()).unwrap();
        assert_eq!(back.batches(), ds.batches());
        let jl = dir.path().join("o.jsonl");
        ds.save(&jl).unwrap();
        let text = std::fs::read_to_string(&jl).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"text":"a \"q\"","label":1,"input_ids":[101,7,102]}"#
        );
        let back = load_jsonl(&jl, &LoadOptions::in_memory()).unwrap();
        assert_eq!(back.num_rows(), 2);
        assert!(ds.save(&dir.path().join("o.xml")).is_err());
    }

    #[test]
    fn save_to_disk_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("saved");
        let ds = sample();
        ds.save_to_disk(&target).unwrap();
        ds.save_to_disk(&target).unwrap();
        let back = Dataset::load_from_disk(&target, CacheMode::InMemory).unwrap();
        assert_eq!(back.batches(), ds.batches());
        assert!(back.cache_file().is_some());
        let mut dict = DatasetDict::new();
        dict.insert("train", ds.clone());
        dict.insert("test", ds);
        let dd = dir.path().join("dict");
        dict.save_to_disk(&dd).unwrap();
        let back = DatasetDict::load_from_disk(&dd, CacheMode::InMemory).unwrap();
        assert_eq!(back.names(), vec!["train", "test"]);
        // Only the two outputs remain: no temp or backup directories.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}

//! `Dataset`: an Arrow schema plus record batches, backed by a memory-mapped IPC cache
//! file when it has a cache directory; `DatasetDict`: named splits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;

use crate::error::{DataError, Result};
use crate::fingerprint::Fingerprint;
use crate::storage::{IpcSink, read_ipc_mmap};

/// Where a dataset writes what is derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Derived datasets are Arrow IPC files `cache-<fingerprint>.arrow` in this
    /// directory, memory-mapped, and reused when the same fingerprint comes again.
    Dir(PathBuf),
    /// Derived datasets stay in memory and are never reused (like HF in-memory datasets).
    InMemory,
}

impl CacheMode {
    /// `$BERTH_CACHE/datasets`, or `~/.cache/berth/datasets`.
    pub fn default_dir() -> CacheMode {
        CacheMode::Dir(berth_cache_root().join("datasets"))
    }
}

/// `$BERTH_CACHE`, or `$HOME/.cache/berth` (the current directory's `.berth-cache`
/// when there is no home).
pub fn berth_cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("berth"),
        None => PathBuf::from(".berth-cache"),
    }
}

/// A table of rows stored as Arrow record batches.
#[derive(Clone, Debug)]
pub struct Dataset {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// `offsets[i]` is the global index of the first row of `batches[i]`; one extra
    /// entry holds the row count.
    offsets: Arc<Vec<usize>>,
    fingerprint: Fingerprint,
    source: Arc<str>,
    cache: CacheMode,
    cache_file: Option<PathBuf>,
    /// Where each row came from in the file that was loaded, kept through `select`,
    /// `shuffle`, splits and maps that keep every row, so that an error found late
    /// (a bad label) names the user's line, not a shuffled index. `None` for a dataset
    /// built in memory, or once an op changed the rows (a filter).
    origin: Option<Origin>,
}

/// Rows' places in their source file.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origin {
    /// Per row, its 0-based row in the file; `None` while the rows are the file's, in
    /// order.
    rows: Option<Arc<Vec<usize>>>,
    /// Per file row, its 1-based line (the text formats).
    lines: Option<Arc<Vec<u64>>>,
}

/// Where a row came from, as [`Dataset::origin_of`] tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowOrigin {
    /// 0-based row in the source file.
    pub file_row: usize,
    /// 1-based line in the source file, for CSV/TSV, JSON Lines and text.
    pub line: Option<u64>,
}

impl Dataset {
    /// An in-memory dataset from batches that share `schema`. `source_name` is what
    /// error messages call it.
    pub fn from_batches(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        source_name: &str,
    ) -> Result<Self> {
        if let Some(b) = batches.iter().find(|b| b.schema() != schema) {
            return Err(DataError::InvalidArgument(format!(
                "{source_name}: batch schema {:?} differs from dataset schema {:?}",
                b.schema(),
                schema
            )));
        }
        static NONCE: AtomicU64 = AtomicU64::new(0);
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed).to_string();
        let pid = std::process::id().to_string();
        let fingerprint = Fingerprint::of_source("memory", &[source_name, &pid, &nonce]);
        Ok(Self::assemble(
            schema,
            batches,
            fingerprint,
            source_name.into(),
            CacheMode::InMemory,
            None,
        ))
    }

    /// An in-memory dataset of one batch.
    pub fn from_batch(batch: RecordBatch, source_name: &str) -> Result<Self> {
        Self::from_batches(batch.schema(), vec![batch], source_name)
    }

    pub(crate) fn assemble(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        fingerprint: Fingerprint,
        source: Arc<str>,
        cache: CacheMode,
        cache_file: Option<PathBuf>,
    ) -> Self {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        let mut offsets = Vec::with_capacity(batches.len() + 1);
        let mut n = 0;
        for b in &batches {
            offsets.push(n);
            n += b.num_rows();
        }
        offsets.push(n);
        Dataset {
            schema,
            batches,
            offsets: Arc::new(offsets),
            fingerprint,
            source,
            cache,
            cache_file,
            origin: None,
        }
    }

    /// The same rows, each the file row of its index (a loader's output), with the
    /// 1-based line of each when the format has lines.
    pub(crate) fn with_file_rows(mut self, lines: Option<Vec<u64>>) -> Self {
        let lines = lines.filter(|l| l.len() == self.num_rows()).map(Arc::new);
        self.origin = Some(Origin { rows: None, lines });
        self
    }

    /// `self`'s provenance carried to a dataset whose row `i` is `self`'s row
    /// `picks[i]` (`None`: the same rows, in order).
    pub(crate) fn carry_origin(&self, mut to: Dataset, picks: Option<&[usize]>) -> Dataset {
        to.origin = self.origin.as_ref().and_then(|o| match picks {
            None if to.num_rows() == self.num_rows() => Some(o.clone()),
            None => None,
            Some(picks) => Some(Origin {
                rows: Some(Arc::new(
                    picks
                        .iter()
                        .map(|&i| o.rows.as_ref().map_or(i, |r| r[i]))
                        .collect(),
                )),
                lines: o.lines.clone(),
            }),
        });
        to
    }

    /// Where row `row` came from in the loaded file, when that is known.
    pub fn origin_of(&self, row: usize) -> Option<RowOrigin> {
        let o = self.origin.as_ref()?;
        let file_row = match &o.rows {
            Some(r) => *r.get(row)?,
            None if row < self.num_rows() => row,
            None => return None,
        };
        Some(RowOrigin {
            file_row,
            line: o.lines.as_ref().and_then(|l| l.get(file_row).copied()),
        })
    }

    /// An error about row `row`'s value in `column`, at the user's coordinates: the
    /// source file's line where it has lines, else its row in the file (not its place
    /// after a shuffle).
    pub fn value_error(&self, row: usize, column: &str, message: impl Into<String>) -> DataError {
        let origin = self.origin_of(row);
        match origin.and_then(|o| o.line) {
            Some(line) => DataError::Parse {
                path: PathBuf::from(self.source_name()),
                line,
                column: Some(column.to_string()),
                message: message.into(),
            },
            None => DataError::Value {
                source_name: self.source_name().to_string(),
                row: origin.map_or(row, |o| o.file_row),
                column: column.to_string(),
                message: message.into(),
            },
        }
    }

    /// `e` at the user's coordinates: a bad value about row `row` of this dataset
    /// becomes [`Dataset::value_error`]'s (the file's line, not the row's index here);
    /// any other error is as it was.
    pub(crate) fn at_file(&self, e: DataError) -> DataError {
        match e {
            DataError::Value {
                row,
                column,
                message,
                ..
            } => self.value_error(row, &column, message),
            e => e,
        }
    }

    /// Builds a dataset named `fingerprint` by streaming batches from `produce`, or
    /// reuses the cache file of that fingerprint when `cache` is a directory holding it.
    /// `produce` must emit at least one batch (an empty one is fine) so the schema is known.
    pub(crate) fn materialize(
        cache: &CacheMode,
        fingerprint: Fingerprint,
        source: Arc<str>,
        produce: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<()>,
    ) -> Result<Dataset> {
        match cache {
            CacheMode::Dir(dir) => {
                let path = dir.join(format!("cache-{fingerprint}.arrow"));
                if !path.exists() {
                    let mut sink: Option<IpcSink> = None;
                    produce(&mut |batch: RecordBatch| {
                        if sink.is_none() {
                            sink = Some(IpcSink::create(&path, &batch.schema())?);
                        }
                        match sink.as_mut() {
                            Some(s) if batch.num_rows() > 0 => s.write(&batch),
                            _ => Ok(()),
                        }
                    })?;
                    let sink = sink.ok_or_else(|| {
                        DataError::InvalidArgument(format!(
                            "{source}: operation produced no batch, so no schema"
                        ))
                    })?;
                    sink.finish()?;
                } else {
                    tracing::debug!("reusing cached dataset {}", path.display());
                }
                let (schema, batches) = read_ipc_mmap(&path)?;
                Ok(Self::assemble(
                    schema,
                    batches,
                    fingerprint,
                    source,
                    cache.clone(),
                    Some(path),
                ))
            }
            CacheMode::InMemory => {
                let mut out: Vec<RecordBatch> = Vec::new();
                produce(&mut |batch| {
                    out.push(batch);
                    Ok(())
                })?;
                let schema = out.first().map(|b| b.schema()).ok_or_else(|| {
                    DataError::InvalidArgument(format!(
                        "{source}: operation produced no batch, so no schema"
                    ))
                })?;
                Ok(Self::assemble(
                    schema,
                    out,
                    fingerprint,
                    source,
                    CacheMode::InMemory,
                    None,
                ))
            }
        }
    }

    /// The same rows, with derived datasets written under `cache` from now on.
    pub fn with_cache(mut self, cache: CacheMode) -> Self {
        self.cache = cache;
        self
    }

    /// A copy that shares the buffers but carries another fingerprint (metadata ops).
    pub(crate) fn relabel(
        &self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        fingerprint: Fingerprint,
    ) -> Self {
        let mut out = Self::assemble(
            schema,
            batches,
            fingerprint,
            self.source.clone(),
            self.cache.clone(),
            None,
        );
        out.origin = self.origin.clone();
        out
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn num_rows(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.num_rows() == 0
    }

    pub fn num_columns(&self) -> usize {
        self.schema.fields().len()
    }

    pub fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// What error messages call this dataset: the file it came from, or a name.
    pub fn source_name(&self) -> &str {
        &self.source
    }

    pub fn cache_mode(&self) -> &CacheMode {
        &self.cache
    }

    /// The memory-mapped file behind this dataset, when it has one.
    pub fn cache_file(&self) -> Option<&Path> {
        self.cache_file.as_deref()
    }

    /// The stored batches, as they are (sizes vary).
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Index of the column `name`, or an error naming the dataset and its columns.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.schema
            .index_of(name)
            .map_err(|_| self.missing_column(name))
    }

    pub(crate) fn missing_column(&self, name: &str) -> DataError {
        DataError::MissingColumn {
            source_name: self.source.to_string(),
            column: name.to_string(),
            available: self.column_names(),
        }
    }

    /// The whole column `name` as one array (copies when the dataset has several batches).
    pub fn column(&self, name: &str) -> Result<ArrayRef> {
        let idx = self.column_index(name)?;
        let parts: Vec<&dyn Array> = self
            .batches
            .iter()
            .map(|b| b.column(idx).as_ref())
            .collect();
        if parts.is_empty() {
            return Ok(arrow::array::new_empty_array(
                self.schema.field(idx).data_type(),
            ));
        }
        arrow::compute::concat(&parts).map_err(|e| DataError::arrow(self.source.to_string(), e))
    }

    /// A `List<T>` column (token ids, type ids) as one vector per row.
    pub fn list_rows<T: arrow::datatypes::ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Result<Vec<Vec<T::Native>>> {
        let col = self.column(name)?;
        self.lists_in::<T>(&col, name)
    }

    /// A `List<List<T>>` column (the chunks of each text) as vectors per row.
    pub fn nested_list_rows<T: arrow::datatypes::ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Result<Vec<Vec<Vec<T::Native>>>> {
        let col = self.column(name)?;
        let outer = col
            .as_any()
            .downcast_ref::<arrow::array::ListArray>()
            .ok_or_else(|| self.wrong_type(name, "a list of lists", &col))?;
        (0..outer.len())
            .map(|i| self.lists_in::<T>(&outer.value(i), name))
            .collect()
    }

    fn lists_in<T: arrow::datatypes::ArrowPrimitiveType>(
        &self,
        col: &ArrayRef,
        name: &str,
    ) -> Result<Vec<Vec<T::Native>>> {
        let expected = format!("a list of {}", T::DATA_TYPE);
        let list = col
            .as_any()
            .downcast_ref::<arrow::array::ListArray>()
            .ok_or_else(|| self.wrong_type(name, &expected, col))?;
        let values = list
            .values()
            .as_any()
            .downcast_ref::<arrow::array::PrimitiveArray<T>>()
            .ok_or_else(|| self.wrong_type(name, &expected, col))?
            .values();
        Ok(list
            .offsets()
            .windows(2)
            .map(|w| values[w[0] as usize..w[1] as usize].to_vec())
            .collect())
    }

    fn wrong_type(&self, name: &str, expected: &str, col: &ArrayRef) -> DataError {
        DataError::ColumnType {
            source_name: self.source.to_string(),
            column: name.to_string(),
            expected: expected.to_string(),
            found: col.data_type().to_string(),
        }
    }

    /// Rows `start..start + len` as one batch (zero-copy when they lie in one stored batch).
    pub fn slice(&self, start: usize, len: usize) -> Result<RecordBatch> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.num_rows())
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "{}: rows {start}..{} out of range ({} rows)",
                    self.source,
                    start.saturating_add(len),
                    self.num_rows()
                ))
            })?;
        if len == 0 {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let first = self.batch_of(start);
        let last = self.batch_of(end - 1);
        let mut parts = Vec::with_capacity(last - first + 1);
        for b in first..=last {
            let lo = start.max(self.offsets[b]) - self.offsets[b];
            let hi = end.min(self.offsets[b + 1]) - self.offsets[b];
            parts.push(self.batches[b].slice(lo, hi - lo));
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        concat_batches(&self.schema, &parts)
            .map_err(|e| DataError::arrow(self.source.to_string(), e))
    }

    /// Index of the stored batch holding global row `row` (which must be < num_rows).
    pub(crate) fn batch_of(&self, row: usize) -> usize {
        self.offsets.partition_point(|&o| o <= row) - 1
    }

    /// `(batch, row within batch)` of a global row.
    pub(crate) fn locate(&self, row: usize) -> (usize, usize) {
        let b = self.batch_of(row);
        (b, row - self.offsets[b])
    }

    /// The rows in consecutive batches of `batch_size` rows (the last may be shorter),
    /// like iterating a HF dataset with `.iter(batch_size)`.
    pub fn iter_batches(
        &self,
        batch_size: usize,
    ) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        let batch_size = batch_size.max(1);
        (0..self.num_rows())
            .step_by(batch_size)
            .map(move |start| self.slice(start, batch_size.min(self.num_rows() - start)))
    }

    /// `(start, len)` windows of `batch_size` rows covering the dataset.
    pub(crate) fn windows(&self, batch_size: usize) -> Vec<(usize, usize)> {
        let batch_size = batch_size.max(1);
        (0..self.num_rows())
            .step_by(batch_size)
            .map(|s| (s, batch_size.min(self.num_rows() - s)))
            .collect()
    }

    /// Class names of a label column, where the source carried them: HF `datasets`
    /// parquet metadata (`ClassLabel` names) or an Arrow field metadata entry
    /// `class_names` (a JSON list) that Berth writes itself.
    pub fn class_names(&self, column: &str) -> Option<Vec<String>> {
        let field = self.schema.field_with_name(column).ok()?;
        if let Some(json) = field.metadata().get("class_names") {
            return serde_json::from_str(json).ok();
        }
        let hf = self.schema.metadata().get("huggingface")?;
        let v: serde_json::Value = serde_json::from_str(hf).ok()?;
        let names = v
            .pointer(&format!(
                "/info/features/{}/names",
                json_pointer_escape(column)
            ))?
            .as_array()?;
        names
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect()
    }
}

fn json_pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Named splits ("train", "validation", "test", ...), in insertion order.
#[derive(Clone, Debug, Default)]
pub struct DatasetDict {
    splits: Vec<(String, Dataset)>,
}

impl DatasetDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the split `name`.
    pub fn insert(&mut self, name: impl Into<String>, dataset: Dataset) {
        let name = name.into();
        match self.splits.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = dataset,
            None => self.splits.push((name, dataset)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Dataset> {
        self.splits.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// The split `name`, or an error listing the splits there are.
    pub fn split(&self, name: &str) -> Result<&Dataset> {
        self.get(name).ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "no split '{name}' (splits: {})",
                self.names().join(", ")
            ))
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.splits.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Dataset)> {
        self.splits.iter().map(|(n, d)| (n.as_str(), d))
    }

    pub fn len(&self) -> usize {
        self.splits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.splits.is_empty()
    }

    /// Applies `f` to every split.
    pub fn try_map(&self, mut f: impl FnMut(&Dataset) -> Result<Dataset>) -> Result<DatasetDict> {
        let mut out = DatasetDict::new();
        for (name, ds) in &self.splits {
            out.insert(name.clone(), f(ds)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn numbers(batches: &[std::ops::Range<i64>]) -> Dataset {
        let bs: Vec<RecordBatch> = batches
            .iter()
            .map(|r| {
                RecordBatch::try_from_iter([(
                    "n",
                    Arc::new(Int64Array::from_iter_values(r.clone())) as ArrayRef,
                )])
                .unwrap()
            })
            .collect();
        Dataset::from_batches(bs[0].schema(), bs, "numbers").unwrap()
    }

    fn values(b: &RecordBatch) -> Vec<i64> {
        b.column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn slice_spans_stored_batches() {
        let ds = numbers(&[0..3, 3..5, 5..10]);
        assert_eq!(ds.num_rows(), 10);
        assert_eq!(values(&ds.slice(2, 5).unwrap()), vec![2, 3, 4, 5, 6]);
        assert_eq!(ds.locate(4), (1, 1));
        assert!(ds.slice(8, 3).is_err());
    }

    #[test]
    fn iter_batches_yields_fixed_sizes() {
        let ds = numbers(&[0..3, 3..5, 5..10]);
        let sizes: Vec<usize> = ds.iter_batches(4).map(|b| b.unwrap().num_rows()).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[test]
    fn missing_column_error_names_source() {
        let ds = numbers(&[0..2, 2..3]);
        let err = ds.column("x").unwrap_err().to_string();
        assert!(err.contains("numbers") && err.contains("'x'"), "{err}");
    }
}

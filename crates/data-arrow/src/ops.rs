//! Transformations, as in HF `datasets`: `map_batched` (rows in and out may differ in
//! number), `filter`, `select`, `shuffle`, `train_test_split`, and the column edits.
//! Each derived dataset gets the fingerprint (parent, op, version, parameters).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, interleave_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Dataset, DatasetDict};
use crate::error::{DataError, Result};

/// A batched transformation with a stable identity, so its output can be cached.
///
/// `params` must change whenever the output would (HF hashes the function; Rust
/// closures cannot be hashed, so the op says what it depends on), and `version` must be
/// bumped when the code's behaviour changes.
pub trait BatchOp: Send + Sync {
    /// A short name, part of the fingerprint and of error messages.
    fn name(&self) -> &str;
    /// Bumped when the op's code changes what it outputs.
    fn version(&self) -> u32 {
        1
    }
    /// Everything the output depends on besides the input rows, canonically written.
    fn params(&self) -> String;
    /// Transforms one batch; `first_row` is the global index of its first row, for
    /// error messages. The output may have any number of rows and any schema, the same
    /// for every batch.
    fn apply(&self, batch: &RecordBatch, first_row: usize, source: &str) -> Result<RecordBatch>;
    /// True when output row `i` is always input row `i` (the op adds or replaces
    /// columns only): the output then keeps each row's place in the loaded file, so
    /// later errors name the file's line. An op that may drop, add or reorder rows
    /// keeps the default, and its output has no provenance even where its row count
    /// happens to match.
    fn keeps_rows(&self) -> bool {
        false
    }
}

/// A [`BatchOp`] from a closure, its name and its parameters.
pub struct FnOp<F> {
    name: String,
    params: String,
    f: F,
}

impl<F> FnOp<F>
where
    F: Fn(&RecordBatch) -> Result<RecordBatch> + Send + Sync,
{
    pub fn new(name: impl Into<String>, params: impl Into<String>, f: F) -> Self {
        FnOp {
            name: name.into(),
            params: params.into(),
            f,
        }
    }
}

impl<F> BatchOp for FnOp<F>
where
    F: Fn(&RecordBatch) -> Result<RecordBatch> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn params(&self) -> String {
        self.params.clone()
    }
    fn apply(&self, batch: &RecordBatch, _first_row: usize, _source: &str) -> Result<RecordBatch> {
        (self.f)(batch)
    }
}

/// How `map_batched` feeds the op.
#[derive(Clone, Debug)]
pub struct MapOptions {
    /// Rows per call of the op (HF's default is 1000).
    pub batch_size: usize,
    /// Threads applying the op to consecutive batches; output order is kept.
    pub num_workers: usize,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            batch_size: 1000,
            num_workers: 1,
        }
    }
}

/// How large the test split is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SplitSize {
    /// A fraction of the rows in (0, 1); the test split gets `ceil(fraction * n)`, as HF.
    Fraction(f64),
    /// An exact number of rows.
    Rows(usize),
}

impl Dataset {
    /// Applies `op` to consecutive batches of `opts.batch_size` rows and concatenates
    /// the outputs, in order. Cached under the derived fingerprint when the dataset
    /// has a cache directory: the second run of the same pipeline reads the cache.
    pub fn map_batched(&self, op: &dyn BatchOp, opts: &MapOptions) -> Result<Dataset> {
        let fp = self
            .fingerprint()
            .derive(op.name(), op.version(), &op.params());
        let windows = self.windows(opts.batch_size);
        let source: Arc<str> = self.source_name().into();
        let out = Dataset::materialize(self.cache_mode(), fp, source.clone(), |emit| {
            // Only when the op runs (a cached result shows nothing).
            let progress =
                crate::progress::Progress::new(format!("Map ({})", op.name()), self.num_rows());
            let run = |(start, len): (usize, usize)| -> Result<RecordBatch> {
                let batch = self.slice(start, len)?;
                let out = op
                    .apply(&batch, start, &source)
                    .map_err(|e| self.at_file(e));
                progress.inc(len);
                out
            };
            if windows.is_empty() {
                // Run the op on an empty batch so the output schema is known.
                return emit(op.apply(&RecordBatch::new_empty(self.schema()), 0, &source)?);
            }
            if opts.num_workers <= 1 {
                for w in windows {
                    emit(run(w)?)?;
                }
                progress.finish();
                return Ok(());
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(opts.num_workers)
                .build()
                .map_err(|e| DataError::InvalidArgument(format!("thread pool: {e}")))?;
            // A bounded window of batches in flight keeps memory flat; order is kept.
            for group in windows.chunks(opts.num_workers * 2) {
                let outs: Vec<Result<RecordBatch>> = pool.install(|| {
                    use rayon::prelude::*;
                    group.par_iter().map(|&w| run(w)).collect()
                });
                for out in outs {
                    emit(out?)?;
                }
            }
            progress.finish();
            Ok(())
        })?;
        Ok(if op.keeps_rows() {
            self.carry_origin(out, None)
        } else {
            out
        })
    }

    /// Keeps the rows for which `predicate` is true (nulls count as false).
    pub fn filter<F>(&self, name: &str, params: &str, predicate: F) -> Result<Dataset>
    where
        F: Fn(&RecordBatch) -> Result<BooleanArray> + Send + Sync,
    {
        let op = FnOp::new(format!("filter:{name}"), params, |batch: &RecordBatch| {
            let mask = predicate(batch)?;
            filter_record_batch(batch, &mask).map_err(|e| DataError::arrow("filter", e))
        });
        self.map_batched(&op, &MapOptions::default())
    }

    /// The rows at `indices`, in that order (repeats allowed), like HF `select`.
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        let digest = {
            let bytes: Vec<u8> = indices
                .iter()
                .flat_map(|i| (*i as u64).to_le_bytes())
                .collect();
            crate::fingerprint::Fingerprint::of_source("indices", &[&hex::encode(sha256(&bytes))])
        };
        self.gather(indices, "select", digest.as_str())
    }

    /// A permutation of the rows drawn from `seed`; the same seed gives the same order.
    pub fn shuffle(&self, seed: u64) -> Result<Dataset> {
        let perm = permutation(self.num_rows(), seed);
        self.gather(&perm, "shuffle", &format!("seed={seed}"))
    }

    /// Splits into "train" and "test" from a seeded permutation, like HF
    /// `train_test_split(test_size, seed=...)`: test takes the first rows of the
    /// permutation, train the rest.
    pub fn train_test_split(&self, test_size: SplitSize, seed: u64) -> Result<DatasetDict> {
        let n = self.num_rows();
        let n_test = match test_size {
            SplitSize::Fraction(f) if f > 0.0 && f < 1.0 => (f * n as f64).ceil() as usize,
            SplitSize::Rows(k) if k < n => k,
            other => {
                return Err(DataError::InvalidArgument(format!(
                    "{}: test_size {other:?} must be a fraction in (0, 1) or a row count below {n}",
                    self.source_name()
                )));
            }
        };
        if n_test == 0 || n_test == n {
            return Err(DataError::InvalidArgument(format!(
                "{}: test_size {test_size:?} leaves an empty split of {n} rows",
                self.source_name()
            )));
        }
        let perm = permutation(n, seed);
        let params = format!("seed={seed},n_test={n_test}");
        let mut dict = DatasetDict::new();
        dict.insert(
            "train",
            self.gather(&perm[n_test..], "split_train", &params)?,
        );
        dict.insert("test", self.gather(&perm[..n_test], "split_test", &params)?);
        Ok(dict)
    }

    fn gather(&self, indices: &[usize], op: &str, params: &str) -> Result<Dataset> {
        let n = self.num_rows();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(DataError::InvalidArgument(format!(
                "{}: row index {bad} out of range ({n} rows)",
                self.source_name()
            )));
        }
        let fp = self.fingerprint().derive(op, 1, params);
        let out = Dataset::materialize(self.cache_mode(), fp, self.source_name().into(), |emit| {
            if indices.is_empty() {
                return emit(RecordBatch::new_empty(self.schema()));
            }
            let sources: Vec<&RecordBatch> = self.batches().iter().collect();
            for chunk in indices.chunks(1000) {
                let picks: Vec<(usize, usize)> = chunk.iter().map(|&i| self.locate(i)).collect();
                let batch = interleave_record_batch(&sources, &picks)
                    .map_err(|e| DataError::arrow(format!("{}: {op}", self.source_name()), e))?;
                emit(batch)?;
            }
            Ok(())
        })?;
        Ok(self.carry_origin(out, Some(indices)))
    }

    /// Drops the named columns (all must exist).
    pub fn remove_columns(&self, names: &[&str]) -> Result<Dataset> {
        let drop: Vec<usize> = names
            .iter()
            .map(|n| self.column_index(n))
            .collect::<Result<_>>()?;
        let keep: Vec<usize> = (0..self.num_columns())
            .filter(|i| !drop.contains(i))
            .collect();
        self.project(&keep, &format!("remove_columns:{names:?}"))
    }

    /// Keeps only the named columns, in that order.
    pub fn select_columns(&self, names: &[&str]) -> Result<Dataset> {
        let keep: Vec<usize> = names
            .iter()
            .map(|n| self.column_index(n))
            .collect::<Result<_>>()?;
        self.project(&keep, &format!("select_columns:{names:?}"))
    }

    fn project(&self, keep: &[usize], params: &str) -> Result<Dataset> {
        let schema = Arc::new(
            self.schema()
                .project(keep)
                .map_err(|e| DataError::arrow(self.source_name().to_string(), e))?,
        );
        let batches = self
            .batches()
            .iter()
            .map(|b| b.project(keep))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| DataError::arrow(self.source_name().to_string(), e))?;
        let fp = self.fingerprint().derive("project", 1, params);
        Ok(self.relabel(schema, batches, fp))
    }

    /// Renames a column (the new name must not exist yet).
    pub fn rename_column(&self, from: &str, to: &str) -> Result<Dataset> {
        let idx = self.column_index(from)?;
        if self.schema().index_of(to).is_ok() {
            return Err(DataError::InvalidArgument(format!(
                "{}: cannot rename '{from}' to '{to}': '{to}' exists",
                self.source_name()
            )));
        }
        let fields: Vec<Field> = self
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if i == idx {
                    f.as_ref().clone().with_name(to)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            self.schema().metadata().clone(),
        ));
        self.rebuild(
            schema,
            |b| Ok(b.columns().to_vec()),
            &format!("rename:{from}->{to}"),
        )
    }

    /// Casts a column to `to` (Arrow cast rules; a value that does not fit is an error
    /// naming the column).
    pub fn cast_column(&self, name: &str, to: DataType) -> Result<Dataset> {
        let idx = self.column_index(name)?;
        let schema = self.schema();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if i == idx {
                    f.as_ref().clone().with_data_type(to.clone())
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let new_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let source = self.source_name().to_string();
        self.rebuild(
            new_schema,
            |b| {
                let mut cols = b.columns().to_vec();
                let opts = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                cols[idx] = arrow::compute::cast_with_options(&cols[idx], &to, &opts)
                    .map_err(|e| DataError::arrow(format!("{source}: cast column '{name}'"), e))?;
                Ok(cols)
            },
            &format!("cast:{name}:{to}"),
        )
    }

    /// Appends a column of exactly `num_rows()` values, like HF `add_column`.
    pub fn add_column(&self, name: &str, values: ArrayRef) -> Result<Dataset> {
        if values.len() != self.num_rows() {
            return Err(DataError::InvalidArgument(format!(
                "{}: add_column '{name}' has {} values for {} rows",
                self.source_name(),
                values.len(),
                self.num_rows()
            )));
        }
        if self.schema().index_of(name).is_ok() {
            return Err(DataError::InvalidArgument(format!(
                "{}: column '{name}' exists",
                self.source_name()
            )));
        }
        let mut fields: Vec<Field> = self
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(name, values.data_type().clone(), true));
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            self.schema().metadata().clone(),
        ));
        let digest = {
            let data = values.to_data();
            let bytes: Vec<u8> = data
                .buffers()
                .iter()
                .flat_map(|b| b.as_slice().to_vec())
                .collect();
            hex::encode(sha256(&bytes))
        };
        let mut offset = 0;
        self.rebuild(
            schema,
            |b| {
                let mut cols = b.columns().to_vec();
                cols.push(values.slice(offset, b.num_rows()));
                offset += b.num_rows();
                Ok(cols)
            },
            &format!("add_column:{name}:{digest}"),
        )
    }

    fn rebuild(
        &self,
        schema: SchemaRef,
        mut columns: impl FnMut(&RecordBatch) -> Result<Vec<ArrayRef>>,
        params: &str,
    ) -> Result<Dataset> {
        let batches = self
            .batches()
            .iter()
            .map(|b| {
                RecordBatch::try_new(schema.clone(), columns(b)?)
                    .map_err(|e| DataError::arrow(self.source_name().to_string(), e))
            })
            .collect::<Result<Vec<_>>>()?;
        let fp = self.fingerprint().derive("columns", 1, params);
        Ok(self.relabel(schema, batches, fp))
    }
}

/// A seeded permutation of `0..n` (ChaCha8, so the same on every platform).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    perm
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::CacheMode;
    use arrow::array::{Array, Int64Array, StringArray};
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn numbers(n: i64, batch: usize) -> Dataset {
        let all: Vec<i64> = (0..n).collect();
        let bs: Vec<RecordBatch> = all
            .chunks(batch.max(1))
            .map(|c| {
                RecordBatch::try_from_iter([
                    ("n", Arc::new(Int64Array::from(c.to_vec())) as ArrayRef),
                    (
                        "s",
                        Arc::new(StringArray::from_iter_values(
                            c.iter().map(|v| format!("row{v}")),
                        )) as ArrayRef,
                    ),
                ])
                .unwrap()
            })
            .collect();
        let schema = bs.first().map(|b| b.schema()).unwrap_or_else(|| {
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int64, false),
                Field::new("s", DataType::Utf8, false),
            ]))
        });
        Dataset::from_batches(schema, bs, "numbers").unwrap()
    }

    fn ns(ds: &Dataset) -> Vec<i64> {
        let col = ds.column("n").unwrap();
        col.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    fn doubling() -> impl BatchOp {
        FnOp::new("double", "v1", |b: &RecordBatch| {
            // Every row twice: the output has more rows than the input.
            let idx: Vec<u32> = (0..b.num_rows() as u32).flat_map(|i| [i, i]).collect();
            arrow::compute::take_record_batch(b, &arrow::array::UInt32Array::from(idx))
                .map_err(|e| DataError::arrow("double", e))
        })
    }

    #[test]
    fn map_batched_may_change_the_row_count_and_keeps_order() {
        let ds = numbers(7, 3);
        for workers in [1, 2] {
            let out = ds
                .map_batched(
                    &doubling(),
                    &MapOptions {
                        batch_size: 2,
                        num_workers: workers,
                    },
                )
                .unwrap();
            assert_eq!(ns(&out), vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
        }
    }

    /// Upper-cases column `s`: every row stays where it was.
    struct Upper;

    impl BatchOp for Upper {
        fn name(&self) -> &str {
            "upper"
        }
        fn params(&self) -> String {
            String::new()
        }
        fn apply(&self, b: &RecordBatch, _: usize, _: &str) -> Result<RecordBatch> {
            let s = b.column_by_name("s").unwrap();
            let s = s.as_any().downcast_ref::<StringArray>().unwrap();
            let up = StringArray::from_iter(s.iter().map(|v| v.map(str::to_uppercase)));
            RecordBatch::try_new(b.schema(), vec![b.column(0).clone(), Arc::new(up)])
                .map_err(|e| DataError::arrow("upper", e))
        }
        fn keeps_rows(&self) -> bool {
            true
        }
    }

    #[test]
    fn rows_keep_their_file_line_through_shuffles_and_row_keeping_ops_and_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.csv");
        // Row 1's quoted text spans two lines: rows 0, 1, 2 are on lines 2, 3, 5.
        std::fs::write(&file, "n,s\n0,a\n1,\"b\nb\"\n2,c\n").unwrap();
        let opts = crate::LoadOptions {
            cache: CacheMode::Dir(dir.path().join("cache")),
            batch_size: 2,
        };
        let line_of = |n: i64| [2, 3, 5][n as usize];
        // Parsed, then answered by the cache (the lines come from the sidecar).
        for round in 0..2 {
            let ds = crate::load(file.to_str().unwrap(), None, &opts).unwrap();
            // The first seed that moves the rows.
            let shuffled = (0..)
                .map(|seed| ds.shuffle(seed).unwrap())
                .find(|d| ns(d) != vec![0, 1, 2])
                .unwrap();
            let kept = shuffled
                .map_batched(&Upper, &MapOptions::default())
                .unwrap();
            for d in [&shuffled, &kept] {
                for (i, n) in ns(d).into_iter().enumerate() {
                    assert_eq!(
                        d.origin_of(i),
                        Some(crate::dataset::RowOrigin {
                            file_row: n as usize,
                            line: Some(line_of(n)),
                        }),
                        "round {round}, row {i}"
                    );
                }
            }
            let e = kept.value_error(0, "s", "bad").to_string();
            let n = ns(&kept)[0];
            assert_eq!(
                e,
                format!("{}: line {}, column 's': bad", file.display(), line_of(n))
            );
            // An op that may move rows loses them, even with the same row count.
            let reversed = FnOp::new("reverse", "", |b: &RecordBatch| {
                let idx: Vec<u32> = (0..b.num_rows() as u32).rev().collect();
                arrow::compute::take_record_batch(b, &arrow::array::UInt32Array::from(idx))
                    .map_err(|e| DataError::arrow("reverse", e))
            });
            let moved = shuffled
                .map_batched(&reversed, &MapOptions::default())
                .unwrap();
            assert_eq!(moved.num_rows(), 3);
            assert_eq!(moved.origin_of(0), None);
        }
    }

    #[test]
    fn map_of_an_empty_dataset_still_has_the_output_schema() {
        let ds = numbers(0, 1);
        let op = FnOp::new("drop_s", "", |b: &RecordBatch| Ok(b.project(&[0]).unwrap()));
        let out = ds.map_batched(&op, &MapOptions::default()).unwrap();
        assert_eq!(out.num_rows(), 0);
        assert_eq!(out.column_names(), vec!["n"]);
    }

    #[test]
    fn same_pipeline_reuses_the_cache_and_a_changed_parameter_recomputes() {
        let dir = tempfile::tempdir().unwrap();
        let calls = AtomicUsize::new(0);
        let make_op = |params: &'static str| {
            let calls = &calls;
            FnOp::new("count", params, move |b: &RecordBatch| {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(b.clone())
            })
        };
        // A dataset with a stable fingerprint, as loaders give.
        let base = numbers(10, 5);
        let base = Dataset::assemble(
            base.schema(),
            base.batches().to_vec(),
            crate::fingerprint::Fingerprint::of_source("test", &["numbers"]),
            "numbers".into(),
            CacheMode::Dir(dir.path().to_path_buf()),
            None,
        );
        let opts = MapOptions {
            batch_size: 5,
            num_workers: 1,
        };
        let first = base.map_batched(&make_op("a"), &opts).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(first.cache_file().unwrap().exists());
        let again = base.map_batched(&make_op("a"), &opts).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "second run must read the cache"
        );
        assert_eq!(ns(&again), ns(&first));
        assert_eq!(again.fingerprint(), first.fingerprint());
        base.map_batched(&make_op("b"), &opts).unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "a new parameter must recompute"
        );
    }

    #[test]
    fn op_errors_propagate_and_leave_no_cache_file() {
        let dir = tempfile::tempdir().unwrap();
        let ds = numbers(10, 5).with_cache(CacheMode::Dir(dir.path().to_path_buf()));
        // The first batch succeeds (and is written), the second fails.
        let op = FnOp::new("fail", "", |b: &RecordBatch| {
            let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            if n.value(0) < 4 {
                Ok(b.clone())
            } else {
                Err(DataError::InvalidArgument("boom".into()))
            }
        });
        let opts = MapOptions {
            batch_size: 4,
            num_workers: 1,
        };
        let err = ds.map_batched(&op, &opts).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn filter_keeps_matching_rows() {
        let ds = numbers(10, 4);
        let even = ds
            .filter("even", "", |b| {
                let n = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                Ok(n.iter().map(|v| v.map(|v| v % 2 == 0)).collect())
            })
            .unwrap();
        assert_eq!(ns(&even), vec![0, 2, 4, 6, 8]);
    }

    #[test]
    fn train_test_split_matches_hf_sizes() {
        let ds = numbers(10, 3);
        let dict = ds.train_test_split(SplitSize::Fraction(0.25), 42).unwrap();
        assert_eq!(dict.split("test").unwrap().num_rows(), 3);
        assert_eq!(dict.split("train").unwrap().num_rows(), 7);
        assert!(ds.train_test_split(SplitSize::Fraction(1.0), 42).is_err());
        assert!(ds.train_test_split(SplitSize::Rows(10), 42).is_err());
    }

    #[test]
    fn column_edits() {
        let ds = numbers(5, 2);
        let r = ds.rename_column("s", "text").unwrap();
        assert_eq!(r.column_names(), vec!["n", "text"]);
        assert!(ds.rename_column("s", "n").is_err());
        let d = ds.remove_columns(&["s"]).unwrap();
        assert_eq!(d.column_names(), vec!["n"]);
        assert!(ds.remove_columns(&["zz"]).is_err());
        let c = ds.cast_column("n", DataType::Float64).unwrap();
        assert_eq!(c.column("n").unwrap().data_type(), &DataType::Float64);
        let a = ds
            .add_column("m", Arc::new(Int64Array::from(vec![9, 8, 7, 6, 5])))
            .unwrap();
        let m = a.column("m").unwrap();
        assert_eq!(
            m.as_any().downcast_ref::<Int64Array>().unwrap().values(),
            &[9, 8, 7, 6, 5]
        );
        assert!(
            ds.add_column("m", Arc::new(Int64Array::from(vec![1])))
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn shuffle_is_a_seeded_permutation(n in 0i64..200, batch in 1usize..50, seed in any::<u64>()) {
            let ds = numbers(n, batch);
            let a = ns(&ds.shuffle(seed).unwrap());
            let b = ns(&ds.shuffle(seed).unwrap());
            prop_assert_eq!(&a, &b);
            let mut sorted = a.clone();
            sorted.sort();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        }

        #[test]
        fn train_test_split_partitions_the_rows(n in 2i64..200, batch in 1usize..50, frac in 0.01f64..0.99, seed in any::<u64>()) {
            let ds = numbers(n, batch);
            let Ok(dict) = ds.train_test_split(SplitSize::Fraction(frac), seed) else {
                // Only a split that would leave a side empty may fail.
                prop_assert!((frac * n as f64).ceil() as i64 >= n);
                return Ok(());
            };
            let mut all = ns(dict.split("train").unwrap());
            all.extend(ns(dict.split("test").unwrap()));
            all.sort();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        }

        #[test]
        fn select_and_filter_keep_row_contents(n in 1i64..150, batch in 1usize..40, picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..60)) {
            let ds = numbers(n, batch);
            let idx: Vec<usize> = picks.iter().map(|p| p.index(n as usize)).collect();
            let sel = ds.select(&idx).unwrap();
            let s = sel.column("s").unwrap();
            let s = s.as_any().downcast_ref::<StringArray>().unwrap();
            for (k, &i) in idx.iter().enumerate() {
                prop_assert_eq!(s.value(k), format!("row{i}"));
            }
            let kept = ds.filter("mod3", "", |b| {
                let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                Ok(v.iter().map(|x| x.map(|x| x % 3 == 1)).collect())
            }).unwrap();
            let s = kept.column("s").unwrap();
            let s = s.as_any().downcast_ref::<StringArray>().unwrap();
            for (k, v) in ns(&kept).into_iter().enumerate() {
                prop_assert_eq!(v % 3, 1);
                prop_assert_eq!(s.value(k), format!("row{v}"));
            }
        }
    }
}

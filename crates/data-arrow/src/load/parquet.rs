//! Parquet: a file, a directory of shards (`*.parquet`, sorted), or a glob.

use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{LoadOptions, open, source_fingerprint};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Loads Parquet from a file, a directory of `*.parquet` shards or a glob pattern;
/// shards are read in sorted order and must share one schema.
pub fn load_parquet(spec: &str, opts: &LoadOptions) -> Result<Dataset> {
    let files = resolve_files(spec)?;
    load_parquet_files(&files, spec, opts)
}

pub(crate) fn load_parquet_files(
    files: &[PathBuf],
    name: &str,
    opts: &LoadOptions,
) -> Result<Dataset> {
    let fp = source_fingerprint("parquet", files, &format!("batch_size={}", opts.batch_size))?;
    Dataset::materialize(&opts.cache, fp, name.into(), |emit| {
        let mut first_schema = None;
        for file in files {
            let builder = ParquetRecordBatchReaderBuilder::try_new(open(file)?)
                .map_err(|e| parquet_err(file, e))?
                .with_batch_size(opts.batch_size);
            let schema = builder.schema().clone();
            match &first_schema {
                None => first_schema = Some(schema.clone()),
                Some(s) if s.fields() != schema.fields() => {
                    return Err(DataError::InvalidArgument(format!(
                        "{}: schema {:?} differs from the first shard's {:?}",
                        file.display(),
                        schema,
                        s
                    )));
                }
                Some(_) => {}
            }
            let mut emitted = false;
            for batch in builder.build().map_err(|e| parquet_err(file, e))? {
                let batch = batch.map_err(|e| DataError::arrow(file.display().to_string(), e))?;
                // Keep the first shard's schema (and its metadata, e.g. class names).
                let batch = match &first_schema {
                    Some(s) => batch
                        .with_schema(s.clone())
                        .map_err(|e| DataError::arrow(file.display().to_string(), e))?,
                    None => batch,
                };
                emit(batch)?;
                emitted = true;
            }
            if !emitted {
                emit(arrow::array::RecordBatch::new_empty(schema))?;
            }
        }
        Ok(())
    })
}

fn parquet_err(path: &Path, source: parquet::errors::ParquetError) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

/// The shard files a spec names, sorted; an error when there are none.
pub(crate) fn resolve_files(spec: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(spec);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| DataError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect()
    } else if spec.contains(['*', '?', '[']) {
        glob::glob(spec)
            .map_err(|e| DataError::InvalidArgument(format!("{spec}: bad glob: {e}")))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect()
    } else {
        // A plain file: let opening it report a missing one.
        open(path)?;
        vec![path.to_path_buf()]
    };
    files.sort();
    if files.is_empty() {
        return Err(DataError::InvalidArgument(format!(
            "{spec}: no parquet files found"
        )));
    }
    Ok(files)
}

//! Parquet: a file, a directory of shards (`*.parquet`, sorted), or a glob.

use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{LoadOptions, open, parquet_check, source_fingerprint};
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
    // Rows are the shards' rows in order: errors name a row of the shards read as one.
    Ok(Dataset::materialize(&opts.cache, fp, name.into(), |emit| {
        read_shards(files, opts.batch_size, emit)
    })?
    .with_file_rows(None))
}

/// Every batch of `files` in order, in batches of `batch_size` rows, each with the first
/// shard's schema (and its metadata, e.g. class names); an empty shard gives one empty
/// batch, so the output has a schema; shards must share one schema.
pub(crate) fn read_shards(
    files: &[PathBuf],
    batch_size: usize,
    mut emit: impl FnMut(arrow::array::RecordBatch) -> Result<()>,
) -> Result<()> {
    let mut first_schema = None;
    for file in files {
        let f = open(file)?;
        // The footer and page headers are walked first (see `parquet_check`): the
        // parquet crate trusts sizes a hostile file declares.
        parquet_check::check_footer(file)?;
        let builder = reader_guard(file, || ParquetRecordBatchReaderBuilder::try_new(f))?
            .map_err(|e| parquet_err(file, e))?
            .with_batch_size(batch_size.max(1));
        parquet_check::check_pages(file, builder.metadata())?;
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
        let mut reader =
            reader_guard(file, || builder.build())?.map_err(|e| parquet_err(file, e))?;
        while let Some(batch) = reader_guard(file, || reader.next())? {
            let batch = batch.map_err(|e| DataError::arrow(file.display().to_string(), e))?;
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
}

/// Runs one step of the parquet reader, turning a panic inside it into an error
/// naming the file. The parquet and arrow crates assert on some corrupt data (page
/// definition levels past their buffer, found by fuzzing) rather than returning an
/// error; a hostile file must not bring the process down. Only the reader's own
/// calls run under it, so a panic elsewhere is still a panic.
fn reader_guard<T>(file: &Path, step: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        DataError::InvalidArgument(format!(
            "{}: corrupt Parquet data: the parquet reader failed ({why})",
            file.display()
        ))
    })
}

pub(crate) fn parquet_err(path: &Path, source: parquet::errors::ParquetError) -> DataError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;
    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use std::sync::Arc;

    fn shard(dir: &Path, name: &str, values: Vec<i64>) {
        let batch =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(values)) as ArrayRef)])
                .unwrap();
        Dataset::from_batch(batch, name)
            .unwrap()
            .to_parquet(&dir.join(name))
            .unwrap();
    }

    #[test]
    fn a_directory_or_glob_of_shards_reads_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        shard(dir.path(), "train-00001-of-00002.parquet", vec![3, 4]);
        shard(dir.path(), "train-00000-of-00002.parquet", vec![1, 2]);
        shard(dir.path(), "test-00000-of-00001.parquet", vec![9]);
        let opts = LoadOptions::in_memory();
        let all = load_parquet(dir.path().to_str().unwrap(), &opts).unwrap();
        assert_eq!(all.num_rows(), 5);
        let glob = format!("{}/train-*.parquet", dir.path().display());
        let train = load_parquet(&glob, &opts).unwrap();
        let n = train.column("n").unwrap();
        assert_eq!(
            n.as_any().downcast_ref::<Int64Array>().unwrap().values(),
            &[1, 2, 3, 4]
        );
        let none = format!("{}/valid-*.parquet", dir.path().display());
        let err = load_parquet(&none, &opts).unwrap_err().to_string();
        assert!(err.contains("no parquet files found"), "{err}");
    }

    /// A file of `rows` rows (an int and a text column) written with `codec`, small
    /// pages (several per chunk), dictionary pages and page statistics, as `version`.
    fn written(
        dir: &Path,
        codec: parquet::basic::Compression,
        version: parquet::file::properties::WriterVersion,
        rows: usize,
    ) -> PathBuf {
        use arrow::array::StringArray;
        use parquet::file::properties::{EnabledStatistics, WriterProperties};
        let path = dir.join(format!("{codec:?}-{version:?}.parquet"));
        let n: Vec<i64> = (0..rows as i64).collect();
        let text: Vec<String> = (0..rows)
            .map(|i| format!("text {} {}", i % 7, "x".repeat(i % 50)))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(n)) as ArrayRef),
            ("text", Arc::new(StringArray::from(text)) as ArrayRef),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_writer_version(version)
            .set_data_page_size_limit(512)
            .set_write_batch_size(64)
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        write_with(&path, &batch, props);
        path
    }

    /// Writes `batch` to `path` with the parquet crate's writer and `props`.
    fn write_with(
        path: &Path,
        batch: &RecordBatch,
        props: parquet::file::properties::WriterProperties,
    ) {
        let file = std::fs::File::create(path).unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn files_of_every_codec_and_page_version_pass_the_checks() {
        use parquet::basic::{Compression, GzipLevel, ZstdLevel};
        use parquet::file::properties::WriterVersion;
        let dir = tempfile::tempdir().unwrap();
        for codec in [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::GZIP(GzipLevel::default()),
            Compression::LZ4_RAW,
            Compression::ZSTD(ZstdLevel::default()),
        ] {
            for version in [WriterVersion::PARQUET_1_0, WriterVersion::PARQUET_2_0] {
                let p = written(dir.path(), codec, version, 2000);
                let meta = ParquetRecordBatchReaderBuilder::try_new(open(&p).unwrap())
                    .unwrap()
                    .metadata()
                    .clone();
                // Small pages: the walk crosses many headers per chunk.
                assert!(
                    meta.row_group(0).column(1).compressed_size() > 2000,
                    "{codec:?}"
                );
                let ds = load_parquet(p.to_str().unwrap(), &LoadOptions::in_memory())
                    .unwrap_or_else(|e| panic!("{codec:?} {version:?}: {e}"));
                assert_eq!(ds.num_rows(), 2000, "{codec:?} {version:?}");
            }
        }
    }

    #[test]
    fn page_headers_with_long_statistics_pass_the_checks() {
        // Untruncated page statistics of 40 KB texts: each page header is longer than
        // the first window the walk reads, which grows to hold it.
        use arrow::array::StringArray;
        use parquet::file::properties::{EnabledStatistics, WriterProperties};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long-stats.parquet");
        let text: Vec<String> = (0..6u8)
            .map(|i| char::from(b'a' + i).to_string().repeat(40_000))
            .collect();
        let batch =
            RecordBatch::try_from_iter([("text", Arc::new(StringArray::from(text)) as ArrayRef)])
                .unwrap();
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_write_page_header_statistics(true)
            .set_statistics_truncate_length(None)
            .set_dictionary_enabled(false)
            .set_data_page_size_limit(1024)
            .set_write_batch_size(1)
            .build();
        write_with(&path, &batch, props);
        let ds = load_parquet(path.to_str().unwrap(), &LoadOptions::in_memory()).unwrap();
        assert_eq!(ds.num_rows(), 6);
        // The first page header really is over the first window.
        let meta = ParquetRecordBatchReaderBuilder::try_new(open(&path).unwrap())
            .unwrap()
            .metadata()
            .clone();
        let col = meta.row_group(0).column(0);
        let pages = col.compressed_size() as u64;
        assert!(
            pages > 6 * 80_000,
            "statistics written into the page headers: {pages}"
        );
    }

    #[test]
    fn the_shared_datas_parquet_passes_the_checks() {
        let Some(data) = berth_testkit::data_dir() else {
            return;
        };
        for name in ["imdb/train.parquet", "imdb/test.parquet"] {
            let p = data.join(name);
            parquet_check::check_footer(&p).unwrap();
            let b = ParquetRecordBatchReaderBuilder::try_new(open(&p).unwrap()).unwrap();
            parquet_check::check_pages(&p, b.metadata()).unwrap();
        }
    }

    /// The fuzz inputs the checks were written for (`fuzz/regressions/parquet/`):
    /// refused before the parquet crate reads them, each with the reason.
    #[test]
    fn hostile_page_headers_are_refused_before_the_parquet_crate_reads_them() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/parquet");
        for (name, want) in [
            // A page header that the parquet crate skipped through one read syscall
            // per skipped value past the end of the file (16 s); malformed at once.
            ("thrift-skip-past-the-end", "page header in row group 0"),
            // A page whose uncompressed size is a 52-bit varint: the parquet crate
            // cut it to the i32 1.4 GB and allocated that before decompressing.
            (
                "declared-uncompressed-size-1.4-gb",
                "i32 value 2770628964317856 out of range",
            ),
        ] {
            let p = dir.join(name);
            let started = std::time::Instant::now();
            let err = load_parquet(p.to_str().unwrap(), &LoadOptions::in_memory())
                .unwrap_err()
                .to_string();
            println!("{name}: {:.3} s: {err}", started.elapsed().as_secs_f64());
            assert!(
                err.starts_with(&format!("{}: corrupt Parquet", p.display())),
                "{err}"
            );
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn a_corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.parquet");
        std::fs::write(&p, b"not parquet at all").unwrap();
        let err = load_parquet(p.to_str().unwrap(), &LoadOptions::in_memory())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{}:", p.display())), "{err}");
    }
}

//! Loaders: Parquet, CSV/TSV, JSON Lines, plain text and the Hugging Face hub. Each
//! streams the source into a dataset in batches (into the cache file when there is a
//! cache directory) and reports bad input with the file, line and column.

mod csv;
mod hub;
mod json;
mod parquet;
mod parquet_check;
mod text;

use std::path::{Path, PathBuf};

pub use self::csv::{CsvOptions, load_csv};
pub use self::hub::{HubOptions, hub_files, hub_model_file, load_hub, load_hub_split};
pub use self::json::load_jsonl;
pub use self::parquet::load_parquet;
pub(crate) use self::parquet::{read_shards, resolve_files};
pub use self::text::{SampleBy, load_text};

use crate::dataset::{CacheMode, Dataset};
use crate::error::{DataError, Result};
use crate::fingerprint::Fingerprint;

/// Options every loader takes.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Where the loaded dataset and everything derived from it is cached.
    pub cache: CacheMode,
    /// Rows per stored record batch.
    pub batch_size: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            cache: CacheMode::default_dir(),
            batch_size: 1000,
        }
    }
}

impl LoadOptions {
    /// Keeps everything in memory (nothing cached on disk).
    pub fn in_memory() -> Self {
        LoadOptions {
            cache: CacheMode::InMemory,
            ..Default::default()
        }
    }
}

/// A file format, with its options.
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    Parquet,
    Csv(CsvOptions),
    Json,
    Text(SampleBy),
}

impl Format {
    /// The format a path's extension implies: `.parquet`, `.csv`, `.tsv`,
    /// `.jsonl`/`.json`/`.ndjson`, `.txt`/`.text`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "parquet" | "pq" => Format::Parquet,
            "csv" => Format::Csv(CsvOptions::csv()),
            "tsv" => Format::Csv(CsvOptions::tsv()),
            "jsonl" | "json" | "ndjson" => Format::Json,
            "txt" | "text" => Format::Text(SampleBy::Line),
            _ => return None,
        })
    }

    /// The format of an input as [`load`] reads it when none is given: a directory or
    /// glob of shards is Parquet, else the extension decides.
    pub fn of_input(path: &str) -> Option<Format> {
        let p = Path::new(path);
        if p.is_dir() || path.contains(['*', '?', '[']) {
            Some(Format::Parquet)
        } else {
            Format::from_path(p)
        }
    }

    /// Parses a `--format` name: parquet, csv, tsv, jsonl (or json), text.
    pub fn from_name(name: &str) -> Result<Format> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "parquet" => Format::Parquet,
            "csv" => Format::Csv(CsvOptions::csv()),
            "tsv" => Format::Csv(CsvOptions::tsv()),
            "jsonl" | "json" | "ndjson" => Format::Json,
            "text" | "txt" => Format::Text(SampleBy::Line),
            other => {
                return Err(DataError::InvalidArgument(format!(
                    "unknown format '{other}' (parquet, csv, tsv, jsonl, text)"
                )));
            }
        })
    }
}

/// `ds` as its loader read it from one file, each row tagged with its file row and,
/// for the text formats, its 1-based line. `parsed` holds the lines when the file was
/// parsed this time, `None` when the cache answered; they are kept beside the cache
/// file (`cache-<fp>.lines`) so that a cached load names lines too.
pub(crate) fn tag_lines(ds: Dataset, parsed: Option<Vec<u64>>) -> Dataset {
    let sidecar = ds.cache_file().map(|f| f.with_extension("lines"));
    let lines = match parsed {
        Some(lines) => {
            if let Some(p) = &sidecar {
                let bytes: Vec<u8> = lines.iter().flat_map(|l| l.to_le_bytes()).collect();
                if let Err(e) = berth_fs::write_file(p, &bytes) {
                    tracing::debug!("line numbers not cached: {e}");
                }
            }
            Some(lines)
        }
        None => sidecar.and_then(|p| std::fs::read(p).ok()).map(|b| {
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect()
        }),
    };
    ds.with_file_rows(lines)
}

/// Loads `path` in `format`, or in the format its extension implies.
pub fn load(path: &str, format: Option<Format>, opts: &LoadOptions) -> Result<Dataset> {
    let format = match format {
        Some(f) => f,
        None => Format::of_input(path).ok_or_else(|| {
            DataError::InvalidArgument(format!(
                "{path}: cannot tell the format from the extension; pass a format \
                 (parquet, csv, tsv, jsonl, text)"
            ))
        })?,
    };
    let parquet = matches!(format, Format::Parquet);
    let ds = match format {
        Format::Parquet => load_parquet(path, opts),
        Format::Csv(c) => load_csv(Path::new(path), &c, opts),
        Format::Json => load_jsonl(Path::new(path), opts),
        Format::Text(s) => load_text(Path::new(path), s, opts),
    }?;
    // A text format with no rows is an empty file (a parquet file may legitimately
    // hold a schema and no rows).
    if ds.num_columns() == 0 || (!parquet && ds.num_rows() == 0) {
        return Err(DataError::InvalidArgument(format!(
            "{path}: the file is empty (no data rows to read)"
        )));
    }
    Ok(ds)
}

/// The fingerprint of data read from `files`: their canonical paths, sizes and
/// modification times, plus the loader's options, so an edited file is read again.
pub(crate) fn source_fingerprint(
    kind: &str,
    files: &[PathBuf],
    options: &str,
) -> Result<Fingerprint> {
    let mut parts = vec![options.to_string()];
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| DataError::io(f, e))?;
        let canon = std::fs::canonicalize(f).map_err(|e| DataError::io(f, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        parts.push(format!("{}|{}|{}", canon.display(), meta.len(), mtime));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(Fingerprint::of_source(kind, &refs))
}

/// Opens a file for reading with an error that names it.
pub(crate) fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/b.parquet")),
            Some(Format::Parquet)
        );
        assert_eq!(
            Format::from_path(Path::new("x.TSV")),
            Some(Format::Csv(CsvOptions::tsv()))
        );
        assert_eq!(Format::from_path(Path::new("x.jsonl")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("x.bin")), None);
        assert!(Format::from_name("xml").is_err());
    }

    #[test]
    fn an_empty_file_says_it_is_empty() {
        let d = tempfile::tempdir().unwrap();
        for name in ["e.jsonl", "e.csv", "e.txt"] {
            let p = d.path().join(name);
            std::fs::write(&p, b"").unwrap();
            let err = load(p.to_str().unwrap(), None, &LoadOptions::in_memory())
                .unwrap_err()
                .to_string();
            // CSV says it at its header: "line 1: empty file: no header row".
            assert!(
                err.contains(name)
                    && (err.contains("the file is empty") || err.contains("empty file")),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let err = load("/no/such/file.jsonl", None, &LoadOptions::in_memory()).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.jsonl"), "{err}");
    }
}

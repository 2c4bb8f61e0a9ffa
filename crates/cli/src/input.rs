//! What every command that reads a dataset shares: where the rows come from
//! (`--input`, `--format`, `--cache-dir`), the streaming Parquet path, and writing the
//! output file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use berth_data::{Format, LoadOptions};
use clap::Args;

/// Where rows come from: shared by every command that reads a dataset.
#[derive(Args)]
pub(crate) struct InputArgs {
    /// Input file (or directory/glob of parquet shards); for `predict`, `-` reads JSON
    /// Lines from stdin.
    #[arg(long)]
    pub(crate) input: String,
    /// parquet, csv, tsv, jsonl or text; by default from the extension.
    #[arg(long)]
    pub(crate) format: Option<String>,
    /// Cache directory for loaded and derived datasets (default $BERTH_CACHE/datasets).
    #[arg(long)]
    pub(crate) cache_dir: Option<PathBuf>,
}

impl InputArgs {
    /// Whether the input is Parquet (by --format, else by extension, a directory or a
    /// glob of shards), which the streaming path reads.
    pub(crate) fn is_parquet(&self) -> Result<bool> {
        let format = match self.format.as_deref() {
            Some(f) => Some(Format::from_name(f)?),
            None => Format::of_input(&self.input),
        };
        Ok(format == Some(Format::Parquet))
    }

    /// Streams a Parquet input through `ops` into `output` when nothing asks for the
    /// cache (no --cache-dir): memory stays flat and reading, tokenizing and writing
    /// overlap. `Ok(false)` when the input is not Parquet.
    pub(crate) fn stream(
        &self,
        ops: &[&dyn berth_data::BatchOp],
        drop_columns: &[&str],
        output: &Path,
        batch_size: usize,
        (verb, what): (&str, &str),
        started: Instant,
    ) -> Result<bool> {
        if self.cache_dir.is_some() || !self.is_parquet()? {
            return Ok(false);
        }
        let stats = berth_data::stream_parquet(&self.input, ops, drop_columns, output, batch_size)
            .with_context(|| format!("writing {}", output.display()))?;
        eprintln!(
            "{verb} {} {what} of {} into {} in {:.1}s",
            stats.rows_out,
            self.input,
            output.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(true)
    }

    pub(crate) fn load(&self) -> Result<berth_data::Dataset> {
        let format = self.format.as_deref().map(Format::from_name).transpose()?;
        let mut opts = LoadOptions::default();
        if let Some(dir) = &self.cache_dir {
            opts.cache = berth_data::CacheMode::Dir(dir.clone());
        }
        Ok(berth_data::load(&self.input, format, &opts)?)
    }
}

/// Saves `out` (format by extension) and reports what was done on stderr.
pub(crate) fn write_output(
    out: &berth_data::Dataset,
    path: &Path,
    verb: &str,
    what: &str,
    input: &str,
    started: Instant,
) -> Result<()> {
    out.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "{verb} {} {what} of {input} into {} in {:.1}s",
        out.num_rows(),
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn check_output(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet" | "jsonl" | "json" | "ndjson") => Ok(()),
        _ => bail!("{}: output must end in .parquet or .jsonl", path.display()),
    }
}

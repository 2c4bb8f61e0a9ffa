//! Plain text: a row per line (as HF's `text` loader, empty lines kept) or per
//! paragraph (blank-line separated, trimmed, empty ones dropped). One column, `text`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use super::{LoadOptions, open, source_fingerprint};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// What one row of a text file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleBy {
    Line,
    Paragraph,
}

/// Loads a UTF-8 text file into a `text` column; invalid UTF-8 names its line.
pub fn load_text(path: &Path, sample_by: SampleBy, opts: &LoadOptions) -> Result<Dataset> {
    let fp = source_fingerprint(
        "text",
        &[path.to_path_buf()],
        &format!("{sample_by:?}|batch_size={}", opts.batch_size),
    )?;
    let mut parsed: Option<Vec<u64>> = None;
    let ds = Dataset::materialize(&opts.cache, fp, path.display().to_string().into(), |emit| {
        let mut bytes = Vec::new();
        open(path)?
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64
                + 1;
            DataError::Parse {
                path: path.to_path_buf(),
                line,
                column: Some("text".into()),
                message: format!("invalid UTF-8 ({e})"),
            }
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // A leading BOM is on line 1 all the same.
        let (rows, lines): (Vec<&str>, Vec<u64>) = match sample_by {
            SampleBy::Line => text.lines().zip(1..).unzip(),
            SampleBy::Paragraph => paragraphs_with_lines(text).into_iter().unzip(),
        };
        parsed = Some(lines);
        let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
        let chunks: Vec<&[&str]> = rows.chunks(opts.batch_size.max(1)).collect();
        if chunks.is_empty() {
            return emit(RecordBatch::new_empty(schema));
        }
        for chunk in chunks {
            let col: ArrayRef = Arc::new(StringArray::from_iter_values(chunk.iter()));
            emit(
                RecordBatch::try_new(schema.clone(), vec![col])
                    .map_err(|e| DataError::arrow(path.display().to_string(), e))?,
            )?;
        }
        Ok(())
    })?;
    Ok(super::tag_lines(ds, parsed))
}

/// Blank-line-separated paragraphs, trimmed, without empty ones, each with the
/// 1-based line it starts on.
fn paragraphs_with_lines(text: &str) -> Vec<(&str, u64)> {
    let mut out = Vec::new();
    let mut start: Option<(usize, u64)> = None;
    let mut end = 0;
    let mut pos = 0;
    for (line, number) in text.split_inclusive('\n').zip(1..) {
        if line.trim().is_empty() {
            if let Some((s, first)) = start.take() {
                out.push((text[s..end].trim(), first));
            }
        } else {
            if start.is_none() {
                start = Some((pos, number));
            }
            end = pos + line.len();
        }
        pos += line.len();
    }
    if let Some((s, first)) = start {
        out.push((text[s..end].trim(), first));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paragraphs(text: &str) -> Vec<&str> {
        paragraphs_with_lines(text)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn paragraphs_split_on_blank_lines() {
        assert_eq!(paragraphs("a b\nc\n\n\n  \nd\n"), vec!["a b\nc", "d"]);
        assert_eq!(
            paragraphs_with_lines("a b\nc\n\n\n  \nd\n"),
            vec![("a b\nc", 1), ("d", 6)]
        );
        assert!(paragraphs("\n\n").is_empty());
    }

    #[test]
    fn lines_keep_empty_rows_like_hf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "one\n\nthree").unwrap();
        let ds = load_text(&p, SampleBy::Line, &LoadOptions::in_memory()).unwrap();
        assert_eq!(ds.num_rows(), 3);
        let ds = load_text(&p, SampleBy::Paragraph, &LoadOptions::in_memory()).unwrap();
        assert_eq!(ds.num_rows(), 2);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.txt");
        std::fs::write(&p, b"ok\nfine\nbad \xff here\n").unwrap();
        let err = load_text(&p, SampleBy::Line, &LoadOptions::in_memory()).unwrap_err();
        assert!(
            err.to_string().contains("bad.txt: line 3, column 'text'"),
            "{err}"
        );
    }
}

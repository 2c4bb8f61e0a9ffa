//! CSV/TSV with a header (or not), quoting on or off and a UTF-8 BOM stripped.
//! Column types are inferred as pandas would for plain data: all-integer columns
//! become Int64, all-numeric Float64, anything else Utf8; empty fields are null.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{LoadOptions, open, source_fingerprint};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// How a delimited text file is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    /// The first row names the columns; without it they are `column_0`, `column_1`, ...
    pub has_header: bool,
    /// `"` quotes fields. Off for GLUE-style TSVs whose text holds unbalanced quotes.
    pub quoting: bool,
}

impl CsvOptions {
    /// Comma-separated, header, quoting on.
    pub fn csv() -> Self {
        CsvOptions {
            delimiter: b',',
            has_header: true,
            quoting: true,
        }
    }

    /// Tab-separated, header, quoting off (as GLUE's TSVs must be read).
    pub fn tsv() -> Self {
        CsvOptions {
            delimiter: b'\t',
            has_header: true,
            quoting: false,
        }
    }
}

/// Loads a CSV/TSV file; a bad row is an error naming the file, line and column.
pub fn load_csv(path: &Path, csv_opts: &CsvOptions, opts: &LoadOptions) -> Result<Dataset> {
    let files = [path.to_path_buf()];
    let fp = source_fingerprint(
        "csv",
        &files,
        &format!("{csv_opts:?}|batch_size={}", opts.batch_size),
    )?;
    let schema = scan(path, csv_opts)?;
    let mut parsed: Option<Vec<u64>> = None;
    let ds = Dataset::materialize(&opts.cache, fp, path.display().to_string().into(), |emit| {
        let mut rows = Rows::new(path, csv_opts)?;
        let mut batch = BatchBuilder::new(&schema);
        let mut any = false;
        let lines = parsed.insert(Vec::new());
        while let Some((line, fields)) = rows.next_row()? {
            lines.push(line);
            batch.push(path, line, &fields)?;
            if batch.len == opts.batch_size {
                emit(batch.finish(&schema, path)?)?;
                any = true;
            }
        }
        if batch.len > 0 || !any {
            emit(batch.finish(&schema, path)?)?;
        }
        Ok(())
    })?;
    Ok(super::tag_lines(ds, parsed))
}

/// Reads records, checking UTF-8 and field counts, and strips a leading BOM.
struct Rows {
    reader: csv::Reader<std::fs::File>,
    record: csv::ByteRecord,
    path: std::path::PathBuf,
    header: Vec<String>,
    first: bool,
}

impl Rows {
    fn new(path: &Path, o: &CsvOptions) -> Result<Self> {
        // Headers are read as an ordinary record so they get the same UTF-8 and BOM checks.
        let reader = csv::ReaderBuilder::new()
            .delimiter(o.delimiter)
            .has_headers(false)
            .quoting(o.quoting)
            .flexible(false)
            .from_reader(open(path)?);
        let mut rows = Rows {
            reader,
            record: csv::ByteRecord::new(),
            path: path.to_path_buf(),
            header: Vec::new(),
            first: true,
        };
        if o.has_header {
            match rows.read()? {
                Some((_, names)) => rows.header = names,
                None => {
                    return Err(DataError::Parse {
                        path: path.to_path_buf(),
                        line: 1,
                        column: None,
                        message: "empty file: no header row".into(),
                    });
                }
            }
        }
        Ok(rows)
    }

    fn read(&mut self) -> Result<Option<(u64, Vec<String>)>> {
        let more = self
            .reader
            .read_byte_record(&mut self.record)
            .map_err(|e| {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                DataError::Parse {
                    path: self.path.clone(),
                    line,
                    column: None,
                    message: match e.kind() {
                        csv::ErrorKind::UnequalLengths {
                            expected_len, len, ..
                        } => {
                            format!("{len} fields where the first row has {expected_len}")
                        }
                        _ => e.to_string(),
                    },
                }
            })?;
        if !more {
            return Ok(None);
        }
        let line = self.record.position().map(|p| p.line()).unwrap_or(0);
        let mut fields = Vec::with_capacity(self.record.len());
        for (i, raw) in self.record.iter().enumerate() {
            let raw = if self.first && i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
            } else {
                raw
            };
            let s = std::str::from_utf8(raw).map_err(|e| DataError::Parse {
                path: self.path.clone(),
                line,
                column: Some(
                    self.header
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("column_{i}")),
                ),
                message: format!("invalid UTF-8 ({e})"),
            })?;
            fields.push(s.to_string());
        }
        self.first = false;
        Ok(Some((line, fields)))
    }

    fn next_row(&mut self) -> Result<Option<(u64, Vec<String>)>> {
        self.read()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Int,
    Float,
    Str,
}

/// First pass: column names and inferred types.
fn scan(path: &Path, o: &CsvOptions) -> Result<SchemaRef> {
    let mut rows = Rows::new(path, o)?;
    let mut kinds: Vec<Option<Kind>> = Vec::new();
    let mut width = rows.header.len();
    while let Some((_, fields)) = rows.next_row()? {
        if kinds.is_empty() {
            width = width.max(fields.len());
            kinds = vec![None; width];
        }
        for (k, f) in kinds.iter_mut().zip(&fields) {
            if f.is_empty() {
                continue;
            }
            let this = if f.parse::<i64>().is_ok() {
                Kind::Int
            } else if f.parse::<f64>().is_ok() {
                Kind::Float
            } else {
                Kind::Str
            };
            *k = Some(match (*k, this) {
                (None, t) => t,
                (Some(Kind::Str), _) | (_, Kind::Str) => Kind::Str,
                (Some(Kind::Float), _) | (_, Kind::Float) => Kind::Float,
                _ => Kind::Int,
            });
        }
    }
    let names: Vec<String> = if o.has_header {
        rows.header.clone()
    } else {
        (0..width).map(|i| format!("column_{i}")).collect()
    };
    let fields: Vec<Field> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let dt = match kinds.get(i).copied().flatten() {
                Some(Kind::Int) => DataType::Int64,
                Some(Kind::Float) => DataType::Float64,
                _ => DataType::Utf8,
            };
            Field::new(name, dt, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

enum ColBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
}

struct BatchBuilder {
    cols: Vec<ColBuilder>,
    len: usize,
}

impl BatchBuilder {
    fn new(schema: &SchemaRef) -> Self {
        let cols = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int64 => ColBuilder::Int(Int64Builder::new()),
                DataType::Float64 => ColBuilder::Float(Float64Builder::new()),
                _ => ColBuilder::Str(StringBuilder::new()),
            })
            .collect();
        BatchBuilder { cols, len: 0 }
    }

    fn push(&mut self, path: &Path, line: u64, fields: &[String]) -> Result<()> {
        for (c, f) in self.cols.iter_mut().zip(fields) {
            // Types were inferred over every row, so parsing here cannot fail; guard anyway.
            let bad = |what: &str| DataError::Parse {
                path: path.to_path_buf(),
                line,
                column: None,
                message: format!("'{f}' is not {what}"),
            };
            match c {
                ColBuilder::Int(b) if f.is_empty() => b.append_null(),
                ColBuilder::Int(b) => b.append_value(f.parse().map_err(|_| bad("an integer"))?),
                ColBuilder::Float(b) if f.is_empty() => b.append_null(),
                ColBuilder::Float(b) => b.append_value(f.parse().map_err(|_| bad("a number"))?),
                ColBuilder::Str(b) => b.append_value(f),
            }
        }
        self.len += 1;
        Ok(())
    }

    fn finish(&mut self, schema: &SchemaRef, path: &Path) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    ColBuilder::Int(b) => Arc::new(b.finish()),
                    ColBuilder::Float(b) => Arc::new(b.finish()),
                    ColBuilder::Str(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        self.len = 0;
        RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| DataError::arrow(path.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn tsv_with_bom_and_unbalanced_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "t.tsv",
            "\u{feff}Quality\tText\n1\tHe said \"no\n0\t\"quoted\" end\n".as_bytes(),
        );
        let ds = load_csv(&p, &CsvOptions::tsv(), &LoadOptions::in_memory()).unwrap();
        assert_eq!(ds.column_names(), vec!["Quality", "Text"]);
        assert_eq!(ds.num_rows(), 2);
        let q = ds.column("Quality").unwrap();
        assert_eq!(
            q.as_any().downcast_ref::<Int64Array>().unwrap().values(),
            &[1, 0]
        );
        let t = ds.column("Text").unwrap();
        let t = t.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(t.value(0), "He said \"no");
        assert_eq!(t.value(1), "\"quoted\" end");
    }

    #[test]
    fn csv_quoting_and_type_inference() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.csv", b"a,b,c\n1,2.5,\"x, y\"\n2,,z\n");
        let ds = load_csv(&p, &CsvOptions::csv(), &LoadOptions::in_memory()).unwrap();
        let s = ds.schema();
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert_eq!(s.field(1).data_type(), &DataType::Float64);
        assert_eq!(s.field(2).data_type(), &DataType::Utf8);
        assert!(ds.column("b").unwrap().is_null(1));
        let c = ds.column("c").unwrap();
        assert_eq!(
            c.as_any().downcast_ref::<StringArray>().unwrap().value(0),
            "x, y"
        );
    }

    #[test]
    fn headerless_columns_are_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "h.csv", b"1,a\n2,b\n");
        let o = CsvOptions {
            has_header: false,
            ..CsvOptions::csv()
        };
        let ds = load_csv(&p, &o, &LoadOptions::in_memory()).unwrap();
        assert_eq!(ds.column_names(), vec!["column_0", "column_1"]);
        assert_eq!(ds.num_rows(), 2);
    }

    #[test]
    fn a_short_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.csv", b"a,b\n1,2\n3\n");
        let err = load_csv(&p, &CsvOptions::csv(), &LoadOptions::in_memory()).unwrap_err();
        assert!(err.to_string().contains("bad.csv: line 3"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "u.csv", b"id,text\n1,ok\n2,caf\xE9\n");
        let err = load_csv(&p, &CsvOptions::csv(), &LoadOptions::in_memory()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("u.csv: line 3, column 'text': invalid UTF-8"),
            "{msg}"
        );
    }
}

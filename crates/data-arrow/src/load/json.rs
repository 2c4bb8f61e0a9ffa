//! JSON Lines: one object per line, blank lines skipped. The schema is inferred over
//! the whole file (Arrow's JSON inference) with columns in first-seen key order.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_iterator;
use serde_json::Value;

use super::{LoadOptions, open, source_fingerprint};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Loads a JSON Lines file; a bad line is an error naming the file and line.
pub fn load_jsonl(path: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let fp = source_fingerprint(
        "jsonl",
        &[path.to_path_buf()],
        &format!("batch_size={}", opts.batch_size),
    )?;
    let schema = infer(path)?;
    let mut parsed: Option<Vec<u64>> = None;
    let ds = Dataset::materialize(&opts.cache, fp, path.display().to_string().into(), |emit| {
        let mut pending: Vec<(u64, Value)> = Vec::with_capacity(opts.batch_size);
        let mut any = false;
        let seen = parsed.insert(Vec::new());
        for item in lines(path)? {
            let item = item?;
            seen.push(item.0);
            pending.push(item);
            if pending.len() == opts.batch_size {
                emit(decode(path, &schema, &pending)?)?;
                pending.clear();
                any = true;
            }
        }
        if !pending.is_empty() || !any {
            emit(decode(path, &schema, &pending)?)?;
        }
        Ok(())
    })?;
    Ok(super::tag_lines(ds, parsed))
}

/// Parsed objects with their 1-based line numbers.
fn lines(path: &Path) -> Result<impl Iterator<Item = Result<(u64, Value)>>> {
    let reader = BufReader::new(open(path)?);
    let path = path.to_path_buf();
    Ok(reader.split(b'\n').enumerate().filter_map(move |(i, raw)| {
        let line = i as u64 + 1;
        let parse_err = |message: String| DataError::Parse {
            path: path.clone(),
            line,
            column: None,
            message,
        };
        let raw = match raw {
            Ok(r) => r,
            Err(e) => return Some(Err(DataError::io(&path, e))),
        };
        let text = match std::str::from_utf8(&raw) {
            Ok(t) => t.trim(),
            Err(e) => return Some(Err(parse_err(format!("invalid UTF-8 ({e})")))),
        };
        if text.is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok((line, v)),
            Ok(other) => Err(parse_err(format!(
                "expected a JSON object, found {}",
                kind(&other)
            ))),
            Err(e) => Err(parse_err(format!("invalid JSON: {e}"))),
        })
    }))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Scalars of any type coerce into one column (to strings at worst); arrays and
/// objects do not mix with scalars or each other.
fn shape(v: &Value) -> Option<&'static str> {
    match v {
        Value::Null => None,
        Value::Array(_) => Some("an array"),
        Value::Object(_) => Some("an object"),
        _ => Some("a scalar"),
    }
}

fn infer(path: &Path) -> Result<SchemaRef> {
    // Column order as first seen, and each column's shape with the line that set it.
    let mut order: Vec<(String, Option<(&'static str, u64)>)> = Vec::new();
    let mut failure: Option<DataError> = None;
    let values = lines(path)?.map_while(|item| {
        let checked = item.and_then(|(line, v)| {
            if let Value::Object(map) = &v {
                for (k, val) in map {
                    let slot = match order.iter().position(|(o, _)| o == k) {
                        Some(i) => i,
                        None => {
                            order.push((k.clone(), None));
                            order.len() - 1
                        }
                    };
                    match (order[slot].1, shape(val)) {
                        (Some((was, first)), Some(now)) if was != now => {
                            return Err(DataError::Parse {
                                path: path.to_path_buf(),
                                line,
                                column: Some(k.clone()),
                                message: format!("{now} where line {first} has {was}"),
                            });
                        }
                        (None, Some(now)) => order[slot].1 = Some((now, line)),
                        _ => {}
                    }
                }
            }
            Ok(v)
        });
        match checked {
            Ok(v) => Some(Ok::<Value, arrow::error::ArrowError>(v)),
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    });
    let inferred = infer_json_schema_from_iterator(values);
    if let Some(e) = failure {
        return Err(e);
    }
    let inferred = inferred.map_err(|e| DataError::arrow(path.display().to_string(), e))?;
    let fields: Vec<_> = order
        .iter()
        .filter_map(|(k, _)| inferred.field_with_name(k).ok().cloned())
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

fn decode(
    path: &Path,
    schema: &SchemaRef,
    rows: &[(u64, Value)],
) -> Result<arrow::array::RecordBatch> {
    let build = || {
        ReaderBuilder::new(schema.clone())
            .with_batch_size(rows.len().max(1))
            .build_decoder()
            .map_err(|e| DataError::arrow(path.display().to_string(), e))
    };
    let decode_all = |values: &[&Value]| -> std::result::Result<
        Option<arrow::array::RecordBatch>,
        arrow::error::ArrowError,
    > {
        let mut decoder =
            build().map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))?;
        decoder.serialize(values)?;
        decoder.flush()
    };
    let values: Vec<&Value> = rows.iter().map(|(_, v)| v).collect();
    match decode_all(&values) {
        Ok(batch) => {
            Ok(batch.unwrap_or_else(|| arrow::array::RecordBatch::new_empty(schema.clone())))
        }
        Err(e) => {
            // Name the offending line: decode the rows one by one.
            for (line, v) in rows {
                if let Err(e) = decode_all(&[v]) {
                    return Err(DataError::Parse {
                        path: path.to_path_buf(),
                        line: *line,
                        column: None,
                        message: e.to_string(),
                    });
                }
            }
            Err(DataError::arrow(path.display().to_string(), e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};

    #[test]
    fn columns_keep_file_order_and_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"id\": 3, \"text\": \"a\", \"label\": 1}\n\n{\"id\": 4, \"text\": \"b\", \"label\": 0}\n",
        )
        .unwrap();
        let ds = load_jsonl(&p, &LoadOptions::in_memory()).unwrap();
        assert_eq!(ds.column_names(), vec!["id", "text", "label"]);
        assert_eq!(ds.num_rows(), 2);
        let l = ds.column("label").unwrap();
        assert_eq!(
            l.as_any().downcast_ref::<Int64Array>().unwrap().values(),
            &[1, 0]
        );
        let t = ds.column("text").unwrap();
        assert_eq!(
            t.as_any().downcast_ref::<StringArray>().unwrap().value(1),
            "b"
        );
    }

    #[test]
    fn a_broken_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.jsonl");
        std::fs::write(&p, "{\"a\": 1}\n{\"a\": \n").unwrap();
        let err = load_jsonl(&p, &LoadOptions::in_memory())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.jsonl: line 2: invalid JSON"), "{err}");
        std::fs::write(&p, "{\"a\": 1}\n[1, 2]\n").unwrap();
        let err = load_jsonl(&p, &LoadOptions::in_memory())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2: expected a JSON object, found an array"),
            "{err}"
        );
        // A value whose type conflicts with the column names its line and field.
        std::fs::write(&p, "{\"a\": \"x\"}\n{\"a\": \"y\"}\n{\"a\": [1]}\n").unwrap();
        let err = load_jsonl(&p, &LoadOptions::in_memory())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.jsonl: line 3, column 'a': an array where line 1 has a scalar"),
            "{err}"
        );
    }
}

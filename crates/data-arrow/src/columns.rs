//! Arrow column helpers every op shares: a named column with an error naming the
//! source, a text column's values, `List<T>` arrays from rows or flat values, and a
//! batch with columns replaced or added.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, LargeStringArray, ListArray, PrimitiveArray, RecordBatch, StringArray,
    StringViewArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Schema};

use crate::error::{DataError, Result};

/// The column `name` of a batch, or an error naming the source and its columns.
pub(crate) fn column_of<'a>(
    batch: &'a RecordBatch,
    name: &str,
    source: &str,
) -> Result<&'a ArrayRef> {
    let idx = batch
        .schema()
        .index_of(name)
        .map_err(|_| DataError::MissingColumn {
            source_name: source.to_string(),
            column: name.to_string(),
            available: batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        })?;
    Ok(batch.column(idx))
}

/// The rows of a text column as `&str`, erroring on a non-string column or a null.
pub(crate) fn text_values<'a>(
    batch: &'a RecordBatch,
    column: &str,
    first_row: usize,
    source: &str,
) -> Result<Vec<&'a str>> {
    let array = column_of(batch, column, source)?;
    let null_at = |i: usize| DataError::Value {
        source_name: source.to_string(),
        row: first_row + i,
        column: column.to_string(),
        message: "text is null".into(),
    };
    macro_rules! collect {
        ($ty:ty) => {{
            let a = array
                .as_any()
                .downcast_ref::<$ty>()
                .ok_or_else(|| type_error(source, column, array.data_type()))?;
            (0..a.len())
                .map(|i| {
                    if a.is_null(i) {
                        Err(null_at(i))
                    } else {
                        Ok(a.value(i))
                    }
                })
                .collect()
        }};
    }
    match array.data_type() {
        DataType::Utf8 => collect!(StringArray),
        DataType::LargeUtf8 => collect!(LargeStringArray),
        DataType::Utf8View => collect!(StringViewArray),
        other => Err(type_error(source, column, other)),
    }
}

fn type_error(source: &str, column: &str, found: &DataType) -> DataError {
    DataError::ColumnType {
        source_name: source.to_string(),
        column: column.to_string(),
        expected: "a string column".into(),
        found: found.to_string(),
    }
}

/// A `List<T>` array from per-row slices.
pub(crate) fn list_of<T: ArrowPrimitiveType>(
    rows: impl Iterator<Item = impl AsRef<[T::Native]>>,
) -> ArrayRef {
    let mut flat: Vec<T::Native> = Vec::new();
    let mut offsets = vec![0usize];
    for r in rows {
        flat.extend_from_slice(r.as_ref());
        offsets.push(flat.len());
    }
    list_from_flat::<T>(flat, &offsets)
}

/// A `List<T>` array from flat values and row offsets (`offsets[i]..offsets[i + 1]`).
pub(crate) fn list_from_flat<T: ArrowPrimitiveType>(
    values: Vec<T::Native>,
    offsets: &[usize],
) -> ArrayRef {
    let offsets: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
    let values = PrimitiveArray::<T>::new(values.into(), None);
    let field = Arc::new(Field::new("item", T::DATA_TYPE, false));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        None,
    ))
}

/// Replaces (or appends) the named columns of a batch.
pub(crate) fn with_columns(batch: &RecordBatch, new: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if !new.iter().any(|(n, _)| n == f.name()) {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    for (name, col) in new {
        fields.push(Field::new(name, col.data_type().clone(), false));
        cols.push(col);
    }
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        cols,
    )
    .map_err(|e| DataError::arrow("adding columns", e))
}

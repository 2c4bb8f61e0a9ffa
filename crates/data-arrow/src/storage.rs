//! Arrow IPC files written atomically (`berth_fs`: temp name, then rename) and read through
//! a memory map, so cached datasets are shared with the page cache, never copied whole
//! into RAM, and a crash never leaves a half file that a later run would trust.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::convert::try_fb_to_schema;
use arrow::ipc::reader::{FileDecoder, read_footer_length};
use arrow::ipc::root_as_footer;
use arrow::ipc::writer::FileWriter;
use memmap2::Mmap;

use berth_fs::AtomicFile;

use crate::error::{DataError, Result};

/// Streams record batches into an Arrow IPC file written atomically.
pub(crate) struct IpcSink {
    atomic: AtomicFile,
    writer: FileWriter<BufWriter<File>>,
}

impl IpcSink {
    pub(crate) fn create(target: &Path, schema: &SchemaRef) -> Result<Self> {
        let (atomic, file) = AtomicFile::create(target)?;
        let writer = FileWriter::try_new(BufWriter::new(file), schema)
            .map_err(|e| DataError::arrow(format!("writing {}", target.display()), e))?;
        Ok(IpcSink { atomic, writer })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| DataError::arrow(format!("writing {}", self.atomic.target().display()), e))
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        let target = self.atomic.target().to_path_buf();
        self.writer
            .finish()
            .map_err(|e| DataError::arrow(format!("writing {}", target.display()), e))?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| DataError::arrow(format!("writing {}", target.display()), e))?
            .into_inner()
            .map_err(|e| DataError::io(&target, e.into_error()))?;
        file.sync_all().map_err(|e| DataError::io(&target, e))?;
        Ok(self.atomic.commit()?)
    }
}

/// Memory-maps an Arrow IPC file and decodes its batches without copying their buffers.
pub(crate) fn read_ipc_mmap(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let ctx = || format!("reading {}", path.display());
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    // SAFETY: cache files are written once under a temp name and renamed; nothing
    // modifies them in place while they are mapped.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
    let len = mmap.len();
    if len < 10 {
        return Err(DataError::InvalidArgument(format!(
            "{}: not an Arrow IPC file ({len} bytes)",
            path.display()
        )));
    }
    let ptr = NonNull::new(mmap.as_ptr() as *mut u8).ok_or_else(|| {
        DataError::InvalidArgument(format!("{}: empty memory map", path.display()))
    })?;
    // SAFETY: the buffer owns the map through the Arc, so the memory outlives it.
    let buffer = unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(mmap)) };
    let mut trailer = [0u8; 10];
    trailer.copy_from_slice(&buffer[len - 10..]);
    let footer_len = read_footer_length(trailer).map_err(|e| DataError::arrow(ctx(), e))?;
    let footer = root_as_footer(&buffer[len - 10 - footer_len..len - 10]).map_err(|e| {
        DataError::InvalidArgument(format!("{}: bad IPC footer: {e}", path.display()))
    })?;
    let fb_schema = footer.schema().ok_or_else(|| {
        DataError::InvalidArgument(format!("{}: IPC footer has no schema", path.display()))
    })?;
    let schema: SchemaRef =
        Arc::new(try_fb_to_schema(fb_schema).map_err(|e| DataError::arrow(ctx(), e))?);
    let mut decoder = FileDecoder::new(schema.clone(), footer.version());
    for block in footer.dictionaries().iter().flatten() {
        let block_len = block.bodyLength() as usize + block.metaDataLength() as usize;
        let data = buffer.slice_with_length(block.offset() as usize, block_len);
        decoder
            .read_dictionary(block, &data)
            .map_err(|e| DataError::arrow(ctx(), e))?;
    }
    let mut batches = Vec::new();
    if let Some(blocks) = footer.recordBatches() {
        for block in blocks {
            let block_len = block.bodyLength() as usize + block.metaDataLength() as usize;
            let data = buffer.slice_with_length(block.offset() as usize, block_len);
            if let Some(batch) = decoder
                .read_record_batch(block, &data)
                .map_err(|e| DataError::arrow(ctx(), e))?
            {
                batches.push(batch);
            }
        }
    }
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};

    fn batch(offset: i64) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "n",
                Arc::new(Int64Array::from(vec![offset, offset + 1])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec!["a", "bé"])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn ipc_round_trips_through_the_memory_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.arrow");
        let b0 = batch(0);
        let mut sink = IpcSink::create(&path, &b0.schema()).unwrap();
        sink.write(&b0).unwrap();
        sink.write(&batch(2)).unwrap();
        sink.finish().unwrap();
        let (schema, batches) = read_ipc_mmap(&path).unwrap();
        assert_eq!(schema, b0.schema());
        assert_eq!(batches, vec![b0, batch(2)]);
    }

    #[test]
    fn an_unfinished_write_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.arrow");
        let b0 = batch(0);
        let mut sink = IpcSink::create(&path, &b0.schema()).unwrap();
        sink.write(&b0).unwrap();
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

//! Checks of a Parquet file's Thrift structures before the parquet crate reads them.
//!
//! The parquet crate (60.1) trusts some declared sizes that a corrupt or hostile file
//! controls, which fuzzing found:
//! - skipping an unknown field walks a container's declared length; a list of
//!   2^31 booleans takes no bytes to declare and billions of loop turns to skip, and
//!   each skipped `double` past the end of a page header is one `read` syscall (a
//!   5 KB file took 16 s);
//! - a page's declared uncompressed size is allocated, and for Snappy and LZ4 filled
//!   with zeros, before the data is decompressed (a 5 KB file made a 1.4 GB
//!   allocation, and one near 2 GB of resident memory).
//!
//! So Berth walks the footer and every page header itself first, in the Thrift
//! compact protocol, bounded by the bytes that are really there: every container
//! element takes at least one byte (a boolean element is one byte in the compact
//! protocol), every binary's length fits in what is left, and each page lies inside
//! its column chunk and declares an uncompressed size within its codec's bound (the
//! format's most for Snappy, LZ4 and Deflate; Zstd, whose format allows about
//! 32768x, is held to Deflate's as a policy; 64 MiB always). Only then does the
//! parquet crate parse the same bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use parquet::basic::Compression;
use parquet::file::metadata::ParquetMetaData;

use crate::error::{DataError, Result};

/// The deepest nesting of Thrift structs and containers accepted (the parquet
/// crate's own skip limit).
const MAX_DEPTH: u32 = 64;

/// A page header read within this many bytes, else a window four times larger, up
/// to the rest of its column chunk.
const HEADER_WINDOW: u64 = 16 << 10;

/// A page may always declare this many uncompressed bytes, whatever its codec.
const UNCOMPRESSED_FLOOR: u64 = 64 << 20;

/// Why a walk over Thrift bytes stopped.
#[derive(Debug, PartialEq)]
enum Bad {
    /// The bytes ended inside a value: a page header may need a larger window.
    Truncated,
    /// Malformed: the reason.
    Invalid(String),
}

/// Thrift compact-protocol types (field and element types).
mod ty {
    pub const STOP: u8 = 0;
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const UUID: u8 = 13;
}

/// A cursor over Thrift compact-protocol bytes that skips values without trusting
/// any declared length beyond the bytes left.
struct Compact<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Whether `buf` holds every byte the value may use (a footer, or a page
    /// header's window that reaches its chunk's end): a declared length past its
    /// end is then invalid, else the window is too small ([`Bad::Truncated`]).
    complete: bool,
}

impl<'a> Compact<'a> {
    fn new(buf: &'a [u8], complete: bool) -> Self {
        Compact {
            buf,
            pos: 0,
            complete,
        }
    }

    /// `why` when the buffer is complete, else a request for more bytes.
    fn overrun(&self, why: String) -> Bad {
        if self.complete {
            Bad::Invalid(why)
        } else {
            Bad::Truncated
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> std::result::Result<u8, Bad> {
        let b = *self.buf.get(self.pos).ok_or(Bad::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> std::result::Result<(), Bad> {
        if n > self.left() as u64 {
            return Err(Bad::Truncated);
        }
        self.pos += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> std::result::Result<u64, Bad> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Bad::Invalid("a varint longer than 10 bytes".into()))
    }

    fn zigzag(&mut self) -> std::result::Result<i64, Bad> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A container of `n` elements of at least `min` bytes each must fit in the
    /// bytes left.
    fn fits(&self, n: u64, min: u64, what: &str) -> std::result::Result<(), Bad> {
        if n.saturating_mul(min) > self.left() as u64 {
            return Err(self.overrun(format!(
                "a {what} of {n} elements in the {} bytes left",
                self.left()
            )));
        }
        Ok(())
    }

    /// Skips one value of compact type `t` (`element`: inside a container, where a
    /// boolean takes a byte).
    fn value(&mut self, t: u8, element: bool, depth: u32) -> std::result::Result<(), Bad> {
        if depth > MAX_DEPTH {
            return Err(Bad::Invalid(format!("nested deeper than {MAX_DEPTH}")));
        }
        match t {
            ty::TRUE | ty::FALSE => {
                if element {
                    self.byte()?;
                }
            }
            ty::BYTE => {
                self.byte()?;
            }
            ty::I16 | ty::I32 | ty::I64 => {
                self.varint()?;
            }
            ty::DOUBLE => self.skip(8)?,
            ty::UUID => self.skip(16)?,
            ty::BINARY => {
                let n = self.varint()?;
                if n > self.left() as u64 {
                    return Err(self.overrun(format!(
                        "a binary of {n} bytes in the {} bytes left",
                        self.left()
                    )));
                }
                self.skip(n)?;
            }
            ty::LIST | ty::SET => {
                let h = self.byte()?;
                if h == 0 {
                    // An empty list written as one zero byte (fastparquet does, and
                    // the parquet crate reads it so).
                    return Ok(());
                }
                let n = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                let et = h & 0x0f;
                let min = min_size(et)?;
                self.fits(n, min, "list")?;
                for _ in 0..n {
                    self.value(et, true, depth + 1)?;
                }
            }
            ty::MAP => {
                let n = self.varint()?;
                if n > 0 {
                    let kv = self.byte()?;
                    let (k, v) = (kv >> 4, kv & 0x0f);
                    self.fits(n, min_size(k)? + min_size(v)?, "map")?;
                    for _ in 0..n {
                        self.value(k, true, depth + 1)?;
                        self.value(v, true, depth + 1)?;
                    }
                }
            }
            ty::STRUCT => self.fields(depth + 1, |_, _, _| Ok(false))?,
            other => return Err(Bad::Invalid(format!("unknown Thrift type {other}"))),
        }
        Ok(())
    }

    /// Walks a struct's fields to its stop byte. `read(cursor, id, type)` may consume
    /// a field's value itself (returning true); other values are skipped.
    fn fields(
        &mut self,
        depth: u32,
        mut read: impl FnMut(&mut Self, i16, u8) -> std::result::Result<bool, Bad>,
    ) -> std::result::Result<(), Bad> {
        if depth > MAX_DEPTH {
            return Err(Bad::Invalid(format!("nested deeper than {MAX_DEPTH}")));
        }
        let mut last: i16 = 0;
        loop {
            let h = self.byte()?;
            if h & 0x0f == ty::STOP {
                // A stop is a zero byte; as the parquet crate, any zero type ends.
                return Ok(());
            }
            let t = h & 0x0f;
            let id = match h >> 4 {
                0 => {
                    let id = self.zigzag()?;
                    i16::try_from(id)
                        .map_err(|_| Bad::Invalid(format!("field id {id} out of range")))?
                }
                delta => last.wrapping_add(i16::from(delta)),
            };
            last = id;
            if !read(self, id, t)? {
                self.value(t, false, depth)?;
            }
        }
    }

    /// A compact i32 (zigzag varint) that must be one.
    fn i32(&mut self) -> std::result::Result<i32, Bad> {
        let v = self.zigzag()?;
        i32::try_from(v).map_err(|_| Bad::Invalid(format!("i32 value {v} out of range")))
    }
}

/// The fewest bytes a container element of type `t` takes.
fn min_size(t: u8) -> std::result::Result<u64, Bad> {
    Ok(match t {
        ty::DOUBLE => 8,
        ty::UUID => 16,
        ty::TRUE..=ty::STRUCT => 1,
        other => return Err(Bad::Invalid(format!("unknown element type {other}"))),
    })
}

/// A page header's sizes: (uncompressed, compressed), as declared.
#[derive(Debug, PartialEq)]
struct PageSizes {
    uncompressed: i32,
    compressed: i32,
    header_len: usize,
}

/// Parses the PageHeader struct at the start of `buf` (`complete`: `buf` reaches the
/// end of its column chunk).
fn page_header(buf: &[u8], complete: bool) -> std::result::Result<PageSizes, Bad> {
    let mut c = Compact::new(buf, complete);
    let (mut uncompressed, mut compressed) = (None, None);
    c.fields(0, |c, id, t| match (id, t) {
        (2, ty::I32) => {
            uncompressed = Some(c.i32()?);
            Ok(true)
        }
        (3, ty::I32) => {
            compressed = Some(c.i32()?);
            Ok(true)
        }
        _ => Ok(false),
    })?;
    match (uncompressed, compressed) {
        (Some(uncompressed), Some(compressed)) => Ok(PageSizes {
            uncompressed,
            compressed,
            header_len: c.pos,
        }),
        _ => Err(Bad::Invalid(
            "a page header without its page sizes (fields 2 and 3)".into(),
        )),
    }
}

/// The most a codec can expand its input, by its format: Snappy's best copy tag
/// gives 64 bytes for 3, LZ4's 255 per length byte, Deflate's 258 per 2 bits; Zstd
/// could reach 32768 with run-length blocks, and is held to Deflate's bound. `None`
/// for no compression: the parquet crate allocates nothing by the declared size.
fn max_ratio(codec: Compression) -> Option<u64> {
    match codec {
        Compression::UNCOMPRESSED => None,
        Compression::SNAPPY => Some(32),
        Compression::LZ4 | Compression::LZ4_RAW => Some(256),
        _ => Some(1040),
    }
}

fn corrupt(file: &Path, what: &str) -> DataError {
    DataError::InvalidArgument(format!("{}: corrupt Parquet {what}", file.display()))
}

/// Where the page whose header at byte `at` declares `sizes` ends: inside its column
/// chunk (ending at `end`), with sizes that are not negative and an uncompressed
/// size that `codec` could produce from the compressed bytes.
fn page_end(
    sizes: &PageSizes,
    at: u64,
    end: u64,
    codec: Compression,
) -> std::result::Result<u64, String> {
    let (Ok(compressed), Ok(uncompressed)) = (
        u64::try_from(sizes.compressed),
        u64::try_from(sizes.uncompressed),
    ) else {
        return Err(format!(
            "negative page size (compressed {}, uncompressed {})",
            sizes.compressed, sizes.uncompressed
        ));
    };
    let page_end = at + sizes.header_len as u64 + compressed;
    if page_end > end {
        return Err(format!(
            "a page of {compressed} bytes runs past its column chunk's end at byte {end}"
        ));
    }
    if let Some(ratio) = max_ratio(codec) {
        let most = (compressed * ratio).max(UNCOMPRESSED_FLOOR);
        if uncompressed > most {
            return Err(format!(
                "{uncompressed} uncompressed bytes declared for {compressed} {codec:?}-compressed ones (at most {most})"
            ));
        }
    }
    Ok(page_end)
}

/// Reads up to `len` bytes of `f` at `at`.
fn read_at(f: &mut File, file: &Path, at: u64, len: u64) -> Result<Vec<u8>> {
    f.seek(SeekFrom::Start(at))
        .map_err(|e| DataError::io(file, e))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| DataError::io(file, e))?;
    Ok(buf)
}

/// Walks the footer's FileMetaData (when the file ends in a plain `PAR1` footer;
/// anything else is left for the parquet crate to report).
pub(super) fn check_footer(file: &Path) -> Result<()> {
    let mut f = File::open(file).map_err(|e| DataError::io(file, e))?;
    let len = f.metadata().map_err(|e| DataError::io(file, e))?.len();
    if len < 12 {
        return Ok(());
    }
    let tail = read_at(&mut f, file, len - 8, 8)?;
    if tail.len() != 8 || &tail[4..] != b"PAR1" {
        return Ok(());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer_len + 8 > len {
        return Ok(());
    }
    let start = len - 8 - footer_len;
    let footer = read_at(&mut f, file, start, footer_len)?;
    let mut c = Compact::new(&footer, true);
    c.fields(0, |_, _, _| Ok(false)).map_err(|bad| {
        let why = match bad {
            Bad::Truncated => "it ends inside a value".into(),
            Bad::Invalid(why) => why,
        };
        corrupt(
            file,
            &format!(
                "footer ({footer_len} bytes at byte {start}): {why}, at byte {}",
                start + c.pos as u64
            ),
        )
    })
}

/// Walks every page header of every column chunk, each chunk first checked to lie
/// inside the file: headers well formed, pages inside their chunk, and each page's
/// declared uncompressed size one its codec could produce.
pub(super) fn check_pages(file: &Path, meta: &ParquetMetaData) -> Result<()> {
    let mut f = File::open(file).map_err(|e| DataError::io(file, e))?;
    let file_len = f.metadata().map_err(|e| DataError::io(file, e))?.len();
    // A footer may name one byte range in many row groups: each is walked once.
    let mut walked = std::collections::HashSet::new();
    for (g, group) in meta.row_groups().iter().enumerate() {
        for col in group.columns() {
            // Every chunk lies inside the file: the parquet crate panics on a
            // negative offset or size (`ColumnChunkMetaData::byte_range`).
            let start = col
                .dictionary_page_offset()
                .unwrap_or(col.data_page_offset());
            let len = col.compressed_size();
            let range = (start >= 0 && len >= 0 && col.data_page_offset() >= 0)
                .then(|| (start as u64, (start as u64).checked_add(len as u64)))
                .and_then(|(s, e)| Some((s, e.filter(|&e| e <= file_len)?)));
            let Some((start, end)) = range else {
                return Err(corrupt(
                    file,
                    &format!(
                        "footer: row group {g}, column '{}' says its data is {len} bytes at offset {start}, outside the file's {file_len} bytes",
                        col.column_path().string()
                    ),
                ));
            };
            if !walked.insert((start, end, format!("{:?}", col.compression()))) {
                continue;
            }
            let place = |at: u64| {
                format!(
                    "page header in row group {g}, column '{}' at byte {at}",
                    col.column_path().string()
                )
            };
            // The bytes read at `buf_at`: the next header is parsed from them when it
            // starts inside, so a chunk of small pages costs one read per window.
            let (mut buf, mut buf_at) = (Vec::new(), start);
            let mut at = start;
            while at < end {
                if !(at >= buf_at && at < buf_at + buf.len() as u64) {
                    buf = read_at(&mut f, file, at, HEADER_WINDOW.min(end - at))?;
                    buf_at = at;
                }
                let sizes = loop {
                    let from = (at - buf_at) as usize;
                    let complete = buf_at + buf.len() as u64 >= end;
                    match page_header(&buf[from..], complete) {
                        Ok(s) => break s,
                        Err(Bad::Truncated) if !complete => {
                            // Read again from the header, four times what was there.
                            let window = ((buf.len() - from) as u64).max(HEADER_WINDOW) * 4;
                            buf = read_at(&mut f, file, at, window.min(end - at))?;
                            buf_at = at;
                        }
                        Err(Bad::Truncated) => {
                            return Err(corrupt(
                                file,
                                &format!("{}: it runs past its column chunk's end", place(at)),
                            ));
                        }
                        Err(Bad::Invalid(why)) => {
                            return Err(corrupt(file, &format!("{}: {why}", place(at))));
                        }
                    }
                };
                at = page_end(&sizes, at, end, col.compression())
                    .map_err(|why| corrupt(file, &format!("{}: {why}", place(at))))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact field header for field `id` (deltas from 0) of type `t`.
    fn field(delta: u8, t: u8) -> u8 {
        (delta << 4) | t
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn zigzag(v: i64) -> Vec<u8> {
        varint(((v << 1) ^ (v >> 63)) as u64)
    }

    /// PageHeader { type: 0, uncompressed, compressed } plus `extra` fields.
    fn header(uncompressed: i32, compressed: i32, extra: &[u8]) -> Vec<u8> {
        let mut h = vec![field(1, ty::I32)];
        h.extend(zigzag(0));
        h.push(field(1, ty::I32));
        h.extend(zigzag(uncompressed.into()));
        h.push(field(1, ty::I32));
        h.extend(zigzag(compressed.into()));
        h.extend(extra);
        h.push(ty::STOP);
        h
    }

    #[test]
    fn a_page_header_gives_its_sizes_and_length() {
        let h = header(100, 40, &[]);
        assert_eq!(
            page_header(&h, true),
            Ok(PageSizes {
                uncompressed: 100,
                compressed: 40,
                header_len: h.len()
            })
        );
        // Cut anywhere, it asks for more bytes.
        for cut in 0..h.len() {
            assert_eq!(
                page_header(&h[..cut], false),
                Err(Bad::Truncated),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn declared_lengths_beyond_the_bytes_left_are_refused_at_once() {
        // An unknown field 9: a list of 2^31 - 1 booleans, declared in 6 bytes. The
        // parquet crate's skip loops 2^31 times over it without reading a byte.
        let mut bools = vec![field(6, ty::LIST), 0xF0 | ty::TRUE];
        bools.extend(varint(i32::MAX as u64));
        let e = page_header(&header(1, 1, &bools), true).unwrap_err();
        assert_eq!(
            e,
            Bad::Invalid("a list of 2147483647 elements in the 1 bytes left".into())
        );
        // A list of doubles: each skipped double past the end was a read syscall.
        let mut doubles = vec![field(6, ty::LIST), 0xF0 | ty::DOUBLE];
        doubles.extend(varint(1 << 20));
        doubles.extend([0; 64]);
        assert!(matches!(
            page_header(&header(1, 1, &doubles), true),
            Err(Bad::Invalid(w)) if w.starts_with("a list of 1048576 elements")
        ));
        // A binary longer than the rest, and a map of booleans.
        let mut binary = vec![field(6, ty::BINARY)];
        binary.extend(varint(1 << 40));
        assert!(matches!(
            page_header(&header(1, 1, &binary), true),
            Err(Bad::Invalid(w)) if w.starts_with("a binary of 1099511627776 bytes")
        ));
        let mut map = vec![field(6, ty::MAP)];
        map.extend(varint(1 << 30));
        map.push((ty::TRUE << 4) | ty::FALSE);
        assert!(matches!(
            page_header(&header(1, 1, &map), true),
            Err(Bad::Invalid(w)) if w.starts_with("a map of 1073741824 elements")
        ));
        // Nesting past the limit, and an unknown type.
        let deep = vec![field(6, ty::STRUCT); 100];
        assert!(matches!(
            page_header(&header(1, 1, &deep), true),
            Err(Bad::Invalid(w)) if w.contains("nested deeper")
        ));
        assert!(matches!(
            page_header(&header(1, 1, &[field(6, 14)]), true),
            Err(Bad::Invalid(w)) if w == "unknown Thrift type 14"
        ));
    }

    #[test]
    fn an_empty_list_may_be_one_zero_byte_and_a_long_value_asks_for_more() {
        // fastparquet writes an empty list as one 0 byte; the parquet crate reads it.
        let h = header(1, 1, &[field(6, ty::LIST), 0]);
        assert_eq!(page_header(&h, true).unwrap().header_len, h.len());
        // A binary past the window: more bytes, unless the window is the whole chunk.
        let mut long = vec![field(6, ty::BINARY)];
        long.extend(varint(100));
        long.extend([b'x'; 10]);
        let h = header(1, 1, &long);
        assert_eq!(page_header(&h, false), Err(Bad::Truncated));
        assert!(
            matches!(page_header(&h, true), Err(Bad::Invalid(w)) if w.starts_with("a binary of 100 bytes"))
        );
    }

    #[test]
    fn well_formed_values_of_every_type_are_skipped() {
        let mut extra = vec![field(6, ty::TRUE), field(1, ty::BYTE), 7];
        extra.push(field(1, ty::I64));
        extra.extend(zigzag(-5_000_000_000));
        extra.push(field(1, ty::DOUBLE));
        extra.extend(1.5f64.to_le_bytes());
        extra.push(field(1, ty::BINARY));
        extra.extend(varint(3));
        extra.extend(b"abc");
        // A list of 3 booleans (a byte each), a set of 2 i16, a map {i32: binary}.
        extra.extend([field(1, ty::LIST), (3 << 4) | ty::TRUE, 1, 2, 1]);
        extra.extend([field(1, ty::SET), (2 << 4) | ty::I16, 2, 4]);
        extra.extend([
            field(1, ty::MAP),
            1,
            (ty::I32 << 4) | ty::BINARY,
            2,
            1,
            b'x',
        ]);
        // A nested struct with a long-form field id, and a UUID.
        extra.extend([field(1, ty::STRUCT), field(0, ty::I32)]);
        extra.extend(zigzag(300));
        extra.extend(zigzag(1));
        extra.push(ty::STOP);
        extra.push(field(1, ty::UUID));
        extra.extend([0; 16]);
        let h = header(9, 8, &extra);
        assert_eq!(page_header(&h, true).unwrap().header_len, h.len());
    }

    #[test]
    fn a_page_lies_in_its_chunk_and_declares_what_its_codec_can_produce() {
        let sizes = |uncompressed, compressed| PageSizes {
            uncompressed,
            compressed,
            header_len: 20,
        };
        let snappy = Compression::SNAPPY;
        assert_eq!(page_end(&sizes(1000, 100), 50, 170, snappy), Ok(170));
        assert_eq!(
            page_end(&sizes(1000, 101), 50, 170, snappy),
            Err("a page of 101 bytes runs past its column chunk's end at byte 170".into())
        );
        assert_eq!(
            page_end(&sizes(-1, 100), 50, 170, snappy),
            Err("negative page size (compressed 100, uncompressed -1)".into())
        );
        // Any codec may declare up to 64 MiB; past that, its format's ratio.
        let floor = UNCOMPRESSED_FLOOR as i32;
        assert!(page_end(&sizes(floor, 100), 0, 120, snappy).is_ok());
        assert_eq!(
            page_end(&sizes(1_400_000_000, 100), 0, 120, snappy),
            Err(format!(
                "1400000000 uncompressed bytes declared for 100 SNAPPY-compressed ones (at most {floor})"
            ))
        );
        let big = 4 << 20;
        assert!(page_end(&sizes(32 * big, big), 0, 2 * big as u64, snappy).is_ok());
        assert!(page_end(&sizes(32 * big + 1, big), 0, 2 * big as u64, snappy).is_err());
        // Stored pages are not decompressed: nothing is allocated by the declared size.
        let none = Compression::UNCOMPRESSED;
        assert!(page_end(&sizes(i32::MAX, 100), 0, 120, none).is_ok());
    }

    #[test]
    fn codecs_bound_the_uncompressed_size() {
        assert_eq!(max_ratio(Compression::UNCOMPRESSED), None);
        assert_eq!(max_ratio(Compression::SNAPPY), Some(32));
        assert_eq!(max_ratio(Compression::LZ4_RAW), Some(256));
        assert_eq!(
            max_ratio(Compression::ZSTD(parquet::basic::ZstdLevel::default())),
            Some(1040)
        );
    }
}

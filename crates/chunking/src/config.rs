//! The chunking parameters, validated once, and the special token ids they wrap with.

/// Why a chunk configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk_size must be at least 1")]
    ZeroChunkSize,
    #[error("stride {stride} must be between 1 and chunk_size {chunk_size}")]
    BadStride { stride: usize, chunk_size: usize },
    #[error("minimal_chunk_length {minimal} must not exceed chunk_size {chunk_size}")]
    BadMinimal { minimal: usize, chunk_size: usize },
    #[error(
        "chunk_size {chunk_size} + 2 special tokens exceeds the model's {max_positions} positions"
    )]
    TooLong {
        chunk_size: usize,
        max_positions: usize,
    },
}

/// belt_nlp's parameters: windows of `chunk_size` ids every `stride` ids, windows
/// shorter than `minimal_chunk_length` dropped when there is more than one, the text
/// first cut to `maximal_text_length` ids when set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkConfig {
    chunk_size: usize,
    stride: usize,
    minimal_chunk_length: usize,
    maximal_text_length: Option<usize>,
}

impl ChunkConfig {
    /// Validates `1 <= stride <= chunk_size`, `minimal_chunk_length <= chunk_size` and
    /// `chunk_size + 2 <= max_positions` (room for `[CLS]` and `[SEP]`).
    pub fn new(
        chunk_size: usize,
        stride: usize,
        minimal_chunk_length: usize,
        maximal_text_length: Option<usize>,
        max_positions: usize,
    ) -> Result<Self, ChunkError> {
        if chunk_size == 0 {
            return Err(ChunkError::ZeroChunkSize);
        }
        if stride == 0 || stride > chunk_size {
            return Err(ChunkError::BadStride { stride, chunk_size });
        }
        if minimal_chunk_length > chunk_size {
            return Err(ChunkError::BadMinimal {
                minimal: minimal_chunk_length,
                chunk_size,
            });
        }
        if chunk_size + 2 > max_positions {
            return Err(ChunkError::TooLong {
                chunk_size,
                max_positions,
            });
        }
        Ok(ChunkConfig {
            chunk_size,
            stride,
            minimal_chunk_length,
            maximal_text_length,
        })
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn minimal_chunk_length(&self) -> usize {
        self.minimal_chunk_length
    }

    pub fn maximal_text_length(&self) -> Option<usize> {
        self.maximal_text_length
    }
}

/// The ids chunks are wrapped and padded with, read from the tokenizer by the caller
/// (`berth_data::special_tokens` does it), never hard-coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_impossible_configs() {
        assert_eq!(
            ChunkConfig::new(0, 1, 0, None, 512),
            Err(ChunkError::ZeroChunkSize)
        );
        assert!(matches!(
            ChunkConfig::new(510, 0, 1, None, 512),
            Err(ChunkError::BadStride { .. })
        ));
        assert!(matches!(
            ChunkConfig::new(510, 511, 1, None, 512),
            Err(ChunkError::BadStride { .. })
        ));
        assert!(matches!(
            ChunkConfig::new(10, 5, 11, None, 512),
            Err(ChunkError::BadMinimal { .. })
        ));
        assert_eq!(
            ChunkConfig::new(511, 511, 1, None, 512)
                .unwrap_err()
                .to_string(),
            "chunk_size 511 + 2 special tokens exceeds the model's 512 positions"
        );
        assert!(ChunkConfig::new(510, 510, 1, Some(2040), 512).is_ok());
    }
}

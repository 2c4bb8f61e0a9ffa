//! Rows to padded candle tensors; filled by the chunking/collate issue (#3).

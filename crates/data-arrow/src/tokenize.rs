//! Tokenization as a map op: unpadded `input_ids` (`List<UInt32>`), `token_type_ids`
//! and `attention_mask` (`List<UInt8>`), identical to HF `tokenizers` with the same
//! `tokenizer.json`. Padding and truncation baked into the file are turned off; pairs
//! truncate `longest_first` when a max length is asked for.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::{UInt8Type, UInt32Type};
use tokenizers::Tokenizer;

use crate::columns::{list_from_flat, text_values, with_columns};
use crate::encoder::TextEncoder;
use crate::error::{DataError, Result};
use crate::load::{HubOptions, hub_model_file};
use crate::ops::BatchOp;

/// Loads a tokenizer from a `tokenizer.json` file, a model directory holding one (or
/// only the slow files: `vocab.txt`, or `vocab.json` + `merges.txt`, converted as
/// transformers converts them), or a hub model id (through the hf-hub cache, online unless `HF_HUB_OFFLINE`).
pub fn load_tokenizer(spec: &str, hub: &HubOptions) -> Result<Tokenizer> {
    let path = Path::new(spec);
    let file = if path.is_file() {
        path.to_path_buf()
    } else if path.is_dir() {
        let f = path.join("tokenizer.json");
        if !f.is_file() {
            // As transformers does: the slow files, converted.
            return crate::slow_tokenizer::from_slow_files(path);
        }
        f
    } else if spec.contains('/') && !spec.starts_with(['/', '.']) && spec.split('/').count() == 2 {
        hub_model_file(spec, "tokenizer.json", hub)?
    } else {
        return Err(DataError::Tokenizer {
            what: spec.into(),
            message: "not a tokenizer.json, a model directory, or a hub id owner/name".into(),
        });
    };
    let text = std::fs::read_to_string(&file).map_err(|e| DataError::io(&file, e))?;
    let bad = |message: String| DataError::Tokenizer {
        what: file.display().to_string(),
        message,
    };
    // Valid JSON that is not a tokenizers file would otherwise be reported as a
    // syntax error at its first key.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && v.get("model").is_none()
    {
        return Err(bad(
            "valid JSON, but not a tokenizer.json: it has no \"model\" (a tokenizers file holds version, normalizer, pre_tokenizer, model, ...)".into(),
        ));
    }
    text.parse::<Tokenizer>().map_err(|e| bad(e.to_string()))
}

/// What to tokenize and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizeConfig {
    pub text_column: String,
    /// The second text of a pair (token_type_ids 1), e.g. MRPC's `#2 String`.
    pub pair_column: Option<String>,
    /// Truncate (`longest_first`, special tokens counted) to this many ids.
    pub max_length: Option<usize>,
    /// Add `[CLS]`/`[SEP]` as the tokenizer's post-processor says.
    pub add_special_tokens: bool,
}

impl TokenizeConfig {
    /// Single texts from `text_column`, special tokens on, no truncation.
    pub fn new(text_column: impl Into<String>) -> Self {
        TokenizeConfig {
            text_column: text_column.into(),
            pair_column: None,
            max_length: None,
            add_special_tokens: true,
        }
    }
}

/// The tokenize op; use it with [`crate::Dataset::map_batched`]. It encodes with
/// `berth-wordpiece` when that reproduces the tokenizer exactly (see [`TextEncoder`]).
pub struct TokenizeOp {
    encoder: TextEncoder,
    config: TokenizeConfig,
    /// Hash of the tokenizer's serialized form, so another vocabulary recomputes.
    tokenizer_digest: String,
}

impl TokenizeOp {
    pub fn new(tokenizer: &Tokenizer, config: TokenizeConfig) -> Result<Self> {
        let encoder = TextEncoder::new(tokenizer, config.max_length, config.add_special_tokens)?;
        let tokenizer_digest = encoder.digest().to_string();
        Ok(TokenizeOp {
            encoder,
            config,
            tokenizer_digest,
        })
    }

    /// The tokenizer as configured for this op (padding and truncation settled).
    pub fn tokenizer(&self) -> &Tokenizer {
        self.encoder.tokenizer()
    }

    /// Which implementation encodes.
    pub fn backend(&self) -> crate::encoder::Backend {
        self.encoder.backend()
    }
}

impl BatchOp for TokenizeOp {
    fn keeps_rows(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "tokenize"
    }

    fn params(&self) -> String {
        format!("{:?}|tokenizer={}", self.config, self.tokenizer_digest)
    }

    fn apply(&self, batch: &RecordBatch, first_row: usize, source: &str) -> Result<RecordBatch> {
        let texts = text_values(batch, &self.config.text_column, first_row, source)?;
        let pairs = match &self.config.pair_column {
            None => None,
            Some(pair) => Some(text_values(batch, pair, first_row, source)?),
        };
        let pair_column = self.config.pair_column.as_deref().unwrap_or_default();
        let enc = self.encoder.encode(
            &texts,
            pairs.as_deref().map(|p| (p, pair_column)),
            first_row,
            source,
            &self.config.text_column,
        )?;
        let types: Vec<u8> = enc.type_ids.iter().map(|&t| t as u8).collect();
        let mask = vec![1u8; enc.ids.len()];
        let types = list_from_flat::<UInt8Type>(types, &enc.offsets);
        let mask = list_from_flat::<UInt8Type>(mask, &enc.offsets);
        let ids = list_from_flat::<UInt32Type>(enc.ids, &enc.offsets);
        with_columns(
            batch,
            vec![
                ("input_ids", ids),
                ("token_type_ids", types),
                ("attention_mask", mask),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;
    use crate::ops::MapOptions;
    use arrow::array::{ArrayRef, Int64Array, ListArray, StringArray, UInt32Array};
    use arrow::datatypes::DataType;
    use std::sync::Arc;

    fn minilm() -> Option<Tokenizer> {
        let dir = berth_testkit::minilm_dir()?;
        Some(load_tokenizer(dir.to_str().unwrap(), &HubOptions::offline("/nonexistent")).unwrap())
    }

    #[test]
    fn json_that_is_not_a_tokenizer_says_so() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tokenizer.json");
        std::fs::write(&p, br#"{"a":1}"#).unwrap();
        let e = load_tokenizer(p.to_str().unwrap(), &HubOptions::offline("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer.json")
                && e.contains("not a tokenizer.json")
                && e.contains("\"model\""),
            "{e}"
        );
        // Broken JSON keeps the parser's line and column.
        std::fs::write(&p, b"{\"a\":").unwrap();
        let e = load_tokenizer(p.to_str().unwrap(), &HubOptions::offline("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1 column"), "{e}");
    }

    fn ids(ds: &Dataset, col: &str, row: usize) -> Vec<u32> {
        let c = ds.column(col).unwrap();
        let l = c.as_any().downcast_ref::<ListArray>().unwrap().value(row);
        let cast = arrow::compute::cast(&l, &DataType::UInt32).unwrap();
        cast.as_any()
            .downcast_ref::<UInt32Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    fn pairs() -> Dataset {
        let batch = RecordBatch::try_from_iter([
            (
                "a",
                Arc::new(StringArray::from(vec!["This is the first sentence.", ""])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(StringArray::from(vec!["This is the second one.", "x"])) as ArrayRef,
            ),
            ("label", Arc::new(Int64Array::from(vec![1, 0])) as ArrayRef),
        ])
        .unwrap();
        Dataset::from_batch(batch, "pairs").unwrap()
    }

    #[test]
    fn pair_ids_equal_hf_tokenizers() {
        let Some(tok) = minilm() else { return };
        let mut cfg = TokenizeConfig::new("a");
        cfg.pair_column = Some("b".into());
        let out = pairs()
            .map_batched(&TokenizeOp::new(&tok, cfg).unwrap(), &MapOptions::default())
            .unwrap();
        assert_eq!(
            ids(&out, "input_ids", 0),
            vec![
                101, 2023, 2003, 1996, 2034, 6251, 1012, 102, 2023, 2003, 1996, 2117, 2028, 1012,
                102
            ]
        );
        let mut types = vec![0; 8];
        types.extend([1; 7]);
        assert_eq!(ids(&out, "token_type_ids", 0), types);
        assert_eq!(ids(&out, "attention_mask", 0), vec![1; 15]);
        assert_eq!(
            out.column_names(),
            vec![
                "a",
                "b",
                "label",
                "input_ids",
                "token_type_ids",
                "attention_mask"
            ]
        );
    }

    #[test]
    fn baked_in_padding_is_off_and_max_length_truncates_longest_first() {
        let Some(tok) = minilm() else { return };
        // MiniLM's tokenizer.json pads to 128; unpadded ids must come out.
        let out = pairs()
            .map_batched(
                &TokenizeOp::new(&tok, TokenizeConfig::new("a")).unwrap(),
                &MapOptions::default(),
            )
            .unwrap();
        assert_eq!(ids(&out, "input_ids", 0).len(), 8);
        assert_eq!(ids(&out, "input_ids", 1), vec![101, 102]);
        let mut cfg = TokenizeConfig::new("a");
        cfg.pair_column = Some("b".into());
        cfg.max_length = Some(9);
        let out = pairs()
            .map_batched(&TokenizeOp::new(&tok, cfg).unwrap(), &MapOptions::default())
            .unwrap();
        // 6 + 6 pieces + 3 specials > 9: longest_first trims 3 pieces alternately.
        assert_eq!(
            ids(&out, "input_ids", 0),
            vec![101, 2023, 2003, 1996, 102, 2023, 2003, 1996, 102]
        );
        let mut cfg = TokenizeConfig::new("a");
        cfg.add_special_tokens = false;
        let out = pairs()
            .map_batched(&TokenizeOp::new(&tok, cfg).unwrap(), &MapOptions::default())
            .unwrap();
        assert_eq!(
            ids(&out, "input_ids", 0),
            vec![2023, 2003, 1996, 2034, 6251, 1012]
        );
    }

    #[test]
    fn a_tokenizer_wordpiece_cannot_reproduce_falls_back_with_the_same_ids() {
        let Some(tok) = minilm() else { return };
        let fast = TokenizeOp::new(&tok, TokenizeConfig::new("a")).unwrap();
        assert_eq!(fast.backend(), crate::Backend::WordPiece);
        // An added token with lstrip set: berth-wordpiece refuses, tokenizers encodes.
        let mut json: serde_json::Value =
            serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
        json["added_tokens"][4]["lstrip"] = true.into();
        let other: Tokenizer = json.to_string().parse().unwrap();
        let slow = TokenizeOp::new(&other, TokenizeConfig::new("a")).unwrap();
        assert_eq!(slow.backend(), crate::Backend::Tokenizers);
        let a = pairs().map_batched(&fast, &MapOptions::default()).unwrap();
        let b = pairs().map_batched(&slow, &MapOptions::default()).unwrap();
        assert_eq!(ids(&a, "input_ids", 0), ids(&b, "input_ids", 0));
        assert_eq!(ids(&a, "input_ids", 1), ids(&b, "input_ids", 1));
    }

    #[test]
    fn non_string_and_null_text_are_named() {
        let Some(tok) = minilm() else { return };
        let op = TokenizeOp::new(&tok, TokenizeConfig::new("label")).unwrap();
        let err = pairs()
            .map_batched(&op, &MapOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pairs: column 'label' must be a string column, found Int64"
        );
        let op = TokenizeOp::new(&tok, TokenizeConfig::new("nope")).unwrap();
        let err = pairs()
            .map_batched(&op, &MapOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("pairs: column 'nope' not found"), "{err}");
        let batch = RecordBatch::try_from_iter([(
            "t",
            Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])) as ArrayRef,
        )])
        .unwrap();
        let ds = Dataset::from_batch(batch, "nulls.jsonl").unwrap();
        let op = TokenizeOp::new(&tok, TokenizeConfig::new("t")).unwrap();
        let err = ds
            .map_batched(
                &op,
                &MapOptions {
                    batch_size: 2,
                    num_workers: 1,
                },
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "nulls.jsonl: row 2 (0-based), column 't': text is null"
        );
    }
}

//! Special token ids read from a tokenizer, for the chunker and the masker: never
//! hard-coded 101/102/0/103.

use berth_chunking::SpecialTokens;
use berth_masking::MaskingTokens;
use tokenizers::Tokenizer;

use crate::error::{DataError, Result};

fn first_id(tok: &Tokenizer, names: &[&str], what: &str) -> Result<u32> {
    names
        .iter()
        .find_map(|n| tok.token_to_id(n))
        .ok_or_else(|| DataError::Tokenizer {
            what: what.into(),
            message: format!("the vocabulary has none of {names:?}"),
        })
}

fn pad_id(tok: &Tokenizer) -> Result<u32> {
    match tok.get_padding() {
        Some(p) => Ok(p.pad_id),
        None => first_id(tok, &["[PAD]", "<pad>"], "pad token"),
    }
}

/// `[CLS]`, `[SEP]`, `[PAD]` (or RoBERTa's `<s>`, `</s>`, `<pad>`).
pub fn special_tokens(tok: &Tokenizer) -> Result<SpecialTokens> {
    Ok(SpecialTokens {
        cls: first_id(tok, &["[CLS]", "<s>"], "cls token")?,
        sep: first_id(tok, &["[SEP]", "</s>"], "sep token")?,
        pad: pad_id(tok)?,
    })
}

/// `[MASK]`, `[PAD]`, every special added token, and the vocabulary size.
pub fn masking_tokens(tok: &Tokenizer) -> Result<MaskingTokens> {
    let mut special_ids: Vec<u32> = tok
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    special_ids.sort_unstable();
    Ok(MaskingTokens {
        mask: first_id(tok, &["[MASK]", "<mask>"], "mask token")?,
        pad: pad_id(tok)?,
        special_ids,
        vocab_size: tok.get_vocab_size(true) as u32,
    })
}

/// How a tokenizer's vocabulary marks where words are, for whole-word masking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WordMarks {
    /// WordPiece: a token continues a word when it starts with this prefix (`##`).
    ContinuationPrefix(String),
    /// Byte-level BPE (`Ġ`) and SentencePiece-style Metaspace (`▁`): a token starts
    /// a word when it starts with this marker.
    StartMarker(String),
}

/// The word marks of `tok`, read from its model and pre-tokenizer: WordPiece's
/// `continuing_subword_prefix`, a `ByteLevel` pre-tokenizer's `Ġ`, a `Metaspace`'s
/// replacement character. `None` for a tokenizer that marks neither.
pub fn word_marks(tok: &Tokenizer) -> Option<WordMarks> {
    let json: serde_json::Value = serde_json::from_str(&tok.to_string(false).ok()?).ok()?;
    let model = &json["model"];
    if model["type"] == "WordPiece" {
        let prefix = model["continuing_subword_prefix"].as_str().unwrap_or("##");
        return Some(WordMarks::ContinuationPrefix(prefix.to_string()));
    }
    fn find(v: &serde_json::Value) -> Option<WordMarks> {
        match v["type"].as_str()? {
            "ByteLevel" => Some(WordMarks::StartMarker("\u{120}".into())),
            "Metaspace" => Some(WordMarks::StartMarker(
                v["replacement"].as_str().unwrap_or("\u{2581}").to_string(),
            )),
            "Sequence" => v["pretokenizers"].as_array()?.iter().find_map(find),
            _ => None,
        }
    }
    find(&json["pre_tokenizer"])
}

/// For each vocabulary id, whether its token continues a word: WordPiece's `##`
/// pieces, or with byte-level BPE (`Ġ`) and Unigram/Metaspace (`▁`) tokenizers every
/// token without the word-start marker ([`word_marks`]). Special tokens never
/// continue one. HF's `DataCollatorForWholeWordMask` knows WordPiece only; an error
/// names a tokenizer that marks neither way.
pub fn continuation_table(tok: &Tokenizer) -> Result<berth_masking::ContinuationTable> {
    let marks = word_marks(tok).ok_or_else(|| {
        crate::error::DataError::InvalidArgument(
            "whole-word masking needs a tokenizer that marks words: WordPiece (##), byte-level BPE (Ġ) or a Metaspace pre-tokenizer (▁); this one has none".into(),
        )
    })?;
    let specials: std::collections::HashSet<u32> = tok
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    Ok(berth_masking::ContinuationTable::new(
        (0..tok.get_vocab_size(true) as u32)
            .map(|id| {
                !specials.contains(&id)
                    && tok.id_to_token(id).is_some_and(|t| match &marks {
                        WordMarks::ContinuationPrefix(p) => t.starts_with(p.as_str()),
                        WordMarks::StartMarker(m) => !t.starts_with(m.as_str()),
                    })
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_ids_come_from_the_tokenizer() {
        let Some(dir) = berth_testkit::minilm_dir() else {
            return;
        };
        let tok = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        assert_eq!(
            special_tokens(&tok).unwrap(),
            SpecialTokens {
                cls: 101,
                sep: 102,
                pad: 0
            }
        );
        let m = masking_tokens(&tok).unwrap();
        assert_eq!(m.mask, 103);
        assert_eq!(m.special_ids, vec![0, 100, 101, 102, 103]);
        assert_eq!(m.vocab_size, 30522);
        let table = continuation_table(&tok).unwrap();
        assert!(table.continues(tok.token_to_id("##s").unwrap()));
        assert!(!table.continues(tok.token_to_id("the").unwrap()));
    }
}

//! What a `tokenizer.json` asks for, read into plain types; anything this crate
//! cannot reproduce exactly is refused with `Unsupported` and the reason.

use serde_json::{Map, Value};

use crate::error::{Result, WordPieceError};

/// `BertNormalizer`'s options, with `strip_accents: null` resolved to `lowercase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Normalization {
    pub clean_text: bool,
    pub handle_chinese_chars: bool,
    pub strip_accents: bool,
    pub lowercase: bool,
}

impl Normalization {
    /// No normalizer at all: every step off.
    pub const NONE: Normalization = Normalization {
        clean_text: false,
        handle_chinese_chars: false,
        strip_accents: false,
        lowercase: false,
    };
    /// bert-base-uncased's normalizer.
    pub const UNCASED: Normalization = Normalization {
        clean_text: true,
        handle_chinese_chars: true,
        strip_accents: true,
        lowercase: true,
    };
}

/// One piece of a post-processing template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Special token ids (written only with `add_special_tokens`).
    Special { ids: Vec<u32>, type_id: u32 },
    /// The first (`second: false`) or second text's ids.
    Sequence { second: bool, type_id: u32 },
}

/// The post-processor as a template: `BertProcessing`, `TemplateProcessing` and no
/// post-processor all reduce to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub single: Vec<Piece>,
    pub pair: Vec<Piece>,
}

impl Template {
    /// `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` with B's type id 1.
    pub fn bert(cls: u32, sep: u32) -> Template {
        let special = |id, type_id| Piece::Special {
            ids: vec![id],
            type_id,
        };
        let seq = |second, type_id| Piece::Sequence { second, type_id };
        Template {
            single: vec![special(cls, 0), seq(false, 0), special(sep, 0)],
            pair: vec![
                special(cls, 0),
                seq(false, 0),
                special(sep, 0),
                seq(true, 1),
                special(sep, 1),
            ],
        }
    }

    /// No post-processor: the texts as they are, the second with type id 1.
    pub fn plain() -> Template {
        Template {
            single: vec![Piece::Sequence {
                second: false,
                type_id: 0,
            }],
            pair: vec![
                Piece::Sequence {
                    second: false,
                    type_id: 0,
                },
                Piece::Sequence {
                    second: true,
                    type_id: 1,
                },
            ],
        }
    }

    /// How many special ids the template adds (what truncation reserves).
    pub fn added(&self, pair: bool) -> usize {
        let pieces = if pair { &self.pair } else { &self.single };
        pieces
            .iter()
            .map(|p| match p {
                Piece::Special { ids, .. } => ids.len(),
                Piece::Sequence { .. } => 0,
            })
            .sum()
    }
}

/// Which text loses ids when a pair is too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStrategy {
    LongestFirst,
    OnlyFirst,
    OnlySecond,
}

/// Which end of a text is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationSide {
    Right,
    Left,
}

/// `tokenizers`' `TruncationParams` with stride 0 (no overflowing windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// Ids in all, special tokens included when they are added.
    pub max_length: usize,
    pub strategy: TruncationStrategy,
    pub side: TruncationSide,
}

impl Truncation {
    /// `longest_first` from the right, as `transformers` defaults to.
    pub fn longest_first(max_length: usize) -> Truncation {
        Truncation {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            side: TruncationSide::Right,
        }
    }
}

/// An added token matched in the raw text before normalization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedToken {
    pub content: String,
    pub id: u32,
}

/// Everything the encoder needs, read from a tokenizer.json.
#[derive(Clone, Debug)]
pub struct Spec {
    pub normalization: Normalization,
    pub vocab: Vec<(String, u32)>,
    pub unk_id: u32,
    pub continuing_subword_prefix: String,
    pub max_input_chars_per_word: usize,
    pub template: Template,
    pub added_tokens: Vec<AddedToken>,
    /// The truncation baked into the file, reported, never applied (pass it in
    /// `EncodeOptions` to use it).
    pub file_truncation: Option<Truncation>,
    /// Whether the file asks for padding (never applied: ids are unpadded).
    pub file_padding: bool,
}

fn unsupported<T>(why: impl Into<String>) -> Result<T> {
    Err(WordPieceError::Unsupported(why.into()))
}

fn invalid(why: impl Into<String>) -> WordPieceError {
    WordPieceError::Invalid(why.into())
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{what} is not an object")))
}

fn bool_of(m: &Map<String, Value>, key: &str, what: &str, default: bool) -> Result<bool> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(format!("{what}.{key} is {other}, not a boolean"))),
    }
}

fn u32_of(v: &Value, what: &str) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(format!("{what} is {v}, not an id")))
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what}.{key} is missing or not a string")))
}

fn type_name<'a>(m: &'a Map<String, Value>, what: &str) -> Result<&'a str> {
    str_of(m, "type", what)
}

impl Spec {
    /// Reads a tokenizer.json's text.
    pub fn from_json(json: &str) -> Result<Spec> {
        let root: Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let root = obj(&root, "the file")?;
        let model = WordPieceModel::read(root)?;
        let normalization = normalization(root)?;
        match root.get("pre_tokenizer") {
            Some(Value::Object(p)) if type_name(p, "pre_tokenizer")? == "BertPreTokenizer" => {}
            Some(Value::Object(p)) => {
                return unsupported(format!("pre_tokenizer {}", type_name(p, "pre_tokenizer")?));
            }
            _ => return unsupported("no pre_tokenizer (whole texts as one word)"),
        }
        let template = post_processor(root)?;
        let added_tokens = added_tokens(root, &model.vocab)?;
        let file_truncation = match root.get("truncation") {
            None | Some(Value::Null) => None,
            Some(t) => Some(truncation(obj(t, "truncation")?)?),
        };
        let file_padding = !matches!(root.get("padding"), None | Some(Value::Null));

        Ok(Spec {
            normalization,
            vocab: model.vocab,
            unk_id: model.unk_id,
            continuing_subword_prefix: model.continuing_subword_prefix,
            max_input_chars_per_word: model.max_input_chars_per_word,
            template,
            added_tokens,
            file_truncation,
            file_padding,
        })
    }
}

/// The file's `model`, which must be a WordPiece one.
struct WordPieceModel {
    vocab: Vec<(String, u32)>,
    unk_id: u32,
    continuing_subword_prefix: String,
    max_input_chars_per_word: usize,
}

impl WordPieceModel {
    fn read(root: &Map<String, Value>) -> Result<Self> {
        let model = obj(
            root.get("model")
                .ok_or_else(|| invalid("no \"model\" key"))?,
            "model",
        )?;
        match model.get("type").and_then(Value::as_str) {
            Some("WordPiece") => {}
            Some(other) => return unsupported(format!("model is {other}, not WordPiece")),
            // tokenizers infers an untagged model from its keys; be strict.
            None => return unsupported("model has no \"type\""),
        }
        let vocab = obj(
            model
                .get("vocab")
                .ok_or_else(|| invalid("model has no vocab"))?,
            "model.vocab",
        )?
        .iter()
        .map(|(k, v)| Ok((k.clone(), u32_of(v, &format!("model.vocab[{k:?}]"))?)))
        .collect::<Result<Vec<_>>>()?;
        let unk = str_of(model, "unk_token", "model")?;
        let unk_id = match vocab.iter().find(|(k, _)| k == unk) {
            Some((_, id)) => *id,
            None => return unsupported(format!("the unk token {unk:?} is not in the vocabulary")),
        };
        let continuing_subword_prefix = str_of(model, "continuing_subword_prefix", "model")?;
        if continuing_subword_prefix.is_empty() {
            return unsupported("an empty continuing_subword_prefix");
        }
        let max_input_chars_per_word = model
            .get("max_input_chars_per_word")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("model.max_input_chars_per_word is missing"))?
            as usize;
        Ok(WordPieceModel {
            vocab,
            unk_id,
            continuing_subword_prefix: continuing_subword_prefix.to_string(),
            max_input_chars_per_word,
        })
    }
}

/// The file's `normalizer`: none, or a `BertNormalizer`.
fn normalization(root: &Map<String, Value>) -> Result<Normalization> {
    let Some(n) = root.get("normalizer").filter(|n| !n.is_null()) else {
        return Ok(Normalization::NONE);
    };
    let n = obj(n, "normalizer")?;
    match type_name(n, "normalizer")? {
        "BertNormalizer" => {
            let lowercase = bool_of(n, "lowercase", "normalizer", true)?;
            Ok(Normalization {
                clean_text: bool_of(n, "clean_text", "normalizer", true)?,
                handle_chinese_chars: bool_of(n, "handle_chinese_chars", "normalizer", true)?,
                strip_accents: bool_of(n, "strip_accents", "normalizer", lowercase)?,
                lowercase,
            })
        }
        other => unsupported(format!("normalizer {other}")),
    }
}

/// The file's `post_processor`: none, `BertProcessing` or `TemplateProcessing`.
fn post_processor(root: &Map<String, Value>) -> Result<Template> {
    let Some(p) = root.get("post_processor").filter(|p| !p.is_null()) else {
        return Ok(Template::plain());
    };
    let p = obj(p, "post_processor")?;
    match type_name(p, "post_processor")? {
        "BertProcessing" => {
            let pair_id = |key: &str| -> Result<u32> {
                let v = p
                    .get(key)
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| invalid(format!("post_processor.{key} is not [token, id]")))?;
                u32_of(&v[1], &format!("post_processor.{key}[1]"))
            };
            Ok(Template::bert(pair_id("cls")?, pair_id("sep")?))
        }
        "TemplateProcessing" => template_processing(p),
        other => unsupported(format!("post_processor {other}")),
    }
}

/// The file's `added_tokens`, with the ids `tokenizers` gives them.
fn added_tokens(root: &Map<String, Value>, vocab: &[(String, u32)]) -> Result<Vec<AddedToken>> {
    let mut added_tokens = Vec::new();
    let Some(list) = root.get("added_tokens") else {
        return Ok(added_tokens);
    };
    let vocab_ids: std::collections::HashMap<&str, u32> =
        vocab.iter().map(|(k, id)| (k.as_str(), *id)).collect();
    let mut next_id = vocab_ids.len() as u32;
    let list = list
        .as_array()
        .ok_or_else(|| invalid("added_tokens is not a list"))?;
    for (i, t) in list.iter().enumerate() {
        let what = format!("added_tokens[{i}]");
        let t = obj(t, &what)?;
        let content = str_of(t, "content", &what)?;
        for flag in ["single_word", "lstrip", "rstrip", "normalized"] {
            if bool_of(t, flag, &what, false)? {
                return unsupported(format!("added token {content:?} has {flag} set"));
            }
        }
        if content.is_empty() {
            return unsupported(format!("{what} is empty"));
        }
        // `tokenizers` ignores the file's id: a token in the vocabulary gets its
        // vocabulary id, any other the next id after the vocabulary, in file order.
        if added_tokens
            .iter()
            .any(|t: &AddedToken| t.content == content)
        {
            continue;
        }
        let id = match vocab_ids.get(content) {
            Some(&id) => id,
            None => {
                next_id += 1;
                next_id - 1
            }
        };
        added_tokens.push(AddedToken {
            content: content.to_string(),
            id,
        });
    }
    Ok(added_tokens)
}

fn truncation(t: &Map<String, Value>) -> Result<Truncation> {
    let max_length = t
        .get("max_length")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("truncation.max_length is missing"))? as usize;
    if t.get("stride").and_then(Value::as_u64).unwrap_or(0) != 0 {
        return unsupported("truncation with a stride (overflowing windows)");
    }
    let strategy = match t.get("strategy").and_then(Value::as_str) {
        None | Some("LongestFirst") => TruncationStrategy::LongestFirst,
        Some("OnlyFirst") => TruncationStrategy::OnlyFirst,
        Some("OnlySecond") => TruncationStrategy::OnlySecond,
        Some(other) => return Err(invalid(format!("truncation.strategy {other}"))),
    };
    let side = match t.get("direction").and_then(Value::as_str) {
        None | Some("Right") => TruncationSide::Right,
        Some("Left") => TruncationSide::Left,
        Some(other) => return Err(invalid(format!("truncation.direction {other}"))),
    };
    Ok(Truncation {
        max_length,
        strategy,
        side,
    })
}

fn template_processing(p: &Map<String, Value>) -> Result<Template> {
    let specials = obj(
        p.get("special_tokens")
            .ok_or_else(|| invalid("post_processor has no special_tokens"))?,
        "post_processor.special_tokens",
    )?;
    let pieces = |key: &str| -> Result<Vec<Piece>> {
        let list = p
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(format!("post_processor.{key} is not a list")))?;
        list.iter()
            .enumerate()
            .map(|(i, piece)| {
                let what = format!("post_processor.{key}[{i}]");
                let piece = obj(piece, &what)?;
                let type_id = |m: &Map<String, Value>| -> Result<u32> {
                    m.get("type_id")
                        .map(|v| u32_of(v, &format!("{what}.type_id")))
                        .unwrap_or(Ok(0))
                };
                if let Some(s) = piece.get("Sequence") {
                    let s = obj(s, &what)?;
                    let second = match str_of(s, "id", &what)? {
                        "A" => false,
                        "B" => true,
                        other => return Err(invalid(format!("{what}: sequence {other}"))),
                    };
                    Ok(Piece::Sequence {
                        second,
                        type_id: type_id(s)?,
                    })
                } else if let Some(s) = piece.get("SpecialToken") {
                    let s = obj(s, &what)?;
                    let name = str_of(s, "id", &what)?;
                    let tok = obj(
                        specials.get(name).ok_or_else(|| {
                            invalid(format!("{what}: {name:?} is not in special_tokens"))
                        })?,
                        &what,
                    )?;
                    let ids = tok
                        .get("ids")
                        .and_then(Value::as_array)
                        .ok_or_else(|| invalid(format!("special token {name:?} has no ids")))?
                        .iter()
                        .map(|v| u32_of(v, &format!("special token {name:?}")))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Piece::Special {
                        ids,
                        type_id: type_id(s)?,
                    })
                } else {
                    Err(invalid(format!(
                        "{what} is neither Sequence nor SpecialToken"
                    )))
                }
            })
            .collect()
    };
    Ok(Template {
        single: pieces("single")?,
        pair: pieces("pair")?,
    })
}

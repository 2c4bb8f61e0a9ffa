//! `BertNormalizer` and `BertPreTokenizer`'s character classes, written as
//! `tokenizers` 0.23 writes them (same Unicode tables), and the exact normalization
//! of a run of non-ASCII characters. ASCII goes through a per-byte table built from
//! the same functions, so the fast path cannot disagree with them.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

use crate::spec::Normalization;

/// `tokenizers`' `is_whitespace` for `clean_text`: tab, newline and return count.
fn is_clean_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// `tokenizers`' `is_control`: Cc, Cf and Co, but not tab, newline, return.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// Removed by `clean_text`.
pub(crate) fn is_removed_by_clean(c: char) -> bool {
    c == '\0' || c == '\u{fffd}' || is_control(c)
}

pub(crate) fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// `BertPreTokenizer`'s punctuation: split off as a word of its own.
pub(crate) fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// How the pre-tokenizer treats a normalized character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Ends the current word and is dropped.
    Space,
    /// A word of its own.
    Punct,
    /// Part of the current word.
    Word,
}

pub(crate) fn class_of(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if is_bert_punc(c) {
        Class::Punct
    } else {
        Class::Word
    }
}

/// The normalizer's steps, in `tokenizers`' order, over `text` into `out`. This is
/// the reference the fast path is built from and checked against.
pub(crate) fn normalize_into(n: &Normalization, text: &str, out: &mut String) {
    let mut cur: String = if n.clean_text {
        text.chars()
            .filter(|&c| !is_removed_by_clean(c))
            .map(|c| if is_clean_whitespace(c) { ' ' } else { c })
            .collect()
    } else {
        text.to_string()
    };
    if n.handle_chinese_chars && cur.chars().any(is_chinese_char) {
        let mut padded = String::with_capacity(cur.len() + 8);
        for c in cur.chars() {
            if is_chinese_char(c) {
                padded.push(' ');
                padded.push(c);
                padded.push(' ');
            } else {
                padded.push(c);
            }
        }
        cur = padded;
    }
    if n.strip_accents {
        cur = cur
            .nfd()
            .map(|(c, _)| c)
            .filter(|c| !c.is_mark_nonspacing())
            .collect();
    }
    if n.lowercase {
        for c in cur.chars() {
            out.extend(c.to_lowercase());
        }
    } else {
        out.push_str(&cur);
    }
}

/// What one ASCII byte of the input becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ascii {
    /// Removed by `clean_text` (does not end a run of non-ASCII characters).
    Drop,
    Space,
    Punct(u8),
    Word(u8),
}

/// The per-byte table of the fast path, derived from [`normalize_into`] and
/// [`class_of`] one ASCII character at a time.
pub(crate) fn ascii_table(n: &Normalization) -> [Ascii; 128] {
    let mut table = [Ascii::Drop; 128];
    let mut out = String::new();
    for (b, slot) in table.iter_mut().enumerate() {
        out.clear();
        normalize_into(n, &char::from(b as u8).to_string(), &mut out);
        let mut chars = out.chars();
        *slot = match (chars.next(), chars.next()) {
            (None, _) => Ascii::Drop,
            (Some(c), None) if c.is_ascii() => match class_of(c) {
                Class::Space => Ascii::Space,
                Class::Punct => Ascii::Punct(c as u8),
                Class::Word => Ascii::Word(c as u8),
            },
            // No ASCII character normalizes to more than one character or out of ASCII.
            _ => unreachable!("ASCII {b} normalized to {out:?}"),
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncased_ascii_table_lowercases_and_splits() {
        let t = ascii_table(&Normalization::UNCASED);
        assert_eq!(t[b'A' as usize], Ascii::Word(b'a'));
        assert_eq!(t[b'!' as usize], Ascii::Punct(b'!'));
        assert_eq!(t[b'\t' as usize], Ascii::Space);
        assert_eq!(t[0], Ascii::Drop);
        assert_eq!(t[0x7f], Ascii::Drop);
        let cased = ascii_table(&Normalization::NONE);
        assert_eq!(cased[b'A' as usize], Ascii::Word(b'A'));
        // Without clean_text a control character stays, as part of a word.
        assert_eq!(cased[1], Ascii::Word(1));
        assert_eq!(cased[0x0b], Ascii::Space);
    }

    #[test]
    fn accents_strip_only_when_asked() {
        let mut s = String::new();
        normalize_into(&Normalization::UNCASED, "Café 中文", &mut s);
        assert_eq!(s, "cafe  中  文 ");
        s.clear();
        let cased = Normalization {
            lowercase: false,
            strip_accents: false,
            ..Normalization::UNCASED
        };
        normalize_into(&cased, "Café", &mut s);
        assert_eq!(s, "Café");
    }
}

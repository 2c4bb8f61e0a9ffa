//! Sentence splitting for NSP: a sentence ends at `.`, `!` or `?` (with any closing
//! quotes or brackets right after it) followed by whitespace or the end of the text.
//! Punctuation stays with its sentence; sentences are trimmed; empty ones dropped.

/// The sentences of `text`, borrowed from it.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (_, c) = chars[k];
        if matches!(c, '.' | '!' | '?') {
            // Swallow runs like "?!" or "..." and closing quotes/brackets.
            let mut j = k + 1;
            while j < chars.len()
                && matches!(
                    chars[j].1,
                    '.' | '!' | '?' | '"' | '\'' | '”' | '’' | ')' | ']'
                )
            {
                j += 1;
            }
            if j == chars.len() || chars[j].1.is_whitespace() {
                let end = if j == chars.len() {
                    text.len()
                } else {
                    chars[j].0
                };
                push(&mut out, &text[start..end]);
                start = end;
            }
            k = j;
            continue;
        }
        k += 1;
    }
    push(&mut out, &text[start..]);
    out
}

fn push<'a>(out: &mut Vec<&'a str>, s: &'a str) {
    let s = s.trim();
    if !s.is_empty() {
        out.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_terminal_punctuation_followed_by_space() {
        assert_eq!(
            split_sentences("First one. Second?! \"Third,\" he said. Pi is 3.14 exactly.  "),
            vec![
                "First one.",
                "Second?!",
                "\"Third,\" he said.",
                "Pi is 3.14 exactly."
            ]
        );
    }

    #[test]
    fn keeps_closing_quotes_and_drops_empties() {
        assert_eq!(
            split_sentences("He said 'go.' Then left"),
            vec!["He said 'go.'", "Then left"]
        );
        assert!(split_sentences("  \n ").is_empty());
        assert_eq!(split_sentences("..."), vec!["..."]);
    }
}

//! Model directories without a `tokenizer.json` load as transformers loads them: the
//! slow files converted (`vocab.txt` to WordPiece, `vocab.json` + `merges.txt` to
//! byte-level BPE), with the ids transformers' fast tokenizer built from the same
//! files gives (recorded in the fixtures' `slow_ids.json`).

use std::path::{Path, PathBuf};

use berth_data::{HubOptions, load_tokenizer};

fn family_dir(family: &str) -> PathBuf {
    let dir = berth_testkit::workspace_root()
        .join("crates/model/tests/fixtures/families")
        .join(family);
    assert!(
        dir.join("slow_ids.json").is_file(),
        "missing fixture {}",
        dir.display()
    );
    dir
}

/// A directory holding only `files` of `from`.
fn only(from: &Path, files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(from.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn assert_transformers_ids(family: &str, files: &[&str]) {
    let src = family_dir(family);
    let dir = only(&src, files);
    let tok = load_tokenizer(dir.path().to_str().unwrap(), &HubOptions::from_env()).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("slow_ids.json")).unwrap()).unwrap();
    let texts: Vec<&str> = want["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for (t, w) in texts.iter().zip(want["ids"].as_array().unwrap()) {
        let got = tok.encode(*t, true).unwrap().get_ids().to_vec();
        assert_eq!(got, ids(w), "{family}: {t:?}");
    }
    let pair = tok.encode((texts[0], texts[1]), true).unwrap();
    assert_eq!(pair.get_ids(), ids(&want["pair_ids"]), "{family}: the pair");
}

#[test]
fn vocab_txt_alone_builds_the_wordpiece_tokenizer_transformers_builds() {
    assert_transformers_ids("bert", &["vocab.txt"]);
}

#[test]
fn vocab_json_and_merges_build_the_byte_level_bpe_transformers_builds() {
    assert_transformers_ids("roberta", &["vocab.json", "merges.txt"]);
}

#[test]
fn minilm_without_its_tokenizer_json_tokenizes_as_with_it() {
    let Some(minilm) = berth_testkit::minilm_dir() else {
        return;
    };
    let dir = only(&minilm, &["vocab.txt", "tokenizer_config.json"]);
    let slow = load_tokenizer(dir.path().to_str().unwrap(), &HubOptions::from_env()).unwrap();
    let mut fast = load_tokenizer(
        minilm.join("tokenizer.json").to_str().unwrap(),
        &HubOptions::from_env(),
    )
    .unwrap();
    // MiniLM's tokenizer.json pads to 128; the slow files carry no padding.
    fast.with_padding(None);
    for t in [
        "The quick brown fox jumps over the lazy dog.",
        "Don't tokenize Zürich's naïve café wrongly! 東京 tab\there",
        "",
    ] {
        assert_eq!(
            slow.encode(t, true).unwrap().get_ids(),
            fast.encode(t, true).unwrap().get_ids(),
            "{t:?}"
        );
    }
}

#[test]
fn a_sentencepiece_model_alone_is_refused_naming_the_file_to_add() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sentencepiece.bpe.model"), b"\x0a\x00").unwrap();
    let err = load_tokenizer(dir.path().to_str().unwrap(), &HubOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sentencepiece.bpe.model") && err.contains("add the tokenizer.json"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = load_tokenizer(empty.path().to_str().unwrap(), &HubOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no tokenizer.json") && err.contains("vocab.txt"),
        "{err}"
    );
}

#[test]
fn a_malformed_merge_names_its_line() {
    let src = family_dir("roberta");
    let dir = only(&src, &["vocab.json", "merges.txt"]);
    let merges = dir.path().join("merges.txt");
    let mut text = std::fs::read_to_string(&merges).unwrap();
    text.push_str("a b c\n");
    let line = text.lines().count();
    std::fs::write(&merges, text).unwrap();
    let err = load_tokenizer(dir.path().to_str().unwrap(), &HubOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("merges.txt:{line}")) && err.contains("\"a b c\""),
        "{err}"
    );
}

#[test]
fn a_tokenizer_without_a_token_the_task_needs_names_it() {
    // RoBERTa's vocabulary without `<mask>`: it tokenizes, but cannot mask.
    let src = family_dir("roberta");
    let dir = only(&src, &["merges.txt"]);
    let mut vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(src.join("vocab.json")).unwrap()).unwrap();
    vocab.remove("<mask>");
    std::fs::write(
        dir.path().join("vocab.json"),
        serde_json::Value::Object(vocab).to_string(),
    )
    .unwrap();
    let tok = load_tokenizer(dir.path().to_str().unwrap(), &HubOptions::from_env()).unwrap();
    let err = berth_data::masking_tokens(&tok).unwrap_err().to_string();
    assert!(
        err.contains("mask token") && err.contains("<mask>"),
        "{err}"
    );
    // Without `<s>` a RoBERTa tokenizer cannot be built at all.
    let mut vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(src.join("vocab.json")).unwrap()).unwrap();
    vocab.remove("<s>");
    std::fs::write(
        dir.path().join("vocab.json"),
        serde_json::Value::Object(vocab).to_string(),
    )
    .unwrap();
    let err = load_tokenizer(dir.path().to_str().unwrap(), &HubOptions::from_env())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vocab.json") && err.contains("no '<s>'"),
        "{err}"
    );
}

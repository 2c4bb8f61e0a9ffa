//! Berth's fuzz targets as plain functions of the input bytes, one per surface that
//! reads what a user hands it: the loaders (CSV/TSV, JSON Lines, text, Parquet), the
//! tokenize op, the chunker, MLM and NSP masking, the run-config TOML, and checkpoint
//! loading (`config.json`, the safetensors header).
//!
//! A target returns normally on any input, valid or not: invalid input must come back
//! as an error, never a panic, a hang or a huge allocation. Where the output can be
//! checked cheaply it is (chunks are `[CLS] window [SEP]` of the right windows, masked
//! labels are the original ids, the fast tokenizer gives HF `tokenizers`' ids, a
//! loader's error names its file, a parsed config writes back to TOML that parses), so
//! a wrong answer fails like a crash.
//!
//! `fuzz/` runs them under libFuzzer (`cargo xtask fuzz`); the workspace tests run
//! every target on its seed corpus ([`seeds`], built from `../shared/data`) and on the
//! committed regression cases in `fuzz/regressions/<target>/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use berth_data::arrow::array::{Array, ArrayRef, ListArray, RecordBatch, StringArray};
use berth_data::berth_chunking::{ChunkConfig, SpecialTokens, chunk_ids, window_ranges};
use berth_data::berth_masking::{
    IGNORE_INDEX, MaskStrategy, MaskingTokens, MlmConfig, NspConfig, encode_pair, mask_tokens,
    nsp_pairs, rng_for, word_starts_from_continuations,
};
use berth_data::tokenizers::Tokenizer;
use berth_data::{BatchOp, CsvOptions, Format, LoadOptions, SampleBy, TokenizeConfig, TokenizeOp};

/// A fuzz target: any bytes in, no panic out.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus and
/// regression directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("csv", csv),
    ("jsonl", jsonl),
    ("text", text),
    ("parquet", parquet),
    ("tokenize", tokenize),
    ("chunk", chunk),
    ("mlm", mlm),
    ("nsp", nsp),
    ("config_toml", config_toml),
    ("model_config", model_config),
    ("safetensors", safetensors),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Where file-reading targets put their input: one directory per process, in
/// `/dev/shm` where there is one (the loaders read paths, not buffers).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("berth-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz scratch directory");
        dir
    })
}

/// Removes this process's scratch directory (tests call it when done).
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

fn write_scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("fuzz scratch file");
    path
}

/// Loads `body` as a file called `name` in `format`. Whatever fails must say which
/// file; whatever loads is read column by column as a task would.
fn load(name: &str, body: &[u8], format: Format) {
    let path = write_scratch(name, body);
    let spec = path.to_str().expect("utf-8 scratch path");
    match berth_data::load(spec, Some(format), &LoadOptions::in_memory()) {
        Ok(ds) => {
            for column in ds.column_names() {
                let col = ds.column(&column).expect("a listed column");
                assert_eq!(col.len(), ds.num_rows());
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "the error does not name {name}: {msg}");
        }
    }
}

/// CSV (first byte even) or TSV (odd), with a header row.
pub fn csv(data: &[u8]) {
    let Some((&flag, body)) = data.split_first() else {
        return;
    };
    let opts = if flag & 1 == 0 {
        CsvOptions::csv()
    } else {
        CsvOptions::tsv()
    };
    load("input.csv", body, Format::Csv(opts));
}

/// JSON Lines.
pub fn jsonl(data: &[u8]) {
    load("input.jsonl", data, Format::Json);
}

/// Plain text, a row per line (first byte even) or per paragraph (odd).
pub fn text(data: &[u8]) {
    let Some((&flag, body)) = data.split_first() else {
        return;
    };
    let by = if flag & 1 == 0 {
        SampleBy::Line
    } else {
        SampleBy::Paragraph
    };
    load("input.txt", body, Format::Text(by));
}

/// Parquet.
pub fn parquet(data: &[u8]) {
    // berth-data turns a panic inside the parquet reader into an error naming the
    // file, but libFuzzer's panic hook aborts before any unwinding: print instead.
    // A panic that escapes the target still aborts (libfuzzer-sys catches it at the
    // target's edge).
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    load("input.parquet", data, Format::Parquet);
}

/// The vocabulary of the fuzzing tokenizer: specials, letters, digits, punctuation,
/// their `##` continuations, a few words and pieces, and some non-ASCII.
fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let singles = ('a'..='z')
        .chain('0'..='9')
        .chain("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".chars())
        .chain("éüßøç中日本語한국".chars());
    for c in singles {
        v.push(c.to_string());
        v.push(format!("##{c}"));
    }
    for w in [
        "the", "a", "and", "of", "to", "is", "in", "it", "this", "film", "movie", "good", "bad",
        "un", "##aff", "##able", "##s", "##ing", "##ed", "##ly", "##er", "over", "##ion",
    ] {
        v.push(w.to_string());
    }
    v
}

/// A BERT WordPiece `tokenizer.json` over `vocab()`, as `bert-base-uncased` is built
/// (BertNormalizer lowercasing and stripping accents, BertPreTokenizer, BERT
/// post-processing).
pub fn tokenizer_json() -> String {
    let vocab = vocab();
    let ids: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.into()))
        .collect();
    let added: Vec<serde_json::Value> = vocab[..5]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
            "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": ids}
    })
    .to_string()
}

struct Tokenizers {
    hf: Tokenizer,
    fast: berth_wordpiece::WordPiece,
}

fn tokenizers() -> &'static Tokenizers {
    static T: OnceLock<Tokenizers> = OnceLock::new();
    T.get_or_init(|| {
        let json = tokenizer_json();
        Tokenizers {
            hf: json.parse().expect("fuzz tokenizer"),
            fast: berth_wordpiece::WordPiece::from_json(&json).expect("fuzz tokenizer"),
        }
    })
}

/// The tokenize op over the input's lines (first byte: bit 0 pairs, bit 1 no special
/// tokens, bit 2 truncation to `byte >> 3` ids), and, line by line, berth-wordpiece
/// against HF `tokenizers`: the same ids.
pub fn tokenize(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    let rows: Vec<&str> = text.split('\n').collect();
    let t = tokenizers();
    for row in &rows {
        let mut fast = Vec::new();
        t.fast.tokenize_into(row, &mut fast);
        let hf =
            t.hf.encode(*row, false)
                .expect("tokenizers encodes any text");
        assert_eq!(
            fast,
            hf.get_ids(),
            "berth-wordpiece and tokenizers differ on {row:?}"
        );
    }
    let mut cfg = TokenizeConfig::new("text");
    if flags & 1 != 0 {
        cfg.pair_column = Some("pair".into());
    }
    cfg.add_special_tokens = flags & 2 == 0;
    if flags & 4 != 0 {
        cfg.max_length = Some(usize::from(flags >> 3));
    }
    let max_length = cfg.max_length;
    // The op depends on the flags byte only: built once per value (building one
    // serializes and hashes the tokenizer, which would dominate every run).
    static OPS: OnceLock<Mutex<HashMap<u8, Option<Arc<TokenizeOp>>>>> = OnceLock::new();
    let op = OPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(flags)
        .or_insert_with(|| TokenizeOp::new(&t.hf, cfg).ok().map(Arc::new))
        .clone();
    let Some(op) = op else {
        return;
    };
    let pairs: Vec<&str> = rows.iter().rev().copied().collect();
    let batch = RecordBatch::try_from_iter([
        ("text", Arc::new(StringArray::from(rows)) as ArrayRef),
        ("pair", Arc::new(StringArray::from(pairs)) as ArrayRef),
    ])
    .expect("a batch of two text columns");
    let Ok(out) = op.apply(&batch, 0, "fuzz") else {
        return;
    };
    assert_eq!(out.num_rows(), batch.num_rows());
    let ids = out
        .column_by_name("input_ids")
        .and_then(|c| c.as_any().downcast_ref::<ListArray>().cloned())
        .expect("input_ids is a list column");
    // Below 3 ids there is no room for a pair's specials: how short it gets is the
    // tokenizer's business, only longer is wrong.
    if let Some(max) = max_length.filter(|&m| m >= 3) {
        for i in 0..ids.len() {
            assert!(ids.value(i).len() <= max, "row {i} longer than {max}");
        }
    }
}

/// Little-endian u16s of `bytes`, as token ids.
fn ids_of(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(2)
        .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
        .collect()
}

/// The chunker on ids from the input, its parameters from the first 6 bytes (odd
/// parameters included: a config that is refused is fine, a panic is not). Every
/// chunk is `[CLS] ids[window] [SEP]` of belt_nlp's windows.
pub fn chunk(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let (head, body) = data.split_at(6);
    let chunk_size = usize::from(head[0] % 72);
    let stride = usize::from(head[1] % 72);
    let minimal = usize::from(head[2] % 72);
    let maximal = (head[3] & 1 == 1).then(|| usize::from(head[3] >> 1) * 4);
    let max_positions = usize::from(head[4]);
    let special = SpecialTokens {
        cls: 70_000,
        sep: 70_001,
        pad: 70_002,
    };
    let Ok(cfg) = ChunkConfig::new(chunk_size, stride, minimal, maximal, max_positions) else {
        return;
    };
    let ids = ids_of(body);
    let chunks = chunk_ids(&ids, &cfg, &special);
    let windows = window_ranges(ids.len(), &cfg);
    assert!(!chunks.is_empty(), "every text has a chunk");
    let kept = maximal.map_or(ids.len(), |m| ids.len().min(m));
    assert_eq!(
        windows.is_empty(),
        kept == 0,
        "a non-empty text lost every window"
    );
    if windows.is_empty() {
        assert_eq!(chunks, vec![vec![special.cls, special.sep]]);
        return;
    }
    assert_eq!(chunks.len(), windows.len());
    for (c, w) in chunks.iter().zip(&windows) {
        assert!(c.len() <= cfg.chunk_size() + 2 && c.len() <= max_positions);
        assert_eq!(c[0], special.cls);
        assert_eq!(c[c.len() - 1], special.sep);
        assert_eq!(&c[1..c.len() - 1], &ids[w.clone()]);
    }
}

/// MLM masking of ids from the input; probabilities, strategy, whole-word, vocabulary
/// size and seed from the first 8 bytes. Labels are the original ids where selected,
/// nothing else changes, and specials are never selected.
pub fn mlm(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (head, body) = data.split_at(8);
    let p = |b: u8| f64::from(b) / 200.0; // past 1 sometimes: refused by validate
    let cfg = MlmConfig {
        mlm_probability: p(head[0]),
        mask_replace_prob: p(head[1]),
        random_replace_prob: p(head[2]),
        strategy: if head[3] & 1 == 0 {
            MaskStrategy::Hf
        } else {
            MaskStrategy::Plain
        },
        whole_word: head[3] & 2 != 0,
    };
    if cfg.validate().is_err() {
        return;
    }
    let tokens = MaskingTokens {
        mask: 4,
        pad: 0,
        special_ids: vec![1, 2, 3, 4],
        // The tokenizer's vocabulary holds at least the specials above.
        vocab_size: u32::from(head[4]).max(5),
    };
    let ids = ids_of(body);
    let starts = word_starts_from_continuations(&ids, |id| id % 3 == 0);
    let seed = u64::from(u16::from_le_bytes([head[5], head[6]]));
    let mut rng = rng_for(seed, u64::from(head[7]));
    let m = mask_tokens(&ids, Some(&starts), &cfg, &tokens, &mut rng);
    assert_eq!(m.input_ids.len(), ids.len());
    assert_eq!(m.labels.len(), ids.len());
    for (i, (&id, &label)) in ids.iter().zip(&m.labels).enumerate() {
        if label == IGNORE_INDEX {
            assert_eq!(m.input_ids[i], id, "position {i} changed without a label");
        } else {
            assert_eq!(label, i64::from(id), "position {i}'s label is not its id");
            assert!(id != tokens.pad && !tokens.special_ids.contains(&id));
        }
    }
}

/// NSP pairs from documents in the input (byte 0xFF ends a document, 0xFE a
/// sentence, other bytes are ids); max length, probabilities and packing from the
/// first 5 bytes. Every encoded pair fits the max length.
pub fn nsp(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let (head, body) = data.split_at(5);
    let cfg = NspConfig {
        max_length: usize::from(head[0]),
        next_probability: f64::from(head[1]) / 255.0,
        pack: head[2] & 1 == 1,
        short_seq_probability: f64::from(head[3]) / 255.0,
    };
    let documents: Vec<Vec<Vec<u32>>> = body
        .split(|&b| b == 0xFF)
        .map(|doc| {
            doc.split(|&b| b == 0xFE)
                .filter(|s| !s.is_empty())
                .map(|s| s.iter().map(|&b| u32::from(b) + 10).collect())
                .collect()
        })
        .collect();
    let mut rng = rng_for(u64::from(head[4]), 0);
    let Ok(pairs) = nsp_pairs(&documents, &cfg, &mut rng) else {
        return;
    };
    for pair in &pairs {
        assert!(pair.label <= 1);
        let (ids, types) = encode_pair(pair, 2, 3);
        assert_eq!(ids.len(), types.len());
        assert!(
            ids.len() <= cfg.max_length,
            "a pair of {} ids over max_length {}",
            ids.len(),
            cfg.max_length
        );
    }
}

/// A run config: the TOML, then after a NUL byte, `--set` overrides one per line.
/// What parses writes back to TOML that parses to the same config.
pub fn config_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (toml, sets) = text.split_once('\0').unwrap_or((&text, ""));
    let overrides: Vec<String> = sets.lines().map(str::to_string).collect();
    let Ok(config) = berth_trainer::RunConfig::from_toml(toml, &overrides, "fuzz.toml") else {
        return;
    };
    let written = config.to_toml().expect("a parsed config writes back");
    let again = berth_trainer::RunConfig::from_toml(&written, &[], "written.toml")
        .unwrap_or_else(|e| panic!("the written config does not parse: {e}\n{written}"));
    assert_eq!(
        again.to_toml().expect("writes back"),
        written,
        "the written config changed on a round trip"
    );
}

/// A model's `config.json`; what validates is built as a BERT (when it is small) and
/// run on a short input.
pub fn model_config(data: &[u8]) {
    let dir = scratch().join("model_config");
    std::fs::create_dir_all(&dir).expect("scratch");
    let path = dir.join("config.json");
    std::fs::write(&path, data).expect("scratch file");
    let cfg = match berth_model::EncoderConfig::from_file(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(e.to_string().contains("config.json"), "{e}");
            return;
        }
    };
    let _ = cfg.num_labels();
    let _ = cfg.head_dim();
    // A legitimately huge model is the user's to ask for; only small ones are built.
    let size = [
        cfg.vocab_size,
        cfg.max_position_embeddings,
        cfg.type_vocab_size,
        cfg.intermediate_size,
    ]
    .iter()
    .try_fold(0usize, |acc, &n| {
        acc.checked_add(n.checked_mul(cfg.hidden_size)?)
    })
    .and_then(|n| n.checked_mul(cfg.num_hidden_layers.max(1)));
    if size.is_none_or(|n| n > 50_000) {
        return;
    }
    let mut p = berth_model::Params::random(&candle_core::Device::Cpu, 0, cfg.initializer_range);
    let with_pooler = cfg.family == berth_model::Family::Bert;
    let Ok(model) = berth_model::Encoder::new(&cfg, &mut p, false, with_pooler) else {
        return;
    };
    let len = cfg.max_position_embeddings.min(4);
    if cfg.vocab_size == 0 || len == 0 {
        return;
    }
    let ids: Vec<u32> = (0..len as u32).map(|i| i % cfg.vocab_size as u32).collect();
    let input = candle_core::Tensor::from_vec(ids, (1, len), &candle_core::Device::Cpu)
        .expect("an input tensor");
    let _ = model.forward(&input, None, None, &berth_model::Mode::eval());
}

/// The tiny BERT every checkpoint-loading input is read as.
fn tiny_config_json() -> String {
    serde_json::to_string(&berth_model::EncoderConfig::tiny()).expect("tiny config")
}

/// A `model.safetensors` beside the tiny config: loading it and building the model
/// from it gives an error (a bad header, a wrong shape) or a model, never a panic or
/// an allocation past the file's own size.
pub fn safetensors(data: &[u8]) {
    let dir = scratch().join("safetensors");
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join("config.json"), tiny_config_json()).expect("scratch file");
    std::fs::write(dir.join("model.safetensors"), data).expect("scratch file");
    let Ok((cfg, mut params)) = berth_model::open_dir(&dir, &candle_core::Device::Cpu, 0) else {
        return;
    };
    if berth_model::Encoder::new(&cfg, &mut params, true, true).is_ok() {
        let _ = params.finish();
    }
}

/// The seed corpus of `target`, built from `../shared/data` (`BERTH_DATA_DIR`) and
/// the repository's own configs: small pieces of real inputs, each under 1 MiB.
pub fn seeds(target: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let data = berth_testkit::data_dir_path();
    let read = |rel: &str| {
        let p = data.join(rel);
        std::fs::read(&p)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let lines = |bytes: &[u8], n: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for line in bytes.split_inclusive(|&b| b == b'\n').take(n) {
            out.extend_from_slice(line);
        }
        out
    };
    let prefixed = |flag: u8, body: &[u8]| [&[flag][..], body].concat();
    let imdb = read("imdb/sample/train.jsonl")?;
    let mrpc = read("mrpc/train.tsv")?;
    let meditations = read("meditations/meditations.txt")?;
    let imdb_csv = imdb_as_csv(&lines(&imdb, 6));
    Ok(match target {
        "csv" => vec![
            prefixed(1, &lines(&mrpc, 8)),
            prefixed(0, &imdb_csv),
            prefixed(0, b"text,label\n\"a \"\"quoted\"\" one\",1\n"),
        ],
        "jsonl" => vec![
            lines(&imdb, 4),
            b"{\"text\": \"x\", \"label\": [1, 2]}\n\n{}\n".to_vec(),
        ],
        "text" => vec![
            prefixed(0, &lines(&meditations, 20)),
            prefixed(1, &lines(&meditations, 40)),
        ],
        "parquet" => vec![parquet_seed(&lines(&imdb, 5))?],
        "tokenize" => vec![
            prefixed(0, &lines(&meditations, 10)),
            prefixed(1 | 4 | (12 << 3), &lines(&meditations, 4)),
            prefixed(
                2,
                "Ünaffable ÉCOLE 中文 naïve [CLS] x\u{0}y\u{200b}z".as_bytes(),
            ),
        ],
        "chunk" => vec![
            [&[12, 6, 2, 0, 40, 0][..], &lines(&imdb, 1)[..200]].concat(),
            [&[10, 10, 1, 9, 12, 0][..], &meditations[..300]].concat(),
        ],
        "mlm" => vec![
            [&[30, 160, 20, 0, 64, 1, 0, 0][..], &meditations[..400]].concat(),
            [&[200, 200, 0, 2, 0, 7, 0, 3][..], &meditations[400..600]].concat(),
        ],
        "nsp" => vec![
            nsp_seed(&[64, 128, 0, 25, 1], &meditations[..3000]),
            nsp_seed(&[32, 128, 1, 25, 2], &meditations[3000..6000]),
        ],
        "config_toml" => {
            let root = berth_testkit::workspace_root().join("configs");
            let mut out = Vec::new();
            let mut names: Vec<PathBuf> = std::fs::read_dir(&root)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            names.sort();
            for p in names
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            {
                out.push(std::fs::read(p)?);
            }
            out.push(b"task = \"classification\"\n\0lr=3e-5\nepochs=2\n".to_vec());
            out
        }
        "model_config" => vec![
            tiny_config_json().into_bytes(),
            serde_json::json!({"vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 6,
                "id2label": {"0": "neg", "1": "pos"}})
            .to_string()
            .into_bytes(),
        ],
        "safetensors" => vec![tiny_safetensors()?],
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no fuzz target '{other}'"),
            ));
        }
    })
}

fn imdb_as_csv(jsonl: &[u8]) -> Vec<u8> {
    let mut out = b"text,label\n".to_vec();
    for line in String::from_utf8_lossy(jsonl).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let text = v["text"].as_str().unwrap_or_default().replace('"', "\"\"");
        out.extend_from_slice(format!("\"{text}\",{}\n", v["label"]).as_bytes());
    }
    out
}

fn nsp_seed(head: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = head.to_vec();
    for b in text {
        out.push(match b {
            b'\n' => 0xFF,
            b'.' => 0xFE,
            b => *b,
        });
    }
    out
}

fn parquet_seed(jsonl: &[u8]) -> std::io::Result<Vec<u8>> {
    let to_io = |e: berth_data::DataError| std::io::Error::other(e.to_string());
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("rows.jsonl");
    std::fs::write(&src, jsonl)?;
    let ds = berth_data::load(
        src.to_str().unwrap_or_default(),
        None,
        &LoadOptions::in_memory(),
    )
    .map_err(to_io)?;
    let out = dir.path().join("rows.parquet");
    ds.to_parquet(&out).map_err(to_io)?;
    std::fs::read(out)
}

fn tiny_safetensors() -> std::io::Result<Vec<u8>> {
    let to_io = |e: berth_model::ModelError| std::io::Error::other(e.to_string());
    let cfg = berth_model::EncoderConfig::tiny();
    let mut p = berth_model::Params::random(&candle_core::Device::Cpu, 7, cfg.initializer_range);
    berth_model::Encoder::new(&cfg, &mut p, true, true).map_err(to_io)?;
    let (varmap, _) = p.finish();
    let dir = tempfile::tempdir()?;
    berth_model::save(&dir.path().join("m"), &cfg, "BertModel", &varmap).map_err(to_io)?;
    std::fs::read(dir.path().join("m/model.safetensors"))
}

/// The committed regression inputs of `target` (`fuzz/regressions/<target>/`).
pub fn regressions(target: &str) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = berth_testkit::workspace_root()
        .join("fuzz/regressions")
        .join(target);
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    for p in paths {
        let bytes = std::fs::read(&p)?;
        out.push((p, bytes));
    }
    Ok(out)
}

//! `berth tokenize` end to end on the shared datasets, and its errors on bad input.

mod common;

use std::path::Path;

use common::{berth_output as berth, jsonl_rows};

#[test]
fn tokenizes_mrpc_pairs() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mrpc.jsonl");
    let o = berth(
        &[
            "tokenize",
            "--tokenizer",
            model.to_str().unwrap(),
            "--input",
            data.join("mrpc/train.tsv").to_str().unwrap(),
            "--text-column",
            "#1 String",
            "--pair-column",
            "#2 String",
            "--output",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = jsonl_rows(&out);
    assert_eq!(rows.len(), 3_668);
    let first = &rows[0];
    assert_eq!(first["Quality"], 1);
    let ids = first["input_ids"].as_array().unwrap();
    let types = first["token_type_ids"].as_array().unwrap();
    let mask = first["attention_mask"].as_array().unwrap();
    assert_eq!(ids.len(), types.len());
    assert_eq!(ids.len(), mask.len());
    assert_eq!(ids[0], 101);
    assert_eq!(ids[ids.len() - 1], 102);
    // Two [SEP]s: the pair boundary is where token types switch to 1.
    let switch = types.iter().position(|t| t == 1).unwrap();
    assert_eq!(ids[switch - 1], 102);
}

#[test]
fn tokenizes_all_of_imdb_train_to_parquet() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imdb.parquet");
    let o = berth(
        &[
            "tokenize",
            "--tokenizer",
            model.to_str().unwrap(),
            "--input",
            data.join("imdb/train.parquet").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ds = berth_data::load_parquet(out.to_str().unwrap(), &berth_data::LoadOptions::in_memory())
        .unwrap();
    assert_eq!(ds.num_rows(), 25_000);
    assert_eq!(
        ds.column_names(),
        vec![
            "text",
            "label",
            "input_ids",
            "token_type_ids",
            "attention_mask"
        ]
    );
}

#[test]
fn bad_input_names_file_row_and_column_and_writes_nothing() {
    let Some(model) = berth_testkit::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let model = model.to_str().unwrap();
    let run = |input: &Path, extra: &[&str]| {
        let mut args = vec![
            "tokenize",
            "--tokenizer",
            model,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = berth(&args, tmp.path());
        assert!(!o.status.success());
        assert!(!out.exists(), "no partial output");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };

    let missing = tmp.path().join("missing.jsonl");
    assert!(run(&missing, &[]).contains("missing.jsonl"));

    let rows = tmp.path().join("rows.jsonl");
    std::fs::write(&rows, "{\"text\": \"fine\"}\n{\"text\": \"also\"}\n").unwrap();
    let err = run(&rows, &["--text-column", "body"]);
    assert!(err.contains("rows.jsonl: column 'body' not found"), "{err}");

    std::fs::write(&rows, "{\"text\": \"fine\"}\n{\"text\": 5}\n").unwrap();
    let err = run(&rows, &[]);
    assert!(
        err.contains("rows.jsonl: line 2: ") && err.contains("'text'"),
        "{err}"
    );

    std::fs::write(&rows, "{\"text\": \"fine\"}\n{\"text\": null}\n").unwrap();
    let err = run(&rows, &[]);
    assert!(
        err.contains("rows.jsonl: line 2, column 'text': text is null"),
        "{err}"
    );

    let nums = tmp.path().join("nums.csv");
    std::fs::write(&nums, "text,label\n1,0\n2,1\n").unwrap();
    let err = run(&nums, &[]);
    assert!(
        err.contains("nums.csv: column 'text' must be a string column, found Int64"),
        "{err}"
    );

    let broken = tmp.path().join("broken.tsv");
    std::fs::write(&broken, b"text\tlabel\nok\t1\nbad \xff\t0\n").unwrap();
    let err = run(&broken, &[]);
    assert!(
        err.contains("broken.tsv: line 3, column 'text': invalid UTF-8"),
        "{err}"
    );
}

/// A tokenizer from a hub at `HF_ENDPOINT`, downloaded by `berth tokenize` into an
/// empty cache: in a log (stderr a pipe) the download is told in plain lines; on a
/// terminal (`script` runs berth on a pseudo-terminal) hf-hub's bar is drawn instead.
#[test]
fn hub_downloads_show_lines_in_a_log_and_a_bar_on_a_terminal() {
    let Some(model) = berth_testkit::minilm_dir() else {
        return;
    };
    let tokenizer = std::fs::read(model.join("tokenizer.json")).unwrap();
    let (endpoint, seen) = berth_testkit::fake_hub(
        "owner/name",
        "main",
        "0123456789abcdef0123456789abcdef01234567",
        vec![("tokenizer.json".into(), tokenizer)],
    );
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"Hello, world.\"}\n").unwrap();
    let berth = |hub_cache: &str, out: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        c.args(["tokenize", "--tokenizer", "owner/name", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(tmp.path().join(out))
            .env("BERTH_CACHE", tmp.path())
            .env("HF_HUB_CACHE", tmp.path().join(hub_cache))
            .env("HF_ENDPOINT", &endpoint)
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN");
        c
    };

    let o = berth("hub-log", "log.jsonl").output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let count = |what: &str| log.lines().filter(|l| l.starts_with(what)).count();
    assert_eq!(
        (
            count("downloading owner/name tokenizer.json ("),
            count("downloaded owner/name tokenizer.json (")
        ),
        (1, 1),
        "one start and one end line for the download in:\n{log}"
    );
    assert_eq!(jsonl_rows(&tmp.path().join("log.jsonl")).len(), 1);

    let script = Path::new("/usr/bin/script");
    assert!(
        script.exists(),
        "this test needs `script` (Debian's essential bsdutils) for a terminal"
    );
    let run = berth("hub-terminal", "terminal.jsonl");
    let line: Vec<String> = std::iter::once(run.get_program())
        .chain(run.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let mut on_a_terminal = std::process::Command::new(script);
    on_a_terminal
        .args(["-qec", &line.join(" "), "/dev/null"])
        .envs(run.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    let o = on_a_terminal.output().unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    // hf-hub's bar: "tokenizer.json [00:00:00] [=====] 695.00 KiB/695.00 KiB ...".
    assert!(
        screen.contains("tokenizer.json [00:00:") && screen.contains("KiB/"),
        "no download bar on the terminal:\n{screen:?}"
    );
    assert!(!screen.contains("downloading owner/name"), "{screen:?}");
    assert_eq!(jsonl_rows(&tmp.path().join("terminal.jsonl")).len(), 1);
    // Each run fetched the file into its own empty cache.
    let downloads = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("GET /owner/name/resolve/main/tokenizer.json"))
        .count();
    assert_eq!(downloads, 4, "a range and a download per run");
}

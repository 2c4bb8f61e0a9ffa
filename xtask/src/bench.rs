//! `cargo xtask bench train | chunk | long-docs`: Berth beside its reference, in one
//! invocation (benches/README.md has the numbers).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::fixtures::fixtures;
use crate::util::{cargo, release_binary, run, timed, workspace_root};

#[derive(Subcommand)]
pub(crate) enum Bench {
    /// Training throughput (the `bench-train` binary), and with `--torch` the
    /// PyTorch reference (`benches/torch_reference.py`) in the same invocation.
    Train(TrainArgs),
    /// `berth chunk` on all of IMDB train, then HF `datasets` doing the same
    /// (`benches/hf_chunk_reference.py`), and the ratio.
    Chunk(ChunkArgs),
    /// Peak RSS of training and prediction on long texts, with and without
    /// `chunk_group_size`.
    LongDocs(LongDocsArgs),
}

pub(crate) fn bench(b: Bench) -> Result<()> {
    match b {
        Bench::Train(a) => bench_train(a),
        Bench::Chunk(a) => bench_chunk(a),
        Bench::LongDocs(a) => bench_long_docs(a),
    }
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// cpu or cuda.
    #[arg(long)]
    device: Option<String>,
    /// f32 or bf16.
    #[arg(long)]
    precision: Option<String>,
    /// Timed steps per shape.
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed steps first.
    #[arg(long)]
    warmup: Option<usize>,
    /// bert-base, minilm-l6 or minilm-l6-mlm (default: all).
    #[arg(long)]
    config: Option<String>,
    /// Only the shapes of this sequence length (Berth's side; to profile one).
    #[arg(long)]
    seq: Option<usize>,
    /// A python with torch and transformers: run the PyTorch reference too.
    #[arg(long)]
    torch: Option<String>,
}

/// Berth's training-throughput bench, and with `--torch` the PyTorch reference with
/// the same options, so the two are measured side by side on the same machine.
fn bench_train(a: TrainArgs) -> Result<()> {
    let mut shared: Vec<String> = Vec::new();
    for (flag, value) in [
        ("--device", a.device.clone()),
        ("--precision", a.precision),
        ("--steps", a.steps.map(|n| n.to_string())),
        ("--warmup", a.warmup.map(|n| n.to_string())),
        ("--config", a.config),
    ] {
        if let Some(v) = value {
            shared.extend([flag.to_string(), v]);
        }
    }
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "berth-benches",
        "--bin",
        "bench-train",
    ]);
    if a.device.as_deref().is_some_and(|d| d.starts_with("cuda")) {
        cmd.args(["--features", "cuda"]);
    }
    cmd.arg("--").args(&shared);
    if let Some(seq) = a.seq {
        cmd.args(["--seq", &seq.to_string()]);
    }
    run(&mut cmd)?;
    if let Some(python) = a.torch {
        run(Command::new(python)
            .arg(workspace_root().join("benches/torch_reference.py"))
            .args(&shared))?;
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct ChunkArgs {
    /// A python with `datasets` and `transformers`: run the HF reference too.
    #[arg(long)]
    python: Option<String>,
    /// Read the file N times (N shards of it), for the memory goal.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Passed to `datasets.map` (default: one process, as a user writes it).
    #[arg(long)]
    num_proc: Option<String>,
}

/// `berth chunk` on all of IMDB train (parquet in, belt chunks 510/510/1, parquet
/// out), then HF `datasets` doing the same, in one invocation, and the ratio.
fn bench_chunk(a: ChunkArgs) -> Result<()> {
    let repeat = a.repeat;
    let model = fixtures()?;
    let data = std::env::var_os("BERTH_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    let train = data
        .join("imdb/train.parquet")
        .canonicalize()
        .with_context(|| format!("no IMDB train in {}", data.display()))?;
    let berth = build_berth()?;
    let work = std::env::temp_dir().join(format!("berth-bench-chunk-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // N shards of the same file: both sides read them as one dataset.
    let input = if repeat > 1 {
        let dir = work.join("shards");
        std::fs::create_dir_all(&dir)?;
        for i in 0..repeat {
            std::os::unix::fs::symlink(&train, dir.join(format!("shard-{i:03}.parquet")))?;
        }
        dir
    } else {
        train.clone()
    };
    println!("bench chunk: IMDB train x{repeat}, MiniLM tokenizer, chunks 510/510/1");
    let (b_wall, b_rss) = timed(
        Command::new(&berth)
            .args(["chunk", "--tokenizer"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(work.join("berth.parquet")),
    )?;
    let mut rows = vec![("berth chunk".to_string(), b_wall, b_rss)];
    if let Some(python) = &a.python {
        let mut cmd = Command::new(python);
        cmd.arg(workspace_root().join("benches/hf_chunk_reference.py"))
            .arg("--input")
            .arg(&train)
            .arg("--tokenizer")
            .arg(&model)
            .arg("--repeat")
            .arg(repeat.to_string())
            .arg("--output")
            .arg(work.join("hf.parquet"));
        if let Some(n) = &a.num_proc {
            cmd.args(["--num-proc", n]);
        }
        let (h_wall, h_rss) = timed(&mut cmd)?;
        rows.push(("HF datasets map".to_string(), h_wall, h_rss));
    }
    print_table(&rows);
    for (what, wall, rss) in &rows {
        println!(
            "{{\"bench\":\"chunk\",\"impl\":{what:?},\"repeat\":{repeat},\"wall_s\":{wall},\"peak_rss_mib\":{rss:.1}}}"
        );
    }
    if let [(_, b, _), (_, h, _)] = rows[..] {
        println!("berth / HF speed: {:.2}x", h / b);
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

#[derive(Args)]
pub(crate) struct LongDocsArgs {
    /// Chunks per long text.
    #[arg(long, default_value_t = 200)]
    chunks: usize,
    /// `chunk_group_size` of the grouped runs.
    #[arg(long, default_value_t = 4)]
    group: usize,
    /// Leave out the ungrouped baselines.
    #[arg(long)]
    no_baseline: bool,
}

/// Peak RSS of `berth train` (chunk classification, MiniLM, chunks of 126
/// word-pieces) with `chunk_group_size = G` on texts of 4 chunks and on texts of N
/// chunks, and, as the baseline, N-chunk texts without grouping (the goal: the
/// N-chunk peak within 1.3x of the 4-chunk peak); then `berth predict` with the
/// trained run on both.
fn bench_long_docs(a: LongDocsArgs) -> Result<()> {
    let model = fixtures()?;
    let berth = build_berth()?;
    let work = std::env::temp_dir().join(format!("berth-bench-long-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let short = long_texts(&work, "short.jsonl", 4)?;
    let long = long_texts(&work, "long.jsonl", a.chunks)?;
    let config = work.join("long-docs.toml");
    std::fs::write(
        &config,
        format!(
            "task = \"chunk_classification\"\nmodel = {:?}\n[data]\ntrain = \"unused\"\n\
             [chunking]\nchunk_size = 126\nstride = 126\n[training]\noutput_dir = {:?}\n\
             max_steps = 2\nper_device_train_batch_size = 1\nsave_strategy = \"no\"\n\
             logging_steps = 1\ndisable_tqdm = true\nseed = 42\ndevice = \"cpu\"\n\
             overwrite_output_dir = true\n",
            model.display().to_string(),
            work.join("run").display().to_string(),
        ),
    )?;
    let (chunks, group) = (a.chunks, a.group);
    let train = |data: &Path, group: Option<usize>| -> Result<(f64, f64)> {
        let mut cmd = Command::new(&berth);
        cmd.arg("train").arg("--config").arg(&config);
        cmd.arg("--set")
            .arg(format!("data.train={:?}", data.display().to_string()));
        if let Some(g) = group {
            cmd.arg("--set")
                .arg(format!("chunking.chunk_group_size={g}"));
        }
        timed(&mut cmd)
    };
    println!("bench long-docs: MiniLM, chunks of 126, 2 steps of 1 text, chunk_group_size {group}");
    let mut rows = vec![
        (4, Some(group), train(&short, Some(group))?),
        (chunks, Some(group), train(&long, Some(group))?),
    ];
    if !a.no_baseline {
        rows.push((chunks, None, train(&long, None)?));
    }
    print_table(
        &rows
            .iter()
            .map(|(n, g, (wall, rss))| {
                let g = g.map_or("ungrouped".to_string(), |g| format!("group {g}"));
                (format!("{n} chunks, {g}"), *wall, *rss)
            })
            .collect::<Vec<_>>(),
    );
    for (n, g, (wall, rss)) in &rows {
        let g = g.map_or("null".to_string(), |g| g.to_string());
        println!(
            "{{\"bench\":\"long-docs\",\"chunks_per_text\":{n},\"chunk_group_size\":{g},\"wall_s\":{wall},\"peak_rss_mib\":{rss:.1}}}"
        );
    }
    let ratio = rows[1].2.1 / rows[0].2.1;
    println!("peak RSS, {chunks} chunks / 4 chunks with group {group}: {ratio:.2}x (goal <= 1.3x)");
    predict_long_docs(&berth, &work, (&short, &long), chunks, !a.no_baseline)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Prediction with the trained run (`work/run`), no chunk_group_size: a batch's
/// chunks run `--batch-size` at a time whatever a text's length; the baseline is a
/// batch size that holds every chunk in one forward (how prediction ran before).
fn predict_long_docs(
    berth: &Path,
    work: &Path,
    (short, long): (&Path, &Path),
    chunks: usize,
    baseline: bool,
) -> Result<()> {
    let predict = |data: &Path, batch: usize| -> Result<(f64, f64)> {
        let mut cmd = Command::new(berth);
        cmd.arg("predict")
            .arg("--model")
            .arg(work.join("run"))
            .arg("--input")
            .arg(data)
            .arg("--output")
            .arg(work.join("predicted.jsonl"))
            .args(["--chunk-size", "126", "--stride", "126", "--device", "cpu"])
            .args(["--batch-size", &batch.to_string()]);
        timed(&mut cmd)
    };
    let mut runs = vec![
        (
            "predict 4 chunks, batch 32".to_string(),
            4,
            32,
            predict(short, 32)?,
        ),
        (
            format!("predict {chunks} chunks, batch 32 (32 chunks per forward)"),
            chunks,
            32,
            predict(long, 32)?,
        ),
    ];
    if baseline {
        let all = 2 * chunks;
        runs.push((
            format!("predict {chunks} chunks, batch {all} (every chunk in one forward)"),
            chunks,
            all,
            predict(long, all)?,
        ));
    }
    print_table(
        &runs
            .iter()
            .map(|(what, _, _, (wall, rss))| (what.clone(), *wall, *rss))
            .collect::<Vec<_>>(),
    );
    for (_, n, b, (wall, rss)) in &runs {
        println!(
            "{{\"bench\":\"long-docs-predict\",\"chunks_per_text\":{n},\"batch_size\":{b},\"wall_s\":{wall},\"peak_rss_mib\":{rss:.1}}}"
        );
    }
    let ratio = runs[1].3.1 / runs[0].3.1;
    println!("predict peak RSS, {chunks} chunks / 4 chunks: {ratio:.2}x");
    Ok(())
}

/// Two labelled texts of `chunks` x 126 words, each word one word-piece in
/// bert-base-uncased's vocabulary, so each text is `chunks` chunks of 126.
fn long_texts(work: &Path, name: &str, chunks: usize) -> Result<PathBuf> {
    const WORDS: [&str; 12] = [
        "the", "cat", "dog", "house", "tree", "water", "good", "bad", "movie", "film", "great",
        "time",
    ];
    let path = work.join(name);
    let mut out = String::new();
    for t in 0..2usize {
        let text: Vec<&str> = (0..126 * chunks)
            .map(|i| WORDS[(i * 7 + t * 5 + i / 13) % WORDS.len()])
            .collect();
        out.push_str(&format!(
            "{{\"text\": \"{}\", \"label\": {t}}}\n",
            text.join(" ")
        ));
    }
    std::fs::write(&path, out)?;
    Ok(path)
}

/// `berth` in release, where cargo puts it.
fn build_berth() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "--quiet", "-p", "berth-cli"]))?;
    release_binary("berth")
}

/// A markdown table of (what, wall seconds, peak RSS MiB) rows.
fn print_table(rows: &[(String, f64, f64)]) {
    println!("\n| run | wall s | peak RSS MiB |\n| --- | --- | --- |");
    for (what, wall, rss) in rows {
        println!("| {what} | {wall:.2} | {rss:.0} |");
    }
}

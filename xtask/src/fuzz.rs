//! `cargo xtask fuzz`: libFuzzer over every fuzz target.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, release_binary, run, workspace_root};

/// Runs each fuzz target (all of fuzz/fuzz_targets by default) under libFuzzer,
/// through cargo-fuzz (installed when missing; built on the stable toolchain with
/// RUSTC_BOOTSTRAP=1), on its corpus in `fuzz/corpus/<target>` (seeded from
/// ../shared/data), for N seconds or N executions, whichever comes first. Inputs are
/// capped at 1 MiB, memory at 2 GiB RSS, each input at 10 s. Prints a table and a
/// JSON line per target; fails if any target crashed, hung or ran out of memory (the
/// input is kept under `fuzz/artifacts/<target>`).
#[derive(clap::Args)]
pub(crate) struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Executions per target (at most).
    #[arg(long)]
    runs: Option<u64>,
    /// Targets run at a time.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Which targets (default: all).
    targets: Vec<String>,
}

/// What one target's run came to: executions, seconds, peak RSS (MiB), and why it
/// failed if it did.
struct Outcome {
    executions: u64,
    seconds: f64,
    peak_mib: u64,
    failure: Option<String>,
}

pub(crate) fn fuzz(a: FuzzArgs) -> Result<()> {
    let root = workspace_root();
    let targets = targets(&root, a.targets)?;
    let has_cargo_fuzz = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        eprintln!("fuzz: cargo install cargo-fuzz");
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let corpus = root.join("fuzz/corpus");
    // Built with the whole workspace's features, so the test build's artifacts serve.
    run(cargo().args(["build", "--quiet", "--workspace", "--bin", "fuzz-seeds"]))?;
    let seeds = release_binary("fuzz-seeds")?
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("debug/fuzz-seeds"))
        .context("the target directory")?;
    run(Command::new(seeds).arg(&corpus))?;
    eprintln!("fuzz: building {} targets", targets.len());
    run(fuzz_cmd().args(["build", "-s", "none"]))?;
    println!(
        "{:<14} {:>12} {:>9} {:>10} {:>9}  result",
        "target", "executions", "seconds", "exec/s", "peak MiB"
    );
    // One libFuzzer process per target, `jobs` at a time; each reports when done.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..a.jobs.max(1).min(targets.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(t) = targets.get(i) else { break };
                    let r = run_target(&root, &corpus, t, a.seconds, a.runs);
                    let mut done = results.lock().unwrap_or_else(|e| e.into_inner());
                    report(t, &r);
                    done.push((t.clone(), r.is_ok_and(|r| r.failure.is_none())));
                }
            });
        }
    });
    let failed: Vec<String> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t)
        .collect();
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The targets asked for (all of fuzz/fuzz_targets when none), each checked to exist.
fn targets(root: &Path, asked: Vec<String>) -> Result<Vec<String>> {
    let mut known: Vec<String> = std::fs::read_dir(root.join("fuzz/fuzz_targets"))
        .context("reading fuzz/fuzz_targets")?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    known.sort();
    if asked.is_empty() {
        return Ok(known);
    }
    if let Some(t) = asked.iter().find(|t| !known.contains(t)) {
        bail!("no fuzz target '{t}' (targets: {})", known.join(", "));
    }
    Ok(asked)
}

/// `cargo fuzz` on the stable toolchain.
fn fuzz_cmd() -> Command {
    let mut c = cargo();
    c.env("RUSTC_BOOTSTRAP", "1").args(["fuzz"]);
    c
}

/// One libFuzzer process over target `t`'s corpus; a failure's log is kept under
/// fuzz/artifacts.
fn run_target(
    root: &Path,
    corpus: &Path,
    t: &str,
    seconds: u64,
    runs: Option<u64>,
) -> Result<Outcome> {
    let mut cmd = fuzz_cmd();
    cmd.args(["run", "-s", "none", t])
        .arg(corpus.join(t))
        .args([
            "--",
            "-max_len=1048576",
            "-rss_limit_mb=2048",
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .arg(format!("-max_total_time={seconds}"));
    if let Some(n) = runs {
        cmd.arg(format!("-runs={n}"));
    }
    let started = std::time::Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("running the fuzz target {t}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |key: &str| -> u64 {
        log.lines()
            .filter_map(|l| l.strip_prefix(key))
            .filter_map(|v| v.trim().trim_start_matches(':').trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    let mut outcome = Outcome {
        executions: stat("stat::number_of_executed_units"),
        seconds,
        peak_mib: stat("stat::peak_rss_mb"),
        failure: None,
    };
    if out.status.success() {
        return Ok(outcome);
    }
    let log_path = root.join("fuzz/artifacts").join(format!("{t}.log"));
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&log_path, log.as_bytes()).ok();
    outcome.failure = Some(format!("{} (log: {})", why(&log), log_path.display()));
    Ok(outcome)
}

/// What a failed run's log says went wrong: the panic's place and message, else
/// libFuzzer's error line.
fn why(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    match lines.iter().position(|l| l.contains("panicked at")) {
        // The panic's place, then its message on the next line.
        Some(i) => lines[i..lines.len().min(i + 2)]
            .join(" ")
            .trim()
            .to_string(),
        None => lines
            .iter()
            .find(|l| l.contains("ERROR: libFuzzer"))
            .unwrap_or(&"failed")
            .trim()
            .to_string(),
    }
}

/// A table row and a JSON line for target `t`.
fn report(t: &str, r: &Result<Outcome>) {
    match r {
        Ok(o) => {
            let result = o
                .failure
                .as_ref()
                .map_or("ok".to_string(), |w| format!("FAILED: {w}"));
            println!(
                "{t:<14} {:>12} {:>9.0} {:>10.0} {:>9}  {result}",
                o.executions,
                o.seconds,
                o.executions as f64 / o.seconds.max(1e-9),
                o.peak_mib
            );
            println!(
                "{{\"bench\": \"fuzz\", \"target\": \"{t}\", \"executions\": {}, \"seconds\": {:.1}, \"peak_rss_mb\": {}, \"ok\": {}}}",
                o.executions,
                o.seconds,
                o.peak_mib,
                o.failure.is_none()
            );
        }
        Err(e) => println!("{t:<14} FAILED: {e:#}"),
    }
}

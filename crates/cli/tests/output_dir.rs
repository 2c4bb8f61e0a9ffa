//! One run per output directory: a second `berth train` on a directory in use is
//! refused before it reads anything, a fresh run into a finished run's directory is
//! refused without changing a file (or replaces it with `overwrite_output_dir`, the
//! old run put back whole if the new one dies before its first checkpoint), and
//! `--resume` refuses a checkpoint trained with another configuration.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

/// The tests' runs take turns: the concurrency under test is two runs on one
/// directory, not the machine's cores shared with another test.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every file and directory under `dir` with its bytes, the lock file aside.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if rel == berth_trainer::LOCK_FILE {
                continue;
            }
            if p.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                stack.push(p);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn names(dir: &Path) -> Vec<String> {
    tree(dir).into_iter().map(|f| f.0).collect()
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    cache: PathBuf,
    config: PathBuf,
}

/// A 64-pair MRPC classification run of a tiny random BERT: `max_steps` 6, a
/// checkpoint every 2 steps, seed 42; `output_dir` is given per run with `--set`.
fn setup() -> Option<Setup> {
    // Missing fixtures panic in CI (BERTH_REQUIRE_FIXTURES) and are named elsewhere.
    let (Some(data), Some(minilm)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir())
    else {
        return None;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let model = common::tiny_model(&root, &minilm);
    let config = root.join("run.toml");
    std::fs::write(
        &config,
        format!(
            r##"task = "classification"
model = {model:?}
{data}[training]
max_steps = 6
per_device_train_batch_size = 8
learning_rate = 1e-3
save_strategy = "steps"
save_steps = 2
logging_steps = 1
seed = 42
disable_tqdm = true
"##,
            model = model.display().to_string(),
            data = common::mrpc_data(&data, 48, 64, 16),
        ),
    )
    .unwrap();
    Some(Setup {
        cache: root.join("cache"),
        _tmp: tmp,
        root,
        config,
    })
}

impl Setup {
    fn train(&self, out: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.args(["train", "--config"])
            .arg(&self.config)
            .arg("--set")
            .arg(format!("output_dir={:?}", out.display().to_string()))
            .args(extra)
            .env("BERTH_CACHE", &self.cache)
            .env("HF_HUB_OFFLINE", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, out: &Path, extra: &[&str]) -> Output {
        self.train(out, extra).output().unwrap()
    }

    fn ok(&self, out: &Path, extra: &[&str]) {
        let o = self.run(out, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// The child's stderr lines as they come, each with the time it was read.
fn lines(child: &mut Child) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `marker` (panicking with what came when the run ends
/// first), then kills the child with SIGKILL.
fn kill_at(mut child: Child, marker: &str) {
    let rx = lines(&mut child);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok((_, line)) if line.contains(marker) => break,
            Ok((_, line)) => seen.push(line),
            Err(_) => panic!("no '{marker}' before the run ended:\n{}", seen.join("\n")),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The step records of `metrics.jsonl` (those with a training loss), by step.
fn logged_steps(out: &Path) -> Vec<u64> {
    common::jsonl_rows(&out.join("metrics.jsonl"))
        .iter()
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn two_runs_on_one_directory_one_runs_and_the_other_is_refused_naming_it() {
    let _one = ONE_AT_A_TIME.lock();
    let Some(s) = setup() else { return };
    // Steps of 32 pairs, so the winner's first step takes long enough (a few hundred
    // ms) that a refusal at the start, before any data, is seen before it however
    // the two processes are scheduled.
    let big = ["--set", "per_device_train_batch_size=32"];
    let solo = s.root.join("solo");
    s.ok(&solo, &big);

    let out = s.root.join("shared");
    let mut a = s.train(&out, &big).spawn().unwrap();
    let mut b = s
        .train(&out, &[&big[..], &["--set", "seed=7"]].concat())
        .spawn()
        .unwrap();
    let (pa, pb) = (a.id(), b.id());
    let (ra, rb) = (lines(&mut a), lines(&mut b));
    let (sa, sb) = (a.wait().unwrap(), b.wait().unwrap());
    let ended = Instant::now();
    let collect = |rx: mpsc::Receiver<(Instant, String)>| rx.into_iter().collect::<Vec<_>>();
    let (la, lb) = (collect(ra), collect(rb));
    assert!(
        sa.success() != sb.success(),
        "exactly one run may succeed: {sa} and {sb}\nA:\n{}\nB:\n{}",
        la.iter()
            .map(|l| l.1.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        lb.iter()
            .map(|l| l.1.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let (winner, wlog, llog) = if sa.success() {
        (pa, &la, &lb)
    } else {
        (pb, &lb, &la)
    };
    let refusal = llog
        .iter()
        .map(|l| l.1.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        refusal.contains("in use by another run")
            && refusal.contains(&format!("pid {winner}"))
            && refusal.contains(&out.display().to_string()),
        "{refusal}"
    );
    // Refused before the winner's first step: its last line came before that.
    let refused_at = llog.last().map_or(ended, |l| l.0);
    let first_step = wlog
        .iter()
        .find(|l| l.1.contains(" grad_norm "))
        .expect("the winner logs its steps")
        .0;
    let t0 = wlog
        .first()
        .unwrap()
        .0
        .min(llog.first().map_or(ended, |l| l.0));
    let timeline = |log: &[(Instant, String)]| {
        log.iter()
            .map(|l| format!("{:>8.3}s {}", (l.0 - t0).as_secs_f64(), l.1))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        refused_at < first_step,
        "refused after the winner's first step:\nwinner:\n{}\nrefused:\n{}",
        timeline(wlog),
        timeline(llog)
    );
    // Nothing of the refused run is mixed in, and the winner's weights are a solo
    // run's (with either seed: the winner is whichever got the lock).
    assert_eq!(logged_steps(&out), [1, 2, 3, 4, 5, 6]);
    let solo_weights = if winner == pa {
        std::fs::read(solo.join("model.safetensors")).unwrap()
    } else {
        let seven = s.root.join("solo-7");
        s.ok(&seven, &[&big[..], &["--set", "seed=7"]].concat());
        std::fs::read(seven.join("model.safetensors")).unwrap()
    };
    assert!(
        std::fs::read(out.join("model.safetensors")).unwrap() == solo_weights,
        "the winner's model.safetensors differs from a solo run's"
    );

    // A run killed with SIGKILL holds nothing: the next one on the directory runs.
    let killed = s.root.join("killed");
    let slow = ["--set", "save_steps=100", "--set", "max_steps=1000"];
    kill_at(s.train(&killed, &slow).spawn().unwrap(), " grad_norm ");
    s.ok(&killed, &[]);
    assert_eq!(logged_steps(&killed), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_finished_run_is_refused_overwritten_only_when_asked_and_put_back_if_that_dies() {
    let _one = ONE_AT_A_TIME.lock();
    let Some(s) = setup() else { return };
    let out = s.root.join("run");
    s.ok(&out, &[]);
    let finished = tree(&out);
    assert!(names(&out).contains(&"checkpoint-6/".to_string()));

    // A fresh run there is refused, naming what is there and the ways on; no file
    // changes.
    let o = s.run(&out, &["--set", "max_steps=2", "--set", "seed=3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("already holds a run")
            && err.contains("checkpoint-2, checkpoint-4, checkpoint-6, model.safetensors")
            && err.contains("--resume")
            && err.contains("overwrite_output_dir = true"),
        "{err}"
    );
    assert!(
        tree(&out) == finished,
        "a refused run changed the directory"
    );

    // Resuming with another seed is refused, naming it.
    let o = s.run(
        &out,
        &["--resume", "--set", "seed=7", "--set", "max_steps=8"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("training.seed 42 -> 7"), "{err}");
    assert!(
        tree(&out) == finished,
        "a refused resume changed the directory"
    );

    // An overwrite killed after its start, before its first checkpoint: the old run
    // waits aside, and the next start puts it back whole (then refuses, as above).
    let slow = [
        "--set",
        "overwrite_output_dir=true",
        "--set",
        "save_steps=100",
        "--set",
        "max_steps=1000",
    ];
    kill_at(s.train(&out, &slow).spawn().unwrap(), " grad_norm ");
    assert!(
        !names(&out).contains(&"checkpoint-6/".to_string()),
        "the old run was not moved aside: {:?}",
        names(&out)
    );
    let o = s.run(&out, &["--set", "max_steps=2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already holds a run"),
        "{err}"
    );
    assert!(
        tree(&out) == finished,
        "the old run did not come back whole"
    );

    // Overwritten when asked: what is left is what the same run writes into an empty
    // directory, and no file of the old run (its checkpoints 2, 4 and 6 included).
    let overwrite = [
        "--set",
        "overwrite_output_dir=true",
        "--set",
        "max_steps=3",
        "--set",
        "save_steps=3",
    ];
    s.ok(&out, &overwrite);
    let fresh = s.root.join("fresh");
    s.ok(&fresh, &overwrite);
    assert_eq!(names(&out), names(&fresh));
    assert!(names(&out).contains(&"checkpoint-3/".to_string()));
    assert_eq!(logged_steps(&out), [1, 2, 3]);
    assert!(
        std::fs::read(out.join("model.safetensors")).unwrap()
            == std::fs::read(fresh.join("model.safetensors")).unwrap(),
        "the overwriting run's model differs from the same run's in an empty directory"
    );
}

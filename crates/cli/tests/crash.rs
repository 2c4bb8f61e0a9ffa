//! `berth train` killed with SIGKILL mid-step, mid-checkpoint-write and
//! mid-evaluation, resumed each time, ends with the same `model.safetensors` bytes as
//! a run never interrupted (a tiny random BERT with MiniLM's vocabulary, on MRPC).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

/// Lines of the child's stderr as they come, with the time each was read.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A small seeded generator (splitmix64), so the kill delays are reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn berth(cache: &Path, cfg: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.args(["train", "--config"])
        .arg(cfg)
        .env("BERTH_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume
        && std::fs::read_dir(out).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        })
    {
        c.arg("--resume");
    }
    c
}

/// Hidden temp or old copies of checkpoints beside them: evidence of a kill mid-write.
fn leftovers(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".checkpoint-"))
        .collect()
}

#[test]
fn sigkill_at_any_moment_then_resume_gives_the_same_weights() {
    // Missing fixtures panic in CI (BERTH_REQUIRE_FIXTURES) and are named elsewhere.
    let (Some(data), Some(minilm)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir())
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), &minilm);
    let cache = tmp.path().join("cache");
    let config = |out: &Path| {
        let path = out.with_extension("toml");
        std::fs::write(
            &path,
            format!(
                r##"task = "classification"
model = {model:?}
{data}[training]
output_dir = {out:?}
max_steps = 24
per_device_train_batch_size = 8
per_device_eval_batch_size = 8
learning_rate = 1e-3
eval_strategy = "steps"
eval_steps = 5
save_strategy = "steps"
save_steps = 3
save_total_limit = 2
logging_steps = 1
seed = 11
disable_tqdm = true
"##,
                model = model.display().to_string(),
                data = common::mrpc_data(&data, 48, 96, 64),
                out = out.display().to_string(),
            ),
        )
        .unwrap();
        path
    };

    // The run never interrupted.
    let whole = tmp.path().join("whole");
    let o = berth(&cache, &config(&whole), &whole, false)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = std::fs::read(whole.join("model.safetensors")).unwrap();

    // The same run killed 6 times: right after a step's log line (mid-step), after
    // "Saving model checkpoint" (mid-write) and after "Running evaluation"
    // (mid-evaluation), twice each, with seeded random delays of a few ms.
    let killed = tmp.path().join("killed");
    let cfg = config(&killed);
    let mut rng = Rng(0xBE27);
    let phases = [
        ("step", " grad_norm "),
        ("checkpoint write", "Saving model checkpoint"),
        ("evaluation", "Running evaluation"),
    ];
    let started = Instant::now();
    let mut mid_write = 0;
    for round in 0..6 {
        let (phase, marker) = phases[round % 3];
        // Skip this many markers first, so that kills land at different steps.
        let skip = rng.below(2);
        let delay = Duration::from_micros(rng.below(if phase == "step" { 5000 } else { 1500 }));
        let mut child = berth(&cache, &cfg, &killed, true).spawn().unwrap();
        let rx = lines(&mut child);
        let mut seen = 0;
        let mut log = Vec::new();
        let hit = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let found = line.contains(marker);
                    log.push(line);
                    if found {
                        if seen == skip {
                            break true;
                        }
                        seen += 1;
                    }
                }
                Err(_) => break false,
            }
        };
        assert!(
            hit,
            "round {round}: no '{marker}' line before the run ended:\n{}",
            log.join("\n")
        );
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let left = leftovers(&killed);
        if !left.is_empty() {
            mid_write += 1;
        }
        println!(
            "kill {round}: {phase} (marker {} of '{marker}', +{delay:?}) at {:.3}s; {status}; left beside the checkpoints: {left:?}",
            skip + 1,
            started.elapsed().as_secs_f64(),
        );
    }
    // At least one kill landed inside a checkpoint write (its temp copy is there).
    assert!(mid_write >= 1, "no kill landed in a checkpoint write");

    // Resume to the end.
    let o = berth(&cache, &cfg, &killed, true).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(
        got == expected,
        "model.safetensors differs from the uninterrupted run's"
    );
    assert!(
        leftovers(&killed).is_empty(),
        "a resumed run clears what killed writes left: {:?}",
        leftovers(&killed)
    );
    println!(
        "6 kills and a resume in {:.1}s: model.safetensors byte-identical",
        started.elapsed().as_secs_f64()
    );
}

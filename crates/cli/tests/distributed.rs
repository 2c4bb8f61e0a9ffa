//! Data-parallel training through MPI, as `mpirun -np 2 berth train` runs it: two
//! ranks with a per-device batch of 4 train as one process with a batch of 8 (dropout
//! off), for classification and for masked LM; a rank that dies ends the run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One MPI job at a time: two ranks each already fill the 2-core machine.
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mpirun` as root on a 2-core machine: OpenMPI refuses root and more ranks than
/// cores unless told.
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &np.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_BACKTRACE", "0");
    c
}

/// What this test needs beyond the fixtures: the `mpi` build and OpenMPI's mpirun.
fn mpi_ready() -> bool {
    if !cfg!(feature = "mpi") {
        berth_testkit::missing("a berth built with the `mpi` feature (`cargo xtask ci` builds it)");
        return false;
    }
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        berth_testkit::missing("mpirun (Debian: openmpi-bin; `cargo xtask ci` installs it)");
    }
    ok
}

/// The tiny model with dropout off, so that batches split across ranks see the same
/// network.
fn model_without_dropout(root: &Path, minilm: &Path) -> PathBuf {
    let dir = common::tiny_model(root, minilm);
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    dir
}

/// Per logged step: (step, loss, grad_norm) from a run's metrics.jsonl.
fn steps(run: &Path) -> Vec<(u64, f64, f64)> {
    common::jsonl_rows(&run.join("metrics.jsonl"))
        .into_iter()
        .filter_map(|r| {
            Some((
                r.get("step")?.as_u64()?,
                r.get("loss")?.as_f64()?,
                r.get("grad_norm")?.as_f64()?,
            ))
        })
        .collect()
}

fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let t =
        candle_core::safetensors::load(run.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn run_config(task: &str, model: &Path, data: &Path, out: &Path, batch: usize) -> String {
    run_config_grouped(task, model, data, out, batch, false)
}

/// [`run_config`], with `group_by_length` as given.
fn run_config_grouped(
    task: &str,
    model: &Path,
    data: &Path,
    out: &Path,
    batch: usize,
    grouped: bool,
) -> String {
    let data_section = match task {
        "classification" => common::mrpc_data(data, 48, 64, 24),
        _ => format!(
            r##"[data]
data_dir = {data:?}
format = "text"
train = "meditations/meditations.txt"
validation_split = 0.1
max_length = 48
max_train_samples = 64
[mlm]
mlm_probability = 0.15
"##,
            data = data.display().to_string()
        ),
    };
    format!(
        r##"task = "{task}"
model = {model:?}
{data_section}[training]
output_dir = {out:?}
max_steps = 6
per_device_train_batch_size = {batch}
per_device_eval_batch_size = 5
learning_rate = 1e-3
weight_decay = 0.01
eval_strategy = "steps"
eval_steps = 3
save_strategy = "steps"
save_steps = 3
logging_steps = 1
seed = 5
disable_tqdm = true
group_by_length = {grouped}
"##,
        model = model.display().to_string(),
        out = out.display().to_string(),
    )
}

#[test]
fn two_ranks_with_batch_4_train_as_one_process_with_batch_8() {
    let (Some(data), Some(minilm)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir())
    else {
        return;
    };
    if !mpi_ready() {
        return;
    }
    let _one = one_job();
    let tmp = tempfile::tempdir().unwrap();
    let model = model_without_dropout(tmp.path(), &minilm);
    let cache = tmp.path().join("cache");
    // Length-grouped batches too: the ranks' batch b together are one process's
    // length-grouped batch b of 8 (64 rows divide evenly).
    for (task, grouped) in [
        ("classification", false),
        ("mlm", false),
        ("classification", true),
    ] {
        let name = if grouped { "grouped" } else { task };
        let one = tmp.path().join(format!("{name}-one"));
        let two = tmp.path().join(format!("{name}-two"));
        let cfg_one = tmp.path().join(format!("{name}-one.toml"));
        let cfg_two = tmp.path().join(format!("{name}-two.toml"));
        let cfg = |out: &Path, batch| run_config_grouped(task, &model, &data, out, batch, grouped);
        std::fs::write(&cfg_one, cfg(&one, 8)).unwrap();
        std::fs::write(&cfg_two, cfg(&two, 4)).unwrap();
        let single =
            common::berth_output(&["train", "--config", cfg_one.to_str().unwrap()], &cache);
        assert!(
            single.status.success(),
            "{name}, one process: {}",
            String::from_utf8_lossy(&single.stderr)
        );
        // As torchrun: `berth launch` starts the ranks (through mpirun; the resume
        // below runs mpirun by hand).
        let ranks = common::berth_output(
            &[
                "launch",
                "--nproc-per-node",
                "2",
                "--",
                "train",
                "--config",
                cfg_two.to_str().unwrap(),
            ],
            &cache,
        );
        let log = String::from_utf8_lossy(&ranks.stderr);
        assert!(ranks.status.success(), "{name}, two ranks: {log}");
        assert!(log.contains("data-parallel: 2 ranks (MPI)"), "{log}");

        // The same loss and gradient norm at every step: a sum where a mean belongs
        // would double the norm, which AdamW's scale invariance would hide.
        let (a, b) = (steps(&one), steps(&two));
        assert_eq!(a.len(), 6, "{name}: {a:?}");
        assert_eq!(a.len(), b.len(), "{name}: {a:?} vs {b:?}");
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1e-6);
        for (x, y) in a.iter().zip(&b) {
            println!(
                "{name} step {}: loss {} / {}, grad_norm {} / {}",
                x.0, x.1, y.1, x.2, y.2
            );
            assert_eq!(x.0, y.0);
            assert!(
                close(x.1, y.1),
                "{name} step {}: loss {} vs {}",
                x.0,
                x.1,
                y.1
            );
            assert!(
                close(x.2, y.2),
                "{name} step {}: grad_norm {} vs {}",
                x.0,
                x.2,
                y.2
            );
        }
        // The gathered evaluation scores what one process scores.
        let evals = |run: &Path| -> Vec<serde_json::Value> {
            common::jsonl_rows(&run.join("metrics.jsonl"))
                .into_iter()
                .filter(|r| r.get("eval_loss").is_some())
                .collect()
        };
        let (ea, eb) = (evals(&one), evals(&two));
        assert_eq!(ea.len(), eb.len(), "{name}");
        for (x, y) in ea.iter().zip(&eb) {
            for (k, v) in x.as_object().unwrap() {
                if k.ends_with("runtime") || k.ends_with("per_second") {
                    continue;
                }
                let (v, w) = (v.as_f64().unwrap(), y[k].as_f64().unwrap());
                assert!(close(v, w), "{name} {k}: {v} vs {w}");
            }
        }
        // Final weights: equal within 1e-5 but for a float-noise few.
        let (wa, wb) = (weights(&one), weights(&two));
        assert_eq!(wa.len(), wb.len());
        let (mut off, mut total) = (0usize, 0usize);
        for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
            assert_eq!(na, nb);
            total += va.len();
            off += va
                .iter()
                .zip(vb)
                .filter(|(x, y)| (*x - *y).abs() > 1e-5)
                .count();
        }
        println!("{name}: {off} of {total} weights differ by more than 1e-5");
        assert!(
            (off as f64) < 1e-4 * total as f64,
            "{name}: {off} of {total} weights differ by more than 1e-5"
        );
        // Only rank 0 wrote: one metrics line per logged step, checkpoints whole.
        berth_trainer::manifest::verify(&two.join("checkpoint-6")).unwrap();
        if grouped {
            continue;
        }
        // Resumed on 2 ranks from the middle, it ends with the same bytes.
        let resumed = tmp.path().join(format!("{name}-resumed"));
        std::fs::create_dir_all(&resumed).unwrap();
        assert!(
            Command::new("cp")
                .arg("-a")
                .arg(two.join("checkpoint-3"))
                .arg(&resumed)
                .status()
                .unwrap()
                .success()
        );
        let cfg_resumed = tmp.path().join(format!("{name}-resumed.toml"));
        std::fs::write(&cfg_resumed, run_config(task, &model, &data, &resumed, 4)).unwrap();
        let again = mpirun(2)
            .arg(env!("CARGO_BIN_EXE_berth"))
            .args(["train", "--resume", "--config"])
            .arg(&cfg_resumed)
            .env("BERTH_CACHE", &cache)
            .output()
            .unwrap();
        assert!(
            again.status.success(),
            "{name}, resumed on two ranks: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert!(
            std::fs::read(resumed.join("model.safetensors")).unwrap()
                == std::fs::read(two.join("model.safetensors")).unwrap(),
            "{name}: the run resumed at step 3 on 2 ranks ends with other weights"
        );
        // A resume needs as many ranks as the run had.
        let resumed = common::berth_output_env(
            &["train", "--resume", "--config", cfg_two.to_str().unwrap()],
            &cache,
            &[("RUST_BACKTRACE", Path::new("0"))],
        );
        let err = String::from_utf8_lossy(&resumed.stderr);
        assert!(
            !resumed.status.success(),
            "{name}: resumed on 1 rank: {err}"
        );
        assert!(
            err.contains(&format!(
                "{}: was trained on 2 data-parallel rank(s), this run has 1",
                two.join("checkpoint-6").display()
            )),
            "{name}: {err}"
        );
    }
}

/// A long 2-rank run in which rank 1, once training is under way (rank 0 has logged
/// a step), gets `signal` (`KILL`, `STOP`); it
/// must end with an error within 60 s, every checkpoint whole. Returns its temp
/// directory and mpirun's stderr; `None` when the fixtures or MPI are missing (CI
/// fails instead).
fn run_with_rank_1_signalled(
    signal: &str,
    env: &[(&str, &str)],
) -> Option<(tempfile::TempDir, String)> {
    let (Some(data), Some(minilm)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir())
    else {
        return None;
    };
    if !mpi_ready() {
        return None;
    }
    let _one = one_job();
    let tmp = tempfile::tempdir().unwrap();
    let model = model_without_dropout(tmp.path(), &minilm);
    let run = tmp.path().join("run");
    let cfg = tmp.path().join("run.toml");
    let text = run_config("classification", &model, &data, &run, 4)
        .replace("max_steps = 6", "max_steps = 100000");
    std::fs::write(&cfg, text).unwrap();
    let script = r#"
if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
  "$BERTH" train --config "$CFG" & pid=$!
  for i in $(seq 600); do [ -s "$RUN/metrics.jsonl" ] && break; sleep 0.2; done
  kill -$SIGNAL $pid; wait $pid; exit $?
else
  exec "$BERTH" train --config "$CFG"
fi
"#;
    let started = Instant::now();
    let out = mpirun(2)
        .args(["bash", "-c", script])
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .env("CFG", &cfg)
        .env("SIGNAL", signal)
        .env("RUN", &run)
        .env("BERTH_CACHE", tmp.path().join("cache"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("the run ended after {:.1} s:\n{log}", took.as_secs_f64());
    assert!(
        !out.status.success(),
        "the run succeeded without rank 1:\n{log}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{log}");
    // Whatever rank 0 had saved is whole.
    checkpoints_are_whole(&run);
    Some((tmp, log))
}

#[test]
fn a_rank_that_dies_ends_the_run_with_an_error() {
    let Some((_tmp, log)) = run_with_rank_1_signalled("KILL", &[]) else {
        return;
    };
    // mpirun names the process that went: rank 1 (`[[job,1],1]`), killed (128 + 9).
    assert!(
        log.lines()
            .any(|l| l.trim().starts_with("Process name: [[") && l.trim().ends_with(",1]")),
        "{log}"
    );
    assert!(log.contains("Exit code:    137"), "{log}");
}

/// Every checkpoint in `run` passes its manifest check.
fn checkpoints_are_whole(run: &Path) {
    for e in std::fs::read_dir(run).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint-") {
            berth_trainer::manifest::verify(&e.path())
                .unwrap_or_else(|err| panic!("{name} is not whole: {err}"));
        }
    }
}

#[test]
fn a_rank_that_stops_answering_ends_the_run_after_the_timeout() {
    // SIGSTOP: rank 1 neither answers nor dies, so only rank 0's timeout can end it.
    let Some((_tmp, log)) =
        run_with_rank_1_signalled("STOP", &[("BERTH_COLLECTIVE_TIMEOUT_S", "15")])
    else {
        return;
    };
    // Where rank 0 waits depends on how far rank 1 got (an all-reduce, most often),
    // and a loaded machine may notice a moment late.
    let line = log
        .lines()
        .find(|l| l.starts_with("Error (rank 0): waited "))
        .unwrap_or_else(|| panic!("no timeout error:\n{log}"));
    assert!(
        line.ends_with(
            " for the other ranks: one of them is stuck or gone; stopping (BERTH_COLLECTIVE_TIMEOUT_S=15)"
        ),
        "{line}"
    );
}

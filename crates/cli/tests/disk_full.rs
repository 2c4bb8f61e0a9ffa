//! `berth train` when its output disk fills up and when it is read-only, on a real
//! filesystem (a size-limited tmpfs in a private mount namespace, so nothing outside
//! the test sees it): the run stops with an error naming the path it could not write
//! and the OS's reason, the previous checkpoint and every file already written stay
//! as they were (logs end in whole lines), and no temp file is left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

/// Every file under `dir` with its bytes, by relative path.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Names under `dir` that a write in progress uses (`.x.tmp-*`, `.x.old-*`, ...).
fn temp_names(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if berth_fs::parse_temp_name(&name).is_some() {
                out.push(e.path());
            }
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// How to enter a private mount namespace here: as root `unshare --mount`, else a
/// user namespace mapped to root. CI runs as root in its sandbox; on a machine that
/// allows neither the test fails in CI (BERTH_REQUIRE_FIXTURES) and skips elsewhere,
/// saying so.
fn unshare_args() -> Option<Vec<&'static str>> {
    for args in [
        vec!["--mount", "--propagation", "private"],
        vec!["--user", "--map-root-user", "--mount"],
    ] {
        let ok = Command::new("unshare")
            .args(&args)
            .args([
                "sh",
                "-c",
                "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(args);
        }
    }
    berth_testkit::missing(
        "this test mounts a small tmpfs in a private mount namespace (util-linux `unshare`, as root or with user namespaces); neither works here",
    );
    None
}

/// The error the run ended with (anyhow's `Error: ...` paragraph).
fn error_part(log: &str) -> &str {
    let start = log.rfind("\nError: ").map_or(0, |i| i + 1);
    let rest = &log[start..];
    rest.find("\n\n").map_or(rest, |end| &rest[..end])
}

#[test]
fn a_full_disk_and_a_read_only_one_fail_by_name_and_keep_what_was_written() {
    // Missing fixtures panic in CI (BERTH_REQUIRE_FIXTURES) and are named elsewhere.
    let (Some(data), Some(minilm)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir())
    else {
        return;
    };
    let Some(unshare) = unshare_args() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), &minilm);
    let mnt = tmp.path().join("mnt");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let run = mnt.join("run");
    let config = tmp.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            r##"task = "classification"
model = {model:?}
{data}[training]
output_dir = {run:?}
max_steps = 4
per_device_train_batch_size = 8
learning_rate = 1e-3
eval_strategy = "no"
save_strategy = "steps"
save_steps = 2
logging_steps = 1
seed = 11
disable_tqdm = true
report_to = ["tensorboard"]
"##,
            model = model.display().to_string(),
            data = common::mrpc_data(&data, 48, 64, 16),
            run = run.display().to_string(),
        ),
    )
    .unwrap();
    // One shell in the namespace: a 256 MiB tmpfs; two steps and checkpoint-2;
    // a snapshot; the disk filled to within half a checkpoint; the resumed run
    // (checkpoint-4 does not fit); a snapshot; the same on the tmpfs made read-only.
    let script = r#"
set -u
mount -t tmpfs -o size=256m tmpfs "$MNT"
"$BERTH" train --config "$CFG" --set max_steps=2 2>"$LOGS/first.err"; echo $? >"$LOGS/first.rc"
cp -a "$MNT/run" "$LOGS/before"
ckpt=$(du -sb "$MNT/run/checkpoint-2" | cut -f1)
avail=$(df --output=avail -B1 "$MNT" | tail -n 1)
head -c $((avail - ckpt / 2)) /dev/zero >"$MNT/filler"
"$BERTH" train --config "$CFG" --resume 2>"$LOGS/full.err"; echo $? >"$LOGS/full.rc"
rm "$MNT/filler"
cp -a "$MNT/run" "$LOGS/after_full"
mount -o remount,ro "$MNT"
"$BERTH" train --config "$CFG" --resume 2>"$LOGS/ro.err"; echo $? >"$LOGS/ro.rc"
cp -a "$MNT/run" "$LOGS/after_ro"
"#;
    let cache = tmp.path().join("cache");
    let status = Command::new("unshare")
        .args(&unshare)
        .args(["bash", "-c", script])
        .env("MNT", &mnt)
        .env("LOGS", &logs)
        .env("CFG", &config)
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_CACHE", &cache)
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .status()
        .unwrap();
    assert!(status.success(), "the namespace script failed: {status}");
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap();
    let rc = |name: &str| read(name).trim().parse::<i32>().unwrap();
    assert_eq!(rc("first.rc"), 0, "{}", read("first.err"));

    // Full: the error names the file it was writing (on the tmpfs) and why.
    let full = read("full.err");
    assert_ne!(
        rc("full.rc"),
        0,
        "the run on a full disk succeeded:\n{full}"
    );
    let err = error_part(&full);
    println!("full disk: {err}");
    assert!(err.contains("No space left on device"), "{full}");
    assert!(
        err.contains(&format!(
            "{}: not written: ",
            run.join("checkpoint-4").display()
        )),
        "{full}"
    );
    assert!(
        err.contains("the previous checkpoints are as they were"),
        "{full}"
    );
    assert!(
        !err.contains(".tmp-"),
        "the error names a temp file: {full}"
    );
    // What was there is there, byte for byte; the logs only gained whole lines.
    let before = files(&logs.join("before"));
    let after: std::collections::BTreeMap<String, Vec<u8>> =
        files(&logs.join("after_full")).into_iter().collect();
    for (path, bytes) in &before {
        let now = after
            .get(path)
            .unwrap_or_else(|| panic!("{path} is gone after the full-disk run"));
        if path == berth_trainer::LOCK_FILE {
            // Each run writes who holds the directory; it counts as nothing.
            continue;
        } else if path == "run_config.toml" {
            // Each run rewrites it whole (atomically) with its own settings.
            let text = String::from_utf8(now.clone()).unwrap();
            berth_trainer::RunConfig::from_toml(&text, &[], path).unwrap();
        } else if path == "metrics.jsonl" || path.starts_with("runs/") {
            assert!(now.starts_with(bytes), "{path} lost what it had");
            if path == "metrics.jsonl" {
                assert!(now.ends_with(b"\n"), "metrics.jsonl ends in half a line");
            }
        } else {
            assert!(now == bytes, "{path} changed after the full-disk run");
        }
    }
    assert!(!after.contains_key("checkpoint-4/model.safetensors"));
    berth_trainer::manifest::verify(&logs.join("after_full/checkpoint-2")).unwrap();
    assert_eq!(temp_names(&logs.join("after_full")), Vec::<PathBuf>::new());

    // Read-only: the error names the path; nothing changes at all.
    let ro = read("ro.err");
    assert_ne!(
        rc("ro.rc"),
        0,
        "the run on a read-only disk succeeded:\n{ro}"
    );
    let err = error_part(&ro);
    println!("read-only: {err}");
    assert!(err.contains("Read-only file system"), "{ro}");
    assert!(err.contains(&run.display().to_string()), "{ro}");
    assert!(!err.contains(".tmp-"), "the error names a temp file: {ro}");
    assert!(
        files(&logs.join("after_ro")) == files(&logs.join("after_full")),
        "the read-only run changed the output"
    );
}

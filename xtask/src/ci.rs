//! `cargo xtask ci`: the whole suite, as `.ci/run` runs it.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::fixtures::{fixtures, python_fixture};
use crate::util::{cargo, run, workspace_root};

/// The features CI builds the workspace with.
const CI_FEATURES: &str = "berth-cli/mpi";

/// OpenMPI's `mpirun` and development files, and libclang for the `mpi` crate's
/// bindgen: installed from Debian's packages when missing (as root), else a clear
/// error saying what to install.
fn ensure_openmpi() -> Result<()> {
    let has = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let libclang = ["/usr/lib", "/usr/lib64", "/usr/lib/x86_64-linux-gnu"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("llvm-") && e.path().join("lib/libclang.so").exists())
                || name.starts_with("libclang.so")
        });
    if has("mpirun", "--version") && has("mpicc", "--showme:version") && libclang {
        return Ok(());
    }
    const PACKAGES: [&str; 3] = ["openmpi-bin", "libopenmpi-dev", "libclang-dev"];
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || !has("apt-get", "--version") {
        bail!(
            "the data-parallel tests need OpenMPI and libclang: install {} (Debian: `sudo apt-get install {}`)",
            PACKAGES.join(", "),
            PACKAGES.join(" ")
        );
    }
    println!("ci: apt-get install {}", PACKAGES.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        if !install() {
            bail!("apt-get install {} failed", PACKAGES.join(" "));
        }
    }
    Ok(())
}

/// The whole suite, as CI runs it.
pub(crate) fn ci() -> Result<()> {
    let model = fixtures()?;
    let python = python_fixture()?;
    println!(
        "ci: fixtures ready ({}, {})",
        model.display(),
        python.display()
    );
    ensure_openmpi()?;
    println!("ci: cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // One feature set for clippy and the tests: the data-parallel tests need the
    // `mpi` build, and a second feature set would rebuild the crates above it.
    println!("ci: cargo clippy ({CI_FEATURES})");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        CI_FEATURES,
        "--",
        "-D",
        "warnings",
    ]))?;
    // The API docs, with the features clippy just checked: their dependencies'
    // metadata is clippy's, so nothing of the tree builds twice.
    println!("ci: cargo doc --no-deps ({CI_FEATURES}, RUSTDOCFLAGS=-D warnings)");
    run(cargo()
        .args(["doc", "--workspace", "--no-deps", "--features", CI_FEATURES])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    println!("ci: cargo test ({CI_FEATURES})");
    run(cargo()
        .args(["test", "--workspace", "--features", CI_FEATURES])
        .env("BERTH_REQUIRE_FIXTURES", "1"))?;
    // The collective crate alone, as the default (no MPI) build has it: its errors
    // for launches it cannot join. Small: it depends on thiserror only.
    println!("ci: cargo test -p berth-collective (no features)");
    run(cargo().args(["test", "-p", "berth-collective", "--lib"]))?;
    finetune_elsewhere()?;
    println!("ci: all green");
    Ok(())
}

/// The main job as a user whose target directory is elsewhere runs it, for a few
/// steps: `cargo xtask finetune` must run the `berth` that cargo built there, not
/// `target/release/berth`. This is CI's one release build; a warm machine keeps it.
/// Its binary is removed first, so the run needs the one this build links (a clean
/// clone has no `target/release/berth` to run instead). The run writes under the
/// same directory, not over a real run's `target/finetune/`.
fn finetune_elsewhere() -> Result<()> {
    let elsewhere = workspace_root().join("target/ci-elsewhere");
    let binary = elsewhere.join("release/berth");
    let run_dir = elsewhere.join("finetune-imdb");
    for stale in [&run_dir, &binary] {
        let removed = if stale.is_dir() {
            std::fs::remove_dir_all(stale)
        } else {
            std::fs::remove_file(stale)
        };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("removing {}", stale.display()));
        }
    }
    let output_dir = format!("training.output_dir={:?}", run_dir.display().to_string());
    let args = [
        "xtask",
        "finetune",
        "--max-steps",
        "2",
        "--set",
        "data.max_test_samples=64",
        "--set",
        &output_dir,
    ];
    println!(
        "ci: CARGO_TARGET_DIR={} cargo {}",
        elsewhere.display(),
        args.join(" ")
    );
    run(cargo().args(args).env("CARGO_TARGET_DIR", &elsewhere))?;
    if !binary.is_file() {
        bail!("finetune built no {}", binary.display());
    }
    let report = run_dir.join("report.md");
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("finetune wrote no {}", report.display()))?;
    if !text.contains("accuracy") {
        bail!("{} has no test accuracy:\n{text}", report.display());
    }
    Ok(())
}

//! `cargo xtask cuda-check`: compiles every CUDA kernel of `crates/model/kernels/`
//! with nvcc for sm_80 and sm_90, warnings as errors, and reports each kernel's
//! registers and spills from `ptxas -v`, one line per kernel and architecture. The
//! toolkit comes from NVIDIA's pip wheels (as `../shared/gpu/build-cuda.sh` installs
//! them), into `$BERTH_CACHE/cuda`; no GPU is needed. `--build` also builds `berth`
//! with the `cuda` feature through `build-cuda.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::util::{cache_root, run, workspace_root};

#[derive(Args)]
pub(crate) struct CudaCheckArgs {
    /// Also build `berth` with `--features cuda` (../shared/gpu/build-cuda.sh).
    #[arg(long)]
    build: bool,
}

/// The wheels nvcc needs to compile and assemble device code (build-cuda.sh's
/// versions: CUDA 13.0, what the lent H100's driver runs); cccl has `nv/target`,
/// which `cuda_bf16.h` includes.
const WHEELS: [&str; 5] = [
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
];

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// The toolkit root (`nvidia/cu13` under the wheels' target), installed if absent.
fn toolkit() -> Result<PathBuf> {
    let dir = std::env::var_os("CUDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_root().join("cuda"));
    let root = dir.join("nvidia/cu13");
    if !root.join("bin/nvcc").is_file() || !root.join("include/nv/target").is_file() {
        eprintln!(
            "cuda-check: pip install {} into {}",
            WHEELS.join(" "),
            dir.display()
        );
        run(Command::new(crate::util::find_python()?)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--upgrade",
                "--no-deps",
                "--only-binary=:all:",
            ])
            .arg("--target")
            .arg(&dir)
            .args(WHEELS))?;
    }
    if !root.join("bin/nvcc").is_file() {
        bail!("no nvcc at {} after installing the wheels", root.display());
    }
    Ok(root)
}

/// `kernel <name> <arch>: N registers, M spill bytes` from ptxas -v's lines.
fn report(ptxas: &str, arch: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut name = None;
    for line in ptxas.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            name = rest.split('\'').next().map(str::to_string);
        }
        if let (Some(n), Some(regs)) = (&name, line.split("Used ").nth(1)) {
            let regs = regs.split_whitespace().next().unwrap_or("?");
            out.push(format!("kernel {n} {arch}: {regs} registers"));
            name = None;
        }
    }
    out
}

/// Spill bytes ptxas reports for each entry, in order ("N bytes spill stores, M
/// bytes spill loads").
fn spills(ptxas: &str) -> Vec<u64> {
    ptxas
        .lines()
        .filter(|l| l.contains("bytes spill stores"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|d| d.parse::<u64>().ok())
                .take(3)
                .skip(1)
                .sum()
        })
        .collect()
}

fn compile(nvcc: &Path, root: &Path, file: &Path, arch: &str) -> Result<Vec<String>> {
    let out = std::env::temp_dir().join(format!(
        "berth-{}-{arch}.cubin",
        file.file_stem().unwrap_or_default().to_string_lossy()
    ));
    let o = Command::new(nvcc)
        .arg("--cubin")
        .arg(format!("-arch={arch}"))
        .args([
            "-O3",
            "-std=c++17",
            "--Werror",
            "all-warnings",
            "-Xptxas",
            "-v",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg("-o")
        .arg(&out)
        .arg(file)
        .env(
            "PATH",
            format!(
                "{}:{}",
                root.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .with_context(|| format!("running {}", nvcc.display()))?;
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        bail!("{} for {arch}:\n{log}", file.display());
    }
    let lines = report(&log, arch);
    let spilled = spills(&log);
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| format!("{l}, {} spill bytes", spilled.get(i).copied().unwrap_or(0)))
        .collect())
}

pub(crate) fn cuda_check(a: CudaCheckArgs) -> Result<()> {
    let root = toolkit()?;
    let nvcc = root.join("bin/nvcc");
    let kernels = workspace_root().join("crates/model/kernels");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&kernels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    for file in &files {
        for arch in ARCHS {
            for line in compile(&nvcc, &root, file, arch)? {
                println!("{line}");
            }
        }
    }
    println!(
        "cuda-check: {} kernel files compiled for {}",
        files.len(),
        ARCHS.join(", ")
    );
    if a.build {
        let script = workspace_root().join("../shared/gpu/build-cuda.sh");
        run(Command::new("bash")
            .arg(&script)
            .arg(workspace_root())
            .args(["-p", "berth-cli", "--features", "cuda"]))?;
    }
    Ok(())
}

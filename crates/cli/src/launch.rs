//! `berth launch`: N data-parallel ranks of a berth command, as `torchrun
//! --nproc-per-node N` starts them. The ranks meet through MPI, so the launcher is
//! `mpirun`; `mpirun -np N berth train ...` does the same by hand (and, with a
//! hostfile, across nodes).

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub(crate) struct LaunchArgs {
    /// Ranks on this node: one per GPU (rank r binds cuda:LOCAL_RANK), or CPU
    /// processes.
    #[arg(long, default_value_t = 1)]
    nproc_per_node: usize,
    /// Nodes in the job. Several nodes are started by `mpirun` with a hostfile, not
    /// by this command (see the error it gives).
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's index (torchrun's `--node-rank`); 0 for a single node.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// The address of rank 0 (torchrun's `--master-addr`), passed on as MASTER_ADDR.
    #[arg(long, default_value = "127.0.0.1")]
    master_addr: String,
    /// torchrun's `--master-port`, passed on as MASTER_PORT.
    #[arg(long, default_value_t = 29500)]
    master_port: u16,
    /// The berth command each rank runs, after `--`: `-- train --config run.toml`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The `mpirun` command line that starts `a`'s ranks of `exe`.
pub(crate) fn mpirun_command(a: &LaunchArgs, exe: &std::path::Path) -> Result<Command> {
    if a.nproc_per_node == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    if a.command.first().map(String::as_str) != Some("train") {
        bail!(
            "berth launch runs `train` on several ranks (`berth launch --nproc-per-node N -- train --config run.toml`), not `{}`: other commands run in one process",
            a.command.join(" ")
        );
    }
    if a.nnodes != 1 || a.node_rank != 0 {
        bail!(
            "--nnodes {} --node-rank {}: berth's ranks meet through MPI, which starts every node's ranks from one command; run `mpirun -np {} --hostfile HOSTS {} {}` on one node instead",
            a.nnodes,
            a.node_rank,
            a.nnodes * a.nproc_per_node,
            exe.display(),
            a.command.join(" ")
        );
    }
    let mut c = Command::new("mpirun");
    c.args(["-np", &a.nproc_per_node.to_string()])
        // torchrun's variables for scripts that read them; each rank's own RANK and
        // LOCAL_RANK come from MPI (OMPI_COMM_WORLD_RANK, ..._LOCAL_RANK).
        .args(["-x", &format!("MASTER_ADDR={}", a.master_addr)])
        .args(["-x", &format!("MASTER_PORT={}", a.master_port)])
        .args(["-x", &format!("WORLD_SIZE={}", a.nproc_per_node)])
        // OpenMPI refuses more ranks than cores, and root, unless told; harmless
        // to other MPIs.
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg(exe)
        .args(&a.command);
    Ok(c)
}

/// A berth built without MPI cannot start ranks that meet: say how to build one.
fn needs_mpi(built_with_mpi: bool) -> Result<()> {
    if !built_with_mpi {
        bail!(
            "this berth was built without the `mpi` feature, so its ranks cannot meet: build it with `cargo build --release -p berth-cli --features mpi` (Debian: openmpi-bin, libopenmpi-dev, libclang-dev)"
        );
    }
    Ok(())
}

pub(crate) fn launch(a: LaunchArgs) -> Result<()> {
    needs_mpi(cfg!(feature = "mpi"))?;
    let exe = std::env::current_exe().context("the path of this berth binary")?;
    let mut cmd = mpirun_command(&a, &exe)?;
    let status = cmd.status().map_err(|e| {
        anyhow::anyhow!(
            "mpirun: {e}: berth launch starts its ranks with OpenMPI's mpirun (Debian: apt-get install openmpi-bin)"
        )
    })?;
    if !status.success() {
        bail!(
            "{} rank(s) of `berth {}` ended with {status}",
            a.nproc_per_node,
            a.command.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: LaunchArgs,
    }

    fn parse(args: &[&str]) -> LaunchArgs {
        Cli::try_parse_from(std::iter::once("launch").chain(args.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn launch_runs_mpirun_with_torchruns_variables() {
        let a = parse(&["--nproc-per-node", "4", "--", "train", "--config", "r.toml"]);
        let c = mpirun_command(&a, std::path::Path::new("/bin/berth")).unwrap();
        let args: Vec<String> = c
            .get_args()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "mpirun");
        assert_eq!(
            args,
            [
                "-np",
                "4",
                "-x",
                "MASTER_ADDR=127.0.0.1",
                "-x",
                "MASTER_PORT=29500",
                "-x",
                "WORLD_SIZE=4",
                "/bin/berth",
                "train",
                "--config",
                "r.toml"
            ]
        );
    }

    #[test]
    fn a_build_without_mpi_says_how_to_build_one() {
        needs_mpi(true).unwrap();
        let e = needs_mpi(false).unwrap_err().to_string();
        assert!(
            e.starts_with("this berth was built without the `mpi` feature, so its ranks cannot meet: build it with `cargo build --release -p berth-cli --features mpi`"),
            "{e}"
        );
    }

    #[test]
    fn several_nodes_are_refused_with_the_mpirun_line_to_use() {
        let a = parse(&["--nnodes", "2", "--nproc-per-node", "8", "--", "train"]);
        let e = mpirun_command(&a, std::path::Path::new("/bin/berth"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("run `mpirun -np 16 --hostfile HOSTS /bin/berth train` on one node"),
            "{e}"
        );
        let a = parse(&["--nproc-per-node", "0", "--", "train"]);
        assert!(mpirun_command(&a, std::path::Path::new("b")).is_err());
        let a = parse(&["--nproc-per-node", "2", "--", "eval", "--model", "m"]);
        let e = mpirun_command(&a, std::path::Path::new("b"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("berth launch runs `train` on several ranks"),
            "{e}"
        );
    }
}

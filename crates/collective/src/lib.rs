//! The collective operations data-parallel training needs, behind one seam: every
//! rank runs the same program on its own shard of the data, and the ranks meet only
//! here: to sum their gradients (all-reduce), to start from rank 0's weights
//! (broadcast), to compare checksums (all-gather) and to wait for each other
//! (barrier).
//!
//! Backends:
//! - [`SingleProcess`], the default: world size 1, every operation a no-op.
//! - `Mpi` (the `mpi` feature): any MPI, through rsmpi; `mpirun -np N berth train`
//!   or `berth launch --nproc-per-node N`. A rank that dies ends the job (mpirun
//!   stops the others); a rank that fails calls [`Collective::abort`] so that the
//!   others do not wait for it.
//!
//! [`from_env`] picks the backend from how the process was started.
//!
//! ```
//! use berth_collective::{Collective, SingleProcess};
//! let c = SingleProcess;
//! let mut grads = vec![1.0f32, 2.0];
//! c.all_reduce_sum(&mut grads).unwrap();
//! assert_eq!((c.rank(), c.world_size(), grads), (0, 1, vec![1.0, 2.0]));
//! ```

#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "mpi")]
pub use mpi_backend::Mpi;

/// A collective operation that could not run.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The process was started for several ranks in a way this build cannot join.
    #[error("{0}")]
    Launch(String),
    /// Ranks disagree about something that must be equal on all of them.
    #[error("{0}")]
    Mismatch(String),
}

pub type Result<T, E = CollectiveError> = std::result::Result<T, E>;

/// The operations ranks share. Every rank must call the same operations in the same
/// order with buffers of the same length, as with any MPI or NCCL collective.
pub trait Collective {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// How many ranks take part.
    fn world_size(&self) -> usize;
    /// The rank among the processes of this node (which device it binds).
    fn local_rank(&self) -> usize;
    /// What this backend is, for logs ("single process", "MPI").
    fn backend(&self) -> &'static str;
    /// Element-wise sum over all ranks, in place, on every rank.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// [`Collective::all_reduce_sum`] in f64 (losses, counts, flags).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Every rank's `buf` becomes rank `root`'s.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>>;
    /// Every rank's bytes (any length each), in rank order.
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every rank's process with `code`: a rank that fails calls it so that the
    /// others, waiting in a collective, do not hang.
    fn abort(&self, code: i32) -> !;

    /// True on rank 0, the one that writes checkpoints, logs and reports.
    fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Element-wise mean over all ranks, in place.
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        let n = self.world_size() as f32;
        if n > 1.0 {
            buf.iter_mut().for_each(|v| *v /= n);
        }
        Ok(())
    }

    /// Checks that every rank holds the same `value` (a checksum of the weights,
    /// say); `what` names it in the error, which lists each rank's value.
    fn check_equal(&self, value: u64, what: &str) -> Result<()> {
        let all = self.all_gather_u64(value)?;
        if all.iter().any(|&v| v != all[0]) {
            let each: Vec<String> = all
                .iter()
                .enumerate()
                .map(|(r, v)| format!("rank {r}: {v:016x}"))
                .collect();
            return Err(CollectiveError::Mismatch(format!(
                "{what} differs across ranks ({}): the ranks no longer train the same model",
                each.join(", ")
            )));
        }
        Ok(())
    }
}

/// One process: world size 1, nothing to exchange.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn backend(&self) -> &'static str {
        "single process"
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        Ok(vec![value])
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// A test double for code that reads other ranks' answers: rank 0 of as many ranks
/// as it has scripted answers; the gathers return what each rank is scripted to
/// send, reductions and broadcasts leave the buffer as it is, `abort` panics.
#[derive(Clone, Debug, Default)]
pub struct Scripted {
    /// What `all_gather_u64` returns, one value per rank.
    pub u64s: Vec<u64>,
    /// What `all_gather_bytes` returns, one buffer per rank.
    pub bytes: Vec<Vec<u8>>,
}

impl Collective for Scripted {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        self.u64s.len().max(self.bytes.len()).max(1)
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn backend(&self) -> &'static str {
        "scripted"
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn all_gather_u64(&self, _value: u64) -> Result<Vec<u64>> {
        Ok(self.u64s.clone())
    }
    fn all_gather_bytes(&self, _bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.bytes.clone())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        panic!("abort({code})")
    }
}

/// How many processes the launcher of this one started (OpenMPI's mpirun,
/// MPICH/PMI, Slurm's srun, torchrun), if one did: a command that runs in one process
/// only (eval, predict) refuses more.
pub fn launched_world_size() -> Option<usize> {
    launched_with(&|k| std::env::var(k).ok()).map(|(n, _, _)| n)
}

/// The world size a launcher set, with the variable and the launcher's name.
fn launched_with(
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(usize, &'static str, &'static str)> {
    for (var, who) in [
        ("OMPI_COMM_WORLD_SIZE", "mpirun"),
        ("PMI_SIZE", "an MPI launcher"),
        ("SLURM_STEP_NUM_TASKS", "srun"),
        ("WORLD_SIZE", "torchrun"),
    ] {
        if let Some(n) = env(var).and_then(|v| v.trim().parse().ok()) {
            return Some((n, var, who));
        }
    }
    None
}

/// The backend this process was started for: MPI under `mpirun` (with the `mpi`
/// feature), else a single process. A launch for several ranks that this build
/// cannot join is an error, never a silent single-process run.
pub fn from_env() -> Result<Box<dyn Collective>> {
    from_env_with(&|k| std::env::var(k).ok())
}

fn from_env_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Box<dyn Collective>> {
    let launched = launched_with(env);
    // mpirun (OpenMPI), MPICH's hydra, or a PMIx launcher such as srun.
    let under_mpi = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| env(v).is_some());
    #[cfg(feature = "mpi")]
    if under_mpi {
        return Ok(Box::new(Mpi::init()?));
    }
    match launched {
        Some((n, var, who)) if n > 1 => Err(CollectiveError::Launch(if under_mpi {
            format!(
                "{who} started {n} processes, but this berth was built without the `mpi` feature: \
                 each would train alone; rebuild with `--features mpi`"
            )
        } else {
            format!(
                "{who} started {n} processes ({var}={n}), not through MPI, which berth joins \
                 ranks with: start them with `berth launch --nproc-per-node N -- train ...` or \
                 `mpirun -np N berth train ...` (built with `--features mpi`)"
            )
        })),
        _ => Ok(Box::new(SingleProcess)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn one_process_is_the_default_and_its_collectives_are_identities() {
        let c = from_env_with(&env_of(&[])).unwrap();
        assert_eq!((c.rank(), c.world_size(), c.local_rank()), (0, 1, 0));
        assert!(c.is_main());
        let mut v = vec![1.5f32, -2.0];
        c.all_reduce_mean(&mut v).unwrap();
        c.broadcast(&mut v, 0).unwrap();
        assert_eq!(v, vec![1.5, -2.0]);
        let mut d = vec![3.0f64];
        c.all_reduce_sum_f64(&mut d).unwrap();
        assert_eq!(d, vec![3.0]);
        assert_eq!(c.all_gather_u64(7).unwrap(), vec![7]);
        assert_eq!(c.all_gather_bytes(b"ab").unwrap(), vec![b"ab".to_vec()]);
        c.barrier().unwrap();
        c.check_equal(9, "the weights' checksum").unwrap();
        // A launcher for one rank is a single process too.
        let c = from_env_with(&env_of(&[("WORLD_SIZE", "1")])).unwrap();
        assert_eq!(c.world_size(), 1);
    }

    #[test]
    fn a_launch_for_several_ranks_that_this_build_cannot_join_says_so() {
        let e = from_env_with(&env_of(&[("WORLD_SIZE", "4"), ("RANK", "1")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("torchrun started 4 processes (WORLD_SIZE=4), not through MPI"),
            "{e}"
        );
        let e = from_env_with(&env_of(&[("SLURM_STEP_NUM_TASKS", "8")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("srun started 8 processes (SLURM_STEP_NUM_TASKS=8)"),
            "{e}"
        );
        if !cfg!(feature = "mpi") {
            let e = from_env_with(&env_of(&[("OMPI_COMM_WORLD_SIZE", "2")]))
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.starts_with(
                    "mpirun started 2 processes, but this berth was built without the `mpi` feature"
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn a_checksum_that_differs_names_every_rank() {
        let gathered = |u64s: Vec<u64>| Scripted {
            u64s,
            ..Scripted::default()
        };
        let e = gathered(vec![1, 1, 2]).check_equal(1, "the weights' checksum");
        assert_eq!(
            e.unwrap_err().to_string(),
            "the weights' checksum differs across ranks (rank 0: 0000000000000001, rank 1: 0000000000000001, rank 2: 0000000000000002): the ranks no longer train the same model"
        );
        gathered(vec![5, 5]).check_equal(5, "x").unwrap();
        // The mean divides the sum by the world size.
        let mut v = vec![4.0f32];
        gathered(vec![0, 0]).all_reduce_mean(&mut v).unwrap();
        assert_eq!(v, vec![2.0]);
    }
}

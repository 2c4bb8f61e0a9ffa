//! The MPI backend (rsmpi): one rank per process of `mpirun -np N`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::{Collective, CollectiveError, Result};

/// MPI's world communicator; MPI is finalized when this is dropped.
pub struct Mpi {
    // Dropped after `world` (fields drop in order): finalizes MPI.
    world: SimpleCommunicator,
    _universe: Universe,
    local_rank: usize,
    watchdog: Arc<Watchdog>,
}

/// The default of `BERTH_COLLECTIVE_TIMEOUT_S`: torch's default NCCL timeout.
pub const DEFAULT_TIMEOUT_S: u64 = 1800;

/// Ends this rank when it has waited in one collective longer than `timeout`: a
/// rank that hangs (stopped, deadlocked, its node gone quiet) would otherwise keep
/// every other rank waiting forever. MPI cannot time out a collective itself; the
/// rank exits, and mpirun then stops the others.
struct Watchdog {
    started: Instant,
    /// Milliseconds since `started` when the current collective began; 0 outside one.
    entered_ms: AtomicU64,
    /// Which collective (an index into `WHAT`).
    what: AtomicUsize,
    timeout: Duration,
}

const WHAT: [&str; 4] = ["an all-reduce", "a broadcast", "an all-gather", "a barrier"];

/// Marks this rank as inside a collective until dropped.
struct Inside<'a>(&'a Watchdog);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.entered_ms.store(0, Ordering::SeqCst);
    }
}

impl Watchdog {
    fn start(timeout: Duration, rank: usize) -> Arc<Self> {
        let w = Arc::new(Watchdog {
            started: Instant::now(),
            entered_ms: AtomicU64::new(0),
            what: AtomicUsize::new(0),
            timeout,
        });
        let watch = Arc::clone(&w);
        std::thread::Builder::new()
            .name("berth-collective-watchdog".into())
            .spawn(move || {
                let tick = (watch.timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(5));
                loop {
                    std::thread::sleep(tick);
                    let entered = watch.entered_ms.load(Ordering::SeqCst);
                    if entered == 0 {
                        continue;
                    }
                    let now = watch.started.elapsed().as_millis() as u64;
                    let waited = Duration::from_millis(now.saturating_sub(entered));
                    if waited >= watch.timeout {
                        let what = WHAT[watch.what.load(Ordering::SeqCst).min(WHAT.len() - 1)];
                        eprintln!(
                            "Error (rank {rank}): waited {:.0} s in {what} for the other ranks: one of them is stuck or gone; stopping (BERTH_COLLECTIVE_TIMEOUT_S={})",
                            waited.as_secs_f64(),
                            watch.timeout.as_secs()
                        );
                        // _exit: no atexit handlers (MPI's, CUDA's) while the main
                        // thread is inside MPI.
                        // SAFETY: _exit only ends the process.
                        unsafe { libc::_exit(1) };
                    }
                }
            })
            .ok();
        w
    }

    fn enter(&self, what: usize) -> Inside<'_> {
        self.what.store(what, Ordering::SeqCst);
        let now = self.started.elapsed().as_millis() as u64;
        self.entered_ms.store(now.max(1), Ordering::SeqCst);
        Inside(self)
    }
}

/// `BERTH_COLLECTIVE_TIMEOUT_S` as a duration, or the default.
fn timeout_from_env() -> Result<Duration> {
    match std::env::var("BERTH_COLLECTIVE_TIMEOUT_S") {
        Err(_) => Ok(Duration::from_secs(DEFAULT_TIMEOUT_S)),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                CollectiveError::Launch(format!(
                    "BERTH_COLLECTIVE_TIMEOUT_S='{v}' is not a positive number of seconds"
                ))
            }),
    }
}

impl Mpi {
    /// Initializes MPI (once per process) and joins its world.
    pub fn init() -> Result<Self> {
        // Only the main thread calls MPI, but others exist (rayon's, the watchdog).
        let (universe, _) =
            mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
                CollectiveError::Launch("MPI was already initialized in this process".into())
            })?;
        let world = universe.world();
        // OpenMPI and MPICH/PMI name the rank on this node; torchrun's LOCAL_RANK
        // where a launcher set it; else every rank is on one node.
        let local_rank = [
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "SLURM_LOCALID",
            "LOCAL_RANK",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
        .unwrap_or(world.rank() as usize);
        let watchdog = Watchdog::start(timeout_from_env()?, world.rank() as usize);
        Ok(Mpi {
            world,
            _universe: universe,
            local_rank,
            watchdog,
        })
    }
}

impl Mpi {
    /// MPI_Allreduce(SUM) of `buf` into itself (rsmpi has no in-place form).
    fn sum_in_place<T: Equivalence + Copy>(&self, buf: &mut [T]) -> Result<()> {
        let _inside = self.watchdog.enter(0);
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn world_size(&self) -> usize {
        self.world.size() as usize
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn backend(&self) -> &'static str {
        "MPI"
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.sum_in_place(buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum_in_place(buf)
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let _inside = self.watchdog.enter(1);
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let _inside = self.watchdog.enter(2);
        let mut out = vec![0u64; self.world_size()];
        self.world.all_gather_into(&value, &mut out[..]);
        Ok(out)
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let _inside = self.watchdog.enter(2);
        let len = i32::try_from(bytes.len()).map_err(|_| {
            CollectiveError::Launch(format!(
                "{} bytes are too many to gather in one MPI call",
                bytes.len()
            ))
        })?;
        let mut counts = vec![0i32; self.world_size()];
        self.world.all_gather_into(&len, &mut counts[..]);
        // MPI counts and displacements are i32: the whole gather must fit, on every
        // rank alike (they all see the same counts).
        let total: i64 = counts.iter().map(|&c| i64::from(c)).sum();
        if total > i64::from(i32::MAX) {
            return Err(CollectiveError::Launch(format!(
                "gathering {total} bytes from {} ranks is over MPI's 2 GiB in one call",
                counts.len()
            )));
        }
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |acc, &c| {
                let at = *acc;
                *acc += c;
                Some(at)
            })
            .collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut buf = vec![0u8; total];
        {
            let mut partition = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(bytes, &mut partition);
        }
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
            .collect())
    }
    fn barrier(&self) -> Result<()> {
        let _inside = self.watchdog.enter(3);
        self.world.barrier();
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

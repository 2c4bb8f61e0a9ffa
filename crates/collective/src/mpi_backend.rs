//! The MPI backend (rsmpi): one rank per process of `mpirun -np N`.

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
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
}

impl Mpi {
    /// Initializes MPI (once per process) and joins its world.
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| {
            CollectiveError::Launch("MPI was already initialized in this process".into())
        })?;
        let world = universe.world();
        // OpenMPI and MPICH/PMI name the rank on this node; torchrun's LOCAL_RANK
        // where a launcher set it; else every rank is on one node.
        let local_rank = [
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "LOCAL_RANK",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
        .unwrap_or(world.rank() as usize);
        Ok(Mpi {
            world,
            _universe: universe,
            local_rank,
        })
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
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        let mut out = vec![0u64; self.world_size()];
        self.world.all_gather_into(&value, &mut out[..]);
        Ok(out)
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let len = i32::try_from(bytes.len()).map_err(|_| {
            CollectiveError::Launch(format!(
                "{} bytes are too many to gather in one MPI call",
                bytes.len()
            ))
        })?;
        let mut counts = vec![0i32; self.world_size()];
        self.world.all_gather_into(&len, &mut counts[..]);
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
        self.world.barrier();
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

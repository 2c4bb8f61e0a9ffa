//! `berth-trainer`: fine-tuning as HF `Trainer` does it. A TOML configuration (HF
//! `TrainingArguments` names), data prepared through `berth-data`, AdamW equal to
//! `torch.optim.AdamW` with HF's weight-decay exclusions, linear/cosine/constant
//! schedules with warm-up, gradient accumulation and clipping, evaluation metrics,
//! `trainer_state.json`, checkpoints that resume exactly, a loss curve and a report.
//!
//! ```no_run
//! use berth_trainer::{RunConfig, Trainer};
//!
//! # fn main() -> berth_trainer::Result<()> {
//! let config = RunConfig::load("imdb.toml".as_ref(), &["learning_rate=3e-5".into()])?;
//! let summary = Trainer::new(config)?.train()?;
//! println!("{}", berth_trainer::summary_table(&summary));
//! # Ok(())
//! # }
//! ```

mod batch;
mod callbacks;
mod checkpoint;
mod config;
mod data;
mod error;
mod inference;
mod metrics;
mod model;
mod optim;
mod repo;
mod report;
mod run_dir;
mod schedule;
mod setup;
mod splits;
mod state;
pub mod task;
pub mod tensorboard;
mod trainer;

pub use batch::{Output, TaskBatch};
pub use callbacks::{Callback, Control, MetricsLog, Session, StepEnd};
pub use checkpoint::{checkpoints, manifest, resolve_checkpoint};
pub use config::{
    ChunkingConfig, DataConfig, DeviceSpec, IntervalStrategy, MlmConfig, MultiLabelConfig,
    Precision, RunConfig, Strategy, TaskConfig, TrainingArgs,
};
pub use data::{Prepare, RowSet, Rows, Split, Stage};
pub use error::{Result, TrainError};
pub use inference::Inference;
pub use metrics::{LmCounts, argmax, classification};
pub use model::TaskModel;
pub use optim::{AdamW, AdamWConfig, Grads, decays};
pub use report::{RunSummary, fmt_metrics, loss_curve, summary_table};
pub use run_dir::LOCK_FILE;
pub use schedule::{Schedule, SchedulerType};
pub use splits::{EvalData, TaskData, prepare, prepare_evaluation};
pub use state::{Position, TrainerState};
pub use task::{Task, TaskContext};
pub use trainer::{Trainer, parse_device};

/// Call first thing in a binary that trains. Training allocates and frees gigabytes
/// of short-lived tensors per step; glibc serves large blocks with fresh mmaps and
/// returns them on free, so every step paid for zeroing new pages again (~40% of CPU
/// time in the kernel, measured with perf on a MiniLM step; a 3-step run went from
/// 59 s to 34 s). This keeps freed memory in the heap for reuse instead.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; meant to be called before other
    // threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // -1 is SIZE_MAX as glibc reads it: never trim.
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

#[cfg(test)]
mod tests;

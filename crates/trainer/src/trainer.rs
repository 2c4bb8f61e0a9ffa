//! The training loop, as HF `Trainer.train()`: epochs of shuffled batches, gradient
//! accumulation, clipping, AdamW with a schedule, periodic logging, evaluation and
//! checkpoints, early stopping, best-model reload, and exact resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_collate::{
    BatchSampler, DistributedLengthGroupedSampler, DistributedSampler, LengthGroupedSampler,
    RandomSampler,
};
use berth_collective::{Collective, SingleProcess};
use berth_data::tokenizers::Tokenizer;
use berth_model::Mode;
use candle_core::Device;
use serde_json::{Map, json};
use std::sync::Arc;

use crate::batch::TaskBatch;
use crate::callbacks::{
    Callback, Checkpointing, Control, EarlyStopping, Evaluation, Flow, Logging, MetricsLog,
    Session, StepEnd, SyncControl,
};
use crate::checkpoint::{self, SavedModel, checkpoints, resolve_checkpoint};
use crate::config::{DeviceSpec, RunConfig, Strategy};
use crate::data::Split;
use crate::error::{Result, TrainError};
use crate::model::TaskModel;
use crate::optim::{AdamW, AdamWConfig, Grads};
use crate::report::{self, RunSummary};
use crate::run_dir::{self, RunLock};
use crate::schedule::Schedule;
use crate::setup::{build_task, load_model, load_tokenizer};
use crate::splits::TaskData;
use crate::state::{Position, TrainerState, write_atomic};
use crate::task::{Task, round4};

/// `cpu`, `cuda` or `cuda:N` as a candle device, with a clear error when CUDA is
/// not compiled in or not there.
pub fn parse_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.device()
}

/// One optimizer step's accumulated gradients, its loss (the window's mean) and its
/// real tokens; `non_finite` holds a micro-batch's loss that was not a number, and
/// `non_finite_on` the ranks it was not a number on (empty in one process).
pub(crate) struct Window {
    pub grads: Grads,
    pub loss: f64,
    pub tokens: u64,
    pub non_finite: Option<f32>,
    pub non_finite_on: String,
}

/// Gathers each rank's non-finite loss (every rank calls it, once some rank's loss
/// was not a number): the first such loss, and " on rank R of N" naming each rank
/// whose loss was not a number, with its loss when there are several.
fn non_finite_ranks(
    c: &dyn berth_collective::Collective,
    mine: Option<f32>,
) -> Result<(f32, String)> {
    let mut bytes = vec![u8::from(mine.is_some())];
    bytes.extend(mine.unwrap_or(0.0).to_le_bytes());
    let bad: Vec<(usize, f32)> = c
        .all_gather_bytes(&bytes)?
        .iter()
        .enumerate()
        .filter(|(_, b)| b.len() == 5 && b[0] == 1)
        .map(|(r, b)| (r, f32::from_le_bytes([b[1], b[2], b[3], b[4]])))
        .collect();
    let world = c.world_size();
    let on = match bad.as_slice() {
        [] => format!(" on some rank of {world}"),
        [(r, _)] => format!(" on rank {r} of {world}"),
        many => format!(
            " on ranks {} of {world}",
            many.iter()
                .map(|(r, l)| format!("{r} ({l})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok((bad.first().map_or(f32::NAN, |b| b.1), on))
}

/// A dropout seed per (run seed, optimizer step, micro-batch): resuming at a step
/// reproduces the masks without saving RNG state.
fn dropout_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    for v in [step as u64, micro as u64] {
        x = (x ^ v).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 31;
    }
    x
}

/// A run in progress: what the phases of [`Trainer::train`] hand each other.
struct Run {
    out: PathBuf,
    per_epoch: usize,
    total_steps: usize,
    schedule: Schedule,
    opt: AdamW,
    state: TrainerState,
    /// What the callbacks decide, kept across steps.
    control: Control,
    /// When the first step of this process started (throughput counts from here).
    started: Instant,
    /// The step and tokens seen when this process started (after a resume).
    start_step: usize,
    start_tokens: u64,
    /// The sum of the steps' losses since the start.
    loss_total: f64,
}

/// A configured run: model, data and optimizer state.
pub struct Trainer {
    pub config: RunConfig,
    pub model: TaskModel,
    pub data: TaskData,
    pub tokenizer: Tokenizer,
    /// Everything that differs by task: rows, batches, head, metrics.
    pub task: Box<dyn Task>,
    model_dir: PathBuf,
    device: Device,
    no_bar: bool,
    /// Run after the built-in callbacks, in the order added.
    extra_callbacks: Vec<Box<dyn Callback>>,
    /// The data-parallel ranks this process trains with (one by default).
    collective: Arc<dyn Collective>,
    /// Rank 0's lock on `output_dir`, held until the trainer is dropped.
    _claim: Option<RunLock>,
}

impl Trainer {
    /// Resolves the model (directory or hub id), loads the tokenizer, prepares the
    /// data and builds the model with its task head, for one process. The run holds
    /// `output_dir` from here on: a second run there, or a fresh run into a finished
    /// run's directory, fails before any data is read.
    pub fn new(config: RunConfig) -> Result<Self> {
        Self::with_collective(config, Arc::new(SingleProcess))
    }

    /// [`Trainer::new`] as one of the ranks of `collective`
    /// (`berth_collective::from_env()` under `mpirun`): each rank takes its shard of
    /// every epoch's permutation, the gradients are summed across ranks before
    /// clipping, every rank starts from rank 0's weights, evaluation is sharded and
    /// gathered, and only rank 0 writes (and holds `output_dir`).
    pub fn with_collective(config: RunConfig, collective: Arc<dyn Collective>) -> Result<Self> {
        let claim = Self::claim(&config, collective.as_ref())?;
        let hub = config.model_hub();
        let device = config.training.device.device()?;
        let model_dir = berth_model::resolve_model_dir(&config.model, &hub)?;
        let tokenizer = load_tokenizer(&config, &model_dir)?;
        let task = build_task(&config, &tokenizer, &device)?;
        let model_config = berth_model::EncoderConfig::from_file(&model_dir.join("config.json"))?;
        let data = crate::splits::prepare(
            &config,
            task.as_ref(),
            &tokenizer,
            model_config.max_tokens(),
        )?;
        Self::with_task(
            config, claim, collective, task, data, tokenizer, model_dir, device,
        )
    }

    /// A trainer over already prepared rows (tests, other front ends), for one
    /// process.
    pub fn with_data(
        config: RunConfig,
        data: TaskData,
        tokenizer: Tokenizer,
        model_dir: PathBuf,
        device: Device,
    ) -> Result<Self> {
        let collective: Arc<dyn Collective> = Arc::new(SingleProcess);
        let claim = Self::claim(&config, collective.as_ref())?;
        let task = build_task(&config, &tokenizer, &device)?;
        Self::with_task(
            config, claim, collective, task, data, tokenizer, model_dir, device,
        )
    }

    /// Rank 0's hold on `output_dir` (see [`crate::run_dir::claim`]); the other
    /// ranks hold nothing.
    fn claim(config: &RunConfig, collective: &dyn Collective) -> Result<Option<RunLock>> {
        // Checked here too, so a config built in code is refused before it claims.
        config.training.validate()?;
        if collective.is_main() {
            run_dir::claim(config).map(Some)
        } else {
            Ok(None)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn with_task(
        config: RunConfig,
        claim: Option<RunLock>,
        collective: Arc<dyn Collective>,
        task: Box<dyn Task>,
        data: TaskData,
        tokenizer: Tokenizer,
        model_dir: PathBuf,
        device: Device,
    ) -> Result<Self> {
        // A config built in code, not read from a file, is checked here.
        config.validate()?;
        let model = load_model(
            &config,
            task.as_ref(),
            &model_dir,
            &device,
            &data.class_names,
        )?;
        let no_bar = config.training.disable_tqdm;
        Ok(Trainer {
            config,
            model,
            data,
            tokenizer,
            task,
            model_dir,
            device,
            no_bar,
            extra_callbacks: Vec::new(),
            collective,
            _claim: claim,
        })
    }

    /// The ranks this trainer trains with.
    pub fn collective(&self) -> &dyn Collective {
        self.collective.as_ref()
    }

    /// The micro-batches of one optimizer step, each with the weight of each loss
    /// part: its items over the window's (transformers since 4.46,
    /// `num_items_in_batch`). The weighted means add up to the mean over the whole
    /// window, so 4 x 4 accumulation trains as one batch of 16 even when the
    /// micro-batches hold different numbers of masked tokens or the last one is short.
    fn window_batches(
        &self,
        group: &[Vec<usize>],
        epoch: u64,
    ) -> Result<Vec<(TaskBatch, Vec<f64>)>> {
        let batches = group
            .iter()
            .map(|idx| self.task.train_batch(&self.data.train.rows, idx, epoch))
            .collect::<Result<Vec<_>>>()?;
        let items = batches
            .iter()
            .map(TaskBatch::loss_items)
            .collect::<Result<Vec<_>>>()?;
        let parts = items.first().map_or(0, Vec::len);
        let mut totals: Vec<usize> = (0..parts)
            .map(|k| items.iter().map(|v| v[k]).sum())
            .collect();
        if self.collective.world_size() > 1 {
            // Each part's items over the global window, on every rank: the ranks'
            // weighted gradients then sum to the global batch's mean gradient.
            let mut global: Vec<f64> = totals.iter().map(|&t| t as f64).collect();
            self.collective.all_reduce_sum_f64(&mut global)?;
            totals = global.into_iter().map(|t| t as usize).collect();
        }
        Ok(batches
            .into_iter()
            .zip(items)
            .map(|(b, n)| {
                let w = n
                    .iter()
                    .zip(&totals)
                    .map(|(&n, &t)| if t == 0 { 0.0 } else { n as f64 / t as f64 })
                    .collect();
                (b, w)
            })
            .collect())
    }

    /// Forward and backward of one optimizer step's micro-batches (dropout seeded by
    /// `step` and the micro-batch), their gradients accumulated. Stops at the first
    /// non-finite loss and says so in [`Window::non_finite`].
    pub(crate) fn window_step(
        &self,
        opt: &AdamW,
        group: &[Vec<usize>],
        epoch: u64,
        step: usize,
    ) -> Result<Window> {
        let mut w = Window {
            grads: opt.zero_grads(),
            loss: 0.0,
            tokens: 0,
            non_finite: None,
            non_finite_on: String::new(),
        };
        for (micro, (batch, weights)) in self.window_batches(group, epoch)?.iter().enumerate() {
            let t0 = Instant::now();
            let mode = Mode::train(dropout_seed(self.config.training.seed, step, micro));
            let values = self.model.train_step(batch, &mode, weights, &mut |g| {
                opt.accumulate(&mut w.grads, &g)
            })?;
            let loss: f32 = values.iter().sum();
            if !loss.is_finite() {
                w.non_finite = Some(loss);
                if self.collective.world_size() == 1 {
                    return Ok(w);
                }
                // The other ranks are on their way to the all-reduce: meet them there.
                break;
            }
            tracing::debug!(
                "step {} micro {micro}: {} items {} tokens, forward and backward {:.2}s",
                step + 1,
                batch.items,
                batch.real_tokens,
                t0.elapsed().as_secs_f64()
            );
            w.loss += values
                .iter()
                .zip(weights)
                .map(|(&v, &wt)| v as f64 * wt)
                .sum::<f64>();
            w.tokens += batch.real_tokens as u64;
        }
        let c = self.collective.as_ref();
        if c.world_size() > 1 {
            let mut sums = [
                w.loss,
                w.tokens as f64,
                f64::from(u8::from(w.non_finite.is_some())),
            ];
            c.all_reduce_sum_f64(&mut sums)?;
            w.loss = sums[0];
            w.tokens = sums[1] as u64;
            if sums[2] > 0.0 {
                // Some rank's loss is not a number: every rank stops at this step, and
                // every rank's error names the ranks it diverged on.
                let (loss, on) = non_finite_ranks(c, w.non_finite)?;
                w.non_finite = Some(loss);
                w.non_finite_on = on;
                return Ok(w);
            }
            opt.all_reduce(&mut w.grads, c)?;
        }
        Ok(w)
    }

    fn batch_plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let t = &self.config.training;
        let n = self.data.train.rows.len();
        let c = self.collective.as_ref();
        if c.world_size() > 1 && t.group_by_length {
            DistributedLengthGroupedSampler {
                lengths: self.data.train.rows.lengths(),
                batch_size: t.per_device_train_batch_size,
                seed: t.seed,
                drop_last: t.dataloader_drop_last,
                rank: c.rank(),
                world_size: c.world_size(),
            }
            .batches(epoch)
        } else if c.world_size() > 1 {
            DistributedSampler {
                len: n,
                batch_size: t.per_device_train_batch_size,
                seed: t.seed,
                drop_last: t.dataloader_drop_last,
                rank: c.rank(),
                world_size: c.world_size(),
            }
            .batches(epoch)
        } else if t.group_by_length {
            LengthGroupedSampler {
                lengths: self.data.train.rows.lengths(),
                batch_size: t.per_device_train_batch_size,
                seed: t.seed,
                drop_last: t.dataloader_drop_last,
            }
            .batches(epoch)
        } else {
            RandomSampler {
                len: n,
                batch_size: t.per_device_train_batch_size,
                seed: t.seed,
                drop_last: t.dataloader_drop_last,
            }
            .batches(epoch)
        }
    }

    /// Optimizer steps per epoch (a partial accumulation at the end of an epoch
    /// still steps) and the run's total.
    pub fn steps(&self) -> (usize, usize) {
        let t = &self.config.training;
        let batches = self.batch_plan(0).len();
        let per_epoch = batches.div_ceil(t.gradient_accumulation_steps).max(1);
        let total = if t.max_steps > 0 {
            t.max_steps as usize
        } else {
            (t.num_train_epochs * per_epoch as f64).ceil() as usize
        };
        (per_epoch, total)
    }

    /// A line on stderr, from rank 0 only.
    fn log(&self, line: &str) {
        if self.collective.is_main() {
            eprintln!("{line}");
        }
    }

    /// Adds a callback (HF's `trainer.add_callback`), called after each optimizer step
    /// once the flow has set what is due and before logging, evaluation and saving
    /// act: it sees the run and can ask for a log, an evaluation, a save or a stop.
    pub fn add_callback(&mut self, callback: Box<dyn Callback>) {
        self.extra_callbacks.push(callback);
    }

    /// Trains, evaluates and saves; returns the summary printed at the end. In
    /// phases, as burn's learner: `start` (the run directory, optimizer,
    /// schedule and fresh state), `resume` (a checkpoint's state, or a fresh
    /// log), `callbacks`, `run_epochs` (each epoch a
    /// `train_epoch`) and `finish` (summary, best model, the final
    /// evaluation and test, the outputs).
    pub fn train(&mut self) -> Result<RunSummary> {
        let mut run = self.start()?;
        self.resume(&mut run)?;
        self.announce(&run);
        let log = self.open_log(&run)?;
        let mut callbacks = self.callbacks();
        run.started = Instant::now();
        self.run_epochs(&mut run, &log, &mut callbacks)?;
        self.finish(run, &log)
    }

    /// The run directory (an old run moved aside with `overwrite_output_dir`,
    /// `run_config.toml` written, shared by every rank), the schedule, the optimizer
    /// and a fresh state.
    fn start(&self) -> Result<Run> {
        let t = &self.config.training;
        let out = t.output_dir.clone();
        let main = self.collective.is_main();
        if main {
            // The claim has locked and tidied the directory; a run still there is
            // one overwrite_output_dir replaces (a fresh run was refused otherwise).
            if t.overwrite_output_dir && !run_dir::run_in(&out).is_empty() {
                self.log(&format!(
                    "overwrite_output_dir: moving the run in {} aside; it is removed once this run has written its first checkpoint or its final model",
                    out.display()
                ));
                run_dir::move_aside(&out)?;
            }
            write_atomic(
                &out.join("run_config.toml"),
                self.config.to_toml()?.as_bytes(),
            )?;
        }
        let (per_epoch, total_steps) = self.steps();
        let schedule = Schedule::new(
            t.lr_scheduler_type,
            t.learning_rate,
            t.warmup_steps,
            t.warmup_ratio,
            total_steps,
        );
        let opt = AdamW::new(
            &self.model.varmap,
            AdamWConfig {
                beta1: t.adam_beta1,
                beta2: t.adam_beta2,
                eps: t.adam_epsilon,
                weight_decay: t.weight_decay,
            },
        )?;
        let state = TrainerState {
            eval_steps: match t.eval_strategy() {
                Strategy::Steps(n) => Some(n),
                _ => None,
            },
            is_local_process_zero: true,
            is_world_process_zero: true,
            logging_steps: t.logging_steps,
            max_steps: total_steps,
            num_train_epochs: total_steps.div_ceil(per_epoch),
            save_steps: t.save_steps,
            train_batch_size: t.per_device_train_batch_size,
            berth: Position {
                seed: t.seed,
                world_size: self.collective.world_size(),
                ..Default::default()
            },
            ..Default::default()
        };
        // The other ranks read checkpoints only once rank 0 has claimed and tidied
        // the directory.
        self.collective.barrier()?;
        self.check_shared_output_dir(&out)?;
        Ok(Run {
            out,
            per_epoch,
            total_steps,
            schedule,
            opt,
            state,
            control: Control::default(),
            started: Instant::now(),
            start_step: 0,
            start_tokens: 0,
            loss_total: 0.0,
        })
    }

    /// With `resume_from_checkpoint`, the checkpoint's weights, optimizer, state and
    /// data position (with the configuration it was trained with, in what changes
    /// the result, and on as many ranks);
    /// else a fresh metrics log. Every rank then starts from rank 0's weights.
    fn resume(&mut self, run: &mut Run) -> Result<()> {
        let t = &self.config.training;
        let world = self.collective.world_size();
        if let Some(spec) = &t.resume_from_checkpoint {
            // Rank 0's claim has checked that it was trained with this configuration.
            let ckpt = resolve_checkpoint(spec, &run.out)?;
            checkpoint::restore(
                &ckpt,
                &self.model.varmap,
                &self.device,
                &mut run.opt,
                &mut run.state,
            )?;
            let trained = &run.state.berth;
            if trained.world_size != world {
                return Err(TrainError::checkpoint(
                    &ckpt,
                    format!(
                        "was trained on {} data-parallel rank(s), this run has {world}: each rank's shard of the data order and the global batch would change; resume with {} rank(s)",
                        trained.world_size, trained.world_size
                    ),
                ));
            }
            if trained.seed != t.seed {
                return Err(TrainError::checkpoint(
                    &ckpt,
                    format!(
                        "was trained with seed {}, this run has seed {}: resuming would not continue the same run",
                        trained.seed, t.seed
                    ),
                ));
            }
            self.log(&format!(
                "resuming from {} at step {}",
                ckpt.display(),
                run.state.global_step
            ));
            // Only this run's checkpoints count (a fresh run ignores an old run's).
            run.control.last_checkpoint = checkpoints(&run.out).pop().map(|c| c.1);
        } else if self.collective.is_main() {
            // A fresh run starts a fresh metrics log.
            let _ = std::fs::remove_file(run.out.join("metrics.jsonl"));
        }
        run.start_step = run.state.global_step;
        run.start_tokens = run.state.berth.tokens_seen;
        run.control.should_stop = run.state.global_step >= run.total_steps;
        // Every rank starts from rank 0's weights.
        run.opt.broadcast_weights(self.collective.as_ref())
    }

    /// What is trained on what, on stderr (rank 0).
    fn announce(&self, run: &Run) {
        let t = &self.config.training;
        self.log(&format!(
            "training {} on {} rows ({}), {} steps ({} per epoch), batch {} x {} accumulation, device {}",
            self.config.task.name(),
            self.data.train.rows.len(),
            self.data.train.source,
            run.total_steps,
            run.per_epoch,
            t.per_device_train_batch_size,
            t.gradient_accumulation_steps,
            t.device
        ));
        let world = self.collective.world_size();
        if world > 1 {
            self.log(&format!(
                "data-parallel: {world} ranks ({}), global batch {} x {world} x {} accumulation",
                self.collective.backend(),
                t.per_device_train_batch_size,
                t.gradient_accumulation_steps
            ));
        }
        if !self.model.report.newly_initialized.is_empty() {
            self.log(&format!(
                "newly initialized (not in the checkpoint): {}",
                self.model.report.newly_initialized.join(", ")
            ));
        }
    }

    /// The metrics log, progress display and TensorBoard events (rank 0 writes).
    fn open_log(&self, run: &Run) -> Result<MetricsLog> {
        let t = &self.config.training;
        let main = self.collective.is_main();
        Ok(MetricsLog {
            path: run.out.join("metrics.jsonl"),
            progress: report::Progress::new(
                run.total_steps,
                run.state.global_step,
                self.no_bar || !main,
            ),
            tensorboard: (main && t.tensorboard())
                .then(|| crate::tensorboard::EventWriter::create(&run.out))
                .transpose()?
                .map(std::sync::Mutex::new),
            quiet: !main,
        })
    }

    /// The policies, in the order they act. As HF: every callback decides after the
    /// flow's defaults and before logging, evaluation and saving act, so an added
    /// callback can ask for a save or a stop (and a stop it asks for is
    /// checkpointed, as an early stop is).
    fn callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        let mut callbacks: Vec<Box<dyn Callback>> = vec![Box::new(Flow)];
        callbacks.append(&mut self.extra_callbacks);
        callbacks.extend([
            Box::new(SyncControl) as Box<dyn Callback>,
            Box::new(Logging::default()) as Box<dyn Callback>,
            Box::new(Evaluation),
            Box::new(EarlyStopping {
                patience: self.config.training.early_stopping_patience,
            }),
            // An early stop decided from this step's metrics, the same on every rank
            // up to the float sums of the gathered evaluation: or-ed again.
            Box::new(SyncControl),
            Box::new(Checkpointing),
        ]);
        callbacks
    }

    /// Epochs until the run's last step or a callback's stop.
    fn run_epochs(
        &self,
        run: &mut Run,
        log: &MetricsLog,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<()> {
        while !run.control.should_stop {
            self.train_epoch(run, log, callbacks)?;
            if !run.control.should_stop && run.state.berth.steps_in_epoch != 0 {
                // An epoch ends when its plan is used up, even if it was resumed.
                run.state.berth.epoch_index += 1;
                run.state.berth.steps_in_epoch = 0;
            }
        }
        log.progress.finish();
        Ok(())
    }

    /// The rest of the current epoch's optimizer steps (all of them, unless resumed
    /// inside it), each followed by the callbacks; stops early when they say so.
    fn train_epoch(
        &self,
        run: &mut Run,
        log: &MetricsLog,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<()> {
        let t = &self.config.training;
        let epoch = run.state.berth.epoch_index;
        let plan = self.batch_plan(epoch);
        let groups: Vec<&[Vec<usize>]> = plan.chunks(t.gradient_accumulation_steps).collect();
        let skip = run.state.berth.steps_in_epoch;
        for group in groups.iter().skip(skip) {
            let step = self.optimizer_step(run, log, group, epoch, groups.len())?;
            run.control.new_step();
            let mut session = Session {
                config: &self.config,
                tokenizer: &self.tokenizer,
                tokenizer_dir: self.tokenizer_dir(),
                task: self.task.as_ref(),
                model: &self.model,
                data: &self.data,
                opt: &run.opt,
                schedule: &run.schedule,
                state: &mut run.state,
                log,
                collective: self.collective.as_ref(),
            };
            for callback in callbacks.iter_mut() {
                callback.on_step_end(&mut session, &step, &mut run.control)?;
            }
            if step.last {
                run.control.should_stop = true;
            }
            if run.control.should_stop {
                break;
            }
        }
        Ok(())
    }

    /// One optimizer step over `group`'s micro-batches: forward and backward, the
    /// update, and the state moved on; what the callbacks are told of it. A loss
    /// that is not a number stops the run, naming the last good checkpoint.
    fn optimizer_step(
        &self,
        run: &mut Run,
        log: &MetricsLog,
        group: &[Vec<usize>],
        epoch: u64,
        steps_per_epoch: usize,
    ) -> Result<StepEnd> {
        let t = &self.config.training;
        let state = &mut run.state;
        let window = self.window_step(&run.opt, group, epoch, state.global_step)?;
        if let Some(loss) = window.non_finite {
            log.progress.finish();
            return Err(TrainError::NonFinite {
                loss,
                on: window.non_finite_on.clone(),
                step: state.global_step + 1,
                epoch: state.epoch,
                last_checkpoint: run
                    .control
                    .last_checkpoint
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none saved yet".into()),
            });
        }
        let lr = run.schedule.lr(state.global_step);
        let t2 = Instant::now();
        let grad_norm = run.opt.step(&window.grads, lr, t.max_grad_norm)?;
        tracing::debug!("optimizer step {:.2}s", t2.elapsed().as_secs_f64());
        drop(window.grads);
        state.global_step += 1;
        state.berth.steps_in_epoch += 1;
        state.berth.tokens_seen += window.tokens;
        state.num_input_tokens_seen = state.berth.tokens_seen;
        state.epoch = epoch as f64 + state.berth.steps_in_epoch as f64 / steps_per_epoch as f64;
        run.loss_total += window.loss;
        let epoch_end = state.berth.steps_in_epoch == steps_per_epoch;
        if epoch_end {
            // The position a checkpoint saved now resumes from: the next epoch.
            state.berth.epoch_index += 1;
            state.berth.steps_in_epoch = 0;
        }
        let elapsed = run.started.elapsed().as_secs_f64();
        Ok(StepEnd {
            step: state.global_step,
            total_steps: run.total_steps,
            epoch: state.epoch,
            epoch_end,
            last: state.global_step >= run.total_steps,
            loss: window.loss,
            grad_norm,
            lr: run.schedule.lr(state.global_step),
            tokens_per_s: (state.berth.tokens_seen - run.start_tokens) as f64 / elapsed.max(1e-9),
        })
    }

    /// The end of a run: the training metrics logged, the best model reloaded when
    /// asked, the final evaluation and the test, then (rank 0) the outputs.
    fn finish(&mut self, mut run: Run, log: &MetricsLog) -> Result<RunSummary> {
        let runtime = run.started.elapsed().as_secs_f64();
        let (train_loss, tokens_per_s, train_metrics) =
            self.train_metrics(&mut run, log, runtime)?;
        let reloaded_best = self.reload_best(&run)?;
        let mut eval = BTreeMap::new();
        if let Some(split) = &self.data.eval
            && self.config.training.eval_strategy() != Strategy::No
        {
            eval = match run.control.last_eval.take() {
                Some((step, m)) if step == run.state.global_step && !reloaded_best => m,
                _ => self.evaluate(split, "eval")?,
            };
        }
        let mut test = BTreeMap::new();
        let mut details: Vec<(String, String)> = Vec::new();
        if let Some(split) = &self.data.test {
            let (m, scorer) = self.evaluate_scored(split, "test")?;
            test = m;
            if let Some(md) = scorer.details(&self.data.class_names) {
                details.push(("Test: confusion matrix and per-class scores".into(), md));
            }
            log.push(
                &mut run.state,
                test.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
            )?;
        }
        let summary = RunSummary {
            output_dir: run.out.clone(),
            global_step: run.state.global_step,
            epoch: run.state.epoch,
            train_loss,
            train_runtime_s: runtime,
            train_tokens_per_s: tokens_per_s,
            eval,
            test,
            best_model_checkpoint: run.state.best_model_checkpoint.clone(),
        };
        if self.collective.is_main() {
            self.write_outputs(&run.out, &run.state, &train_metrics, &summary, &details)?;
            run_dir::commit_overwrite(&run.out)?;
        }
        // Rank 0 writes the model and the reports; the others wait until it has.
        self.collective.barrier()?;
        Ok(summary)
    }

    /// HF's `train_loss`, runtime and throughput, logged as one entry; returns the
    /// loss, the tokens per second and the values for `train_results.json`.
    fn train_metrics(
        &self,
        run: &mut Run,
        log: &MetricsLog,
        runtime: f64,
    ) -> Result<(f64, f64, BTreeMap<String, f64>)> {
        let t = &self.config.training;
        let world = self.collective.world_size();
        let steps_done = run.state.global_step - run.start_step;
        let train_loss = if steps_done > 0 {
            run.loss_total / steps_done as f64
        } else {
            0.0
        };
        let tokens_per_s =
            (run.state.berth.tokens_seen - run.start_tokens) as f64 / runtime.max(1e-9);
        let mut entry = Map::new();
        entry.insert("train_loss".into(), json!(train_loss));
        entry.insert("train_runtime".into(), json!(round4(runtime)));
        entry.insert(
            "train_samples_per_second".into(),
            json!(round4(
                // HF's total_train_batch_size: every rank's samples.
                steps_done as f64
                    * (t.per_device_train_batch_size * t.gradient_accumulation_steps * world)
                        as f64
                    / runtime.max(1e-9)
            )),
        );
        entry.insert(
            "train_steps_per_second".into(),
            json!(round4(steps_done as f64 / runtime.max(1e-9))),
        );
        entry.insert("train_tokens_per_second".into(), json!(tokens_per_s));
        // HF's train_results.json: the same values.
        let train_metrics: BTreeMap<String, f64> = entry
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
        log.push(&mut run.state, entry)?;
        Ok((train_loss, tokens_per_s, train_metrics))
    }

    /// With `load_best_model_at_end`, the best checkpoint's weights (checked against
    /// its manifest); whether they were loaded.
    fn reload_best(&self, run: &Run) -> Result<bool> {
        let Some(best) = &run.state.best_model_checkpoint else {
            return Ok(false);
        };
        if !self.config.training.load_best_model_at_end {
            return Ok(false);
        }
        self.log(&format!("loading the best model from {best}"));
        let best = Path::new(best);
        checkpoint::manifest::verify_if_present(best)?;
        checkpoint::load_weights(&self.model.varmap, best, &self.device)?;
        Ok(true)
    }

    /// With several ranks, every rank must see the output directory rank 0 writes
    /// (they read its checkpoints to resume and to load the best model): rank 0
    /// writes a token there, and each rank says what it reads. Checked at the start,
    /// not found out hours later.
    fn check_shared_output_dir(&self, out: &Path) -> Result<()> {
        let c = self.collective.as_ref();
        if c.world_size() == 1 {
            return Ok(());
        }
        let probe = out.join(".berth-ranks-probe");
        let token = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .max(1);
        // A failed write is reported after the gather, on every rank alike.
        let written = if c.is_main() {
            write_atomic(&probe, token.to_string().as_bytes()).err()
        } else {
            None
        };
        c.barrier()?;
        let read = || {
            std::fs::read_to_string(&probe)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let seen = if c.is_main() {
            if written.is_none() { token } else { 0 }
        } else {
            // Filesystems that cache lookups may show the file a moment late.
            let mut seen = 0;
            for _ in 0..25 {
                if let Some(t) = read() {
                    seen = t;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            seen
        };
        let all = c.all_gather_u64(seen)?;
        c.barrier()?;
        if let Some(e) = written {
            return Err(e);
        }
        if all[0] == 0 {
            return Err(TrainError::Config(format!(
                "output_dir {}: rank 0 could not write there",
                out.display()
            )));
        }
        if c.is_main() {
            let _ = std::fs::remove_file(&probe);
        }
        let blind: Vec<String> = (1..all.len())
            .filter(|&r| all[r] != all[0])
            .map(|r| r.to_string())
            .collect();
        if !blind.is_empty() {
            return Err(TrainError::Config(format!(
                "output_dir {} is not shared: rank(s) {} do not see what rank 0 writes there; data-parallel ranks need one directory every rank reads (a shared filesystem)",
                out.display(),
                blind.join(", ")
            )));
        }
        Ok(())
    }

    /// The final model, trainer state, results, model card, curves and report
    /// (rank 0's part of the end of a run).
    fn write_outputs(
        &self,
        out: &Path,
        state: &TrainerState,
        train_metrics: &BTreeMap<String, f64>,
        summary: &RunSummary,
        details: &[(String, String)],
    ) -> Result<()> {
        let (eval, test) = (&summary.eval, &summary.test);
        self.save_model(out)?;
        state.write(&out.join("trainer_state.json"))?;
        crate::repo::write_results(out, state.epoch, train_metrics, eval, test)?;
        let card_metrics: BTreeMap<String, f64> = eval
            .iter()
            .chain(test)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        write_atomic(
            &out.join("README.md"),
            crate::repo::model_card(
                &self.config,
                &self.data.train.source,
                state.global_step,
                state.epoch,
                &card_metrics,
            )
            .as_bytes(),
        )?;
        if let Err(e) = report::loss_curve(&state.log_history, &out.join("loss_curve.png")) {
            tracing::warn!("loss curve not drawn: {e}");
        }
        if let Some(svg) = report::curves_svg(&state.log_history) {
            write_atomic(&out.join("curves.svg"), svg.as_bytes())?;
        }
        report::write_report(
            &self.config,
            summary,
            &self.data,
            details,
            &out.join("report.md"),
        )
    }

    fn evaluate_scored(
        &self,
        split: &Split,
        prefix: &str,
    ) -> Result<(BTreeMap<String, f64>, Box<dyn crate::task::Scorer>)> {
        let mode = Mode::eval();
        crate::task::evaluate(
            self.task.as_ref(),
            &|b| self.model.forward(b, &mode),
            &split.rows,
            self.config.training.per_device_eval_batch_size,
            self.data.class_names.len(),
            prefix,
            self.collective.as_ref(),
        )
    }

    /// Evaluates `split`: loss and the task's metrics, named `<prefix>_<metric>`.
    pub fn evaluate(&self, split: &Split, prefix: &str) -> Result<BTreeMap<String, f64>> {
        Ok(self.evaluate_scored(split, prefix)?.0)
    }

    /// Saves the model as HF does (config.json + model.safetensors, HF names) plus
    /// the tokenizer, so `from_pretrained(dir)` and `berth predict` load it (see
    /// `checkpoint::SavedModel::write_final`).
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        SavedModel {
            model: &self.model,
            head: self.task.head_kind(),
            tokenizer: &self.tokenizer,
            tokenizer_dir: self.tokenizer_dir(),
        }
        .write_final(dir)
    }

    /// The directory the tokenizer was read from: the model's, or `tokenizer` when
    /// that names a directory (a tokenizer.json file or hub id gives none).
    fn tokenizer_dir(&self) -> Option<&Path> {
        match &self.config.tokenizer {
            None => Some(&self.model_dir),
            Some(t) if Path::new(t).is_dir() => Some(Path::new(t)),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_collective::Scripted;

    /// Rank 0 of as many ranks as `bytes`, each rank's gather answer scripted.
    fn gathered(bytes: Vec<Vec<u8>>) -> Scripted {
        Scripted {
            bytes,
            ..Scripted::default()
        }
    }

    fn sent(loss: Option<f32>) -> Vec<u8> {
        let mut b = vec![u8::from(loss.is_some())];
        b.extend(loss.unwrap_or(0.0).to_le_bytes());
        b
    }

    #[test]
    fn a_non_finite_loss_names_the_ranks_it_was_not_a_number_on() {
        let one = gathered(vec![sent(None), sent(Some(f32::INFINITY)), sent(None)]);
        let (loss, on) = non_finite_ranks(&one, None).unwrap();
        assert_eq!((loss, on.as_str()), (f32::INFINITY, " on rank 1 of 3"));
        let two = gathered(vec![sent(Some(f32::NAN)), sent(Some(f32::INFINITY))]);
        let (loss, on) = non_finite_ranks(&two, Some(f32::NAN)).unwrap();
        assert!(loss.is_nan());
        assert_eq!(on, " on ranks 0 (NaN), 1 (inf) of 2");
        let e = TrainError::NonFinite {
            loss,
            on,
            step: 3,
            epoch: 0.5,
            last_checkpoint: "none saved yet".into(),
        };
        assert_eq!(
            e.to_string(),
            "loss is NaN on ranks 0 (NaN), 1 (inf) of 2 at step 3 (epoch 0.50); stopping. Last good checkpoint: none saved yet"
        );
    }
}

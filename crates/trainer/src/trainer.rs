//! The training loop, as HF `Trainer.train()`: epochs of shuffled batches, gradient
//! accumulation, clipping, AdamW with a schedule, periodic logging, evaluation and
//! checkpoints, early stopping, best-model reload, and exact resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_collate::{
    BatchSampler, DistributedLengthGroupedSampler, DistributedSampler, LengthGroupedSampler,
    Padding, RandomSampler,
};
use berth_collective::{Collective, SingleProcess};
use berth_data::tokenizers::Tokenizer;
use berth_model::Mode;
use candle_core::{DType, Device};
use serde_json::{Map, json};
use std::sync::Arc;

use crate::batch::TaskBatch;
use crate::callbacks::{
    Callback, Checkpointing, Control, EarlyStopping, Evaluation, Flow, Logging, MetricsLog,
    Session, StepEnd, SyncControl,
};
use crate::config::{DeviceSpec, Precision, RunConfig, Strategy};
use crate::data::Split;
use crate::error::{Result, TrainError};
use crate::model::TaskModel;
use crate::optim::{AdamW, AdamWConfig, Grads};
use crate::report::{self, RunSummary};
use crate::schedule::Schedule;
use crate::splits::TaskData;
use crate::state::{Position, TrainerState, checkpoints, resolve_checkpoint, write_atomic};
use crate::task::{Task, TaskContext};

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
}

impl Trainer {
    /// Resolves the model (directory or hub id), loads the tokenizer, prepares the
    /// data and builds the model with its task head.
    pub fn new(config: RunConfig) -> Result<Self> {
        let hub = config.model_hub();
        let device = config.training.device.device()?;
        let model_dir = berth_model::resolve_model_dir(&config.model, &hub)?;
        let tokenizer = load_tokenizer(&config, &model_dir)?;
        let task = build_task(&config, &tokenizer, &device)?;
        let model_config = berth_model::BertConfig::from_file(&model_dir.join("config.json"))?;
        let data = crate::splits::prepare(
            &config,
            task.as_ref(),
            &tokenizer,
            model_config.max_position_embeddings,
        )?;
        Self::with_task(config, task, data, tokenizer, model_dir, device)
    }

    /// A trainer over already prepared rows (tests, other front ends).
    pub fn with_data(
        config: RunConfig,
        data: TaskData,
        tokenizer: Tokenizer,
        model_dir: PathBuf,
        device: Device,
    ) -> Result<Self> {
        let task = build_task(&config, &tokenizer, &device)?;
        Self::with_task(config, task, data, tokenizer, model_dir, device)
    }

    fn with_task(
        config: RunConfig,
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
            collective: Arc::new(SingleProcess),
        })
    }

    /// Trains as one of the ranks of `collective` (`berth_collective::from_env()`
    /// under `mpirun`): each rank takes its shard of every epoch's permutation, the
    /// gradients are summed across ranks before clipping, every rank starts from rank
    /// 0's weights, evaluation is sharded and gathered, and only rank 0 writes.
    pub fn set_collective(&mut self, collective: Arc<dyn Collective>) {
        self.collective = collective;
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

    /// Trains, evaluates and saves; returns the summary printed at the end.
    pub fn train(&mut self) -> Result<RunSummary> {
        let t = self.config.training.clone();
        let out = t.output_dir.clone();
        let world = self.collective.world_size();
        let main = self.collective.is_main();
        if main {
            std::fs::create_dir_all(&out).map_err(|e| TrainError::io(&out, e))?;
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
        let mut opt = AdamW::new(
            &self.model.varmap,
            AdamWConfig {
                beta1: t.adam_beta1,
                beta2: t.adam_beta2,
                eps: t.adam_epsilon,
                weight_decay: t.weight_decay,
            },
        )?;
        let eval_strategy = t.eval_strategy();
        let mut state = TrainerState {
            eval_steps: match eval_strategy {
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
                world_size: world,
                ..Default::default()
            },
            ..Default::default()
        };
        let metrics_log = out.join("metrics.jsonl");

        if main {
            crate::state::tidy_output_dir(&out)?;
        }
        // The other ranks read checkpoints only once rank 0 has tidied.
        self.collective.barrier()?;
        self.check_shared_output_dir(&out)?;
        if let Some(spec) = &t.resume_from_checkpoint {
            let ckpt = resolve_checkpoint(spec, &out)?;
            self.restore(&ckpt, &mut opt, &mut state)?;
            if state.berth.world_size != world {
                return Err(TrainError::checkpoint(
                    &ckpt,
                    format!(
                        "was trained on {} data-parallel rank(s), this run has {world}: each rank's shard of the data order and the global batch would change; resume with {} rank(s)",
                        state.berth.world_size, state.berth.world_size
                    ),
                ));
            }
            if state.berth.seed != t.seed {
                return Err(TrainError::checkpoint(
                    &ckpt,
                    format!(
                        "was trained with seed {}, this run has seed {}: resuming would not continue the same run",
                        state.berth.seed, t.seed
                    ),
                ));
            }
            self.log(&format!(
                "resuming from {} at step {}",
                ckpt.display(),
                state.global_step
            ));
        } else if main {
            // A fresh run starts a fresh metrics log.
            let _ = std::fs::remove_file(&metrics_log);
        }
        // Every rank starts from rank 0's weights.
        opt.broadcast_weights(self.collective.as_ref())?;

        let n_train = self.data.train.rows.len();
        self.log(&format!(
            "training {} on {} rows ({}), {} steps ({} per epoch), batch {} x {} accumulation, device {}",
            self.config.task.name(),
            n_train,
            self.data.train.source,
            total_steps,
            per_epoch,
            t.per_device_train_batch_size,
            t.gradient_accumulation_steps,
            t.device
        ));
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

        let log = MetricsLog {
            path: metrics_log,
            progress: report::Progress::new(total_steps, state.global_step, self.no_bar || !main),
            tensorboard: (main && t.tensorboard())
                .then(|| crate::tensorboard::EventWriter::create(&out))
                .transpose()?
                .map(std::sync::Mutex::new),
            quiet: !main,
        };
        // As HF: every callback decides after the flow's defaults and before logging,
        // evaluation and saving act, so an added callback can ask for a save or a stop
        // (and a stop it asks for is checkpointed, as an early stop is).
        let mut callbacks: Vec<Box<dyn Callback>> = vec![Box::new(Flow)];
        callbacks.append(&mut self.extra_callbacks);
        callbacks.extend([
            Box::new(SyncControl) as Box<dyn Callback>,
            Box::new(Logging::default()) as Box<dyn Callback>,
            Box::new(Evaluation),
            Box::new(EarlyStopping {
                patience: t.early_stopping_patience,
            }),
            // An early stop decided from this step's metrics, the same on every rank
            // up to the float sums of the gathered evaluation: or-ed again.
            Box::new(SyncControl),
            Box::new(Checkpointing),
        ]);
        let started = Instant::now();
        let start_step = state.global_step;
        let start_tokens = state.berth.tokens_seen;
        let mut loss_total = 0f64;
        let mut control = Control {
            // Only this run's checkpoints count (a fresh run ignores an old run's).
            last_checkpoint: match &t.resume_from_checkpoint {
                Some(_) => checkpoints(&out).pop().map(|c| c.1),
                None => None,
            },
            should_stop: state.global_step >= total_steps,
            ..Control::default()
        };

        while !control.should_stop {
            let epoch = state.berth.epoch_index;
            let plan = self.batch_plan(epoch);
            let groups: Vec<&[Vec<usize>]> = plan.chunks(t.gradient_accumulation_steps).collect();
            let skip = state.berth.steps_in_epoch;
            for group in groups.iter().skip(skip) {
                let window = self.window_step(&opt, group, epoch, state.global_step)?;
                if let Some(loss) = window.non_finite {
                    log.progress.finish();
                    return Err(TrainError::NonFinite {
                        loss,
                        on: window.non_finite_on.clone(),
                        step: state.global_step + 1,
                        epoch: state.epoch,
                        last_checkpoint: control
                            .last_checkpoint
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "none saved yet".into()),
                    });
                }
                let lr = schedule.lr(state.global_step);
                let t2 = Instant::now();
                let grad_norm = opt.step(&window.grads, lr, t.max_grad_norm)?;
                tracing::debug!("optimizer step {:.2}s", t2.elapsed().as_secs_f64());
                drop(window.grads);
                state.global_step += 1;
                state.berth.steps_in_epoch += 1;
                state.berth.tokens_seen += window.tokens;
                state.num_input_tokens_seen = state.berth.tokens_seen;
                state.epoch =
                    epoch as f64 + state.berth.steps_in_epoch as f64 / groups.len() as f64;
                loss_total += window.loss;
                let epoch_end = state.berth.steps_in_epoch == groups.len();
                if epoch_end {
                    // The position a checkpoint saved now resumes from: the next epoch.
                    state.berth.epoch_index += 1;
                    state.berth.steps_in_epoch = 0;
                }
                let elapsed = started.elapsed().as_secs_f64();
                let step = StepEnd {
                    step: state.global_step,
                    total_steps,
                    epoch: state.epoch,
                    epoch_end,
                    last: state.global_step >= total_steps,
                    loss: window.loss,
                    grad_norm,
                    lr: schedule.lr(state.global_step),
                    tokens_per_s: (state.berth.tokens_seen - start_tokens) as f64
                        / elapsed.max(1e-9),
                };
                control.new_step();
                let mut session = Session {
                    config: &self.config,
                    tokenizer: &self.tokenizer,
                    tokenizer_dir: self.tokenizer_dir(),
                    task: self.task.as_ref(),
                    model: &self.model,
                    data: &self.data,
                    opt: &opt,
                    schedule: &schedule,
                    state: &mut state,
                    log: &log,
                    collective: self.collective.as_ref(),
                };
                for callback in &mut callbacks {
                    callback.on_step_end(&mut session, &step, &mut control)?;
                }
                if step.last {
                    control.should_stop = true;
                }
                if control.should_stop {
                    break;
                }
            }
            if !control.should_stop && state.berth.steps_in_epoch != 0 {
                // An epoch ends when its plan is used up, even if it was resumed.
                state.berth.epoch_index += 1;
                state.berth.steps_in_epoch = 0;
            }
        }
        log.progress.finish();
        let runtime = started.elapsed().as_secs_f64();
        let steps_done = state.global_step - start_step;
        let train_loss = if steps_done > 0 {
            loss_total / steps_done as f64
        } else {
            0.0
        };
        let tokens_per_s = (state.berth.tokens_seen - start_tokens) as f64 / runtime.max(1e-9);
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
        log.push(&mut state, entry)?;

        let mut reloaded_best = false;
        if t.load_best_model_at_end
            && let Some(best) = state.best_model_checkpoint.clone()
        {
            self.log(&format!("loading the best model from {best}"));
            crate::manifest::verify_if_present(Path::new(&best))?;
            self.load_weights(Path::new(&best))?;
            reloaded_best = true;
        }
        let mut eval = BTreeMap::new();
        if let Some(split) = &self.data.eval
            && eval_strategy != Strategy::No
        {
            eval = match control.last_eval {
                Some((step, m)) if step == state.global_step && !reloaded_best => m,
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
                &mut state,
                test.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
            )?;
        }
        let summary = RunSummary {
            output_dir: out.clone(),
            global_step: state.global_step,
            epoch: state.epoch,
            train_loss,
            train_runtime_s: runtime,
            train_tokens_per_s: tokens_per_s,
            eval,
            test,
            best_model_checkpoint: state.best_model_checkpoint.clone(),
        };
        if !main {
            // Rank 0 writes the model and the reports; wait until it has.
            self.collective.barrier()?;
            return Ok(summary);
        }
        self.write_outputs(&out, &state, &train_metrics, &summary, &details)?;
        self.collective.barrier()?;
        Ok(summary)
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
    /// the tokenizer, so `from_pretrained(dir)` and `berth predict` load it. The
    /// files are written into a fresh hidden directory beside them and each renamed
    /// over its old copy (the run directory holds more than the model, so it is not
    /// replaced whole).
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        let tmp = berth_fs::temp_sibling(&dir.join("model"), "save");
        let moved = (|| -> Result<()> {
            berth_model::save(
                &tmp,
                &self.model.config,
                self.task.architecture(),
                &self.model.varmap,
            )?;
            for f in ["config.json", "model.safetensors"] {
                std::fs::rename(tmp.join(f), dir.join(f))
                    .map_err(|e| TrainError::io(dir.join(f), e))?;
            }
            Ok(())
        })();
        // Whether or not it got there (a full disk), nothing is left behind.
        let _ = std::fs::remove_dir_all(&tmp);
        moved?;
        crate::repo::write_tokenizer_files(
            dir,
            &self.tokenizer,
            self.tokenizer_dir(),
            self.model.config.max_position_embeddings,
        )
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

    fn load_weights(&self, dir: &Path) -> Result<()> {
        let file = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&file, &self.device)?;
        let data = self
            .model
            .varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("parameter store lock poisoned".into()))?;
        for (name, var) in data.iter() {
            let t = tensors
                .get(name)
                .ok_or_else(|| TrainError::checkpoint(&file, format!("no tensor '{name}'")))?;
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    fn restore(&mut self, dir: &Path, opt: &mut AdamW, state: &mut TrainerState) -> Result<()> {
        self.load_weights(dir)?;
        opt.load(dir)?;
        *state = TrainerState::read(&dir.join("trainer_state.json"))?;
        state.berth = Position::read(&dir.join("rng_state.json"))?;
        Ok(())
    }
}

use crate::task::round4;

/// The run's tokenizer: `tokenizer` when the config names one, else the model's.
pub(crate) fn load_tokenizer(config: &RunConfig, model_dir: &Path) -> Result<Tokenizer> {
    let spec = match &config.tokenizer {
        Some(t) => t.clone(),
        None => model_dir
            .to_str()
            .ok_or_else(|| TrainError::Config("model path is not UTF-8".into()))?
            .to_string(),
    };
    Ok(berth_data::load_tokenizer(&spec, &config.model_hub())?)
}

/// The config's task, batching onto `device`.
pub(crate) fn build_task(
    config: &RunConfig,
    tokenizer: &Tokenizer,
    device: &Device,
) -> Result<Box<dyn Task>> {
    config.task.build(&TaskContext {
        tokenizer,
        seed: config.training.seed,
        padding: Padding::Longest {
            multiple_of: config.training.pad_to_multiple_of,
        },
        pad_id: berth_data::special_tokens(tokenizer)?.pad,
        device: device.clone(),
        eval_rows: config.training.per_device_eval_batch_size,
    })
}

/// The model of `model_dir` with the task's head, in the config's precision.
pub(crate) fn load_model(
    config: &RunConfig,
    task: &dyn Task,
    model_dir: &Path,
    device: &Device,
    class_names: &[String],
) -> Result<TaskModel> {
    crate::manifest::verify_if_present(model_dir)?;
    let mut model = TaskModel::load(task, model_dir, device, config.training.seed, class_names)?;
    if config.training.precision == Precision::Bf16 {
        model.set_compute_dtype(DType::BF16);
    }
    Ok(model)
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

//! The training loop, as HF `Trainer.train()`: epochs of shuffled batches, gradient
//! accumulation, clipping, AdamW with a schedule, periodic logging, evaluation and
//! checkpoints, early stopping, best-model reload, and exact resume.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use berth_collate::{BatchSampler, LengthGroupedSampler, Padding, RandomSampler};
use berth_data::HubOptions;
use berth_data::tokenizers::Tokenizer;
use berth_model::Mode;
use candle_core::{DType, Device, Tensor};
use serde_json::{Map, Value, json};

use crate::config::{DeviceSpec, Precision, RunConfig, Strategy};
use crate::data::{Split, TaskData};
use crate::error::{Result, TrainError};
use crate::model::{TaskBatch, TaskModel};
use crate::optim::{AdamW, AdamWConfig, Grads};
use crate::report;
use crate::schedule::Schedule;
use crate::state::{Position, TrainerState, checkpoints, resolve_checkpoint, write_atomic};
use crate::task::{Task, TaskContext};

/// `cpu`, `cuda` or `cuda:N` as a candle device, with a clear error when CUDA is
/// not compiled in or not there.
pub fn parse_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.device()
}

/// One optimizer step's accumulated gradients, its loss (the window's mean) and its
/// real tokens; `non_finite` holds a micro-batch's loss that was not a number.
pub(crate) struct Window {
    pub grads: Grads,
    pub loss: f64,
    pub tokens: u64,
    pub non_finite: Option<f32>,
}

/// A micro-batch's share of its window's loss, `Σ part x weight`. A part with no
/// items weighs 0 but stays in the graph, so its parameters still get (zero)
/// gradients and AdamW still decays them.
fn window_loss(parts: &[Tensor], weights: &[f64]) -> Result<Tensor> {
    let mut scaled = parts.iter().zip(weights).map(|(p, &w)| p * w);
    let first = scaled
        .next()
        .ok_or_else(|| TrainError::Config("a head with no loss".into()))??;
    Ok(scaled.try_fold(first, |t, s| t + s?)?)
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

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub output_dir: PathBuf,
    pub global_step: usize,
    pub epoch: f64,
    pub train_loss: f64,
    pub train_runtime_s: f64,
    pub train_tokens_per_s: f64,
    pub eval: BTreeMap<String, f64>,
    pub test: BTreeMap<String, f64>,
    pub best_model_checkpoint: Option<String>,
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
}

impl Trainer {
    /// Resolves the model (directory or hub id), loads the tokenizer, prepares the
    /// data and builds the model with its task head.
    pub fn new(config: RunConfig) -> Result<Self> {
        let hub = HubOptions::from_env();
        let device = config.training.device.device()?;
        let model_dir = berth_model::resolve_model_dir(&config.model, &hub)?;
        let tokenizer = load_tokenizer(&config, &model_dir)?;
        let task = build_task(&config, &tokenizer, &device)?;
        let model_config = berth_model::BertConfig::from_file(&model_dir.join("config.json"))?;
        let data = crate::data::prepare(
            &config,
            task.as_ref(),
            &tokenizer,
            model_config.max_position_embeddings,
        )?;
        Self::with_data(config, data, tokenizer, model_dir, device)
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
        })
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
            .map(|idx| self.task.batch(&self.data.train.rows, idx, epoch))
            .collect::<Result<Vec<_>>>()?;
        let items = batches
            .iter()
            .map(TaskBatch::loss_items)
            .collect::<Result<Vec<_>>>()?;
        let parts = items.first().map_or(0, Vec::len);
        let totals: Vec<usize> = (0..parts)
            .map(|k| items.iter().map(|v| v[k]).sum())
            .collect();
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
        };
        for (micro, (batch, weights)) in self.window_batches(group, epoch)?.iter().enumerate() {
            let t0 = Instant::now();
            let mode = Mode::train(dropout_seed(self.config.training.seed, step, micro));
            let outp = self.model.forward(batch, &mode)?;
            // Each part read once (a device sync each on a GPU); their sum is the loss.
            let values = outp
                .parts
                .iter()
                .map(|p| p.to_scalar::<f32>())
                .collect::<candle_core::Result<Vec<f32>>>()?;
            let loss: f32 = values.iter().sum();
            let t1 = Instant::now();
            if !loss.is_finite() {
                w.non_finite = Some(loss);
                return Ok(w);
            }
            let g = window_loss(&outp.parts, weights)?.backward()?;
            opt.accumulate(&mut w.grads, &g)?;
            drop(g);
            tracing::debug!(
                "step {} micro {micro}: {} items {} tokens, forward {:.2}s backward {:.2}s",
                step + 1,
                batch.items,
                batch.real_tokens,
                (t1 - t0).as_secs_f64(),
                t1.elapsed().as_secs_f64()
            );
            w.loss += values
                .iter()
                .zip(weights)
                .map(|(&v, &wt)| v as f64 * wt)
                .sum::<f64>();
            w.tokens += batch.real_tokens as u64;
        }
        Ok(w)
    }

    fn batch_plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let t = &self.config.training;
        let n = self.data.train.rows.len();
        if t.group_by_length {
            LengthGroupedSampler {
                lengths: self.data.train.rows.lengths(),
                batch_size: t.per_device_train_batch_size,
                seed: t.seed,
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

    fn log(&self, line: &str) {
        eprintln!("{line}");
    }

    /// Trains, evaluates and saves; returns the summary printed at the end.
    pub fn train(&mut self) -> Result<RunSummary> {
        let t = self.config.training.clone();
        let out = t.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(|e| TrainError::io(&out, e))?;
        write_atomic(
            &out.join("run_config.toml"),
            self.config.to_toml()?.as_bytes(),
        )?;
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
        let save_strategy = t.save_strategy();
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
                ..Default::default()
            },
            ..Default::default()
        };
        let metrics_log = out.join("metrics.jsonl");

        if let Some(spec) = &t.resume_from_checkpoint {
            let ckpt = resolve_checkpoint(spec, &out)?;
            self.restore(&ckpt, &mut opt, &mut state)?;
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
        } else {
            // A fresh run starts a fresh metrics log.
            let _ = std::fs::remove_file(&metrics_log);
        }

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
        if !self.model.report.newly_initialized.is_empty() {
            self.log(&format!(
                "newly initialized (not in the checkpoint): {}",
                self.model.report.newly_initialized.join(", ")
            ));
        }

        let progress = report::Progress::new(total_steps, state.global_step, self.no_bar);
        let started = Instant::now();
        let start_step = state.global_step;
        let start_tokens = state.berth.tokens_seen;
        let mut loss_since_log = 0f64;
        let mut steps_since_log = 0usize;
        let mut loss_total = 0f64;
        // Only this run's checkpoints count (a fresh run ignores an old run's).
        let mut last_checkpoint: Option<PathBuf> = match &t.resume_from_checkpoint {
            Some(_) => checkpoints(&out).pop().map(|c| c.1),
            None => None,
        };
        let mut stop = state.global_step >= total_steps;
        // The newest evaluation: reused at the end when nothing changed since.
        let mut last_eval: Option<(usize, BTreeMap<String, f64>)> = None;

        while !stop {
            let epoch = state.berth.epoch_index;
            let plan = self.batch_plan(epoch);
            let groups: Vec<&[Vec<usize>]> = plan.chunks(t.gradient_accumulation_steps).collect();
            let skip = state.berth.steps_in_epoch;
            for group in groups.iter().skip(skip) {
                let window = self.window_step(&opt, group, epoch, state.global_step)?;
                if let Some(loss) = window.non_finite {
                    progress.finish();
                    return Err(TrainError::NonFinite {
                        loss,
                        step: state.global_step + 1,
                        epoch: state.epoch,
                        last_checkpoint: last_checkpoint
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "none saved yet".into()),
                    });
                }
                let (grads, group_loss, group_tokens) = (window.grads, window.loss, window.tokens);
                let lr = schedule.lr(state.global_step);
                let t2 = Instant::now();
                let grad_norm = opt.step(&grads, lr, t.max_grad_norm)?;
                tracing::debug!("optimizer step {:.2}s", t2.elapsed().as_secs_f64());
                drop(grads);
                state.global_step += 1;
                state.berth.steps_in_epoch += 1;
                state.berth.tokens_seen += group_tokens;
                state.epoch =
                    epoch as f64 + state.berth.steps_in_epoch as f64 / groups.len() as f64;
                loss_since_log += group_loss;
                steps_since_log += 1;
                loss_total += group_loss;
                let elapsed = started.elapsed().as_secs_f64();
                let tok_s = (state.berth.tokens_seen - start_tokens) as f64 / elapsed.max(1e-9);
                progress.update(state.global_step, state.epoch, group_loss, lr, tok_s);

                let epoch_end = state.berth.steps_in_epoch == groups.len();
                let last = state.global_step >= total_steps;
                if t.logging_steps > 0
                    && (state.global_step.is_multiple_of(t.logging_steps) || last)
                {
                    let mut entry = Map::new();
                    entry.insert(
                        "loss".into(),
                        json!(round4(loss_since_log / steps_since_log as f64)),
                    );
                    entry.insert("grad_norm".into(), json!(grad_norm));
                    entry.insert(
                        "learning_rate".into(),
                        json!(schedule.lr(state.global_step)),
                    );
                    entry.insert("epoch".into(), json!(state.epoch));
                    entry.insert("step".into(), json!(state.global_step));
                    entry.insert("tokens_per_second".into(), json!(tok_s));
                    progress.println(&format!(
                        "step {}/{} epoch {:.2} loss {:.4} lr {:.3e} grad_norm {:.3} {:.0} tok/s",
                        state.global_step,
                        total_steps,
                        state.epoch,
                        loss_since_log / steps_since_log as f64,
                        schedule.lr(state.global_step),
                        grad_norm,
                        tok_s
                    ));
                    self.push_log(&mut state, entry, &metrics_log)?;
                    loss_since_log = 0.0;
                    steps_since_log = 0;
                }

                let due = |s: Strategy| match s {
                    Strategy::No => false,
                    Strategy::Steps(n) => state.global_step.is_multiple_of(n),
                    Strategy::Epoch => epoch_end,
                };
                let (eval_due, save_due) = (due(eval_strategy), due(save_strategy));
                let mut improved_or_first = false;
                if eval_due {
                    let split = self.data.eval.clone().ok_or_else(|| {
                        TrainError::Config("eval_strategy is set but there is no eval split (data.eval or data.validation_split)".into())
                    })?;
                    let m = self.evaluate(&split, "eval")?;
                    last_eval = Some((state.global_step, m.clone()));
                    progress.println(&format!(
                        "eval at step {}: {}",
                        state.global_step,
                        fmt_metrics(&m)
                    ));
                    let mut entry: Map<String, Value> =
                        m.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    entry.insert("epoch".into(), json!(state.epoch));
                    entry.insert("step".into(), json!(state.global_step));
                    self.push_log(&mut state, entry, &metrics_log)?;
                    let key = t.best_metric();
                    let value = *m.get(&key).ok_or_else(|| {
                        TrainError::Config(format!(
                            "metric_for_best_model '{key}' is not among the eval metrics {:?}",
                            m.keys().collect::<Vec<_>>()
                        ))
                    })?;
                    let better = match state.best_metric {
                        None => true,
                        Some(best) => {
                            if t.greater_is_better() {
                                value > best + t.early_stopping_threshold
                            } else {
                                value < best - t.early_stopping_threshold
                            }
                        }
                    };
                    if better {
                        state.best_metric = Some(value);
                        state.best_global_step = Some(state.global_step);
                        state.berth.evals_without_improvement = 0;
                        improved_or_first = true;
                    } else {
                        state.berth.evals_without_improvement += 1;
                    }
                    if let Some(p) = t.early_stopping_patience
                        && state.berth.evals_without_improvement >= p
                    {
                        progress.println(&format!(
                            "early stopping: {key} has not improved for {p} evaluations"
                        ));
                        stop = true;
                    }
                }
                if epoch_end {
                    state.berth.epoch_index += 1;
                    state.berth.steps_in_epoch = 0;
                }
                if save_due || (stop && save_strategy != Strategy::No) {
                    let dir = out.join(format!("checkpoint-{}", state.global_step));
                    if improved_or_first {
                        state.best_model_checkpoint = Some(dir.display().to_string());
                    }
                    self.save_checkpoint(&dir, &opt, &schedule, &state)?;
                    last_checkpoint = Some(dir);
                    self.rotate_checkpoints(&out, &state)?;
                }
                if last {
                    stop = true;
                }
                if stop {
                    break;
                }
            }
            if !stop && state.berth.steps_in_epoch != 0 {
                // An epoch ends when its plan is used up, even if it was resumed.
                state.berth.epoch_index += 1;
                state.berth.steps_in_epoch = 0;
            }
        }
        progress.finish();
        let runtime = started.elapsed().as_secs_f64();
        let steps_done = state.global_step - start_step;
        let train_loss = if steps_done > 0 {
            loss_total / steps_done as f64
        } else {
            0.0
        };
        let tokens_per_s = (state.berth.tokens_seen - start_tokens) as f64 / runtime.max(1e-9);
        let mut entry = Map::new();
        entry.insert("epoch".into(), json!(state.epoch));
        entry.insert("step".into(), json!(state.global_step));
        entry.insert("train_loss".into(), json!(train_loss));
        entry.insert("train_runtime".into(), json!(round4(runtime)));
        entry.insert(
            "train_samples_per_second".into(),
            json!(round4(
                steps_done as f64
                    * (t.per_device_train_batch_size * t.gradient_accumulation_steps) as f64
                    / runtime.max(1e-9)
            )),
        );
        entry.insert(
            "train_steps_per_second".into(),
            json!(round4(steps_done as f64 / runtime.max(1e-9))),
        );
        entry.insert("train_tokens_per_second".into(), json!(tokens_per_s));
        self.push_log(&mut state, entry, &metrics_log)?;

        let mut reloaded_best = false;
        if t.load_best_model_at_end
            && let Some(best) = state.best_model_checkpoint.clone()
        {
            self.log(&format!("loading the best model from {best}"));
            self.load_weights(Path::new(&best))?;
            reloaded_best = true;
        }
        let mut eval = BTreeMap::new();
        if let Some(split) = self.data.eval.clone()
            && eval_strategy != Strategy::No
        {
            eval = match last_eval {
                Some((step, m)) if step == state.global_step && !reloaded_best => m,
                _ => self.evaluate(&split, "eval")?,
            };
        }
        let mut test = BTreeMap::new();
        if let Some(split) = self.data.test.clone() {
            test = self.evaluate(&split, "test")?;
            let mut entry: Map<String, Value> =
                test.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            entry.insert("epoch".into(), json!(state.epoch));
            entry.insert("step".into(), json!(state.global_step));
            self.push_log(&mut state, entry, &metrics_log)?;
        }
        self.save_model(&out)?;
        state.write(&out.join("trainer_state.json"))?;
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
        if let Err(e) = report::loss_curve(&state.log_history, &out.join("loss_curve.png")) {
            tracing::warn!("loss curve not drawn: {e}");
        }
        report::write_report(&self.config, &summary, &self.data, &out.join("report.md"))?;
        Ok(summary)
    }

    fn push_log(
        &self,
        state: &mut TrainerState,
        entry: Map<String, Value>,
        file: &Path,
    ) -> Result<()> {
        let line = serde_json::to_string(&entry)
            .map_err(|e| TrainError::checkpoint(file, e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|e| TrainError::io(file, e))?;
        writeln!(f, "{line}").map_err(|e| TrainError::io(file, e))?;
        state.log_history.push(entry);
        Ok(())
    }

    /// Evaluates `split`: loss and the task's metrics, named `<prefix>_<metric>`.
    pub fn evaluate(&self, split: &Split, prefix: &str) -> Result<BTreeMap<String, f64>> {
        let mode = Mode::eval();
        crate::task::evaluate(
            self.task.as_ref(),
            &|b| self.model.forward(b, &mode),
            &split.rows,
            self.config.training.per_device_eval_batch_size,
            self.data.class_names.len(),
            prefix,
        )
    }

    /// Saves the model as HF does (config.json + model.safetensors, HF names) plus
    /// the tokenizer, so `from_pretrained(dir)` and `berth predict` load it.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".model.tmp");
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
        let _ = std::fs::remove_dir_all(&tmp);
        let tok = self.model_dir.join("tokenizer.json");
        let tok_bytes = if tok.is_file() {
            std::fs::read(&tok).map_err(|e| TrainError::io(&tok, e))?
        } else {
            self.tokenizer
                .to_string(false)
                .map_err(|e| TrainError::Config(format!("tokenizer: {e}")))?
                .into_bytes()
        };
        write_atomic(&dir.join("tokenizer.json"), &tok_bytes)
    }

    /// `checkpoint-<step>/`: model, optimizer, scheduler, trainer state (with the
    /// data position), written to a temp dir and renamed.
    fn save_checkpoint(
        &self,
        dir: &Path,
        opt: &AdamW,
        schedule: &Schedule,
        state: &TrainerState,
    ) -> Result<()> {
        berth_model::write_dir_atomically(dir, |tmp| -> Result<()> {
            let arch = self.task.architecture();
            berth_model::save_into(tmp, &self.model.config, arch, &self.model.varmap)?;
            opt.save(tmp)?;
            let json_err = |e: serde_json::Error| TrainError::checkpoint(tmp, e.to_string());
            for (file, bytes) in [
                (
                    "scheduler.json",
                    serde_json::to_vec_pretty(schedule).map_err(json_err)?,
                ),
                (
                    "rng_state.json",
                    serde_json::to_vec_pretty(&state.berth).map_err(json_err)?,
                ),
                ("training_config.toml", self.config.to_toml()?.into_bytes()),
            ] {
                let path = tmp.join(file);
                std::fs::write(&path, bytes).map_err(|e| TrainError::io(&path, e))?;
            }
            state.write(&tmp.join("trainer_state.json"))
        })
    }

    /// Keeps at most `save_total_limit` checkpoints, never the best one.
    fn rotate_checkpoints(&self, out: &Path, state: &TrainerState) -> Result<()> {
        let Some(limit) = self.config.training.save_total_limit else {
            return Ok(());
        };
        let all = checkpoints(out);
        let best = state.best_model_checkpoint.as_deref().map(PathBuf::from);
        let mut excess = all.len().saturating_sub(limit.max(1));
        for (_, dir) in &all {
            if excess == 0 {
                break;
            }
            if Some(dir) == best.as_ref() {
                continue;
            }
            std::fs::remove_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
            excess -= 1;
        }
        Ok(())
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
    Ok(berth_data::load_tokenizer(&spec, &HubOptions::from_env())?)
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
        device: device.clone(),
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
    let mut model = TaskModel::load(task, model_dir, device, config.training.seed, class_names)?;
    if config.training.precision == Precision::Bf16 {
        model.set_compute_dtype(DType::BF16);
    }
    Ok(model)
}

/// `k=v` pairs, 4 decimals.
pub fn fmt_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .filter(|(k, _)| !k.ends_with("runtime") && !k.ends_with("per_second"))
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether progress should be a bar (a terminal) or log lines.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

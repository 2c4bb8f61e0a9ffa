//! The policies around the training loop, as HF's `TrainerCallback`s and burn's
//! learner parts: when to log, evaluate and save, which evaluation is the best,
//! when to stop early, checkpoint rotation. The loop only does forward, backward,
//! accumulation, clipping and the optimizer step, then calls each [`Callback`] with a
//! [`Session`] (what the run holds) and the [`Control`] they share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_data::tokenizers::Tokenizer;
use berth_model::Mode;
use serde_json::{Map, Value, json};

use crate::checkpoint::{self, SavedModel, Snapshot};
use crate::config::{RunConfig, Strategy};
use crate::error::{Result, TrainError};
use crate::model::TaskModel;
use crate::optim::AdamW;
use crate::report::Progress;
use crate::run_dir;
use crate::schedule::Schedule;
use crate::splits::TaskData;
use crate::state::TrainerState;
use crate::task::{Task, round4};

/// What the loop just did: one optimizer step.
#[derive(Clone, Debug)]
pub struct StepEnd {
    pub step: usize,
    pub total_steps: usize,
    /// Fractional epochs done.
    pub epoch: f64,
    /// This step used up its epoch's batches.
    pub epoch_end: bool,
    /// The run's last step.
    pub last: bool,
    /// The step's loss (its window's mean).
    pub loss: f64,
    pub grad_norm: f64,
    /// The rate the next step uses.
    pub lr: f64,
    pub tokens_per_s: f64,
}

/// What the callbacks of one step decide and tell each other (HF `TrainerControl`).
#[derive(Clone, Debug, Default)]
pub struct Control {
    pub should_log: bool,
    pub should_evaluate: bool,
    pub should_save: bool,
    pub should_stop: bool,
    /// The eval metrics of this step, when it evaluated.
    pub metrics: Option<BTreeMap<String, f64>>,
    /// This step's evaluation is the best so far (or the first).
    pub improved: bool,
    /// The newest evaluation: (step, metrics), reused at the end if nothing changed.
    pub last_eval: Option<(usize, BTreeMap<String, f64>)>,
    /// This run's newest checkpoint.
    pub last_checkpoint: Option<PathBuf>,
}

impl Control {
    /// Clears the per-step decisions; keeps what lasts across steps.
    pub(crate) fn new_step(&mut self) {
        self.should_log = false;
        self.should_evaluate = false;
        self.should_save = false;
        self.metrics = None;
        self.improved = false;
    }
}

/// The metrics log (`metrics.jsonl` and `trainer_state.json`'s `log_history`) and
/// the progress display.
pub struct MetricsLog {
    pub path: PathBuf,
    pub progress: Progress,
    /// TensorBoard event file (`report_to = ["tensorboard"]`).
    pub tensorboard: Option<std::sync::Mutex<crate::tensorboard::EventWriter>>,
    /// A rank other than 0: entries go to the history only, and nothing is printed.
    pub quiet: bool,
}

impl MetricsLog {
    /// Appends `entry` (with the step and epoch) to the file and the history.
    pub fn push(&self, state: &mut TrainerState, mut entry: Map<String, Value>) -> Result<()> {
        entry.insert("epoch".into(), json!(state.epoch));
        entry.insert("step".into(), json!(state.global_step));
        let file = &self.path;
        if self.quiet {
            state.log_history.push(entry);
            return Ok(());
        }
        let line = serde_json::to_string(&entry)
            .map_err(|e| TrainError::checkpoint(file, e.to_string()))?;
        // Whole lines or nothing, so a full disk never leaves half a record.
        berth_fs::append(file, format!("{line}\n").as_bytes())?;
        if let Some(tb) = &self.tensorboard {
            let mut tb = tb
                .lock()
                .map_err(|_| TrainError::internal("event writer lock poisoned"))?;
            tb.scalars(state.global_step as i64, &crate::tensorboard::tags(&entry))?;
        }
        state.log_history.push(entry);
        Ok(())
    }

    /// A line above the progress bar (or on stderr without one).
    pub fn println(&self, line: &str) {
        if !self.quiet {
            self.progress.println(line);
        }
    }
}

/// What a run holds, lent to the callbacks.
pub struct Session<'a> {
    pub config: &'a RunConfig,
    pub tokenizer: &'a Tokenizer,
    /// The directory the run's tokenizer came from (its tokenizer files are copied
    /// into checkpoints), if it came from one.
    pub tokenizer_dir: Option<&'a Path>,
    pub task: &'a dyn Task,
    pub model: &'a TaskModel,
    pub data: &'a TaskData,
    pub opt: &'a AdamW,
    pub schedule: &'a Schedule,
    pub state: &'a mut TrainerState,
    pub log: &'a MetricsLog,
    /// The data-parallel ranks (a single process by default).
    pub collective: &'a dyn berth_collective::Collective,
}

impl Session<'_> {
    /// What a checkpoint of this step holds; its model card shows `metrics`.
    fn snapshot(&self, metrics: &BTreeMap<String, f64>) -> Result<Snapshot<'_>> {
        Ok(Snapshot {
            model: SavedModel {
                model: self.model,
                head: self.task.head_kind(),
                tokenizer: self.tokenizer,
                tokenizer_dir: self.tokenizer_dir,
            },
            model_card: crate::repo::model_card(
                self.config,
                &self.data.train.source,
                self.state.global_step,
                self.state.epoch,
                metrics,
            ),
            config_toml: self.config.to_toml()?,
            opt: self.opt,
            schedule: self.schedule,
            state: self.state,
        })
    }

    /// Loss and metrics of the eval split, named `eval_<metric>`.
    pub fn evaluate(&self) -> Result<BTreeMap<String, f64>> {
        let split = self.data.eval.as_ref().ok_or_else(|| {
            TrainError::Config(
                "eval_strategy is set but there is no eval split (data.eval or data.validation_split)"
                    .into(),
            )
        })?;
        let mode = Mode::eval();
        crate::task::evaluate(
            self.task,
            &|b| self.model.forward(b, &mode),
            &split.rows,
            self.config.training.per_device_eval_batch_size,
            self.data.class_names.len(),
            "eval",
            self.collective,
        )
        .map(|r| r.0)
    }
}

/// One policy around the loop.
pub trait Callback {
    /// After each optimizer step, in the order the callbacks were given.
    fn on_step_end(
        &mut self,
        session: &mut Session<'_>,
        step: &StepEnd,
        control: &mut Control,
    ) -> Result<()>;
}

/// HF's `DefaultFlowCallback`: when logging, evaluation and saving are due.
pub struct Flow;

impl Callback for Flow {
    fn on_step_end(&mut self, s: &mut Session<'_>, step: &StepEnd, c: &mut Control) -> Result<()> {
        let t = &s.config.training;
        let due = |strategy: Strategy| match strategy {
            Strategy::No => false,
            Strategy::Steps(n) => step.step.is_multiple_of(n),
            Strategy::Epoch => step.epoch_end,
        };
        c.should_log =
            t.logging_steps > 0 && (step.step.is_multiple_of(t.logging_steps) || step.last);
        c.should_evaluate = due(t.eval_strategy());
        c.should_save = due(t.save_strategy());
        Ok(())
    }
}

/// With several ranks, the decisions made so far this step (by [`Flow`] and any
/// added callback) are or-ed across ranks, so that every rank logs, evaluates, saves
/// and stops at the same steps: a callback deciding by the clock or a file on one
/// rank would otherwise send the ranks into different collectives.
pub struct SyncControl;

impl Callback for SyncControl {
    fn on_step_end(&mut self, s: &mut Session<'_>, _: &StepEnd, c: &mut Control) -> Result<()> {
        if s.collective.world_size() == 1 {
            return Ok(());
        }
        let mut flags = [
            c.should_log,
            c.should_evaluate,
            c.should_save,
            c.should_stop,
        ]
        .map(|f| f64::from(u8::from(f)));
        s.collective.all_reduce_sum_f64(&mut flags)?;
        let [log, evaluate, save, stop] = flags.map(|f| f > 0.0);
        c.should_log = log;
        c.should_evaluate = evaluate;
        c.should_save = save;
        c.should_stop = stop;
        Ok(())
    }
}

/// The progress display every step, and a log line and entry every `logging_steps`
/// (the loss averaged since the last one, as HF logs it).
#[derive(Default)]
pub struct Logging {
    loss_since_log: f64,
    steps_since_log: usize,
}

impl Callback for Logging {
    fn on_step_end(&mut self, s: &mut Session<'_>, step: &StepEnd, c: &mut Control) -> Result<()> {
        s.log
            .progress
            .update(step.step, step.epoch, step.loss, step.lr, step.tokens_per_s);
        self.loss_since_log += step.loss;
        self.steps_since_log += 1;
        if !c.should_log {
            return Ok(());
        }
        let loss = self.loss_since_log / self.steps_since_log as f64;
        s.log.println(&format!(
            "step {}/{} epoch {:.2} loss {:.4} lr {:.3e} grad_norm {:.3} {:.0} tok/s",
            step.step,
            step.total_steps,
            step.epoch,
            loss,
            step.lr,
            step.grad_norm,
            step.tokens_per_s
        ));
        let mut entry = Map::new();
        entry.insert("loss".into(), json!(round4(loss)));
        entry.insert("grad_norm".into(), json!(step.grad_norm));
        entry.insert("learning_rate".into(), json!(step.lr));
        entry.insert("tokens_per_second".into(), json!(step.tokens_per_s));
        s.log.push(s.state, entry)?;
        self.loss_since_log = 0.0;
        self.steps_since_log = 0;
        Ok(())
    }
}

/// Evaluates when due, logs the metrics and tracks the best one
/// (`metric_for_best_model`, improved by more than `early_stopping_threshold`).
pub struct Evaluation;

impl Callback for Evaluation {
    fn on_step_end(&mut self, s: &mut Session<'_>, step: &StepEnd, c: &mut Control) -> Result<()> {
        if !c.should_evaluate {
            return Ok(());
        }
        let t = &s.config.training;
        s.log
            .println(&format!("Running evaluation at step {}", step.step));
        let m = s.evaluate()?;
        s.log.println(&format!(
            "eval at step {}: {}",
            step.step,
            crate::report::fmt_metrics(&m)
        ));
        s.log.push(
            s.state,
            m.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
        )?;
        let key = t.best_metric();
        let value = *m.get(&key).ok_or_else(|| {
            TrainError::Config(format!(
                "metric_for_best_model '{key}' is not among the eval metrics {:?}",
                m.keys().collect::<Vec<_>>()
            ))
        })?;
        c.improved = match s.state.best_metric {
            None => true,
            Some(best) if t.greater_is_better() => value > best + t.early_stopping_threshold,
            Some(best) => value < best - t.early_stopping_threshold,
        };
        if c.improved {
            s.state.best_metric = Some(value);
            s.state.best_global_step = Some(step.step);
        }
        c.last_eval = Some((step.step, m.clone()));
        c.metrics = Some(m);
        Ok(())
    }
}

/// HF's `EarlyStoppingCallback`: counts evaluations without improvement (in the
/// trainer state, so the count survives a resume) and stops after `patience` of them.
pub struct EarlyStopping {
    /// None: count, never stop.
    pub patience: Option<usize>,
}

impl Callback for EarlyStopping {
    fn on_step_end(&mut self, s: &mut Session<'_>, _: &StepEnd, c: &mut Control) -> Result<()> {
        if c.metrics.is_none() {
            return Ok(());
        }
        let counter = &mut s.state.berth.evals_without_improvement;
        *counter = if c.improved { 0 } else { *counter + 1 };
        if let Some(p) = self.patience
            && *counter >= p
        {
            s.log.println(&format!(
                "early stopping: {} has not improved for {p} evaluations",
                s.config.training.best_metric(),
            ));
            c.should_stop = true;
        }
        Ok(())
    }
}

/// `checkpoint-<step>/` when saving is due (and when stopping early, unless saving is
/// off), marked best when its evaluation was; then at most `save_total_limit`
/// checkpoints are kept, never the best one.
pub struct Checkpointing;

impl Callback for Checkpointing {
    fn on_step_end(&mut self, s: &mut Session<'_>, step: &StepEnd, c: &mut Control) -> Result<()> {
        let t = &s.config.training;
        if !(c.should_save || (c.should_stop && t.save_strategy() != Strategy::No)) {
            return Ok(());
        }
        let out = &t.output_dir;
        let dir = out.join(format!("checkpoint-{}", step.step));
        if c.improved {
            s.state.best_model_checkpoint = Some(dir.display().to_string());
        }
        let metrics = c
            .last_eval
            .as_ref()
            .map(|e| e.1.clone())
            .unwrap_or_default();
        if s.collective.world_size() > 1 {
            // Every rank must hold the weights rank 0 is about to save.
            s.collective.check_equal(
                s.opt.weights_checksum()?,
                &format!("the weights' checksum at step {}", step.step),
            )?;
            if !s.collective.is_main() {
                c.last_checkpoint = Some(dir);
                // Rank 0 writes; the ranks go on together once it has.
                return Ok(s.collective.barrier()?);
            }
        }
        s.log
            .println(&format!("Saving model checkpoint to {}", dir.display()));
        checkpoint::save(&dir, &s.snapshot(&metrics)?).map_err(|e| {
            // The write went to a temp copy that is gone now: say which checkpoint
            // it was and that the ones before it stand.
            TrainError::checkpoint(
                &dir,
                format!(
                    "not written: {}; the previous checkpoints are as they were{}",
                    berth_fs::without_temp_names(&e.to_string()),
                    c.last_checkpoint
                        .as_ref()
                        .map(|p| format!(" (latest: {})", p.display()))
                        .unwrap_or_default()
                ),
            )
        })?;
        c.last_checkpoint = Some(dir);
        // With overwrite_output_dir, the old run goes once the new one has this.
        run_dir::commit_overwrite(out)?;
        let best = s.state.best_model_checkpoint.as_deref().map(Path::new);
        checkpoint::rotate(out, best, t.save_total_limit)?;
        Ok(s.collective.barrier()?)
    }
}

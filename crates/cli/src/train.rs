//! `berth train` and `berth eval`: the trainer behind a TOML configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_collective::Collective;

use anyhow::{Context, Result};
use berth_trainer::{Inference, RunConfig, Trainer, summary_table};
use clap::Args;

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The run's TOML file (task, model, [data], [chunking], [mlm], [training]).
    #[arg(long)]
    config: PathBuf,
    /// Override a value: `training.learning_rate=3e-5`, `data.max_length=256`, or a
    /// bare TrainingArguments name (`max_steps=100`). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from `latest` (the newest checkpoint in output_dir) or a checkpoint
    /// directory.
    #[arg(long, num_args = 0..=1, default_missing_value = "latest")]
    resume: Option<String>,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// A trained model directory (or hub id) with its head.
    #[arg(long)]
    model: String,
    /// The run's TOML file: which data, columns and eval batch size.
    #[arg(long)]
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Also write the metrics as JSON here.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub(crate) fn train(a: TrainArgs) -> Result<()> {
    // One rank of several when started by mpirun (`berth launch`), else alone.
    let collective: Arc<dyn Collective> = berth_collective::from_env()?.into();
    if collective.world_size() == 1 {
        return train_as(a, collective);
    }
    match train_as(a, collective.clone()) {
        Ok(()) => Ok(()),
        Err(e) => {
            // A rank that fails takes the others down with it: they would wait for
            // it in the next collective forever.
            eprintln!("Error (rank {}): {e:?}", collective.rank());
            collective.abort(1)
        }
    }
}

fn train_as(a: TrainArgs, collective: Arc<dyn Collective>) -> Result<()> {
    let mut set = a.set;
    if let Some(r) = a.resume {
        set.push(format!("training.resume_from_checkpoint={r:?}"));
    }
    let mut config = RunConfig::load(&a.config, &set)?;
    if collective.world_size() > 1 && config.training.device == berth_trainer::DeviceSpec::Cuda(0) {
        // Each rank binds its own GPU, as torchrun's ranks bind cuda:LOCAL_RANK.
        config.training.device = berth_trainer::DeviceSpec::Cuda(collective.local_rank());
    }
    let main = collective.is_main();
    // Rank 0 shows the progress of the work every rank does.
    berth_data::hide_progress(!main);
    let mut trainer = Trainer::new(config)?;
    trainer.set_collective(collective);
    let summary = trainer.train()?;
    if !main {
        return Ok(());
    }
    println!("{}", summary_table(&summary));
    println!(
        "the model (an HF model repo: weights, tokenizer files, model card), trainer_state.json, *_results.json, metrics.jsonl, curves.svg and report.md in {}",
        summary.output_dir.display()
    );
    Ok(())
}

/// Scores a trained model on the config's eval and test splits. Nothing of training
/// is built: the train file is not read (unless `data.validation_split` carves the
/// eval split out of it), and class names come from the checkpoint.
pub(crate) fn eval(a: EvalArgs) -> Result<()> {
    let mut set = a.set;
    set.push(format!("model={:?}", a.model));
    let config = RunConfig::load(&a.config, &set)?;
    let model = Inference::load(&config)?;
    let splits = model.splits(&config)?;
    if splits.is_empty() {
        anyhow::bail!(
            "{}: nothing to evaluate: set data.eval, data.test or data.validation_split",
            a.config.display()
        );
    }
    let mut all = BTreeMap::new();
    for split in &splits {
        let m = model
            .evaluate(
                split,
                &split.name,
                config.training.per_device_eval_batch_size,
            )
            .with_context(|| format!("evaluating {}", split.source))?;
        eprintln!("{}: {}", split.source, berth_trainer::fmt_metrics(&m));
        all.extend(m);
    }
    println!("{:<28}  value", "metric");
    for (k, v) in &all {
        println!("{k:<28}  {v:.4}");
    }
    if let Some(path) = a.output {
        let json = serde_json::to_string_pretty(&all)?;
        berth_fs::write_file(&path, json.as_bytes())?;
    }
    Ok(())
}

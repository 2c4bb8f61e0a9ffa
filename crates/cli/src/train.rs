//! `berth train` and `berth eval`: the trainer behind a TOML configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use berth_collective::Collective;
use berth_trainer::DeviceSpec;

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
    // A rank that fails, by an error or a panic, takes the others down with it: they
    // would wait for it in the next collective (and MPI_Finalize, run as a panic
    // unwinds, waits for them).
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train_as(a, collective.clone())
    }));
    match run {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            eprintln!("Error (rank {}): {e:?}", collective.rank());
            collective.abort(1)
        }
        // The panic hook has printed the message.
        Err(_) => collective.abort(101),
    }
}

/// Refuses to run `command` as one of several launched processes: each would do
/// the whole job alone and write the same outputs.
pub(crate) fn one_process(command: &str) -> Result<()> {
    match berth_collective::launched_world_size() {
        Some(n) if n > 1 => anyhow::bail!(
            "berth {command} runs in one process, but it was started as one of {n}: run it without mpirun/berth launch"
        ),
        _ => Ok(()),
    }
}

/// The device rank `local_rank` of `world` trains on: its own GPU, as torchrun's
/// ranks bind cuda:LOCAL_RANK, for `cuda` and for `auto` when a GPU is there.
fn rank_device(spec: DeviceSpec, local_rank: usize, world: usize) -> Result<DeviceSpec> {
    Ok(match spec {
        _ if world == 1 => spec,
        DeviceSpec::Cuda(0) => DeviceSpec::Cuda(local_rank),
        DeviceSpec::Cuda(n) => anyhow::bail!(
            "device cuda:{n} with {world} data-parallel ranks: each rank binds cuda:LOCAL_RANK; set device = \"cuda\" (or \"auto\")"
        ),
        // A CUDA build on a node without (enough) GPUs stays on the CPU, as one
        // process does.
        DeviceSpec::Auto
            if candle_core::utils::cuda_is_available()
                && candle_core::Device::new_cuda(local_rank).is_ok() =>
        {
            DeviceSpec::Cuda(local_rank)
        }
        other => other,
    })
}

fn train_as(a: TrainArgs, collective: Arc<dyn Collective>) -> Result<()> {
    let mut set = a.set;
    if let Some(r) = a.resume {
        set.push(format!("training.resume_from_checkpoint={r:?}"));
    }
    let mut config = RunConfig::load(&a.config, &set)?;
    config.training.device = rank_device(
        config.training.device,
        collective.local_rank(),
        collective.world_size(),
    )?;
    let main = collective.is_main();
    // Rank 0 shows the progress of the work every rank does.
    berth_data::hide_progress(!main);
    let mut trainer = Trainer::with_collective(config, collective)?;
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
    one_process("eval")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_binds_its_own_gpu() {
        let one = |spec| rank_device(spec, 3, 1).unwrap();
        assert_eq!(one(DeviceSpec::Cuda(2)), DeviceSpec::Cuda(2));
        assert_eq!(one(DeviceSpec::Auto), DeviceSpec::Auto);
        assert_eq!(
            rank_device(DeviceSpec::Cuda(0), 3, 4).unwrap(),
            DeviceSpec::Cuda(3)
        );
        assert_eq!(rank_device(DeviceSpec::Cpu, 3, 4).unwrap(), DeviceSpec::Cpu);
        let e = rank_device(DeviceSpec::Cuda(1), 0, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("device cuda:1 with 2 data-parallel ranks"),
            "{e}"
        );
        // Without a GPU (this build or machine), auto stays on the CPU.
        if !candle_core::utils::cuda_is_available() {
            assert_eq!(
                rank_device(DeviceSpec::Auto, 1, 2).unwrap(),
                DeviceSpec::Auto
            );
        }
    }
}

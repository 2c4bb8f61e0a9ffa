//! Training throughput of `<Family>ForSequenceClassification` (BERT, RoBERTa,
//! DistilBERT; and of `BertForMaskedLM` for `minilm-l6-mlm`): random init, full steps
//! (forward, cross-entropy, backward, clipping, AdamW), warm-up excluded, the device
//! synchronized before the clock is read. Prints a table and one JSON line per
//! config. Run through `cargo xtask bench train [--device cpu|cuda] [--precision
//! f32|bf16] [--steps N] [--warmup N] [--config NAME] [--seq N]`.

use std::time::Instant;

use berth_model::{EncoderConfig, MaskedLm, Mode, Params, SequenceClassifier};
use berth_trainer::{AdamW, AdamWConfig, parse_device};
use candle_core::{DType, Tensor};

struct Shape {
    name: &'static str,
    /// transformers' `model_type`.
    family: &'static str,
    hidden: usize,
    layers: usize,
    heads: usize,
    intermediate: usize,
    seq: usize,
    batch: usize,
    /// Masked LM (`BertForMaskedLM`, 15% of positions labelled) instead of
    /// sequence classification.
    mlm: bool,
}

/// The configs on a GPU; the same models at small sizes on a CPU.
fn shapes(gpu: bool) -> Vec<Shape> {
    let (base512, base128, mini512) = if gpu {
        ((512, 32), (128, 128), (512, 32))
    } else {
        ((512, 1), (128, 4), (512, 2))
    };
    let base = |name, family, layers, (seq, batch): (usize, usize)| Shape {
        name,
        family,
        hidden: 768,
        layers,
        heads: 12,
        intermediate: 3072,
        seq,
        batch,
        mlm: false,
    };
    vec![
        base("bert-base", "bert", 12, base512),
        base("bert-base", "bert", 12, base128),
        // The encoder-families issue's configs: roberta-base (bert-base's shapes,
        // 50,265 ids, positions from 2) and distilbert-base (6 layers).
        base("roberta-base", "roberta", 12, base512),
        base("roberta-base", "roberta", 12, base128),
        base("distilbert-base", "distilbert", 6, base512),
        base("distilbert-base", "distilbert", 6, base128),
        Shape {
            name: "minilm-l6",
            family: "bert",
            hidden: 384,
            layers: 6,
            heads: 12,
            intermediate: 1536,
            seq: mini512.0,
            batch: mini512.1,
            mlm: false,
        },
        // The fused-ops issue's MLM step: MiniLM at 16 x 128 (128 x 128 on a GPU).
        Shape {
            name: "minilm-l6-mlm",
            family: "bert",
            hidden: 384,
            layers: 6,
            heads: 12,
            intermediate: 1536,
            seq: 128,
            batch: if gpu { 128 } else { 16 },
            mlm: true,
        },
    ]
}

/// Model FLOPs per step: 6 x (non-embedding parameters) per token for the dense
/// layers, plus attention's two seq x seq matmuls (x3 for forward + backward).
fn flops_per_step(s: &Shape) -> f64 {
    let h = s.hidden as f64;
    let per_layer = 4.0 * h * h + 2.0 * h * s.intermediate as f64;
    let tokens = (s.batch * s.seq) as f64;
    let dense = 6.0 * per_layer * s.layers as f64 * tokens;
    let attention = 3.0 * 4.0 * s.seq as f64 * h * s.layers as f64 * tokens;
    dense + attention
}

enum Model {
    Cls(SequenceClassifier),
    Mlm(MaskedLm),
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

type Error = Box<dyn std::error::Error>;

/// What every shape is run with.
struct Run {
    device: candle_core::Device,
    device_name: String,
    precision: String,
    dtype: DType,
    steps: usize,
    warmup: usize,
}

fn main() -> Result<(), Error> {
    berth_trainer::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let device_name = opt("--device").unwrap_or_else(|| "cpu".into());
    let precision = opt("--precision").unwrap_or_else(|| "f32".into());
    let only = opt("--config");
    // `--seq N` keeps only the configs of that sequence length (to profile one).
    let only_seq: Option<usize> = opt("--seq").map(|s| s.parse()).transpose()?;
    let device = parse_device(&device_name)?;
    let gpu = !device.is_cpu();
    let steps: usize = opt("--steps")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(if gpu { 20 } else { 3 });
    let warmup: usize = opt("--warmup")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(if gpu { 5 } else { 1 });
    let dtype = match precision.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => return Err(format!("precision must be f32 or bf16, not {other}").into()),
    };
    let run = Run {
        device,
        device_name,
        precision,
        dtype,
        steps,
        warmup,
    };
    println!(
        "| model | seq | batch | precision | device | ms/step | tokens/s | model TFLOP/s | peak memory |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut lines = Vec::new();
    for s in shapes(gpu) {
        if only.as_deref().is_some_and(|o| o != s.name) || only_seq.is_some_and(|q| q != s.seq) {
            continue;
        }
        lines.push(bench_shape(&s, &run)?);
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// A batch of `s`'s shape: ids, type ids, mask, and the labels (the class of each
/// row, or for MLM 15% of the positions, 3 in every 20, labelled with their id).
fn inputs(s: &Shape, device: &candle_core::Device) -> Result<[Tensor; 4], Error> {
    let ids: Vec<u32> = (0..s.batch * s.seq)
        .map(|i| (1000 + (i * 7919) % 28000) as u32)
        .collect();
    let token_labels: Vec<i64> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            if (i * 7 + 3) % 20 < 3 {
                id as i64
            } else {
                -100
            }
        })
        .collect();
    let ids = Tensor::from_vec(ids, (s.batch, s.seq), device)?;
    let types = ids.zeros_like()?;
    let mask = ids.ones_like()?;
    let labels = if s.mlm {
        Tensor::from_vec(token_labels, (s.batch, s.seq), device)?
    } else {
        Tensor::from_vec(
            (0..s.batch as i64).map(|i| i % 2).collect::<Vec<_>>(),
            s.batch,
            device,
        )?
    };
    Ok([ids, types, mask, labels])
}

/// `s`'s model, random init, computing in `dtype`, with its parameters.
fn model(s: &Shape, run: &Run) -> Result<(Model, Params), Error> {
    // transformers' configs of bert-base, roberta-base and distilbert-base.
    let cfg = EncoderConfig::from_value(match s.family {
        "roberta" => serde_json::json!({
            "model_type": "roberta", "vocab_size": 50265, "hidden_size": s.hidden,
            "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
            "intermediate_size": s.intermediate, "max_position_embeddings": 514,
            "type_vocab_size": 1, "pad_token_id": 1, "layer_norm_eps": 1e-5
        }),
        "distilbert" => serde_json::json!({
            "model_type": "distilbert", "vocab_size": 30522, "dim": s.hidden,
            "n_layers": s.layers, "n_heads": s.heads, "hidden_dim": s.intermediate,
            "max_position_embeddings": 512
        }),
        _ => serde_json::json!({
            "vocab_size": 30522, "hidden_size": s.hidden, "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads, "intermediate_size": s.intermediate,
            "max_position_embeddings": 512, "type_vocab_size": 2
        }),
    })?;
    let mut p = Params::random(&run.device, 0, cfg.initializer_range);
    let model = if s.mlm {
        let mut m = MaskedLm::new(&cfg, &mut p)?;
        m.encoder.set_compute_dtype(run.dtype);
        Model::Mlm(m)
    } else {
        let mut m = SequenceClassifier::new(&cfg, &mut p)?;
        m.encoder.set_compute_dtype(run.dtype);
        Model::Cls(m)
    };
    Ok((model, p))
}

/// Times `run.steps` full training steps of `s` after `run.warmup`, prints its table
/// row and returns its JSON line.
fn bench_shape(s: &Shape, run: &Run) -> Result<serde_json::Value, Error> {
    let gpu = !run.device.is_cpu();
    let (model, params) = model(s, run)?;
    let (varmap, _) = params.finish();
    let mut opt = AdamW::new(
        &varmap,
        AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let [ids, types, mask, labels] = inputs(s, &run.device)?;
    // Seconds in forward (with the loss), backward and the optimizer, summed over
    // the timed steps (CPU only: on a GPU the phases run asynchronously).
    let mut phases = [0f64; 3];
    let mut step = |i: usize, phases: &mut [f64; 3]| -> Result<(), Error> {
        let t = Instant::now();
        let mode = Mode::train(i as u64);
        let loss = match &model {
            Model::Cls(m) => {
                let logits = m.forward(&ids, Some(&types), Some(&mask), &mode)?;
                m.loss(&logits.to_dtype(DType::F32)?, &labels)?
            }
            Model::Mlm(m) => {
                let (logits, kept) =
                    m.forward_labelled(&ids, Some(&types), Some(&mask), &labels, &mode)?;
                m.loss(&logits.to_dtype(DType::F32)?, &kept)?
            }
        };
        let t_fwd = Instant::now();
        phases[0] += (t_fwd - t).as_secs_f64();
        let grads = loss.backward()?;
        let t_bwd = Instant::now();
        phases[1] += (t_bwd - t_fwd).as_secs_f64();
        let mut acc = opt.zero_grads();
        opt.accumulate(&mut acc, &grads)?;
        drop(grads);
        opt.step(&acc, 1e-5, 1.0)?;
        phases[2] += t_bwd.elapsed().as_secs_f64();
        Ok(())
    };
    let (steps, warmup) = (run.steps, run.warmup);
    for i in 0..warmup {
        step(i, &mut [0f64; 3])?;
    }
    run.device.synchronize()?;
    let t0 = Instant::now();
    for i in 0..steps {
        step(warmup + i, &mut phases)?;
    }
    run.device.synchronize()?;
    let ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let tokens = (s.batch * s.seq) as f64;
    let tflops = flops_per_step(s) / (ms / 1e3) / 1e12;
    let mem = if gpu { None } else { peak_rss_mib() };
    let mem_s = mem
        .map(|m| format!("{:.2} GiB RSS", m / 1024.0))
        .unwrap_or_else(|| "n/a".into());
    let (precision, device_name) = (&run.precision, &run.device_name);
    println!(
        "| {} | {} | {} | {precision} | {device_name} | {ms:.1} | {:.0} | {tflops:.3} | {mem_s} |",
        s.name,
        s.seq,
        s.batch,
        tokens / (ms / 1e3)
    );
    Ok(serde_json::json!({
        "impl": "berth", "model": s.name, "seq": s.seq, "batch": s.batch,
        "precision": precision, "device": device_name, "ms_per_step": ms,
        "tokens_per_s": tokens / (ms / 1e3), "model_tflops": tflops,
        "peak_rss_mib": mem, "steps": steps, "warmup": warmup,
        "phase_ms": (!gpu).then(|| serde_json::json!({
            "forward": phases[0] * 1e3 / steps as f64,
            "backward": phases[1] * 1e3 / steps as f64,
            "optimizer": phases[2] * 1e3 / steps as f64,
        })),
    }))
}

//! AdamW as `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments),
//! gradient accumulation and global-norm clipping, with state that saves and
//! restores exactly.

use berth_collective::Collective;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// AdamW's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// HF's rule: no weight decay for biases and LayerNorm weights (HF's
/// `get_decay_parameter_names` leaves out every `bias` and every LayerNorm module).
pub fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

/// First and second moments: plain vectors on the CPU (one fused pass per
/// parameter, no temporaries), tensors on an accelerator.
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

struct Slot {
    name: String,
    var: Var,
    moments: Moments,
    decay: bool,
}

impl Slot {
    fn moments(&self) -> Result<(Tensor, Tensor)> {
        Ok(match &self.moments {
            Moments::Host { m, v } => {
                let shape = self.var.shape();
                let dev = self.var.device();
                (
                    Tensor::from_slice(m, shape, dev)?,
                    Tensor::from_slice(v, shape, dev)?,
                )
            }
            Moments::Device { m, v } => (m.clone(), v.clone()),
        })
    }

    fn set_moments(&mut self, m: Tensor, v: Tensor) -> Result<()> {
        self.moments = if self.var.device().is_cpu() {
            Moments::Host {
                m: m.flatten_all()?.to_vec1::<f32>()?,
                v: v.flatten_all()?.to_vec1::<f32>()?,
            }
        } else {
            Moments::Device { m, v }
        };
        Ok(())
    }
}

/// The sum of squares of a CPU f32 tensor's values in one parallel pass (f64 per
/// chunk, chunks added in order); `None` for any other tensor.
fn host_sum_sq(g: &Tensor) -> Option<f64> {
    let (storage, layout) = g.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*storage else {
        return None;
    };
    const CHUNK: usize = 1 << 14;
    let partials: Vec<f64> = v[start..end].par_chunks(CHUNK).map(sum_sq).collect();
    Some(partials.into_iter().sum())
}

/// Σ x² in f64, in eight interleaved partial sums added in a fixed order: one running
/// sum is a chain of dependent adds that ran scalar (3% of a bert-base CPU step).
fn sum_sq(c: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0f64; LANES];
    let mut blocks = c.chunks_exact(LANES);
    for b in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(b) {
            *a += x as f64 * x as f64;
        }
    }
    let tail: f64 = blocks
        .remainder()
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// The f32 scalars of one AdamW step, as the CPU update and the CUDA kernel
/// (kernels/adamw.cu's `BerthAdamArgs`, field for field) use them.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct StepScalars {
    pub b2: f32,
    /// 1 - beta1 and 1 - beta2, in f64 first: 1.0 - 0.9f32 is 0.09999996, not 0.1.
    pub w1: f32,
    pub w2: f32,
    /// lr / (1 - beta1^t).
    pub step_size: f32,
    /// sqrt(1 - beta2^t).
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// 1 - lr weight_decay: what a decayed parameter is multiplied by.
    pub decay_keep: f32,
}

impl StepScalars {
    /// Step `t` (from 1) at rate `lr`.
    pub fn new(c: &AdamWConfig, t: u64, lr: f64) -> Self {
        let t = t as i32;
        StepScalars {
            b2: c.beta2 as f32,
            w1: (1.0 - c.beta1) as f32,
            w2: (1.0 - c.beta2) as f32,
            step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
            bc2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            eps: c.eps as f32,
            decay_keep: (1.0 - lr * c.weight_decay) as f32,
        }
    }

    /// The factor a parameter is multiplied by before its update.
    pub fn keep(&self, decays: bool) -> f32 {
        if decays { self.decay_keep } else { 1.0 }
    }
}

/// torch's single-tensor AdamW for one CPU parameter, fused: one pass, f32 like torch.
struct HostUpdate<'a> {
    s: StepScalars,
    keep: f32,
    scale: f32,
    /// The parameter's first and second moments (a lock only because candle hands
    /// in-place ops `&self`).
    moments: std::sync::Mutex<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
}

impl HostUpdate<'_> {
    fn apply(&self, p: &mut [f32], g: &[f32]) -> candle_core::Result<()> {
        let mut guard = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("AdamW moments lock poisoned".into()))?;
        let (m, v) = &mut *guard;
        if p.len() != g.len() || p.len() != m.len() || p.len() != v.len() {
            return Err(candle_core::Error::Msg(format!(
                "AdamW: parameter of {} values, gradient {}, moments {}",
                p.len(),
                g.len(),
                m.len()
            )));
        }
        let StepScalars {
            b2,
            w1,
            w2,
            step_size,
            bc2_sqrt,
            eps,
            ..
        } = self.s;
        let (keep, scale) = (self.keep, self.scale);
        // Element-wise, so splitting it over rayon's threads changes no bit.
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let gi = g[i] * scale;
                    p[i] *= keep;
                    m[i] += (gi - m[i]) * w1;
                    v[i] = v[i] * b2 + gi * gi * w2;
                    let denom = v[i].sqrt() / bc2_sqrt + eps;
                    p[i] -= step_size * m[i] / denom;
                }
            });
        Ok(())
    }
}

impl candle_core::InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "berth-adamw"
    }

    fn cpu_fwd(
        &self,
        ps: &mut candle_core::CpuStorage,
        pl: &candle_core::Layout,
        gs: &candle_core::CpuStorage,
        gl: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let (Some((p0, p1)), Some((g0, g1))) = (pl.contiguous_offsets(), gl.contiguous_offsets())
        else {
            return Err(candle_core::Error::Msg(
                "AdamW: parameter and gradient must be contiguous".into(),
            ));
        };
        match (ps, gs) {
            (candle_core::CpuStorage::F32(p), candle_core::CpuStorage::F32(g)) => {
                self.apply(&mut p[p0..p1], &g[g0..g1])
            }
            _ => Err(candle_core::Error::Msg(
                "AdamW: in-place update needs f32 parameter and gradient".into(),
            )),
        }
    }
}

/// The optimizer over every variable of a `VarMap` (ordered by name).
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: u64,
}

/// Summed gradients of the micro-batches of one optimizer step, per parameter.
pub struct Grads(pub(crate) Vec<Option<Tensor>>);

/// A tensor's values as f32 on the host, flattened (what the collectives exchange).
fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

impl AdamW {
    pub fn new(varmap: &VarMap, config: AdamWConfig) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::internal("parameter store lock poisoned"))?;
        let mut named: Vec<(&String, &Var)> = data.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let slots = named
            .into_iter()
            .map(|(name, var)| {
                let moments = if var.device().is_cpu() {
                    let n = var.elem_count();
                    Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    }
                } else {
                    let zeros = var.as_tensor().zeros_like()?.to_dtype(DType::F32)?;
                    Moments::Device {
                        m: zeros.clone(),
                        v: zeros,
                    }
                };
                Ok(Slot {
                    name: name.clone(),
                    var: var.clone(),
                    moments,
                    decay: decays(name),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            slots,
            config,
            step: 0,
        })
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Parameter names and whether weight decay applies to each.
    pub fn decay_table(&self) -> Vec<(&str, bool)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.decay))
            .collect()
    }

    pub fn zero_grads(&self) -> Grads {
        Grads(vec![None; self.slots.len()])
    }

    /// Adds one backward pass's gradients to `acc`.
    pub fn accumulate(&self, acc: &mut Grads, grads: &GradStore) -> Result<()> {
        for (slot, sum) in self.slots.iter().zip(acc.0.iter_mut()) {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                let g = g.to_dtype(DType::F32)?;
                *sum = Some(match sum.take() {
                    Some(s) => (s + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// The global L2 norm of `grads` (as `torch.nn.utils.clip_grad_norm_`). On the CPU
    /// one parallel pass over each gradient's storage, summed in f64 per chunk and the
    /// chunks added in order (the same bits whatever rayon's scheduling); elsewhere
    /// candle's reductions.
    pub fn grad_norm(&self, grads: &Grads) -> Result<f64> {
        let mut total = 0f64;
        for g in grads.0.iter().flatten() {
            total += match host_sum_sq(g) {
                Some(s) => s,
                None => g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64,
            };
        }
        Ok(total.sqrt())
    }

    /// Sums `grads` over all ranks, as DDP all-reduces them before clipping (the
    /// micro-batch weights already divide by the global item count, so the sum is the
    /// global batch's mean gradient). In buckets of about 25 MiB, DDP's
    /// `bucket_cap_mb`. A parameter with no gradient on this rank takes part with
    /// zeros when another rank has one, so every rank updates the same parameters.
    pub fn all_reduce(&self, grads: &mut Grads, c: &dyn Collective) -> Result<()> {
        if c.world_size() == 1 {
            return Ok(());
        }
        let mut present: Vec<f64> = grads
            .0
            .iter()
            .map(|g| f64::from(u8::from(g.is_some())))
            .collect();
        c.all_reduce_sum_f64(&mut present)?;
        const BUCKET_FLOATS: usize = 25 * 1024 * 1024 / 4;
        let mut bucket: Vec<f32> = Vec::new();
        let mut members: Vec<usize> = Vec::new();
        for (i, (slot, &anyone)) in self.slots.iter().zip(&present).enumerate() {
            if anyone == 0.0 {
                continue;
            }
            let var = &slot.var;
            let g = match grads.0[i].take() {
                Some(g) => g,
                None => Tensor::zeros(var.shape(), DType::F32, var.device())?,
            };
            bucket.extend(host_f32(&g)?);
            members.push(i);
            if bucket.len() >= BUCKET_FLOATS {
                self.reduce_bucket(&mut bucket, &mut members, grads, c)?;
            }
        }
        self.reduce_bucket(&mut bucket, &mut members, grads, c)
    }

    /// All-reduces one bucket and puts its pieces back as the `members`' gradients.
    fn reduce_bucket(
        &self,
        bucket: &mut Vec<f32>,
        members: &mut Vec<usize>,
        grads: &mut Grads,
        c: &dyn Collective,
    ) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        c.all_reduce_sum(bucket)?;
        let mut at = 0;
        for &i in members.iter() {
            let var = &self.slots[i].var;
            let n = var.elem_count();
            let t = Tensor::from_slice(&bucket[at..at + n], var.shape(), var.device())?;
            grads.0[i] = Some(t);
            at += n;
        }
        bucket.clear();
        members.clear();
        Ok(())
    }

    /// Every rank takes rank 0's weights (DDP's broadcast at wrap time).
    pub fn broadcast_weights(&self, c: &dyn Collective) -> Result<()> {
        if c.world_size() == 1 {
            return Ok(());
        }
        for s in &self.slots {
            let var = &s.var;
            let mut data = host_f32(var.as_tensor())?;
            c.broadcast(&mut data, 0)?;
            let t = Tensor::from_vec(data, var.shape(), var.device())?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// A checksum of every parameter's values (the first 8 bytes of a SHA-256 over
    /// them, in name order), to check that ranks hold the same weights.
    pub fn weights_checksum(&self) -> Result<u64> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for s in &self.slots {
            h.update(s.name.as_bytes());
            // One update per tensor, not one per value (22M calls for MiniLM).
            let bytes: Vec<u8> = host_f32(s.var.as_tensor())?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            h.update(&bytes);
        }
        let d = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        Ok(u64::from_le_bytes(first))
    }

    /// Clips to `max_norm` (if > 0) and updates every parameter with rate `lr`.
    /// Returns the norm before clipping.
    pub fn step(&mut self, grads: &Grads, lr: f64, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        // torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.
        let scale = if max_norm > 0.0 {
            (max_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let scalars = StepScalars::new(&c, self.step, lr);
        for (slot, g) in self.slots.iter_mut().zip(&grads.0) {
            let Some(g) = g else { continue };
            let decay = if slot.decay { lr * c.weight_decay } else { 0.0 };
            match &mut slot.moments {
                Moments::Host { m, v } => {
                    let update = HostUpdate {
                        s: scalars,
                        keep: scalars.keep(slot.decay),
                        scale: scale as f32,
                        moments: std::sync::Mutex::new((m, v)),
                    };
                    let g = g.contiguous()?;
                    if slot.var.dtype() == DType::F32 && g.dtype() == DType::F32 {
                        // In the parameter's own storage: no copy out and back in.
                        slot.var.as_tensor().inplace_op2(&g, &update)?;
                    } else {
                        let mut p = slot.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                        let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                        update.apply(&mut p, &g)?;
                        let shape = slot.var.shape().clone();
                        let t = Tensor::from_vec(p, shape, slot.var.device())?;
                        slot.var.set(&t.to_dtype(slot.var.dtype())?)?;
                    }
                }
                Moments::Device { m, v } => {
                    let g = if scale < 1.0 { (g * scale)? } else { g.clone() };
                    let p = slot.var.as_tensor();
                    let p = if decay != 0.0 {
                        (p * (1.0 - decay))?
                    } else {
                        p.clone()
                    };
                    *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                    *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                    let denom = ((v.sqrt()? / bc2_sqrt)? + c.eps)?;
                    let update = ((&*m / denom)? * step_size)?;
                    slot.var.set(&(p - update)?)?;
                }
            }
        }
        Ok(norm)
    }

    /// Writes the moments (`exp_avg.<name>`, `exp_avg_sq.<name>`) as safetensors and
    /// the step count and hyper-parameters as JSON beside them.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for s in &self.slots {
            let (m, v) = s.moments()?;
            tensors.insert(format!("exp_avg.{}", s.name), m);
            tensors.insert(format!("exp_avg_sq.{}", s.name), v);
        }
        let file = dir.join("optimizer.safetensors");
        candle_core::safetensors::save(&tensors, &file)
            .map_err(|e| berth_model::checkpoint_io_error(&file, e))?;
        let meta = OptimizerMeta {
            step: self.step,
            config: self.config,
        };
        let json =
            serde_json::to_string_pretty(&meta).map_err(|e| TrainError::internal(e.to_string()))?;
        let file = dir.join("optimizer.json");
        std::fs::write(&file, json).map_err(|e| TrainError::io(&file, e))
    }

    /// Restores what [`AdamW::save`] wrote; every parameter must be there.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        let file = dir.join("optimizer.safetensors");
        let device = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut tensors = candle_core::safetensors::load(&file, &device)?;
        for s in &mut self.slots {
            let mut take = |prefix: &str| {
                tensors
                    .remove(&format!("{prefix}.{}", s.name))
                    .filter(|t| t.dims() == s.var.dims())
                    .ok_or_else(|| {
                        TrainError::checkpoint(
                            &file,
                            format!("no {prefix} of the right shape for '{}'", s.name),
                        )
                    })
            };
            let (m, v) = (take("exp_avg")?, take("exp_avg_sq")?);
            s.set_moments(m, v)?;
        }
        let meta_file = dir.join("optimizer.json");
        let text =
            std::fs::read_to_string(&meta_file).map_err(|e| TrainError::io(&meta_file, e))?;
        let meta: OptimizerMeta = serde_json::from_str(&text)
            .map_err(|e| TrainError::checkpoint(&meta_file, e.to_string()))?;
        self.step = meta.step;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct OptimizerMeta {
    step: u64,
    config: AdamWConfig,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn setup(values: &[f32], name: &str) -> (VarMap, Var) {
        let varmap = VarMap::new();
        let var = Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap();
        varmap
            .data()
            .lock()
            .unwrap()
            .insert(name.to_string(), var.clone());
        (varmap, var)
    }

    /// torch.optim.AdamW's documented update, in f64, step by step.
    fn reference(p0: f64, grads: &[f64], lr: f64, wd: f64) -> f64 {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (i, g) in grads.iter().enumerate() {
            let t = (i + 1) as i32;
            p *= 1.0 - lr * wd;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let denom = (v.sqrt() / (1.0 - b2.powi(t)).sqrt()) + eps;
            p -= lr / (1.0 - b1.powi(t)) * m / denom;
        }
        p
    }

    #[test]
    fn matches_torch_adamw_numbers() {
        // p = [1.0, -2.0], lr 0.1, weight_decay 0.01, three steps with gradients
        // [0.5, -0.25], [0.3, 0.1], [-0.2, 0.4]. torch 2.11.0 (CPU):
        //   p = nn.Parameter(torch.tensor([1.0, -2.0]))
        //   opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
        //   for g in grads: p.grad = torch.tensor(g); opt.step()
        // gives p = [0.7522875666618347, -1.8977800607681274].
        let (varmap, var) = setup(&[1.0, -2.0], "dense.weight");
        let mut opt = AdamW::new(
            &varmap,
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        let steps = [[0.5f32, -0.25], [0.3, 0.1], [-0.2, 0.4]];
        for g in steps {
            let grads = Grads(vec![Some(Tensor::new(&g, &Device::Cpu).unwrap())]);
            opt.step(&grads, 0.1, 0.0).unwrap();
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        let want = [
            reference(1.0, &[0.5, 0.3, -0.2], 0.1, 0.01),
            reference(-2.0, &[-0.25, 0.1, 0.4], 0.1, 0.01),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        let torch = [0.752_287_6_f32, -1.897_78_f32];
        for (g, w) in got.iter().zip(torch) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs torch {torch:?}");
        }
        // Hand-computed: after step 1 the bias-corrected update is lr*sign(g) (here
        // minus 0.1 * 1 and the decay 1.0 * 0.001), so p1 = 0.999 - 0.1 = 0.899.
        assert!((reference(1.0, &[0.5], 0.1, 0.01) - 0.899).abs() < 1e-7);
    }

    #[test]
    fn weight_decay_skips_biases_and_layer_norm() {
        assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(decays("bert.embeddings.word_embeddings.weight"));
        assert!(decays("classifier.weight"));
        assert!(!decays("classifier.bias"));
        assert!(!decays("bert.embeddings.LayerNorm.weight"));
        assert!(!decays("bert.encoder.layer.3.output.LayerNorm.bias"));
        assert!(!decays("cls.predictions.bias"));

        // With zero gradient only decay moves a parameter: the bias stays put.
        let varmap = VarMap::new();
        for (n, v) in [
            ("w.weight", 1.0f32),
            ("w.bias", 1.0),
            ("LayerNorm.weight", 1.0),
        ] {
            let var = Var::from_tensor(&Tensor::new(&[v], &Device::Cpu).unwrap()).unwrap();
            varmap.data().lock().unwrap().insert(n.into(), var);
        }
        let mut opt = AdamW::new(
            &varmap,
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let zero = || Some(Tensor::new(&[0f32], &Device::Cpu).unwrap());
        opt.step(&Grads(vec![zero(), zero(), zero()]), 0.5, 0.0)
            .unwrap();
        let get = |n: &str| {
            varmap.data().lock().unwrap()[n]
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap()[0]
        };
        assert!((get("w.weight") - 0.95).abs() < 1e-7);
        assert_eq!(get("w.bias"), 1.0);
        assert_eq!(get("LayerNorm.weight"), 1.0);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let (varmap, _var) = setup(&[0.0, 0.0], "w");
        let mut opt = AdamW::new(&varmap, AdamWConfig::default()).unwrap();
        let g = Grads(vec![Some(Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap())]);
        assert!((opt.grad_norm(&g).unwrap() - 5.0).abs() < 1e-6);
        let norm = opt.step(&g, 0.1, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        // Clipped gradient [0.6, 0.8] (minus torch's 1e-6 guard): first moment 0.1 * g.
        let m = opt.slots[0].moments().unwrap().0.to_vec1::<f32>().unwrap();
        assert!(
            (m[0] - 0.06).abs() < 1e-6 && (m[1] - 0.08).abs() < 1e-6,
            "{m:?}"
        );
    }

    #[test]
    fn the_gradient_norm_equals_a_plain_f64_sum() {
        // Several chunks, and a length that leaves a remainder in the lane sums.
        let n = 3 * (1 << 14) + 1_003;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let want = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let (varmap, _var) = setup(&[0.0], "w");
        let opt = AdamW::new(&varmap, AdamWConfig::default()).unwrap();
        let g = Grads(vec![Some(Tensor::new(v.as_slice(), &Device::Cpu).unwrap())]);
        let got = opt.grad_norm(&g).unwrap();
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
        // The same again: a fixed order, so the same bits.
        assert_eq!(got.to_bits(), opt.grad_norm(&g).unwrap().to_bits());
    }

    #[test]
    fn state_round_trips() {
        let (varmap, _var) = setup(&[1.0, 2.0], "w");
        let mut opt = AdamW::new(&varmap, AdamWConfig::default()).unwrap();
        let g = Grads(vec![Some(
            Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap(),
        )]);
        opt.step(&g, 0.01, 0.0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        opt.save(dir.path()).unwrap();
        let mut other = AdamW::new(&varmap, AdamWConfig::default()).unwrap();
        other.load(dir.path()).unwrap();
        assert_eq!(other.step_count(), 1);
        assert_eq!(
            other.slots[0]
                .moments()
                .unwrap()
                .1
                .to_vec1::<f32>()
                .unwrap(),
            opt.slots[0].moments().unwrap().1.to_vec1::<f32>().unwrap()
        );
    }

    /// The kernels' copy of the step's scalars.
    fn kernel_args(s: &StepScalars) -> berth_kernel_emu::AdamArgs {
        berth_kernel_emu::AdamArgs {
            b2: s.b2,
            w1: s.w1,
            w2: s.w2,
            step_size: s.step_size,
            bc2_sqrt: s.bc2_sqrt,
            eps: s.eps,
        }
    }

    /// adamw.cu's three kernels (gradient norm, clip coefficient, AdamW), run on the
    /// CPU through berth-kernel-emu, against this optimizer's CPU step: several steps
    /// with clipping, decayed and undecayed parameters, one spanning several chunks.
    #[test]
    fn adamw_emulated_kernels_are_the_cpu_step_s_within_1e_5() {
        use berth_kernel_emu::{Build, CHUNK, Param, adamw_step};
        let sizes = [2 * CHUNK as usize + 7, 3, 1000];
        let names = ["a.weight", "a.bias", "b.weight"];
        let varmap = VarMap::new();
        let init = |n: usize, o: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i + o) * 7919) % 2003) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let mut host: Vec<[Vec<f32>; 3]> = Vec::new();
        for (i, (&n, name)) in sizes.iter().zip(names).enumerate() {
            let p = init(n, i);
            let var = Var::from_tensor(&Tensor::new(p.as_slice(), &Device::Cpu).unwrap()).unwrap();
            varmap.data().lock().unwrap().insert(name.into(), var);
            host.push([p, vec![0.0; n], vec![0.0; n]]);
        }
        let config = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut opt = AdamW::new(&varmap, config).unwrap();
        // The slots are in name order, as `names` is.
        assert_eq!(
            opt.decay_table(),
            vec![("a.bias", false), ("a.weight", true), ("b.weight", true)]
        );
        let order = [1usize, 0, 2];
        for step in 1..=3u64 {
            let lr = 1e-3 * step as f64;
            let grads: Vec<Vec<f32>> = order
                .iter()
                .map(|&i| init(sizes[i], 31 * step as usize + i))
                .collect();
            let g = Grads(
                grads
                    .iter()
                    .map(|g| Some(Tensor::new(g.as_slice(), &Device::Cpu).unwrap()))
                    .collect(),
            );
            let norm = opt.step(&g, lr, 50.0).unwrap();
            let s = StepScalars::new(&config, step, lr);
            let args = kernel_args(&s);
            let mut params: Vec<Param<'_>> = Vec::new();
            let mut rest = host.as_mut_slice();
            let mut by_index: Vec<Option<&mut [Vec<f32>; 3]>> = Vec::new();
            while let Some((first, tail)) = rest.split_first_mut() {
                by_index.push(Some(first));
                rest = tail;
            }
            for (slot, &i) in order.iter().enumerate() {
                let [p, m, v] = by_index[i].take().unwrap();
                params.push(Param {
                    p,
                    g: &grads[slot],
                    m,
                    v,
                    keep: s.keep(opt.slots[slot].decay),
                });
            }
            let got = adamw_step(&mut params, args, 50.0, 256, Build::AsWritten);
            assert!(
                (got - norm).abs() <= 1e-12 * norm,
                "step {step}: norm {got} vs {norm}"
            );
            for (slot, &i) in order.iter().enumerate() {
                let (m, v) = opt.slots[slot].moments().unwrap();
                let p = opt.slots[slot].var.as_tensor().to_vec1::<f32>().unwrap();
                for (what, got, want) in [
                    ("p", &host[i][0], p),
                    ("m", &host[i][1], m.to_vec1::<f32>().unwrap()),
                    ("v", &host[i][2], v.to_vec1::<f32>().unwrap()),
                ] {
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs() / (1e-3 + b.abs()))
                        .fold(0f32, f32::max);
                    assert!(
                        worst <= 1e-5,
                        "step {step} {}: {what} off by {worst}",
                        names[i]
                    );
                }
            }
        }
    }

    #[test]
    fn adamw_emulated_with_a_shifted_index_is_caught() {
        use berth_kernel_emu::{Build, Param, adamw_step};
        let p0: Vec<f32> = (0..777).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..777).map(|i| (i as f32 * 0.91).cos()).collect();
        let (varmap, var) = setup(&p0, "w");
        let config = AdamWConfig::default();
        let mut opt = AdamW::new(&varmap, config).unwrap();
        let grads = Grads(vec![Some(Tensor::new(g.as_slice(), &Device::Cpu).unwrap())]);
        opt.step(&grads, 1e-2, 0.0).unwrap();
        let want = var.as_tensor().to_vec1::<f32>().unwrap();
        let s = StepScalars::new(&config, 1, 1e-2);
        let (mut p, mut m, mut v) = (p0.clone(), vec![0f32; 777], vec![0f32; 777]);
        let args = kernel_args(&s);
        let mut params = [Param {
            p: &mut p,
            g: &g,
            m: &mut m,
            v: &mut v,
            keep: 1.0,
        }];
        adamw_step(&mut params, args, 0.0, 64, Build::ShiftedIndex);
        let worst = p
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst > 1e-3, "the shifted kernel passed ({worst})");
    }
}

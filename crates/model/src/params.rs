//! The parameter store: every weight is an f32 `Var` in a `VarMap` (so all are
//! trainable), taken from a checkpoint by its HF name when there, else initialised as
//! HF does (normal(0, initializer_range) weights, zero biases, unit LayerNorm scales)
//! from a seeded RNG.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{ModelError, Result};

/// How a parameter missing from the checkpoint starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Normal,
    Zeros,
    Ones,
}

/// What loading found: heads the checkpoint did not have, and keys nothing used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub newly_initialized: Vec<String>,
    pub unexpected: Vec<String>,
}

/// Collects the parameters of one model.
pub struct Params {
    varmap: VarMap,
    device: Device,
    checkpoint: HashMap<String, Tensor>,
    source: PathBuf,
    used: HashSet<String>,
    report: LoadReport,
    rng: ChaCha8Rng,
    init_range: f64,
    /// A view of an existing store: `get` hands out its tensors detached.
    view: bool,
    /// The encoder's name inside a head model (`bert`, `roberta`, ...): a name is
    /// also looked for with it added or removed.
    base_prefix: String,
    /// Parameters asked for so far.
    requested: usize,
    /// The values the next missing parameter starts from, instead of its `Init`.
    table: Option<Vec<f32>>,
}

/// Where a [`Params`] stood: parameters asked for and those newly initialised.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    requested: usize,
    fresh: usize,
}

/// The tensors of `varmap` by name (sharing the `Var`s' storage).
pub(crate) fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    Ok(varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Checkpoint("parameter store lock poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Keys HF checkpoints carry that are not parameters here: buffers, and the MLM
/// decoders tied to the word embeddings.
fn ignorable(key: &str) -> bool {
    key.ends_with("position_ids")
        || key.ends_with("embeddings.token_type_ids")
        || key.ends_with("cls.predictions.decoder.weight")
        || key.ends_with("cls.predictions.decoder.bias")
        || key.ends_with("lm_head.decoder.weight")
        || key.ends_with("lm_head.decoder.bias")
        || key.ends_with("vocab_projector.weight")
}

impl Params {
    /// Random initialisation only (a model trained from scratch, or tests).
    pub fn random(device: &Device, seed: u64, init_range: f64) -> Self {
        Self::with_checkpoint(
            HashMap::new(),
            PathBuf::from("<random init>"),
            device,
            seed,
            init_range,
        )
    }

    /// Parameters from `checkpoint` (HF names, with or without the `bert.` prefix).
    pub fn with_checkpoint(
        checkpoint: HashMap<String, Tensor>,
        source: PathBuf,
        device: &Device,
        seed: u64,
        init_range: f64,
    ) -> Self {
        Params {
            varmap: VarMap::new(),
            device: device.clone(),
            checkpoint,
            source,
            used: HashSet::new(),
            report: LoadReport::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            init_range,
            view: false,
            base_prefix: "bert".into(),
            requested: 0,
            table: None,
        }
    }

    /// The encoder's name inside a head model (`bert` by default): a checkpoint
    /// saved as a bare encoder is read by a head model and the other way round.
    pub fn set_base_prefix(&mut self, prefix: &str) {
        self.base_prefix = prefix.to_string();
    }

    /// Where loading stands, for [`Params::require_some_loaded`].
    pub fn counts(&self) -> Counts {
        Counts {
            requested: self.requested,
            fresh: self.report.newly_initialized.len(),
        }
    }

    /// An error when a checkpoint was given but none of the parameters asked for
    /// since `before` were in it: an encoder whose weights are all missing would
    /// train from random weights (transformers initialises heads only). `example` is
    /// one name that was looked for, `what` the model's name.
    pub fn require_some_loaded(&self, before: Counts, example: &str, what: &str) -> Result<()> {
        let now = self.counts();
        let asked = now.requested - before.requested;
        if self.checkpoint.is_empty() || self.view || asked == 0 || now.fresh - before.fresh < asked
        {
            return Ok(());
        }
        let mut keys: Vec<&str> = self.checkpoint.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys.truncate(3);
        Err(ModelError::Checkpoint(format!(
            "{}: none of the {what} encoder's weights are in it (looked for '{example}'; it holds {} tensors such as {}): is config.json's model_type the checkpoint's?",
            self.source.display(),
            self.checkpoint.len(),
            keys.join(", ")
        )))
    }

    /// The parameter `name` of `shape` as [`Params::get`], starting from `values`
    /// (row-major) when the checkpoint does not have it (DistilBERT's sinusoidal
    /// positions).
    pub fn get_or_table(
        &mut self,
        name: &str,
        shape: &[usize],
        values: Vec<f32>,
    ) -> Result<Tensor> {
        self.table = Some(values);
        let t = self.get(name, shape, Init::Normal);
        self.table = None;
        t
    }

    /// The parameters of `varmap` as detached views: a model built from them shares
    /// the trained weights (updates through the `Var`s show) but records no autograd
    /// graph, so evaluation does not keep every activation alive. Every name must be
    /// in `varmap`.
    pub fn detached_view(varmap: &VarMap, device: &Device) -> Result<Self> {
        let checkpoint = varmap_tensors(varmap)?
            .into_iter()
            .map(|(k, t)| (k, t.detach()))
            .collect();
        let mut p = Self::with_checkpoint(checkpoint, PathBuf::from("<view>"), device, 0, 0.0);
        p.view = true;
        Ok(p)
    }

    /// Reads `model.safetensors` of a directory, else its `pytorch_model.bin` (a
    /// PyTorch pickle, through candle's reader, as transformers still loads them; the
    /// old `LayerNorm.gamma`/`beta` names are read as `weight`/`bias`, as
    /// transformers renames them).
    pub fn from_dir(dir: &Path, device: &Device, seed: u64, init_range: f64) -> Result<Self> {
        let file = dir.join("model.safetensors");
        if file.is_file() {
            let tensors = candle_core::safetensors::load(&file, device)?;
            return Ok(Self::with_checkpoint(
                tensors, file, device, seed, init_range,
            ));
        }
        let bin = dir.join("pytorch_model.bin");
        if !bin.is_file() {
            return Err(ModelError::Checkpoint(format!(
                "{}: no model.safetensors or pytorch_model.bin",
                dir.display()
            )));
        }
        let tensors = candle_core::pickle::read_all(&bin)
            .map_err(|e| ModelError::Checkpoint(format!("{}: {e}", bin.display())))?
            .into_iter()
            .map(|(name, t)| {
                let name = match name.rsplit_once('.') {
                    Some((head, "gamma")) if head.ends_with("LayerNorm") => {
                        format!("{head}.weight")
                    }
                    Some((head, "beta")) if head.ends_with("LayerNorm") => format!("{head}.bias"),
                    _ => name,
                };
                Ok((name, t.to_device(device)?))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self::with_checkpoint(
            tensors, bin, device, seed, init_range,
        ))
    }

    fn candidates(name: &str, base: &str) -> Vec<String> {
        let mut c = vec![name.to_string()];
        match name
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            Some(rest) => c.push(rest.to_string()),
            None => c.push(format!("{base}.{name}")),
        }
        // Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
        let more: Vec<String> = c
            .iter()
            .filter_map(|n| {
                n.strip_suffix("LayerNorm.weight")
                    .map(|p| format!("{p}LayerNorm.gamma"))
                    .or_else(|| {
                        n.strip_suffix("LayerNorm.bias")
                            .map(|p| format!("{p}LayerNorm.beta"))
                    })
            })
            .collect();
        c.extend(more);
        c
    }

    /// The parameter `name` of `shape`.
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        if self.view {
            return match self.checkpoint.get(name) {
                Some(t) if t.dims() == shape => Ok(t.clone()),
                _ => Err(ModelError::Checkpoint(format!(
                    "'{name}' of shape {shape:?} is not in the parameter store"
                ))),
            };
        }
        self.requested += 1;
        let found = Self::candidates(name, &self.base_prefix)
            .into_iter()
            .find_map(|k| self.checkpoint.get(&k).map(|t| (k, t.clone())));
        let value = match found {
            Some((key, t)) => {
                if t.dims() != shape {
                    return Err(ModelError::Shape {
                        path: self.source.clone(),
                        name: key,
                        expected: shape.to_vec(),
                        found: t.dims().to_vec(),
                    });
                }
                self.used.insert(key);
                t.to_dtype(DType::F32)?
            }
            None => {
                self.report.newly_initialized.push(name.to_string());
                self.init(shape, init)?
            }
        };
        let var = Var::from_tensor(&value)?;
        let tensor = var.as_tensor().clone();
        self.varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Checkpoint("parameter store lock poisoned".into()))?
            .insert(name.to_string(), var);
        Ok(tensor)
    }

    fn init(&mut self, shape: &[usize], init: Init) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if let Some(values) = self.table.take()
            && values.len() == n
        {
            return Ok(Tensor::from_vec(values, shape, &self.device)?);
        }
        let values: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal => (0..n)
                .map(|_| (self.normal() * self.init_range) as f32)
                .collect(),
        };
        Ok(Tensor::from_vec(values, shape, &self.device)?)
    }

    /// A standard normal draw (Box-Muller), from the seeded RNG.
    fn normal(&mut self) -> f64 {
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// The trainable variables and what loading found (also logged as one warning).
    pub fn finish(mut self) -> (VarMap, LoadReport) {
        let mut unexpected: Vec<String> = self
            .checkpoint
            .keys()
            .filter(|k| !self.used.contains(*k) && !ignorable(k))
            .cloned()
            .collect();
        unexpected.sort();
        self.report.unexpected = unexpected;
        if !self.checkpoint.is_empty() {
            if !self.report.newly_initialized.is_empty() {
                tracing::warn!(
                    "{}: not in the checkpoint, newly initialized: {}",
                    self.source.display(),
                    self.report.newly_initialized.join(", ")
                );
            }
            if !self.report.unexpected.is_empty() {
                tracing::warn!(
                    "{}: unused checkpoint keys: {}",
                    self.source.display(),
                    self.report.unexpected.join(", ")
                );
            }
        }
        (self.varmap, self.report)
    }
}

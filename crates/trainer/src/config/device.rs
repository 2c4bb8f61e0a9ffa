//! `device = "auto" | "cpu" | "cuda" | "cuda:N"` and the candle device it opens.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// `auto` (a GPU when the binary has CUDA and one is there, else the CPU, as HF
/// picks), `cpu`, `cuda` (the first GPU) or `cuda:N`; written and read as that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                Some(Err(_)) => Err(TrainError::Device(format!("'{s}': expected cuda:N"))),
                None => Err(TrainError::Device(format!(
                    "device must be auto, cpu, cuda or cuda:N, not '{s}'"
                ))),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = TrainError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The candle device, with a clear error when CUDA is not compiled in or there is
    /// no usable GPU.
    pub fn device(&self) -> Result<candle_core::Device> {
        match *self {
            DeviceSpec::Auto => Ok(candle_core::utils::cuda_is_available()
                .then(|| candle_core::Device::new_cuda(0).ok())
                .flatten()
                .unwrap_or(candle_core::Device::Cpu)),
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(TrainError::Device(format!(
                        "'{self}' asked for, but this binary was built without the `cuda` feature (build with --features cuda, see ../shared/gpu/README.md)"
                    )));
                }
                candle_core::Device::new_cuda(n)
                    .map_err(|e| TrainError::Device(format!("'{self}': no usable GPU ({e})")))
            }
        }
    }
}

//! How a config is read besides its own keys: `--set key=value` overrides, and the
//! `[training]` keys as transformers 4 and 5 spell them.

use crate::error::{Result, TrainError};

/// `[training]` keys as transformers 4 and 5 spell them, read as Berth's:
/// `warmup_steps` a float in [0, 1) is a ratio of the total steps (transformers 5
/// reads it so, having dropped `warmup_ratio`, which stays for 4.x users);
/// `bf16 = true` is `precision = "bf16"`; `use_cpu = true` is `device = "cpu"`.
pub(super) fn hf_spellings(root: &mut toml::Table) -> std::result::Result<(), String> {
    let Some(toml::Value::Table(t)) = root.get_mut("training") else {
        return Ok(());
    };
    if let Some(toml::Value::Float(f)) = t.get("warmup_steps").cloned() {
        if (0.0..1.0).contains(&f) {
            if t.contains_key("warmup_ratio") {
                return Err(
                    "training.warmup_steps is a ratio and warmup_ratio is set too: keep one".into(),
                );
            }
            t.remove("warmup_steps");
            t.insert("warmup_ratio".into(), toml::Value::Float(f));
        } else if f.fract() == 0.0 && f >= 1.0 {
            t.insert("warmup_steps".into(), toml::Value::Integer(f as i64));
        } else {
            return Err(format!(
                "training.warmup_steps = {f}: a step count (an integer) or a ratio in [0, 1)"
            ));
        }
    }
    for (flag, key, value) in [("bf16", "precision", "bf16"), ("use_cpu", "device", "cpu")] {
        match t.remove(flag) {
            None | Some(toml::Value::Boolean(false)) => {}
            Some(toml::Value::Boolean(true)) => match t.get(key).and_then(|v| v.as_str()) {
                Some(other) if other != value => {
                    return Err(format!(
                        "training.{flag} = true and training.{key} = \"{other}\" disagree"
                    ));
                }
                _ => {
                    t.insert(key.into(), toml::Value::String(value.into()));
                }
            },
            Some(other) => {
                return Err(format!(
                    "training.{flag} must be true or false, not {other}"
                ));
            }
        }
    }
    Ok(())
}

/// The top-level keys of every task (beside `task` and the task's own section).
pub(super) const COMMON: &[&str] = &["model", "tokenizer", "model_revision", "data", "training"];

pub(super) fn apply_override(root: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set '{spec}': expected key=value")))?;
    let key = key.trim();
    let mut path: Vec<&str> = key.split('.').collect();
    if path.len() == 1 && !["task", "model", "tokenizer", "model_revision"].contains(&path[0]) {
        path.insert(0, "training");
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| TrainError::Config(format!("--set '{spec}': empty key")))?;
    let mut table = root;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("--set '{spec}': '{p}' is not a table")))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

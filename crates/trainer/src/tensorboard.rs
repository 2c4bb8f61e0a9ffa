//! TensorBoard event files (`report_to = ["tensorboard"]`), as HF's
//! `TensorBoardCallback` writes them: every logged scalar under `train/<name>`,
//! `eval/<name>` or `test/<name>`, at the global step, in
//! `output_dir/runs/<time>_<host>/events.out.tfevents.<time>.<host>.<pid>`.
//!
//! The format is TFRecord framing (length, masked CRC-32C, data, masked CRC-32C)
//! around `tensorflow.Event` protobufs; both are small enough to write by hand, so no
//! protobuf or TensorFlow dependency.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// An open event file.
pub struct EventWriter {
    file: File,
    pub path: PathBuf,
}

impl EventWriter {
    /// A fresh event file under `output_dir/runs/`, starting with the version record
    /// TensorBoard expects first.
    pub fn create(output_dir: &Path) -> Result<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let dir = output_dir
            .join("runs")
            .join(format!("{}_{host}", now.as_secs()));
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}.0",
            now.as_secs(),
            std::process::id()
        ));
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut w = EventWriter { file, path };
        let mut event = Vec::new();
        field_double(&mut event, 1, now.as_secs_f64());
        field_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        Ok(w)
    }

    /// One event holding `values` (tag, value) at `step`, flushed at once so a killed
    /// run keeps what it logged.
    pub fn scalars(&mut self, step: i64, values: &[(String, f32)]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            field_bytes(&mut value, 1, tag.as_bytes());
            // simple_value: field 2, 32-bit.
            value.push((2 << 3) | 5);
            value.extend_from_slice(&v.to_le_bytes());
            field_bytes(&mut summary, 1, &value);
        }
        let mut event = Vec::new();
        field_double(&mut event, 1, wall);
        // step: field 2, varint.
        event.push(2 << 3);
        varint(&mut event, step as u64);
        field_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        // A whole record or none: TensorBoard's reader stops at a torn one.
        Ok(berth_fs::append_to(&mut self.file, &self.path, &rec)?)
    }
}

/// HF's `rewrite_logs`: `eval_x` as `eval/x`, `test_x` as `test/x`, anything else as
/// `train/x`; non-numbers and the bookkeeping keys (`epoch`, `step`) left out, as
/// TensorBoard's step axis carries them.
pub fn tags(entry: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, f32)> {
    entry
        .iter()
        .filter(|(k, _)| k.as_str() != "step")
        .filter_map(|(k, v)| {
            let v = v.as_f64()? as f32;
            let tag = if let Some(rest) = k.strip_prefix("eval_") {
                format!("eval/{rest}")
            } else if let Some(rest) = k.strip_prefix("test_") {
                format!("test/{rest}")
            } else {
                format!("train/{k}")
            };
            Some((tag, v))
        })
        .collect()
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn field_double(out: &mut Vec<u8>, field: u8, v: f64) {
    out.push((field << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

/// CRC-32C (Castagnoli), bitwise over a table.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value (RFC 3720's test vector "123456789").
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn logged_keys_become_hf_tags() {
        let entry: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"loss": 0.5, "eval_accuracy": 0.75, "test_f1": 0.5, "epoch": 1.0, "step": 3, "x": "s"}"#,
        )
        .unwrap();
        let mut t = tags(&entry);
        t.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = t.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            ["eval/accuracy", "test/f1", "train/epoch", "train/loss"]
        );
    }
}

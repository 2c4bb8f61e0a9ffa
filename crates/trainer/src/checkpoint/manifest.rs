//! A checkpoint's manifest: the size and sha256 of every file in it, written last.
//! Loading checks it, so a file truncated by a copy or corrupted on disk is named
//! instead of being read as weights; `--resume latest` passes over such a
//! checkpoint to the newest valid one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};

/// The manifest's file name in a checkpoint directory.
pub const MANIFEST: &str = "berth_manifest.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Entry {
    size: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// Relative path (`/`-separated) to size and digest, every file but the manifest.
    files: BTreeMap<String, Entry>,
}

/// Every file under `dir` but the manifest, as relative `/`-separated paths.
fn files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for e in std::fs::read_dir(&here).map_err(|e| TrainError::io(&here, e))? {
            let e = e.map_err(|e| TrainError::io(&here, e))?;
            let path = rel.join(e.file_name());
            let kind = e.file_type().map_err(|err| TrainError::io(e.path(), err))?;
            if kind.is_dir() {
                stack.push(path);
            } else if path != Path::new(MANIFEST) {
                out.push(path.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The size and sha256 of `path`, read in 1 MiB pieces.
fn digest(path: &Path) -> Result<Entry> {
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| TrainError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Entry {
        size,
        sha256: hex::encode(h.finalize()),
    })
}

/// Writes the manifest of everything now in `dir`; call it after the last file.
pub fn write(dir: &Path) -> Result<()> {
    let mut m = Manifest {
        files: BTreeMap::new(),
    };
    for rel in files(dir)? {
        m.files.insert(rel.clone(), digest(&dir.join(&rel))?);
    }
    let json = serde_json::to_vec_pretty(&m)
        .map_err(|e| TrainError::checkpoint(dir.join(MANIFEST), e.to_string()))?;
    let path = dir.join(MANIFEST);
    std::fs::write(&path, json).map_err(|e| TrainError::io(&path, e))
}

/// Whether `dir` is the checkpoint its manifest describes: every listed file there
/// with its size and digest. A checkpoint without a manifest (written before Berth
/// wrote them) is accepted with a warning. The error names the first bad file.
pub fn verify(dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                "{} has no {MANIFEST} (written by an older Berth): its files are not verified",
                dir.display()
            );
            return Ok(());
        }
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| TrainError::checkpoint(&path, format!("unreadable manifest: {e}")))?;
    for (rel, want) in &m.files {
        let inside = Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(TrainError::checkpoint(
                &path,
                format!("lists '{rel}', which is not a path inside the checkpoint"),
            ));
        }
        let file = dir.join(rel);
        let size = match std::fs::metadata(&file) {
            Ok(md) => md.len(),
            Err(_) => {
                return Err(TrainError::checkpoint(
                    &file,
                    "missing (listed in the manifest)",
                ));
            }
        };
        if size != want.size {
            return Err(TrainError::checkpoint(
                &file,
                format!(
                    "is {size} bytes, {MANIFEST} says {} (truncated or changed; if you edited it on purpose, delete {MANIFEST} to accept the edit)",
                    want.size
                ),
            ));
        }
        if digest(&file)?.sha256 != want.sha256 {
            return Err(TrainError::checkpoint(
                &file,
                format!(
                    "does not match its sha256 in {MANIFEST} (corrupted or changed; if you edited it on purpose, delete {MANIFEST} to accept the edit)"
                ),
            ));
        }
    }
    Ok(())
}

/// [`verify`] for a directory that has a manifest; any other model directory (an
/// HF download, a model saved elsewhere) is read as it is, without a warning.
pub fn verify_if_present(dir: &Path) -> Result<()> {
    if dir.join(MANIFEST).is_file() {
        verify(dir)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_or_changed_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("model.safetensors"), vec![7u8; 3000]).unwrap();
        std::fs::write(dir.join("sub/x.json"), b"{}").unwrap();
        write(dir).unwrap();
        verify(dir).unwrap();
        let text = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
        assert!(
            text.contains("sub/x.json") && text.contains("\"size\": 3000"),
            "{text}"
        );

        // Truncated by a copy.
        std::fs::write(dir.join("model.safetensors"), vec![7u8; 1000]).unwrap();
        let e = verify(dir).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("1000 bytes") && e.contains("3000"),
            "{e}"
        );
        // Same size, one byte changed.
        let mut bytes = vec![7u8; 3000];
        bytes[1234] = 8;
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        let e = verify(dir).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("sha256"),
            "{e}"
        );
        // Missing.
        std::fs::write(dir.join("model.safetensors"), vec![7u8; 3000]).unwrap();
        verify(dir).unwrap();
        std::fs::remove_file(dir.join("sub/x.json")).unwrap();
        let e = verify(dir).unwrap_err().to_string();
        assert!(e.contains("x.json") && e.contains("missing"), "{e}");
    }

    #[test]
    fn a_checkpoint_without_a_manifest_is_read_as_before() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("trainer_state.json"), b"{}").unwrap();
        verify(d.path()).unwrap();
    }
}

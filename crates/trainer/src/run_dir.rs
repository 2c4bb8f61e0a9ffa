//! One run per output directory. A run holds an OS lock on a hidden file in its
//! `output_dir` from start to end, so a second run there fails at once (naming the
//! holder) instead of interleaving its logs and checkpoints with the first's. A fresh
//! run into a directory that already holds a run is refused unless
//! `overwrite_output_dir` is set; then the old run is moved aside under a hidden name
//! and removed only once the new run has written its first checkpoint (or its end),
//! and a new run killed before that gets the old run put back by the next start.
//!
//! The lock is `flock(2)`: the OS drops it when the process
//! ends however it ends, so a SIGKILL never leaves a directory locked. The lock file
//! stays and counts as nothing (a directory the lock itself created is removed
//! with it when the run wrote nothing there).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::checkpoint;
use crate::config::RunConfig;
use crate::error::{Result, TrainError};

/// The hidden lock file inside `output_dir`.
pub const LOCK_FILE: &str = ".berth-run.lock";
/// The old run's files while a new run overwrites it (see the module docs).
const ASIDE: &str = ".berth-overwritten";
/// The same directory while the old run is being moved into it...
const ASIDE_MOVING: &str = ".berth-overwritten.moving";
/// ... while it is being put back ...
const ASIDE_RESTORING: &str = ".berth-overwritten.restoring";
/// ... and once the new run no longer needs it.
const ASIDE_DONE: &str = ".berth-overwritten.done";

/// Whether `name` is one of this module's own entries, which belong to no run.
fn is_ours(name: &str) -> bool {
    name == LOCK_FILE || name == ASIDE || name.starts_with(".berth-overwritten.")
}

/// The exclusive hold of a run on its output directory; released when dropped (or
/// when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    /// The directories this lock created (`output_dir` first, then each parent it
    /// had to create): a run that fails before writing anything there leaves no
    /// empty directory behind.
    created: Vec<std::path::PathBuf>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let Some(dir) = self.created.first() else {
            return;
        };
        let only_lock = std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten()
                .map(|e| e.file_name())
                .eq([std::ffi::OsString::from(LOCK_FILE)])
        });
        if only_lock {
            // Best effort, and harmless if another run created something since:
            // a directory that is not empty stays.
            let _ = std::fs::remove_file(dir.join(LOCK_FILE));
            for d in &self.created {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
            }
        }
    }
}

impl RunLock {
    /// Locks `dir` (created if missing) for this process, or fails at once with the
    /// holder's pid and host when another run holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let created: Vec<_> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        if !try_lock(&file).map_err(|e| TrainError::io(&path, e))? {
            return Err(TrainError::OutputDir {
                path: dir.to_path_buf(),
                message: format!(
                    "is in use by another run ({}; lock file {}): wait for it to end, or give this run another output_dir",
                    holder(&path),
                    path.display()
                ),
            });
        }
        let me = format!(
            "pid {} on host {}, since unix time {}\n",
            std::process::id(),
            hostname(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(me.as_bytes())?;
            file.sync_data()
        })()
        .map_err(|e| TrainError::io(&path, e))?;
        Ok(RunLock {
            _file: file,
            created,
        })
    }
}

/// `flock(LOCK_EX | LOCK_NB)` on `file`: whether this process now holds it (false
/// when another open file holds it). std's `File::try_lock` is the same call, from
/// Rust 1.89 on, past this workspace's minimum.
fn try_lock(file: &File) -> std::io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor `file` owns; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// Rank 0's claim on `output_dir` for the run `config` describes, before any data is
/// read or any file written: the lock, then an overwrite a killed run left finished
/// or undone, what killed writes left tidied; then a resume of a checkpoint trained
/// with another configuration refused, and a fresh run into a directory that holds a
/// run refused unless `overwrite_output_dir` (moving the old run aside is
/// [`move_aside`]'s, when training starts).
pub fn claim(config: &RunConfig) -> Result<RunLock> {
    let training = &config.training;
    let dir = &training.output_dir;
    let lock = RunLock::acquire(dir)?;
    recover(dir)?;
    checkpoint::tidy_output_dir(dir)?;
    if let Some(spec) = &training.resume_from_checkpoint {
        let ckpt = checkpoint::resolve_checkpoint(spec, dir)?;
        checkpoint::check_same_run(&ckpt, config)?;
    }
    let found = run_in(dir);
    if training.resume_from_checkpoint.is_none()
        && !training.overwrite_output_dir
        && !found.is_empty()
    {
        const SHOWN: usize = 6;
        let mut what = found
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if found.len() > SHOWN {
            what.push_str(&format!(" and {} more", found.len() - SHOWN));
        }
        return Err(TrainError::OutputDir {
            path: dir.clone(),
            message: format!(
                "already holds a run ({what}); continue it with --resume (resume_from_checkpoint = \"latest\"), start over with overwrite_output_dir = true (--set overwrite_output_dir=true; the old run is removed once the new one has its first checkpoint), or give this run another output_dir"
            ),
        });
    }
    Ok(lock)
}

/// Who holds the lock file `path`, as its holder wrote it (read again for a moment
/// when the holder has locked it but not yet written).
fn holder(path: &Path) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        if File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_ok()
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    "a process that has not said who it is".into()
}

/// This machine's name.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (ok, std::str::from_utf8(&buf[..end])) {
        (true, Ok(h)) if !h.is_empty() => h.to_string(),
        _ => "unknown".into(),
    }
}

/// What in `dir` makes it hold a run: its `checkpoint-<step>` directories and a
/// final model or trainer state, by name (sorted).
pub fn run_in(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let checkpoint = name
                .strip_prefix("checkpoint-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                && e.path().is_dir();
            let model = [
                "model.safetensors",
                "pytorch_model.bin",
                "trainer_state.json",
            ]
            .contains(&name.as_str());
            (checkpoint || model).then_some(name)
        })
        .collect();
    found.sort_by_key(|n| {
        // checkpoint-8 before checkpoint-10.
        let step = n.strip_prefix("checkpoint-").and_then(|s| s.parse().ok());
        (step.is_none(), step.unwrap_or(0), n.clone())
    });
    found
}

/// Finishes or undoes an overwrite a killed (or failed) run left: the old run's files
/// are put back when the new run wrote no checkpoint and no final model (its own
/// files are removed first), and removed when it did. Run with the lock held, before
/// anything else looks at the directory.
pub fn recover(dir: &Path) -> Result<()> {
    remove_all(&dir.join(ASIDE_DONE))?;
    let aside = dir.join(ASIDE);
    if aside.is_dir() && !run_in(dir).is_empty() {
        // The new run had its first checkpoint (renamed into place whole) or its
        // final model when it was stopped, before it could remove the old run.
        tracing::info!(
            "{}: removing the run an overwrite replaced (the new run has its first checkpoint)",
            dir.display()
        );
        commit_overwrite(dir)?;
    } else if aside.is_dir() {
        tracing::warn!(
            "{}: the run that overwrote the run there ended before its first checkpoint; putting the previous run back",
            dir.display()
        );
        for e in entries(dir)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_ours(&name) {
                remove_all(&e.path())?;
            }
        }
        rename(&aside, &dir.join(ASIDE_RESTORING))?;
    }
    // A move either way that was cut short: the old run's files go back where
    // they were (nothing of a new run is there yet, or any more).
    for half in [ASIDE_MOVING, ASIDE_RESTORING] {
        let from = dir.join(half);
        if from.is_dir() {
            move_entries(&from, dir)?;
            std::fs::remove_dir(&from).map_err(|e| TrainError::io(&from, e))?;
        }
    }
    Ok(())
}

/// `overwrite_output_dir`: moves everything of `dir` (but the lock) aside, to be
/// removed by [`commit_overwrite`] once the new run has written its first checkpoint
/// or its end, or put back by [`recover`] if it never does.
pub fn move_aside(dir: &Path) -> Result<()> {
    let moving = dir.join(ASIDE_MOVING);
    std::fs::create_dir(&moving).map_err(|e| TrainError::io(&moving, e))?;
    for e in entries(dir)? {
        let name = e.file_name();
        if !is_ours(&name.to_string_lossy()) {
            rename(&e.path(), &moving.join(&name))?;
        }
    }
    rename(&moving, &dir.join(ASIDE))
}

/// Removes the run an overwrite moved aside, now that the new run has a checkpoint
/// or its final model in place; nothing when there is none.
pub fn commit_overwrite(dir: &Path) -> Result<()> {
    let aside = dir.join(ASIDE);
    if !aside.is_dir() {
        return Ok(());
    }
    let done = dir.join(ASIDE_DONE);
    rename(&aside, &done)?;
    remove_all(&done)
}

fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .and_then(|d| d.collect())
        .map_err(|e| TrainError::io(dir, e))
}

/// Every entry of `from` renamed into `to`; an entry `to` already has is an error
/// (nothing is overwritten).
fn move_entries(from: &Path, to: &Path) -> Result<()> {
    for e in entries(from)? {
        let target = to.join(e.file_name());
        if target.symlink_metadata().is_ok() {
            return Err(TrainError::OutputDir {
                path: to.to_path_buf(),
                message: format!(
                    "cannot put {} back: {} exists; move one of them away by hand",
                    e.path().display(),
                    target.display()
                ),
            });
        }
        rename(&e.path(), &target)?;
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| TrainError::io(from, e))
}

/// Removes a file or a directory tree; nothing when it is not there.
fn remove_all(path: &Path) -> Result<()> {
    let removed = match path.symlink_metadata() {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    removed.map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `dir` but the lock, with its bytes.
    fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                if rel == LOCK_FILE {
                    continue;
                }
                if p.is_dir() {
                    out.push((format!("{rel}/"), Vec::new()));
                    stack.push(p);
                } else {
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn old_run(dir: &Path) {
        std::fs::create_dir_all(dir.join("checkpoint-8")).unwrap();
        std::fs::write(dir.join("checkpoint-8/trainer_state.json"), b"{\"step\":8}").unwrap();
        std::fs::write(dir.join("model.safetensors"), b"old weights").unwrap();
        std::fs::write(dir.join("metrics.jsonl"), b"{\"loss\":1}\n").unwrap();
    }

    #[test]
    fn a_second_lock_on_one_directory_fails_naming_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(d.path()).unwrap();
        let e = RunLock::acquire(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("in use by another run")
                && e.contains(&format!("pid {}", std::process::id()))
                && e.contains(&format!("host {}", hostname()))
                && e.contains(LOCK_FILE),
            "{e}"
        );
        drop(held);
        RunLock::acquire(d.path()).unwrap();
        // The lock file is not a run.
        assert!(run_in(d.path()).is_empty());
        // A directory the lock created goes with it while nothing else is there.
        let fresh = d.path().join("new/run");
        drop(RunLock::acquire(&fresh).unwrap());
        assert!(!d.path().join("new").exists());
        let kept = RunLock::acquire(&fresh).unwrap();
        std::fs::write(fresh.join("run_config.toml"), b"").unwrap();
        drop(kept);
        assert!(fresh.join("run_config.toml").is_file());
    }

    #[test]
    fn a_run_is_its_checkpoints_and_final_model() {
        let d = tempfile::tempdir().unwrap();
        assert!(run_in(d.path()).is_empty());
        std::fs::write(d.path().join("run_config.toml"), b"").unwrap();
        std::fs::create_dir(d.path().join("checkpoint-x")).unwrap();
        assert!(run_in(d.path()).is_empty());
        old_run(d.path());
        std::fs::create_dir(d.path().join("checkpoint-10")).unwrap();
        assert_eq!(
            run_in(d.path()),
            ["checkpoint-8", "checkpoint-10", "model.safetensors"]
        );
    }

    #[test]
    fn an_overwrite_removes_the_old_run_only_once_committed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        old_run(dir);
        let _lock = RunLock::acquire(dir).unwrap();
        move_aside(dir).unwrap();
        assert!(run_in(dir).is_empty());
        // The new run writes its files, then its first checkpoint.
        std::fs::write(dir.join("metrics.jsonl"), b"{\"loss\":2}\n").unwrap();
        std::fs::create_dir_all(dir.join("checkpoint-1")).unwrap();
        commit_overwrite(dir).unwrap();
        let names: Vec<String> = tree(dir).into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["checkpoint-1/", "metrics.jsonl"]);
        // A recovery afterwards changes nothing.
        recover(dir).unwrap();
        assert_eq!(tree(dir).len(), 2);
    }

    #[test]
    fn a_new_run_killed_before_its_first_checkpoint_gets_the_old_run_put_back() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        old_run(dir);
        let before = tree(dir);
        move_aside(dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), b"{\"loss\":2}\n").unwrap();
        std::fs::write(dir.join("run_config.toml"), b"seed = 3").unwrap();
        std::fs::create_dir_all(dir.join(".checkpoint-1.tmp-5-0")).unwrap();
        recover(dir).unwrap();
        assert_eq!(tree(dir), before);
    }

    #[test]
    fn a_new_run_killed_after_its_first_checkpoint_keeps_it_and_the_old_run_goes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        old_run(dir);
        move_aside(dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), b"{\"loss\":2}\n").unwrap();
        std::fs::create_dir_all(dir.join("checkpoint-1")).unwrap();
        // Killed here, before commit_overwrite.
        recover(dir).unwrap();
        let names: Vec<String> = tree(dir).into_iter().map(|f| f.0).collect();
        assert_eq!(names, ["checkpoint-1/", "metrics.jsonl"]);
    }

    #[test]
    fn a_move_cut_short_either_way_is_put_back_whole() {
        // Killed while moving the old run aside: half of it there, half here.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        old_run(dir);
        let before = tree(dir);
        std::fs::create_dir(dir.join(ASIDE_MOVING)).unwrap();
        std::fs::rename(
            dir.join("checkpoint-8"),
            dir.join(ASIDE_MOVING).join("checkpoint-8"),
        )
        .unwrap();
        recover(dir).unwrap();
        assert_eq!(tree(dir), before);
        // Killed while putting it back: the new run's files are gone already.
        std::fs::create_dir(dir.join(ASIDE_RESTORING)).unwrap();
        std::fs::rename(
            dir.join("model.safetensors"),
            dir.join(ASIDE_RESTORING).join("model.safetensors"),
        )
        .unwrap();
        recover(dir).unwrap();
        assert_eq!(tree(dir), before);
        // Killed while removing a committed one.
        std::fs::create_dir_all(dir.join(ASIDE_DONE).join("checkpoint-2")).unwrap();
        recover(dir).unwrap();
        assert_eq!(tree(dir), before);
    }
}

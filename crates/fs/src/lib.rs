//! Atomic writes, the one implementation every Berth crate uses: a file or directory
//! is built under a hidden temp name beside its target, then renamed into place, so a
//! reader (or a run resumed after a crash) sees the old copy or the new one, never a
//! half-written one, and nothing already written is lost when a write fails.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("state.json");
//! berth_fs::write_file(&path, b"{}").unwrap();
//! berth_fs::replace_dir(&dir.path().join("checkpoint-1"), |tmp| {
//!     berth_fs::write_file(&tmp.join("config.json"), b"{}")
//! })
//! .unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"{}");
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O error with the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct Error {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Error {
    pub fn new(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `dir/.name.<what>-<pid>-<nonce><n>[.ext]`: hidden, unique within and across
/// processes (the nonce, drawn once per process, keeps equal pids apart: containers
/// on nodes sharing a filesystem), in the target's own directory so that the rename
/// is atomic (same filesystem), and ending in the target's extension for writers that
/// pick a format by it (an image encoder).
pub fn temp_sibling(target: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ext = target
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}.{what}-{}-{:010}{n}{ext}",
        std::process::id(),
        process_nonce()
    ))
}

/// A number drawn once per process (from the clock's nanoseconds and the pid).
fn process_nonce() -> u32 {
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = (nanos as u64 ^ (u64::from(std::process::id()) << 32))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> 32) as u32
    })
}

/// What a name made by [`temp_sibling`] stands for: `(target, what)` of
/// `.{target}.{what}-{pid}-{n}[.ext]`, so that a run can clear what a killed
/// process left behind; `None` for any other name.
pub fn parse_temp_name(name: &str) -> Option<(&str, &str)> {
    let body = name.strip_prefix('.')?;
    for (i, _) in body.rmatch_indices('.') {
        let (target, rest) = (&body[..i], &body[i + 1..]);
        let Some((what, rest)) = rest.split_once('-') else {
            continue;
        };
        let Some((pid, rest)) = rest.split_once('-') else {
            continue;
        };
        let n_end = rest.find('.').unwrap_or(rest.len());
        // temp_sibling ends the name in the target's extension, and in nothing else.
        let ext = Path::new(target).extension().map(|e| e.to_string_lossy());
        let suffix_ok = match (&ext, &rest[n_end..]) {
            (None, "") => true,
            (Some(e), tail) => tail.strip_prefix('.') == Some(e.as_ref()),
            (None, _) => false,
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !target.is_empty()
            && !what.is_empty()
            && what.bytes().all(|b| b.is_ascii_lowercase())
            && digits(pid)
            && digits(&rest[..n_end])
            && suffix_ok
        {
            return Some((target, what));
        }
    }
    None
}

/// `message` with every name this process made by [`temp_sibling`] shown as its
/// target's name: an error raised while a copy was built under a temp name then names
/// the file the user knows, not one that no longer exists. Names of other processes
/// (and the user's own names that happen to look alike) stay as they are.
pub fn without_temp_names(message: &str) -> String {
    let is_delimiter =
        |c: char| c == '/' || c == ':' || c == '\'' || c == '"' || c == ',' || c.is_whitespace();
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find('.') {
        // A temp name is a whole path component starting at this dot.
        let starts_component = i == 0 || rest[..i].ends_with(is_delimiter);
        let end = rest[i + 1..]
            .find(is_delimiter)
            .map_or(rest.len(), |e| i + 1 + e);
        out.push_str(&rest[..i]);
        let candidate = &rest[i..end];
        let pid = std::process::id();
        let mine = |(target, what): &(&str, &str)| {
            candidate.starts_with(&format!(".{target}.{what}-{pid}-"))
        };
        match parse_temp_name(candidate).filter(|tw| starts_component && mine(tw)) {
            Some((target, _)) => out.push_str(target),
            None => out.push_str(candidate),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The directory that will hold `path`, created if missing.
fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| Error::new(dir, e)),
        None => Ok(()),
    }
}

/// A file that appears at its target only on [`AtomicFile::commit`]; dropped
/// uncommitted (an error, a panic), its temp file is removed.
pub struct AtomicFile {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// The guard and the temp file to write into.
    pub fn create(target: &Path) -> Result<(Self, File)> {
        ensure_parent(target)?;
        let tmp = temp_sibling(target, "tmp");
        // `create` truncates a stale file of the same name (a crashed process's). An
        // error names the target: the temp name means nothing to the user.
        let file = File::create(&tmp).map_err(|e| Error::new(target, e))?;
        let guard = AtomicFile {
            tmp,
            target: target.to_path_buf(),
            committed: false,
        };
        Ok((guard, file))
    }

    /// Where the data goes once committed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where the data goes until the commit.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the temp file over the target (the writer must be flushed and closed).
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::new(&self.target, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically (the parent directory is created if missing).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let (guard, mut file) = AtomicFile::create(path)?;
    use std::io::Write;
    file.write_all(bytes)
        .and_then(|()| file.flush())
        .map_err(|e| Error::new(guard.target(), e))?;
    drop(file);
    guard.commit()
}

/// Appends `bytes` at the end of `file` whole or not at all: a write that
/// fails part way (a full disk) is cut back to the length the file had, so a log
/// never ends in half a record. `path` names the file in the error.
pub fn append_to(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::{Seek, Write};
    // At the end whatever the file's position (a file not opened in append mode).
    let before = file
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| Error::new(path, e))?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.flush()) {
        // Best effort: the error to report is the write's. The seek matters for a
        // file not opened in append mode, whose position is past the cut.
        let _ = file.set_len(before);
        let _ = file.seek(std::io::SeekFrom::Start(before));
        return Err(Error::new(path, e));
    }
    Ok(())
}

/// [`append_to`] on `path`, created if missing (its directory too).
pub fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    ensure_parent(path)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::new(path, e))?;
    append_to(&mut file, path, bytes)
}

/// Builds a directory with `build` under a temp name beside `dir`, then puts it in
/// `dir`'s place. A directory cannot be renamed over a non-empty one, so an existing
/// `dir` is first renamed aside and removed only once the new one is in place: at no
/// moment is there no complete copy (a crash between the two renames leaves the old
/// one as `.{name}.old-*` beside it). When `build` fails, or the swap does, the temp
/// directory is removed and `dir` is as it was. `build` fills an existing empty
/// directory.
pub fn replace_dir<E: From<Error>>(
    dir: &Path,
    build: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    ensure_parent(dir)?;
    let tmp = temp_sibling(dir, "tmp");
    // A crashed process with the same pid may have left this name: start empty.
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::new(dir, e))?;
    if let Err(e) = build(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if !dir.exists() {
        return std::fs::rename(&tmp, dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            Error::new(dir, e).into()
        });
    }
    let old = temp_sibling(dir, "old");
    let _ = std::fs::remove_dir_all(&old);
    if let Err(e) = std::fs::rename(dir, &old) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::new(dir, e).into());
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        // Put the old copy back; the new one is dropped.
        let _ = std::fs::rename(&old, dir);
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::new(dir, e).into());
    }
    // The new copy is in place: a failure to remove the old one (a file held open
    // elsewhere) leaves a hidden `.{name}.old-*` beside it, not a failed write.
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of `dir`, so that a leftover temp or old copy shows.
    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_write_replaces_the_old_one_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/state.json");
        write_file(&p, b"one").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(&d.path().join("sub")), vec!["state.json"]);
    }

    #[test]
    fn an_uncommitted_file_leaves_the_old_one_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.bin");
        write_file(&p, b"old").unwrap();
        {
            let (guard, mut f) = AtomicFile::create(&p).unwrap();
            use std::io::Write;
            f.write_all(b"half").unwrap();
            assert!(guard.temp_path().exists());
            // Dropped without a commit, as on an error.
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(d.path()), vec!["a.bin"]);
    }

    #[test]
    fn a_failed_file_write_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        // The parent is a file, so nothing can be created under it.
        let blocker = d.path().join("blocker");
        std::fs::write(&blocker, b"x").unwrap();
        let e = write_file(&blocker.join("f.json"), b"{}").unwrap_err();
        assert!(e.to_string().contains("blocker"), "{e}");
        assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
    }

    #[test]
    fn an_append_that_does_not_fit_leaves_the_file_as_it_was() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        append(&p, b"{\"loss\": 1}\n").unwrap();
        append(&p, b"{\"loss\": 2}\n").unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"{\"loss\": 1}\n{\"loss\": 2}\n"
        );
        // /dev/full takes nothing: every write fails with ENOSPC, as on a full disk.
        let full = Path::new("/dev/full");
        let mut f = std::fs::OpenOptions::new().append(true).open(full).unwrap();
        let e = append_to(&mut f, full, b"{\"loss\": 3}\n").unwrap_err();
        assert_eq!(e.source.raw_os_error(), Some(28), "{e}");
        assert!(e.to_string().starts_with("/dev/full: "), "{e}");
    }

    /// The record [`an_append_cut_short_by_a_size_limit_is_cut_back`] appends.
    const CUT_RECORD: &[u8] = b"{\"loss\": 0.123456789}\n";

    #[test]
    #[ignore = "the child half of an_append_cut_short_by_a_size_limit_is_cut_back"]
    fn append_under_a_size_limit_child() {
        let p = std::env::var_os("BERTH_FS_APPEND_CHILD").expect("run by the parent test");
        let p = Path::new(&p);
        let e = append(p, CUT_RECORD).unwrap_err();
        // EFBIG: part of the record went in before the limit stopped it.
        assert_eq!(e.source.raw_os_error(), Some(27), "{e}");
        // A record that fits still goes in whole afterwards.
        append(p, b"ok\n").unwrap();
    }

    #[test]
    fn an_append_cut_short_by_a_size_limit_is_cut_back() {
        // A child under RLIMIT_FSIZE (SIGXFSZ ignored, as the shell's trap passes it
        // through exec) writes part of a record, gets EFBIG and must cut it back.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let before = b"{\"loss\": 1}\n{\"loss\": 2}\n";
        std::fs::write(&p, before).unwrap();
        let limit = before.len() + CUT_RECORD.len() / 2;
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                r#"trap "" XFSZ; exec prlimit --fsize="$1" "$0" --ignored --exact tests::append_under_a_size_limit_child"#,
            ])
            .arg(std::env::current_exe().unwrap())
            .arg(limit.to_string())
            .env("BERTH_FS_APPEND_CHILD", &p)
            .output()
            .expect("bash and util-linux prlimit");
        assert!(
            out.status.success(),
            "the child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the child test did not run: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(std::fs::read(&p).unwrap(), [&before[..], b"ok\n"].concat());
    }

    #[test]
    fn a_directory_is_replaced_whole_and_no_copy_is_left() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("checkpoint-1");
        replace_dir::<Error>(&dir, |t| write_file(&t.join("a"), b"1")).unwrap();
        replace_dir::<Error>(&dir, |t| write_file(&t.join("b"), b"2")).unwrap();
        assert_eq!(entries(&dir), vec!["b"], "the new directory, not a merge");
        assert_eq!(entries(d.path()), vec!["checkpoint-1"]);
    }

    #[test]
    fn a_failed_build_keeps_the_old_directory() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        replace_dir::<Error>(&dir, |t| write_file(&t.join("model"), b"good")).unwrap();
        let r = replace_dir::<Error>(&dir, |t| {
            write_file(&t.join("model"), b"partial")?;
            Err(Error::new(t, std::io::Error::other("disk full")))
        });
        assert!(r.unwrap_err().to_string().contains("disk full"));
        assert_eq!(std::fs::read(dir.join("model")).unwrap(), b"good");
        assert_eq!(entries(d.path()), vec!["run"]);
    }

    #[test]
    fn temp_names_parse_back_to_their_target() {
        for (target, what) in [
            ("model.safetensors", "tmp"),
            ("checkpoint-12", "old"),
            ("trainer_state.json", "tmp"),
            ("model", "save"),
            ("a.b.c", "tmp"),
        ] {
            let p = temp_sibling(&Path::new("/run").join(target), what);
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_temp_name(name), Some((target, what)), "{name}");
        }
        for other in [
            "model.safetensors",
            ".hidden",
            ".x.tmp-12",
            ".x.tmp-a-1",
            ".x.TMP-1-2",
            "..tmp-1-2",
            ".backup.old-2024-05.tar.gz",
            ".db.tmp-2024-01.sql",
        ] {
            assert_eq!(parse_temp_name(other), None, "{other}");
        }
    }

    #[test]
    fn temp_names_are_unique_and_hidden_beside_the_target() {
        let t = Path::new("/x/y/model.safetensors");
        let (a, b) = (temp_sibling(t, "tmp"), temp_sibling(t, "tmp"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), t.parent());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".model.safetensors.tmp-"), "{name}");
        assert!(name.ends_with(".safetensors"), "{name}");
    }

    #[test]
    fn errors_about_a_temp_copy_name_its_target() {
        let dir = Path::new("/run/out/checkpoint-4");
        let tmp = temp_sibling(dir, "tmp");
        let file = temp_sibling(&tmp.join("config.json"), "tmp");
        let msg = format!(
            "{}: No space left on device (os error 28); also {}",
            file.display(),
            tmp.display()
        );
        assert_eq!(
            without_temp_names(&msg),
            "/run/out/checkpoint-4/config.json: No space left on device (os error 28); also /run/out/checkpoint-4"
        );
        // Other hidden names, and dots inside other words, stay as they are.
        for keep in [
            "/run/out/.checkpoint-4.swp: busy",
            // Another process's temp name, or a user's directory shaped like one.
            "/run/out/.checkpoint-4.tmp-4294967295-2: busy",
            "/data/.backup.old-2023-12/x",
            "/run/out/.cache/x.tmp-1-2: busy",
            "a.b.tmp-1-2 is not a component",
            "no dots at all",
            "",
        ] {
            assert_eq!(without_temp_names(keep), keep);
        }
    }
}

//! What every command shares: where the workspace and the cache are, running cargo
//! and other commands, and timing one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$BERTH_CACHE`, or `~/.cache/berth`.
pub(crate) fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/berth")
}

pub(crate) fn find_python() -> Result<String> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate.to_string());
        }
    }
    bail!("fixtures need python3 with pip (apt-get install python3-pip), and none was found")
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// A release binary where cargo put it: the target directory `cargo metadata`
/// reports (it honours `CARGO_TARGET_DIR` and `build.target-dir`), not `target/`.
pub(crate) fn release_binary(name: &str) -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = String::from_utf8(out.stdout).context("cargo metadata: not UTF-8")?;
    let dir =
        json_string(&json, "target_directory").context("cargo metadata: no target_directory")?;
    Ok(PathBuf::from(dir).join("release").join(name))
}

/// The string value of `"key":` in `json` (cargo metadata's escapes undone), without
/// a JSON dependency in xtask.
pub(crate) fn json_string(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start().strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// Wall seconds and peak RSS (MiB) of a command, by `/usr/bin/time` (Debian's `time`).
pub(crate) fn timed(cmd: &mut Command) -> Result<(f64, f64)> {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "BENCH_TIME %e %M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = timed
        .stderr(std::process::Stdio::piped())
        .output()
        .context("running /usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut measured = None;
    for line in stderr.lines() {
        match line.strip_prefix("BENCH_TIME ") {
            Some(rest) => {
                let mut f = rest.split(' ').map(str::parse::<f64>);
                if let (Some(Ok(wall)), Some(Ok(kb))) = (f.next(), f.next()) {
                    measured = Some((wall, kb / 1024.0));
                }
            }
            None => eprintln!("{line}"),
        }
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    measured.context("no timing from /usr/bin/time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_read_with_their_escapes() {
        let json = r#"{"packages":[],"target_directory":"/a \"b\"\\c","version":1}"#;
        assert_eq!(
            json_string(json, "target_directory").as_deref(),
            Some(r#"/a "b"\c"#)
        );
        assert_eq!(json_string(json, "workspace_root"), None);
    }

    #[test]
    fn the_binary_is_where_cargo_target_dir_puts_it() {
        let elsewhere = std::env::temp_dir().join("berth-elsewhere-target");
        let out = cargo()
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .env("CARGO_TARGET_DIR", &elsewhere)
            .output()
            .unwrap();
        let json = String::from_utf8(out.stdout).unwrap();
        let dir = json_string(&json, "target_directory").unwrap();
        assert_eq!(PathBuf::from(dir), elsewhere);
    }
}

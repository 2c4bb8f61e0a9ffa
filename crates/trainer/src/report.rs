//! What a run shows and leaves behind: the progress bar (or plain lines), the
//! loss-curve PNG, the summary table and report.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::splits::TaskData;
use crate::state::write_atomic;

/// An indicatif bar on a terminal; otherwise hidden, and the trainer's log lines
/// (every `logging_steps`) are the progress.
pub struct Progress {
    bar: ProgressBar,
    terminal: bool,
}

impl Progress {
    /// `no_bar` (HF's `disable_tqdm`) keeps the log lines and drops the bar.
    pub fn new(total: usize, done: usize, no_bar: bool) -> Self {
        let terminal = stderr_is_terminal() && !no_bar;
        let bar = if terminal {
            let b = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(done as u64);
            b
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, terminal }
    }

    pub fn update(&self, step: usize, epoch: f64, loss: f64, lr: f64, tokens_per_s: f64) {
        self.bar.set_position(step as u64);
        self.bar.set_message(format!(
            "epoch {epoch:.2} loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"
        ));
    }

    /// A log line above the bar (or on stderr when there is no bar).
    pub fn println(&self, line: &str) {
        if self.terminal {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A font for chart text: DejaVu Sans where the system has it. Without one the
/// curve is drawn without text.
fn register_font() -> bool {
    use std::sync::OnceLock;
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ];
        for c in candidates {
            if let Ok(bytes) = std::fs::read(c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return true;
                }
            }
        }
        false
    })
}

fn series(history: &[Map<String, Value>], key: &str) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|e| Some((e.get("step")?.as_f64()?, e.get(key)?.as_f64()?)))
        .collect()
}

/// Training loss (and eval loss where evaluated) against the step, as a PNG.
pub fn loss_curve(history: &[Map<String, Value>], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let train = series(history, "loss");
    let eval = series(history, "eval_loss");
    if train.is_empty() && eval.is_empty() {
        return Ok(());
    }
    let text = register_font();
    let all = train.iter().chain(&eval);
    let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_y = all.map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.05;
    // Drawn into a temp sibling (it keeps the .png the encoder needs), then renamed.
    let (guard, file) = berth_fs::AtomicFile::create(path)?;
    drop(file);
    let tmp = guard.temp_path().to_path_buf();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(&tmp, (960, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20);
        if text {
            builder
                .caption("loss", ("sans-serif", 24))
                .x_label_area_size(40)
                .y_label_area_size(60);
        }
        let mut chart = builder.build_cartesian_2d(0f64..max_x, 0f64..max_y)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc("loss")
                .draw()?;
        } else {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .disable_y_mesh()
                .draw()?;
        }
        let train_line = chart.draw_series(LineSeries::new(train.iter().copied(), &BLUE))?;
        if text {
            train_line
                .label("train loss")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        }
        if !eval.is_empty() {
            chart.draw_series(eval.iter().map(|p| Circle::new(*p, 3, RED.filled())))?;
            let eval_line = chart.draw_series(LineSeries::new(eval.iter().copied(), &RED))?;
            if text {
                eval_line
                    .label("eval loss")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    if let Err(e) = draw() {
        return Err(TrainError::checkpoint(
            path,
            format!("drawing the loss curve: {e}"),
        ));
    }
    Ok(guard.commit()?)
}

/// Loss (train and eval), learning rate, grad norm and each eval metric against the
/// step, one panel each, as an SVG. Its text is SVG text, drawn by whatever shows the
/// file with its own fonts, so no font is needed here (the PNG's text needs a system
/// font).
pub fn curves_svg(history: &[Map<String, Value>]) -> Option<String> {
    let mut panels: Vec<(String, Vec<Line>)> = Vec::new();
    let loss: Vec<Line> = [("train", "loss"), ("eval", "eval_loss")]
        .iter()
        .map(|(name, key)| (name.to_string(), series(history, key)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !loss.is_empty() {
        panels.push(("loss".into(), loss));
    }
    let mut keys: Vec<String> = vec!["learning_rate".into(), "grad_norm".into()];
    let mut eval_keys: Vec<String> = history
        .iter()
        .flat_map(|e| e.keys())
        .filter(|k| {
            k.starts_with("eval_")
                && *k != "eval_loss"
                && !k.ends_with("runtime")
                && !k.ends_with("per_second")
        })
        .cloned()
        .collect();
    eval_keys.sort();
    eval_keys.dedup();
    keys.extend(eval_keys);
    for k in keys {
        let s = series(history, &k);
        if !s.is_empty() {
            panels.push((k.clone(), vec![(k, s)]));
        }
    }
    if panels.is_empty() {
        return None;
    }
    let (w, h) = (480.0, 300.0);
    let rows = panels.len().div_ceil(2);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w,
        rows as f64 * h
    );
    for (i, (title, lines)) in panels.iter().enumerate() {
        let (x0, y0) = ((i % 2) as f64 * w, (i / 2) as f64 * h);
        svg.push_str(&panel(x0, y0, w, h, title, lines));
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

/// How many texts have each number of chunks, as a markdown table with text bars.
pub fn chunks_table(counts: &BTreeMap<usize, usize>) -> String {
    let most = counts.values().copied().max().unwrap_or(1).max(1);
    let mut s = String::from("| chunks | texts | |\n| ---: | ---: | --- |\n");
    for (k, n) in counts {
        let bar = "#".repeat((n * 40).div_ceil(most));
        let _ = writeln!(s, "| {k} | {n} | `{bar}` |");
    }
    s
}

/// A bar chart of how many texts have each number of chunks, as SVG (no font or
/// image library needed): one bar per chunk count, labelled with the count and the
/// number of texts. `None` without texts.
pub fn chunks_svg(title: &str, counts: &BTreeMap<usize, usize>) -> Option<String> {
    let most = *counts.values().max()?;
    let (left, right, top, bottom, h) = (60.0, 20.0, 40.0, 40.0, 300.0);
    let bar = (600.0 / counts.len() as f64).clamp(4.0, 40.0);
    let pw = bar * counts.len() as f64;
    let ph = h - top - bottom;
    let w = left + pw + right;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{:.1}\" y=\"22\" font-size=\"14\" text-anchor=\"middle\">{}</text>\n<rect x=\"{left}\" y=\"{top}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#888\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{most}</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>\n",
        left + pw / 2.0,
        escape(title),
        left - 5.0,
        top + 4.0,
        left - 5.0,
        top + ph + 4.0,
    );
    // Label every bar when they fit, else about 15 of them.
    let every = counts.len().div_ceil(15).max(1);
    for (i, (&chunks, &texts)) in counts.iter().enumerate() {
        let bh = ph * texts as f64 / most as f64;
        let x = left + bar * i as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#1f77b4\"><title>{chunks} chunks: {texts} texts</title></rect>",
            x + 1.0,
            top + ph - bh,
            (bar - 2.0).max(1.0),
        );
        if i % every == 0 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{chunks}</text>",
                x + bar / 2.0,
                top + ph + 15.0
            );
        }
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">chunks per text</text>\n</svg>",
        left + pw / 2.0,
        h - 5.0
    );
    Some(s)
}

/// A named series of (step, value) points.
type Line = (String, Vec<(f64, f64)>);

fn panel(
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> String {
    const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let (left, right, top, bottom) = (70.0, 25.0, 30.0, 35.0);
    let points = lines.iter().flat_map(|l| &l.1);
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (xmin, xmax, ymin, ymax) = (xmin.min(x), xmax.max(x), ymin.min(y), ymax.max(y));
    }
    if xmax <= xmin {
        (xmin, xmax) = (xmin - 1.0, xmax + 1.0);
    }
    if ymax <= ymin {
        (ymin, ymax) = (
            ymin - ymin.abs().max(1e-3) * 0.1,
            ymax + ymax.abs().max(1e-3) * 0.1,
        );
    }
    let pad = (ymax - ymin) * 0.05;
    (ymin, ymax) = (ymin - pad, ymax + pad);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let px = |x: f64| x0 + left + (x - xmin) / (xmax - xmin) * pw;
    let py = |y: f64| y0 + top + (1.0 - (y - ymin) / (ymax - ymin)) * ph;
    let num = |v: f64| {
        if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
            format!("{v:.2e}")
        } else {
            format!("{v:.3}")
        }
    };
    let mut s = format!(
        "<g>\n<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" text-anchor=\"middle\">{}</text>\n<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#888\"/>\n",
        x0 + left + pw / 2.0,
        y0 + 20.0,
        escape(title),
        x0 + left,
        y0 + top
    );
    for f in [0.0, 0.5, 1.0] {
        let (xv, yv) = (xmin + f * (xmax - xmin), ymin + f * (ymax - ymin));
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            px(xv),
            y0 + h - 15.0,
            xv,
            x0 + left - 5.0,
            py(yv) + 4.0,
            num(yv)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">step</text>",
        x0 + left + pw / 2.0,
        y0 + h - 2.0
    );
    for (i, (name, pts)) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        if pts.len() < 30 {
            for &(x, y) in pts {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
                    px(x),
                    py(y)
                );
            }
        }
        if lines.len() > 1 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{colour}\">{}</text>",
                x0 + w - right - 5.0,
                y0 + top + 15.0 + 15.0 * i as f64,
                escape(name)
            );
        }
    }
    s.push_str("</g>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The end-of-run table printed on stdout.
pub fn summary_table(summary: &RunSummary) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("steps".into(), summary.global_step.to_string()),
        ("epochs".into(), format!("{:.2}", summary.epoch)),
        ("train_loss".into(), format!("{:.4}", summary.train_loss)),
        (
            "train_runtime".into(),
            format!("{:.1} s", summary.train_runtime_s),
        ),
        (
            "train_tokens_per_second".into(),
            format!("{:.0}", summary.train_tokens_per_s),
        ),
    ];
    for m in [&summary.eval, &summary.test] {
        for (k, v) in m {
            rows.push((k.clone(), format!("{v:.4}")));
        }
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(6).max(6);
    let mut s = format!(
        "{:<w$}  value\n{}  {}\n",
        "metric",
        "-".repeat(w),
        "-".repeat(10)
    );
    for (k, v) in rows {
        let _ = writeln!(s, "{k:<w$}  {v}");
    }
    s
}

fn metrics_md(m: &BTreeMap<String, f64>) -> String {
    let mut s = String::from("| metric | value |\n| --- | --- |\n");
    for (k, v) in m {
        let _ = writeln!(s, "| {k} | {v:.4} |");
    }
    s
}

/// report.md: what ran, on what, for how long, and what it reached; for chunked
/// rows also `chunks.svg` beside it.
pub fn write_report(
    config: &RunConfig,
    summary: &RunSummary,
    data: &TaskData,
    details: &[(String, String)],
    path: &Path,
) -> Result<()> {
    let t = &config.training;
    let mut s = String::new();
    let _ = writeln!(s, "# Berth run: {}\n", config.task.name());
    let _ = writeln!(s, "- model: `{}`", config.model);
    let _ = writeln!(
        s,
        "- train: `{}` ({} rows)",
        data.train.source,
        data.train.rows.len()
    );
    if let Some(e) = &data.eval {
        let _ = writeln!(s, "- eval: `{}` ({} rows)", e.source, e.rows.len());
    }
    if let Some(e) = &data.test {
        let _ = writeln!(s, "- test: `{}` ({} rows)", e.source, e.rows.len());
    }
    let _ = writeln!(
        s,
        "- steps: {} ({:.2} epochs), batch {} x {} accumulation, lr {} {} (warm-up ratio {}, steps {}), weight decay {}, seed {}, device {}, precision {}",
        summary.global_step,
        summary.epoch,
        t.per_device_train_batch_size,
        t.gradient_accumulation_steps,
        t.learning_rate,
        t.lr_scheduler_type,
        t.warmup_ratio,
        t.warmup_steps,
        t.weight_decay,
        t.seed,
        t.device,
        t.precision
    );
    let _ = writeln!(
        s,
        "- training time: {:.1} s, {:.0} tokens/s; final train loss {:.4}",
        summary.train_runtime_s, summary.train_tokens_per_s, summary.train_loss
    );
    if let Some(b) = &summary.best_model_checkpoint {
        let _ = writeln!(s, "- best checkpoint: `{b}`");
    }
    if !summary.eval.is_empty() {
        let _ = writeln!(s, "\n## Eval\n\n{}", metrics_md(&summary.eval));
    }
    if !summary.test.is_empty() {
        let _ = writeln!(s, "\n## Test\n\n{}", metrics_md(&summary.test));
    }
    for (title, md) in details {
        let _ = writeln!(s, "\n## {title}\n\n{md}");
    }
    if let Some(counts) = data.train.rows.chunk_counts() {
        if let Some(svg) = chunks_svg("chunks per text (train)", &counts) {
            write_atomic(&path.with_file_name("chunks.svg"), svg.as_bytes())?;
        }
        let _ = writeln!(
            s,
            "\n## Chunks per text (train)\n\n{}\n![chunks per text](chunks.svg)",
            chunks_table(&counts)
        );
    }
    let _ = writeln!(
        s,
        "\n![curves](curves.svg)\n\n![loss curve](loss_curve.png)\n\nConfiguration: `run_config.toml`; every logged value: `metrics.jsonl` and `trainer_state.json`."
    );
    write_atomic(path, s.as_bytes())
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub output_dir: PathBuf,
    pub global_step: usize,
    pub epoch: f64,
    pub train_loss: f64,
    pub train_runtime_s: f64,
    pub train_tokens_per_s: f64,
    pub eval: BTreeMap<String, f64>,
    pub test: BTreeMap<String, f64>,
    pub best_model_checkpoint: Option<String>,
}

/// `k=v` pairs, 4 decimals.
pub fn fmt_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .filter(|(k, _)| !k.ends_with("runtime") && !k.ends_with("per_second"))
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether progress should be a bar (a terminal) or log lines.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunks_histogram_has_a_bar_per_count_scaled_to_the_most() {
        let counts: BTreeMap<usize, usize> = [(1, 10), (2, 5), (9, 1)].into_iter().collect();
        let svg = chunks_svg("chunks per text (train)", &counts).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("<title>1 chunks: 10 texts</title>"));
        assert!(svg.contains("<title>9 chunks: 1 texts</title>"));
        // Heights in proportion to the texts: the plot is 220 high.
        assert!(svg.contains("height=\"220.0\" fill=\"#1f77b4\""), "{svg}");
        assert!(svg.contains("height=\"110.0\" fill=\"#1f77b4\""), "{svg}");
        assert!(svg.contains("height=\"22.0\" fill=\"#1f77b4\""), "{svg}");
        assert_eq!(chunks_svg("x", &BTreeMap::new()), None);
        // Many counts: about 15 labels, every bar drawn.
        let many: BTreeMap<usize, usize> = (1..=200).map(|k| (k, 1)).collect();
        let svg = chunks_svg("x", &many).unwrap();
        assert_eq!(svg.matches("<title>").count(), 200);
        assert!(svg.matches("text-anchor=\"middle\">").count() <= 2 + 15);
    }
}

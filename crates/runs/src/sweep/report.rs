//! The sweep's table (`results.md`, `results.csv`) and plot (`results.png`, `.svg`), from each run's
//! `metrics.jsonl`: the final kNN top-1, the final epoch's mean loss, the wall time.

use super::runner::{run_dir, state, State, FAILED_FILE};
use super::spec::{Point, Scale, Spec, X};
use crate::folder::METRICS_FILE;
use anyhow::Result;
use mocca_plot::chart::{self, Mark, Series};
use mocca_train::{read_records, Record};
use std::fmt::Write as _;
use std::path::Path;

/// What one finished run reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunResult {
    /// kNN top-1 (%) at the last step, of the chosen layer.
    pub knn: Option<f64>,
    /// The mean of the last epoch's logged step losses.
    pub loss: Option<f64>,
    /// Training wall time (all its processes), from the last step record.
    pub wall_s: Option<f64>,
    /// The kNN protocol of that record: (k, t, encoder, layer, n_train, n_test).
    pub protocol: Option<(usize, f64, String, String, usize, usize)>,
}

/// The results of the run in `dir` (`layer`: which kNN record, by a part of its layer's
/// name, e.g. `backbone`; `None`: the first one at the last kNN step, the run's `eval.layer`).
pub fn read_run(dir: &Path, layer: Option<&str>) -> RunResult {
    let Ok(records) = read_records(&dir.join(METRICS_FILE)) else {
        return RunResult::default();
    };
    let mut r = RunResult::default();
    let last_knn = records
        .iter()
        .filter_map(|x| match x {
            Record::Knn { step, .. } => Some(*step),
            _ => None,
        })
        .max();
    for rec in &records {
        match rec {
            Record::Knn {
                step,
                top1,
                k,
                t,
                encoder,
                layer: l,
                n_train,
                n_test,
                ..
            } if Some(*step) == last_knn
                && r.knn.is_none()
                && layer.is_none_or(|want| l.contains(want)) =>
            {
                r.knn = Some(*top1);
                r.protocol = Some((*k, *t, encoder.clone(), l.clone(), *n_train, *n_test));
            }
            Record::Step { elapsed_s, .. } => r.wall_s = Some(*elapsed_s),
            _ => {}
        }
    }
    // The last epoch's logged step losses: the same records whether or not the run was
    // interrupted and resumed (an `epoch` record's mean restarts with a resumed process).
    let last_epoch = records
        .iter()
        .filter_map(|x| match x {
            Record::Step { epoch, .. } => Some(epoch.ceil()),
            _ => None,
        })
        .fold(f64::NAN, f64::max);
    let losses: Vec<f64> = records
        .iter()
        .filter_map(|x| match x {
            Record::Step { epoch, loss, .. } if epoch.ceil() == last_epoch => Some(*loss),
            _ => None,
        })
        .collect();
    r.loss = mean_std(&losses).map(|m| m.0);
    r
}

/// One point's runs: (seed, result) of each finished run.
pub struct PointResult<'a> {
    pub point: &'a Point,
    pub runs: Vec<(u64, RunResult)>,
    /// (seed, why) of each run whose last attempt failed.
    pub failed: Vec<(u64, String)>,
}

/// Mean and sample standard deviation (n − 1; `None` below two values).
pub fn mean_std(v: &[f64]) -> Option<(f64, Option<f64>)> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, std))
}

impl PointResult<'_> {
    fn values(&self, f: impl Fn(&RunResult) -> Option<f64>) -> Vec<f64> {
        self.runs.iter().filter_map(|(_, r)| f(r)).collect()
    }
    fn knn(&self, seed: u64) -> Option<f64> {
        self.runs
            .iter()
            .find(|(s, _)| *s == seed)
            .and_then(|(_, r)| r.knn)
    }
}

pub fn collect<'a>(out: &Path, spec: &Spec, points: &'a [Point]) -> Vec<PointResult<'a>> {
    points
        .iter()
        .map(|p| PointResult {
            point: p,
            runs: spec
                .seeds
                .iter()
                .filter_map(|&s| {
                    let dir = run_dir(out, p, s);
                    (state(&dir).ok() == Some(State::Finished))
                        .then(|| (s, read_run(&dir, spec.report.layer.as_deref())))
                })
                .collect(),
            failed: spec
                .seeds
                .iter()
                .filter_map(|&s| {
                    let why = std::fs::read_to_string(run_dir(out, p, s).join(FAILED_FILE)).ok()?;
                    Some((s, why.trim().to_string()))
                })
                .collect(),
        })
        .collect()
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.decimals$}"))
}

fn fmt_wall(s: f64) -> String {
    let m = (s / 60.0).floor();
    format!("{m:.0}m{:02.0}s", s - 60.0 * m)
}

fn x_label(spec: &Spec, points: &[Point]) -> String {
    spec.report.x_label.clone().unwrap_or_else(|| {
        let any_axis = !spec.axis.is_empty() || spec.grid.iter().any(|g| !g.axis.is_empty());
        match (any_axis, spec.axis.last(), points.first()) {
            (false, _, _) => "run".into(),
            (true, Some(a), _) => a
                .name
                .clone()
                .or_else(|| a.key.clone())
                .or_else(|| a.keys.first().cloned())
                .unwrap_or_else(|| "x".into()),
            (true, None, _) => spec
                .grid
                .iter()
                .find_map(|g| g.axis.last())
                .and_then(|a| a.name.clone().or_else(|| a.key.clone()))
                .unwrap_or_else(|| "x".into()),
        }
    })
}

/// The Markdown table.
pub fn markdown(spec: &Spec, results: &[PointResult]) -> String {
    let points: Vec<Point> = results.iter().map(|r| r.point.clone()).collect();
    let xl = x_label(spec, &points);
    let total = results.len() * spec.seeds.len();
    let done: usize = results.iter().map(|r| r.runs.len()).sum();
    let protocol = results
        .iter()
        .flat_map(|r| r.runs.iter())
        .find_map(|(_, r)| r.protocol.clone());
    let mut s = String::new();
    let title = spec.title.as_deref().unwrap_or("Sweep");
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "{} points x {} seeds: {done} of {total} runs finished.",
        results.len(),
        spec.seeds.len()
    );
    if let Some((k, t, enc, layer, n_train, n_test)) = protocol {
        let _ = writeln!(
            s,
            "Accuracy: weighted kNN top-1 (k {k}, t {t}) on the {enc}'s {layer} at the end \
             of training ({n_train} training / {n_test} test images), mean \
             ± sample standard deviation over the finished seeds. Loss: the mean of the last \
             epoch's logged training losses. Wall time: training, per run (mean).",
        );
    }
    let _ = writeln!(s);
    let seeds: String = spec.seeds.iter().map(|x| format!(" seed {x} |")).collect();
    let _ = writeln!(
        s,
        "| point | series | {xl} | kNN top-1 (%) |{seeds} loss | wall time | runs |"
    );
    let _ = writeln!(s, "|{}", "---|".repeat(7 + spec.seeds.len()));
    for r in results {
        let acc = match mean_std(&r.values(|x| x.knn)) {
            Some((m, Some(sd))) => format!("{m:.2} ± {sd:.2}"),
            Some((m, None)) => format!("{m:.2}"),
            None => "—".into(),
        };
        let per_seed: String = spec
            .seeds
            .iter()
            .map(|&x| format!(" {} |", fmt_opt(r.knn(x), 2)))
            .collect();
        let loss = mean_std(&r.values(|x| x.loss)).map(|m| m.0);
        let wall = mean_std(&r.values(|x| x.wall_s)).map_or("—".into(), |m| fmt_wall(m.0));
        let failed = match r.failed.len() {
            0 => String::new(),
            n => format!(" ({n} failed)"),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {acc} |{per_seed} {} | {wall} | {}/{}{failed} |",
            r.point.name,
            r.point.series,
            r.point.x_text,
            fmt_opt(loss, 3),
            r.runs.len(),
            spec.seeds.len()
        );
    }
    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.failed
                .iter()
                .map(move |(seed, why)| format!("- `{}/seed{seed}`: {why}", r.point.name))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed runs (their train.log says more):\n");
        for f in failures {
            let _ = writeln!(s, "{f}");
        }
    }
    let _ = writeln!(
        s,
        "\nEach run is `cargo xtask train METHOD --recipe RECIPE --set ... --seed S --out \
         <point>/seed<S>` (one core each: RAYON_NUM_THREADS=1):\n"
    );
    for r in results {
        let p = r.point;
        let sets: String = p.sets.iter().map(|x| format!(" --set {x}")).collect();
        let _ = writeln!(
            s,
            "- `{}`: `{} --recipe {}{sets}`",
            p.name,
            p.method.as_str(),
            p.recipe.as_str()
        );
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV: one row per point, numbers in full precision, empty where unknown.
pub fn csv(spec: &Spec, results: &[PointResult]) -> String {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    let mut s = String::from("point,series,x,method,recipe,runs_finished,knn_mean,knn_std");
    for x in &spec.seeds {
        let _ = write!(s, ",knn_seed{x}");
    }
    s.push_str(",loss_mean,wall_s_mean\n");
    for r in results {
        let knn = mean_std(&r.values(|x| x.knn));
        let x = match &r.point.x {
            X::Num(v) => format!("{v}"),
            X::Cat(c) => c.clone(),
        };
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{}",
            csv_field(&r.point.name),
            csv_field(&r.point.series),
            csv_field(&x),
            r.point.method.as_str(),
            r.point.recipe.as_str(),
            r.runs.len(),
            num(knn.map(|m| m.0)),
            num(knn.and_then(|m| m.1)),
        );
        for &seed in &spec.seeds {
            let _ = write!(s, ",{}", num(r.knn(seed)));
        }
        let _ = writeln!(
            s,
            ",{},{}",
            num(mean_std(&r.values(|x| x.loss)).map(|m| m.0)),
            num(mean_std(&r.values(|x| x.wall_s)).map(|m| m.0))
        );
    }
    s
}

/// The plot's series: one per `Point::series`, in order of first appearance.
fn series(results: &[PointResult]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in results {
        let values = r.values(|x| x.knn);
        let Some((mean, std)) = mean_std(&values) else {
            continue;
        };
        let mark = Mark {
            x: r.point.x.clone(),
            mean,
            std,
            values,
        };
        match out.iter_mut().find(|s| s.name == r.point.series) {
            Some(s) => s.marks.push(mark),
            None => out.push(Series {
                name: r.point.series.clone(),
                marks: vec![mark],
            }),
        }
    }
    out
}

/// Writes `results.md`, `results.csv`, `results.png` and `results.svg` in `out`; prints where.
pub fn write(out: &Path, spec: &Spec, points: &[Point]) -> Result<()> {
    let results = collect(out, spec, points);
    let files = mocca_train::files::write_atomic;
    files(&out.join("results.md"), markdown(spec, &results).as_bytes())?;
    files(&out.join("results.csv"), csv(spec, &results).as_bytes())?;
    let scale = spec.report.scale.unwrap_or_else(|| {
        if points.iter().all(|p| matches!(p.x, X::Num(_))) {
            Scale::Linear
        } else {
            Scale::Category
        }
    });
    let scale = match scale {
        Scale::Linear => chart::Scale::Linear,
        Scale::Log2 => chart::Scale::Log2,
        Scale::Category => chart::Scale::Category,
    };
    chart::save(
        &out.join("results"),
        &chart::Chart {
            title: spec.title.clone().unwrap_or_else(|| "Sweep".into()),
            x_label: x_label(spec, points),
            y_label: "kNN top-1 (%)".into(),
            scale,
            series: series(&results),
            categories: points.iter().map(|p| p.x_text.clone()).collect(),
        },
    )?;
    let done: usize = results.iter().map(|r| r.runs.len()).sum();
    println!(
        "wrote {} (and results.csv, results.png, results.svg): {done} of {} runs finished",
        out.join("results.md").display(),
        points.len() * spec.seeds.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[2.0]), Some((2.0, None)));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m, s), (2.0, Some(1.0)));
    }

    #[test]
    fn a_run_reports_its_last_knn_of_the_chosen_layer_loss_and_wall_time() {
        let dir = std::env::temp_dir().join(format!("mocca-sweep-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Lines as the trainer writes them (the JSON, so new optional fields change nothing).
        let knn = |step: u64, layer: &str, top1: f64| {
            format!(
                "{{\"kind\":\"knn\",\"step\":{step},\"epoch\":{step}.0,\"top1\":{top1},\"k\":200,\
                 \"t\":0.1,\"encoder\":\"query\",\"layer\":\"{layer}\",\"n_train\":100,\"n_test\":20}}\n"
            )
        };
        let step = |step: u64, loss: f64, elapsed: f64| {
            format!(
                "{{\"kind\":\"step\",\"step\":{step},\"epoch\":{}.0,\"loss\":{loss},\"lr\":0.1,\
                 \"images_per_s\":1.0,\"elapsed_s\":{elapsed}}}\n",
                step / 2
            )
        };
        let text = [
            knn(0, "head", 10.0),
            step(1, 9.0, 1.0),
            step(2, 5.0, 12.5),
            "{\"kind\":\"epoch\",\"step\":2,\"epoch\":1.0,\"loss_mean\":5.5,\"seconds\":12.0}\n"
                .to_string(),
            knn(2, "projection-head output", 30.0),
            knn(2, "backbone features", 40.0),
        ]
        .concat();
        std::fs::write(dir.join(METRICS_FILE), text).unwrap();
        let r = read_run(&dir, None);
        assert_eq!(
            (r.knn, r.loss, r.wall_s),
            (Some(30.0), Some(5.0), Some(12.5))
        );
        assert_eq!(read_run(&dir, Some("backbone")).knn, Some(40.0));
        assert_eq!(read_run(&dir, Some("nope")).knn, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

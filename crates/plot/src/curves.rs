//! A run folder's curves: [`RunSeries::load`] reads `metrics.jsonl`, [`panels`] lays out
//! what `cargo xtask plot` draws.
//!
//! Three panels against epochs: training loss (log axis), learning rate and
//! kNN top-1 accuracy, one colour per run with a legend (several runs
//! overlay, for comparisons). When the runs' step records carry the collapse
//! monitor (`run.collapse_every`), four more in a second column: std of the
//! normalised embeddings × √d, RankMe, alignment and uniformity, with the
//! "collapsing" thresholds as grey dashed lines and a dashed vertical line in
//! the run's colour, on every panel, at the first reading that said
//! "collapsing".

use crate::figure::{self, colour, Legend, Panel};
use crate::{PlotError, Result};
use mocca_train::{read_records, Record, METRICS_FILE};
use std::path::{Path, PathBuf};

/// Reads every run's curves and saves their figure to `out` (PNG, or SVG by its extension).
pub fn plot_runs(runs: &[PathBuf], out: &Path) -> Result<Vec<RunSeries>> {
    let series = runs
        .iter()
        .map(|r| RunSeries::load(r))
        .collect::<Result<Vec<_>>>()?;
    let (panels, cols, rows) = panels(&series);
    figure::save(out, &panels, cols, rows)?;
    Ok(series)
}

/// (x, y) points in drawing order.
type Curve = Vec<(f64, f64)>;

/// One run's curves, x = epoch.
#[derive(Default)]
pub struct RunSeries {
    pub name: String,
    pub loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    /// kNN top-1 of the first layer the monitor reports (`eval.layer`).
    pub knn: Vec<(f64, f64)>,
    /// Its layer's name ("backbone features", "projection-head output").
    pub knn_layer: Option<String>,
    /// The second layer's (`eval.also_layers`), when there is one.
    pub knn2: Vec<(f64, f64)>,
    pub knn2_layer: Option<String>,
    /// The collapse monitor: std of the normalised embeddings × √d.
    pub std: Vec<(f64, f64)>,
    /// RankMe.
    pub rank: Vec<(f64, f64)>,
    pub alignment: Vec<(f64, f64)>,
    pub uniformity: Vec<(f64, f64)>,
    /// Epoch of the first reading whose verdict was "collapsing".
    pub first_collapsing: Option<f64>,
    /// No points (a blank panel's curve).
    pub empty: Vec<(f64, f64)>,
}

impl RunSeries {
    /// One line on what was read: points, the last kNN top-1, the collapse monitor's verdict.
    pub fn summary(&self) -> String {
        let last_knn = self
            .knn
            .last()
            .map(|p| format!(", last kNN top-1 {:.2}%", p.1))
            .unwrap_or_default();
        let collapse = match (self.std.len(), self.first_collapsing) {
            (0, _) => String::new(),
            (n, None) => format!(", {n} collapse-monitor points, never collapsing"),
            (n, Some(e)) => {
                format!(", {n} collapse-monitor points, collapsing from epoch {e:.2}")
            }
        };
        format!(
            "{}: {} loss points, {} kNN points{last_knn}{collapse}",
            self.name,
            self.loss.len(),
            self.knn.len()
        )
    }

    /// The curves of `run` (a run folder, or its `metrics.jsonl`).
    pub fn load(run: &Path) -> Result<Self> {
        let path = if run.is_dir() {
            run.join(METRICS_FILE)
        } else {
            run.to_path_buf()
        };
        if !path.exists() {
            return Err(PlotError::NotARun {
                run: run.to_path_buf(),
                metrics: path,
            });
        }
        let records = read_records(&path)?;
        let name = run
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| run.display().to_string());
        let mut s = RunSeries {
            name,
            ..RunSeries::default()
        };
        let mut knn_step = None;
        for r in records {
            match r {
                Record::Step {
                    epoch,
                    loss,
                    lr,
                    collapse,
                    ..
                } => {
                    if loss.is_finite() {
                        s.loss.push((epoch, loss));
                    }
                    s.lr.push((epoch, lr));
                    if let Some(c) = collapse {
                        s.std.push((epoch, c.std_sqrt_d));
                        s.rank.push((epoch, c.rank_me));
                        if let Some(a) = c.alignment {
                            s.alignment.push((epoch, a));
                        }
                        s.uniformity.push((epoch, c.uniformity));
                        if c.collapsing && s.first_collapsing.is_none() {
                            s.first_collapsing = Some(epoch);
                        }
                    }
                }
                // The first record of a step is the monitor's first layer.
                Record::Knn {
                    step,
                    epoch,
                    top1,
                    layer,
                    ..
                } => {
                    if knn_step != Some(step) {
                        knn_step = Some(step);
                        s.knn.push((epoch, top1));
                        s.knn_layer.get_or_insert(layer);
                    } else if s.knn2_layer.get_or_insert_with(|| layer.clone()) == &layer {
                        s.knn2.push((epoch, top1));
                    }
                }
                Record::Epoch { .. } | Record::SkippedFile { .. } => {}
            }
        }
        if s.loss.is_empty() && s.knn.is_empty() {
            return Err(PlotError::NoRecords(path));
        }
        Ok(s)
    }
}

/// The figure's panels, and its grid (columns, rows a column).
pub fn panels(series: &[RunSeries]) -> (Vec<Panel<'_>>, usize, usize) {
    use mocca_methods::collapse::{COLLAPSING_RANK, COLLAPSING_STD};
    let layer = |get: fn(&RunSeries) -> &Option<String>| {
        series
            .iter()
            .find_map(|s| get(s).clone())
            .unwrap_or_default()
    };
    let markers: Vec<(f64, plotters::style::RGBColor)> = series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.first_collapsing.map(|e| (e, colour(i))))
        .collect();
    let panel =
        |title: &str, y_label: &str, get: fn(&RunSeries) -> &Curve, dots: bool, legend: Legend| {
            Panel {
                title: title.to_string(),
                x_label: "epoch".into(),
                y_label: y_label.into(),
                curves: series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| figure::Curve {
                        label: s.name.clone(),
                        colour: colour(i),
                        points: get(s),
                        markers: dots,
                    })
                    .collect(),
                log_y: false,
                reference: None,
                markers: markers.clone(),
                legend,
            }
        };
    let two_layers = series.iter().any(|s| !s.knn2.is_empty());
    let knn_title = if two_layers {
        format!("kNN top-1, {}", layer(|s| &s.knn_layer))
    } else {
        "kNN top-1 accuracy".to_string()
    };
    // BYOL's and SimSiam's negative cosine losses lie in [-1, 1]: a log axis only when every
    // loss is positive (the contrastive losses).
    let positive = series.iter().all(|s| s.loss.iter().all(|p| p.1 > 0.0));
    let mut loss = panel(
        "Training loss",
        if positive { "loss (log scale)" } else { "loss" },
        |s| &s.loss,
        false,
        Legend::UpperRight,
    );
    loss.log_y = positive;
    let mut out = vec![
        loss,
        panel("Learning rate", "lr", |s| &s.lr, false, Legend::UpperRight),
        panel(
            &knn_title,
            "top-1 (%)",
            |s| &s.knn,
            true,
            Legend::LowerRight,
        ),
    ];
    if two_layers {
        let title = format!("kNN top-1, {}", layer(|s| &s.knn2_layer));
        out.push(panel(
            &title,
            "top-1 (%)",
            |s| &s.knn2,
            true,
            Legend::LowerRight,
        ));
    }
    let left = out.len();
    if !series.iter().any(|s| !s.std.is_empty()) {
        return (out, 1, left);
    }
    let mut std = panel(
        "Embedding std × √d (1 spread, 0 collapsed)",
        "std × √d",
        |s| &s.std,
        false,
        Legend::UpperRight,
    );
    std.reference = Some((COLLAPSING_STD, format!("collapsing below {COLLAPSING_STD}")));
    let mut rank = panel(
        "Effective rank (RankMe)",
        "RankMe",
        |s| &s.rank,
        false,
        Legend::UpperRight,
    );
    rank.reference = Some((
        COLLAPSING_RANK,
        format!("collapsing below {COLLAPSING_RANK}"),
    ));
    let mut right = vec![
        std,
        rank,
        panel(
            "Alignment (positive pairs; 0 collapsed)",
            "mean |u − v|²",
            |s| &s.alignment,
            false,
            Legend::UpperRight,
        ),
        panel(
            "Uniformity (−4 spread, 0 collapsed)",
            "log mean exp(−2 |u − v|²)",
            |s| &s.uniformity,
            false,
            Legend::UpperRight,
        ),
    ];
    // Both columns as tall as the longer one.
    let rows = left.max(right.len());
    while out.len() < rows {
        out.push(panel("", "", |s| &s.empty, false, Legend::UpperRight));
    }
    out.append(&mut right);
    (out, 2, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::{fmt_tick, nice_ticks, PALETTE};
    use image::RgbImage;

    #[test]
    fn nice_ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 200.0, 8),
            vec![0.0, 50.0, 100.0, 150.0, 200.0]
        );
        let t = nice_ticks(0.013, 0.061, 5);
        assert!(t[0] <= 0.013 && *t.last().unwrap() >= 0.061, "{t:?}");
        assert!((t[1] - t[0] - 0.01).abs() < 1e-12, "{t:?}");
    }

    #[test]
    fn tick_labels_show_the_step_precision() {
        assert_eq!(fmt_tick(0.4, &[0.2, 0.4]), "0.4");
        assert_eq!(fmt_tick(0.05, &[0.0, 0.05]), "0.05");
        assert_eq!(fmt_tick(150.0, &[100.0, 150.0]), "150");
        assert_eq!(fmt_tick(0.0004, &[0.0, 0.0002]), "4.0e-4");
        assert_eq!(fmt_tick(-1e-17, &[-0.1, 0.0]), "0");
    }

    fn count(img: &RgbImage, c: [u8; 3], x_range: std::ops::Range<u32>) -> usize {
        img.enumerate_pixels()
            .filter(|(x, _, p)| x_range.contains(x) && p.0 == c)
            .count()
    }

    #[test]
    fn curves_are_drawn_in_the_run_colour_one_column_without_the_collapse_monitor() {
        let s = RunSeries {
            name: "a".into(),
            loss: vec![(0.0, 8.0), (1.0, 6.0), (2.0, 5.0)],
            lr: vec![(0.0, 0.06), (2.0, 0.0)],
            knn: vec![(0.0, 10.0), (2.0, 40.0)],
            ..RunSeries::default()
        };
        let (p, cols, rows) = panels(std::slice::from_ref(&s));
        assert_eq!((p.len(), cols, rows), (3, 1, 3));
        assert!(p[0].log_y, "the loss on a log axis");
        // A negative cosine loss (BYOL, SimSiam) keeps a linear axis.
        let neg = RunSeries {
            loss: vec![(0.0, -0.1), (1.0, -0.9)],
            ..RunSeries::default()
        };
        let (q, _, _) = panels(std::slice::from_ref(&neg));
        assert!(!q[0].log_y && q[0].y_label == "loss");
        let img = figure::render_rgb(&p, cols, rows).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (figure::PANEL_W, 3 * figure::PANEL_H)
        );
        // Each panel holds curve pixels of the run's colour.
        for k in 0..3 {
            let band = k * figure::PANEL_H..(k + 1) * figure::PANEL_H;
            let n = img
                .enumerate_pixels()
                .filter(|(_, y, px)| band.contains(y) && px.0 == PALETTE[0])
                .count();
            assert!(n > 300, "panel {k}: {n} curve pixels");
        }
    }

    #[test]
    fn knn_layers_get_a_curve_each_and_the_collapse_monitor_is_read() {
        let dir = std::env::temp_dir().join(format!("mocca-plot-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let knn = |step: u64, top1: f64, layer: &str| {
            format!(
                "{{\"kind\":\"knn\",\"step\":{step},\"epoch\":{step}.0,\"top1\":{top1},\"k\":200,\
                 \"t\":0.1,\"encoder\":\"query encoder\",\"layer\":\"{layer}\",\"n_train\":10,\"n_test\":10}}\n"
            )
        };
        let step = |step: u64, collapsing: bool| {
            format!(
                "{{\"kind\":\"step\",\"step\":{step},\"epoch\":{step}.0,\"loss\":5.0,\"lr\":0.1,\
                 \"images_per_s\":1.0,\"elapsed_s\":1.0,\"collapse\":{{\"std\":0.01,\"std_sqrt_d\":0.1,\
                 \"rank_me\":3.0,\"uniformity\":-1.0,\"dim\":100,\"batch\":8,\"collapsing\":{collapsing}}}}}\n"
            )
        };
        let text = [
            knn(0, 20.0, "projection-head output"),
            knn(0, 21.0, "backbone features"),
            step(1, false),
            step(2, true),
            step(3, true),
            knn(3, 15.0, "projection-head output"),
            knn(3, 25.0, "backbone features"),
        ]
        .concat();
        std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
        let s = RunSeries::load(&dir).unwrap();
        assert_eq!(s.knn, vec![(0.0, 20.0), (3.0, 15.0)]);
        assert_eq!(s.knn2, vec![(0.0, 21.0), (3.0, 25.0)]);
        assert_eq!(s.knn2_layer.as_deref(), Some("backbone features"));
        assert_eq!(s.std, vec![(1.0, 0.1), (2.0, 0.1), (3.0, 0.1)]);
        assert!(s.alignment.is_empty());
        assert_eq!(s.first_collapsing, Some(2.0));
        let (p, cols, rows) = panels(std::slice::from_ref(&s));
        // kNN of two layers on the left, the collapse monitor on the right.
        assert_eq!((p.len(), cols, rows), (8, 2, 4));
        assert_eq!(p[3].title, "kNN top-1, backbone features");
        assert_eq!(p[4].reference.as_ref().map(|r| r.0), Some(0.05));
        assert_eq!(
            p[4].markers.len(),
            1,
            "the first collapsing reading is marked"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_collapse_monitor_gets_a_second_column_and_a_collapse_marker() {
        let curve = |v: &[f64]| {
            v.iter()
                .enumerate()
                .map(|(i, &y)| (i as f64 * 0.5, y))
                .collect()
        };
        let runs = [
            RunSeries {
                name: "spread".into(),
                loss: curve(&[8.0, 7.0, 6.0]),
                knn: curve(&[20.0, 30.0, 35.0]),
                std: curve(&[0.4, 0.6, 0.8]),
                rank: curve(&[20.0, 40.0, 60.0]),
                alignment: curve(&[0.1, 0.3, 0.4]),
                uniformity: curve(&[-1.0, -2.0, -3.0]),
                ..RunSeries::default()
            },
            RunSeries {
                name: "collapsed".into(),
                loss: curve(&[8.0, 8.0, 8.0]),
                knn: curve(&[20.0, 15.0, 10.0]),
                std: curve(&[0.4, 0.04, 0.0]),
                rank: curve(&[20.0, 1.5, 1.0]),
                uniformity: curve(&[-1.0, -0.1, 0.0]),
                first_collapsing: Some(0.5),
                ..RunSeries::default()
            },
        ];
        let (p, cols, rows) = panels(&runs);
        assert_eq!((cols, rows), (2, 4));
        let img = figure::render_rgb(&p, cols, rows).unwrap();
        let w = figure::PANEL_W;
        let red = PALETTE[1];
        // Red pixels in the second column (curves and the marker) ...
        assert!(count(&img, red, w..2 * w) > 500);
        // ... and a dashed vertical marker in the loss panel: a pixel column
        // with red dashes well below the flat red loss at the top.
        let column = (70..w - 10).any(|x| {
            (120..figure::PANEL_H - 45)
                .filter(|&y| img.get_pixel(x, y).0 == red)
                .count()
                > 40
        });
        assert!(column, "no dashed vertical line in the loss panel");
        // The blank fourth panel of the first column is left white.
        let blank = 3 * figure::PANEL_H + 5..4 * figure::PANEL_H - 5;
        assert!(img
            .enumerate_pixels()
            .filter(|(x, y, _)| *x < w && blank.contains(y))
            .all(|(_, _, px)| px.0 == [255, 255, 255]));
    }
}

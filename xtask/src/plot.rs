//! `cargo xtask plot RUN... [--out F.png]`: training curves as one PNG.
//!
//! Three panels against epochs: training loss, learning rate and kNN top-1
//! accuracy, one colour per run (several runs overlay, for comparisons). When
//! the runs' step records carry the collapse monitor (`run.collapse_every`),
//! four more in a second column: std of the normalised embeddings × √d,
//! RankMe, alignment and uniformity, with the "collapsing" thresholds as grey
//! lines and a dashed vertical line in the run's colour, on every panel, at
//! the first reading that said "collapsing". Drawn by hand on an RGB buffer
//! with a built-in bitmap font: the `image` crate is only used to encode the
//! PNG.

pub(crate) mod font;

use crate::runs::METRICS_FILE;
use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use mocca_train::{read_records, Record};
use std::path::{Path, PathBuf};

pub(crate) const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
];

/// `cargo xtask plot`: which runs, and where the picture goes.
#[derive(clap::Args, Debug)]
#[command(
    about = "PNG curves of loss, lr, kNN accuracy and the collapse monitor",
    long_about = "Draws loss, learning rate and kNN accuracy against epochs from each run's \
metrics.jsonl, one colour per run; when the runs recorded the collapse monitor, also the std of \
the normalised embeddings x sqrt(d), RankMe, alignment and uniformity, with a dashed line where \
each run was first said to be collapsing."
)]
pub struct Args {
    /// Run folders (several overlay, for comparisons)
    #[arg(value_name = "RUN_DIR", required = true)]
    runs: Vec<PathBuf>,
    /// The PNG to write [default: RUN_DIR/curves.png when one run is given]
    #[arg(long, short, value_name = "FILE.png")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args { runs, out } = args;
    let out = match out {
        Some(o) => o,
        None if runs.len() == 1 => runs[0].join("curves.png"),
        None => bail!("several runs: say where the plot goes with --out FILE.png"),
    };
    let mut series = Vec::new();
    for r in &runs {
        series.push(RunSeries::load(r)?);
    }
    let img = render(&series);
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("PNG encoding failed")?;
    crate::runs::files::write_atomic(&out, &png)?;
    println!("wrote {}", out.display());
    for s in &series {
        let last_knn = s
            .knn
            .last()
            .map(|p| format!(", last kNN top-1 {:.2}%", p.1))
            .unwrap_or_default();
        let collapse = match (s.std.len(), s.first_collapsing) {
            (0, _) => String::new(),
            (n, None) => format!(", {n} collapse-monitor points, never collapsing"),
            (n, Some(e)) => {
                format!(", {n} collapse-monitor points, collapsing from epoch {e:.2}")
            }
        };
        println!(
            "  {}: {} loss points, {} kNN points{}{}",
            s.name,
            s.loss.len(),
            s.knn.len(),
            last_knn,
            collapse
        );
    }
    Ok(())
}

/// (x, y) points in drawing order.
type Curve = Vec<(f64, f64)>;
/// A panel: title, which curve of each run, markers on the points, a
/// horizontal reference line (the collapse thresholds).
type Panel = (String, fn(&RunSeries) -> &Curve, bool, Option<f64>);

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
}

impl RunSeries {
    pub fn load(run: &Path) -> Result<Self> {
        let path = if run.is_dir() {
            run.join(METRICS_FILE)
        } else {
            run.to_path_buf()
        };
        if !path.exists() {
            bail!(
                "{} not found: is {} a run folder?",
                path.display(),
                run.display()
            );
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
                Record::Epoch { .. } => {}
            }
        }
        if s.loss.is_empty() && s.knn.is_empty() {
            bail!("{} holds no step or kNN records yet", path.display());
        }
        Ok(s)
    }
}

const PANEL_W: u32 = 760;
const PANEL_H: u32 = 260;
const MARGIN_L: u32 = 78;
const MARGIN_R: u32 = 20;
const MARGIN_T: u32 = 30;
const MARGIN_B: u32 = 40;

pub fn render(series: &[RunSeries]) -> RgbImage {
    let legend_h = 18 * series.len() as u32 + 10;
    let layer = |get: fn(&RunSeries) -> &Option<String>| {
        series
            .iter()
            .find_map(|s| get(s).clone())
            .unwrap_or_default()
            .to_uppercase()
    };
    let two_layers = series.iter().any(|s| !s.knn2.is_empty());
    let knn_title = if two_layers {
        format!("KNN TOP-1 (%), {}", layer(|s| &s.knn_layer))
    } else {
        "KNN TOP-1 ACCURACY (%)".to_string()
    };
    let mut panels: Vec<Panel> = vec![
        ("TRAINING LOSS".into(), |s| &s.loss, false, None),
        ("LEARNING RATE".into(), |s| &s.lr, false, None),
        (knn_title, |s| &s.knn, true, None),
    ];
    if two_layers {
        let title = format!("KNN TOP-1 (%), {}", layer(|s| &s.knn2_layer));
        panels.push((title, |s| &s.knn2, true, None));
    }
    let left = panels.len() as u32;
    let monitored = series.iter().any(|s| !s.std.is_empty());
    if monitored {
        use mocca_methods::collapse::{COLLAPSING_RANK, COLLAPSING_STD};
        panels.extend([
            (
                "EMBEDDING STD X SQRT(D) (1 SPREAD, 0 COLLAPSED)".into(),
                (|s| &s.std) as fn(&RunSeries) -> &Curve,
                false,
                Some(COLLAPSING_STD),
            ),
            (
                "EFFECTIVE RANK (RANKME)".into(),
                |s| &s.rank,
                false,
                Some(COLLAPSING_RANK),
            ),
            (
                "ALIGNMENT (POSITIVE PAIRS)".into(),
                |s| &s.alignment,
                false,
                None,
            ),
            (
                "UNIFORMITY (-4 SPREAD, 0 COLLAPSED)".into(),
                |s| &s.uniformity,
                false,
                None,
            ),
        ]);
    }
    let (cols, rows) = if monitored { (2, 4) } else { (1, left) };
    let mut img = RgbImage::from_pixel(
        cols * PANEL_W,
        legend_h + rows * PANEL_H,
        Rgb([255, 255, 255]),
    );
    for (i, s) in series.iter().enumerate() {
        let c = Rgb(PALETTE[i % PALETTE.len()]);
        let y = 6 + 18 * i as i64;
        fill_rect(&mut img, MARGIN_L as i64, y + 3, 24, 4, c);
        text(
            &mut img,
            &s.name,
            MARGIN_L as i64 + 32,
            y,
            2,
            Rgb([0, 0, 0]),
        );
    }
    for (p, (title, get, markers, reference)) in panels.iter().enumerate() {
        // Loss, lr and kNN fill the first column, the collapse monitor the second.
        let p = p as u32;
        let (col, row) = if p < left { (0, p) } else { (1, p - left) };
        let data: Vec<RunCurve> = series
            .iter()
            .enumerate()
            .map(|(i, s)| RunCurve {
                points: get(s),
                colour: Rgb(PALETTE[i % PALETTE.len()]),
                collapsing_from: s.first_collapsing,
            })
            .collect();
        let at = (col * PANEL_W, legend_h + row * PANEL_H);
        draw_panel(&mut img, at, title, &data, *markers, *reference);
    }
    img
}

/// One run's curve in a panel.
struct RunCurve<'a> {
    points: &'a Curve,
    colour: Rgb<u8>,
    /// A dashed vertical line at this epoch (the first "collapsing" verdict).
    collapsing_from: Option<f64>,
}

fn draw_panel(
    img: &mut RgbImage,
    (left, top): (u32, u32),
    title: &str,
    data: &[RunCurve<'_>],
    markers: bool,
    reference: Option<f64>,
) {
    let x0 = (left + MARGIN_L) as i64;
    let x1 = (left + PANEL_W - MARGIN_R) as i64;
    let y0 = (top + MARGIN_T) as i64;
    let y1 = (top + PANEL_H - MARGIN_B) as i64;
    let black = Rgb([0, 0, 0]);
    let grid = Rgb([225, 225, 225]);
    text(img, title, x0, top as i64 + 8, 2, black);
    let pts: Vec<(f64, f64)> = data.iter().flat_map(|d| d.points.iter().copied()).collect();
    if pts.is_empty() {
        text(
            img,
            "NO DATA",
            (x0 + x1) / 2 - 40,
            (y0 + y1) / 2,
            2,
            Rgb([150, 150, 150]),
        );
        frame(img, x0, y0, x1, y1, black);
        return;
    }
    let (mut xmin, mut xmax) = min_max(pts.iter().map(|p| p.0));
    let (mut ymin, mut ymax) = min_max(pts.iter().map(|p| p.1));
    xmin = xmin.min(0.0);
    if xmax <= xmin {
        xmax = xmin + 1.0;
    }
    if ymax <= ymin {
        let pad = if ymax == 0.0 { 1.0 } else { ymax.abs() * 0.1 };
        ymin -= pad;
        ymax += pad;
    }
    let xt = nice_ticks(xmin, xmax, 8);
    let yt = nice_ticks(ymin, ymax, 5);
    let (xmin, xmax) = (xt[0].min(xmin), xt[xt.len() - 1].max(xmax));
    let (ymin, ymax) = (yt[0].min(ymin), yt[yt.len() - 1].max(ymax));
    let px = |x: f64| x0 as f64 + (x - xmin) / (xmax - xmin) * (x1 - x0) as f64;
    let py = |y: f64| y1 as f64 - (y - ymin) / (ymax - ymin) * (y1 - y0) as f64;
    for &t in &xt {
        let x = px(t).round() as i64;
        vline(img, x, y0, y1, grid);
        let label = fmt_tick(t, &xt);
        let w = font::text_width(&label, 1) as i64;
        text(img, &label, x - w / 2, y1 + 6, 1, black);
    }
    for &t in &yt {
        let y = py(t).round() as i64;
        hline(img, x0, x1, y, grid);
        let label = fmt_tick(t, &yt);
        let w = font::text_width(&label, 1) as i64;
        text(img, &label, x0 - 6 - w, y - 3, 1, black);
    }
    text(img, "EPOCH", (x0 + x1) / 2 - 15, y1 + 20, 1, black);
    if let Some(r) = reference.filter(|r| (ymin..=ymax).contains(r)) {
        dashed_hline(img, x0, x1, py(r).round() as i64, Rgb([150, 150, 150]));
    }
    for d in data {
        if let Some(e) = d.collapsing_from {
            dashed_vline(img, px(e).round() as i64, y0, y1, d.colour);
        }
    }
    for RunCurve {
        points: d,
        colour: c,
        ..
    } in data
    {
        for w in d.windows(2) {
            line(img, px(w[0].0), py(w[0].1), px(w[1].0), py(w[1].1), *c);
        }
        if markers || d.len() == 1 {
            for p in d.iter() {
                fill_rect(
                    img,
                    px(p.0).round() as i64 - 2,
                    py(p.1).round() as i64 - 2,
                    5,
                    5,
                    *c,
                );
            }
        }
    }
    frame(img, x0, y0, x1, y1, black);
}

pub(crate) fn min_max(it: impl Iterator<Item = f64>) -> (f64, f64) {
    it.filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        })
}

/// Round tick positions (1, 2 or 5 times a power of ten) covering [lo, hi].
pub fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / max_ticks.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= max_ticks as f64)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

pub(crate) fn fmt_tick(v: f64, ticks: &[f64]) -> String {
    let step = if ticks.len() > 1 {
        (ticks[1] - ticks[0]).abs()
    } else {
        1.0
    };
    if v == 0.0 {
        return "0".into();
    }
    if step < 1e-3 || v.abs() >= 1e5 {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

pub(crate) fn text(img: &mut RgbImage, s: &str, x: i64, y: i64, scale: u32, c: Rgb<u8>) {
    font::draw_text(s, x, y, scale, |px, py| put(img, px, py, c));
}

pub(crate) fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, c);
        }
    }
}

pub(crate) fn hline(img: &mut RgbImage, x0: i64, x1: i64, y: i64, c: Rgb<u8>) {
    fill_rect(img, x0, y, x1 - x0 + 1, 1, c);
}

pub(crate) fn vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, c: Rgb<u8>) {
    fill_rect(img, x, y0, 1, y1 - y0 + 1, c);
}

pub(crate) fn dashed_hline(img: &mut RgbImage, x0: i64, x1: i64, y: i64, c: Rgb<u8>) {
    for x in (x0..=x1).step_by(8) {
        hline(img, x, (x + 3).min(x1), y, c);
    }
}

fn dashed_vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, c: Rgb<u8>) {
    for y in (y0..=y1).step_by(8) {
        fill_rect(img, x, y, 2, 4.min(y1 - y + 1), c);
    }
}

pub(crate) fn frame(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    hline(img, x0, x1, y0, c);
    hline(img, x0, x1, y1, c);
    vline(img, x0, y0, y1, c);
    vline(img, x1, y0, y1, c);
}

/// A 2 px line: dense sampling along the segment is plenty at this size.
pub(crate) fn line(img: &mut RgbImage, xa: f64, ya: f64, xb: f64, yb: f64, c: Rgb<u8>) {
    let n = ((xb - xa).abs().max((yb - ya).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let x = (xa + (xb - xa) * t).round() as i64;
        let y = (ya + (yb - ya) * t).round() as i64;
        fill_rect(img, x, y, 2, 2, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn curves_are_drawn_in_the_run_colour() {
        let s = RunSeries {
            name: "a".into(),
            loss: vec![(0.0, 8.0), (1.0, 6.0), (2.0, 5.0)],
            lr: vec![(0.0, 0.06), (2.0, 0.0)],
            knn: vec![(0.0, 10.0), (2.0, 40.0)],
            ..RunSeries::default()
        };
        let img = render(&[s]);
        let blue = Rgb(PALETTE[0]);
        let count = img.pixels().filter(|p| **p == blue).count();
        assert!(count > 1000, "only {count} curve pixels");
        // The kNN panel (third) holds curve pixels too.
        let third_top = img.height() - PANEL_H;
        let in_third = img
            .enumerate_pixels()
            .filter(|(_, y, p)| *y >= third_top && **p == blue)
            .count();
        assert!(in_third > 100, "{in_third}");
        assert_eq!(img.width(), PANEL_W, "no collapse monitor, one column");
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
        let img = render(&[s]);
        assert_eq!(
            (img.width(), img.height()),
            (2 * PANEL_W, 18 + 10 + 4 * PANEL_H)
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
        let img = render(&runs);
        assert_eq!(img.width(), 2 * PANEL_W);
        let red = Rgb(PALETTE[1]);
        // Red pixels in the second column (curves and the marker) ...
        let right = img
            .enumerate_pixels()
            .filter(|(x, _, p)| *x >= PANEL_W && **p == red)
            .count();
        assert!(right > 500, "{right}");
        // ... and the dashed marker in the loss panel, where the red loss is flat at the top.
        let legend_h = 18 * 2 + 10;
        let (x0, x1) = (MARGIN_L, PANEL_W - MARGIN_R);
        let column: Vec<u32> = (x0..x1)
            .filter(|&x| {
                (legend_h + MARGIN_T + 60..legend_h + PANEL_H - MARGIN_B)
                    .filter(|&y| *img.get_pixel(x, y) == red)
                    .count()
                    > 40
            })
            .collect();
        assert!(
            !column.is_empty(),
            "no dashed vertical line in the loss panel"
        );
    }
}

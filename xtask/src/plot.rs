//! `cargo xtask plot RUN... [--out F.png]`: training curves as one PNG.
//!
//! Three panels against epochs: training loss, learning rate and kNN top-1
//! accuracy, one colour per run (several runs overlay, for comparisons). Drawn
//! by hand on an RGB buffer with a built-in bitmap font: the `image` crate is
//! only used to encode the PNG.

mod font;

use crate::runs::METRICS_FILE;
use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use mocca_train::{read_records, Record};
use std::path::{Path, PathBuf};

const PALETTE: [[u8; 3]; 6] = [
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
    about = "PNG curves of loss, lr and kNN accuracy",
    long_about = "Draws loss, learning rate and kNN accuracy against epochs from each run's \
metrics.jsonl, one colour per run."
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
        println!(
            "  {}: {} loss points, {} kNN points{}",
            s.name,
            s.loss.len(),
            s.knn.len(),
            last_knn
        );
    }
    Ok(())
}

/// (x, y) points in drawing order.
type Curve = Vec<(f64, f64)>;
/// A panel: title, which curve of each run, markers on the points.
type Panel = (&'static str, fn(&RunSeries) -> &Curve, bool);

/// One run's curves, x = epoch.
pub struct RunSeries {
    pub name: String,
    pub loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    pub knn: Vec<(f64, f64)>,
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
            loss: vec![],
            lr: vec![],
            knn: vec![],
        };
        for r in records {
            match r {
                Record::Step {
                    epoch, loss, lr, ..
                } => {
                    if loss.is_finite() {
                        s.loss.push((epoch, loss));
                    }
                    s.lr.push((epoch, lr));
                }
                Record::Knn { epoch, top1, .. } => s.knn.push((epoch, top1)),
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
    let mut img = RgbImage::from_pixel(PANEL_W, legend_h + 3 * PANEL_H, Rgb([255, 255, 255]));
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
    let panels: [Panel; 3] = [
        ("TRAINING LOSS", |s| &s.loss, false),
        ("LEARNING RATE", |s| &s.lr, false),
        ("KNN TOP-1 ACCURACY (%)", |s| &s.knn, true),
    ];
    for (p, (title, get, markers)) in panels.iter().enumerate() {
        let top = legend_h + p as u32 * PANEL_H;
        let data: Vec<(&Curve, Rgb<u8>)> = series
            .iter()
            .enumerate()
            .map(|(i, s)| (get(s), Rgb(PALETTE[i % PALETTE.len()])))
            .collect();
        draw_panel(&mut img, top, title, &data, *markers);
    }
    img
}

fn draw_panel(
    img: &mut RgbImage,
    top: u32,
    title: &str,
    data: &[(&Curve, Rgb<u8>)],
    markers: bool,
) {
    let x0 = MARGIN_L as i64;
    let x1 = (PANEL_W - MARGIN_R) as i64;
    let y0 = (top + MARGIN_T) as i64;
    let y1 = (top + PANEL_H - MARGIN_B) as i64;
    let black = Rgb([0, 0, 0]);
    let grid = Rgb([225, 225, 225]);
    text(img, title, x0, top as i64 + 8, 2, black);
    let pts: Vec<(f64, f64)> = data.iter().flat_map(|(d, _)| d.iter().copied()).collect();
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
    for (d, c) in data {
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

fn min_max(it: impl Iterator<Item = f64>) -> (f64, f64) {
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

fn fmt_tick(v: f64, ticks: &[f64]) -> String {
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

fn text(img: &mut RgbImage, s: &str, x: i64, y: i64, scale: u32, c: Rgb<u8>) {
    font::draw_text(s, x, y, scale, |px, py| put(img, px, py, c));
}

fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, c);
        }
    }
}

fn hline(img: &mut RgbImage, x0: i64, x1: i64, y: i64, c: Rgb<u8>) {
    fill_rect(img, x0, y, x1 - x0 + 1, 1, c);
}

fn vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, c: Rgb<u8>) {
    fill_rect(img, x, y0, 1, y1 - y0 + 1, c);
}

fn frame(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    hline(img, x0, x1, y0, c);
    hline(img, x0, x1, y1, c);
    vline(img, x0, y0, y1, c);
    vline(img, x1, y0, y1, c);
}

/// A 2 px line: dense sampling along the segment is plenty at this size.
fn line(img: &mut RgbImage, xa: f64, ya: f64, xb: f64, yb: f64, c: Rgb<u8>) {
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
    }
}

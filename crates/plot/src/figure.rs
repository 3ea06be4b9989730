//! Panels of curves drawn with plotters, to PNG or SVG. The text uses a font
//! embedded in the binary (egui's Ubuntu-Light), so the pictures look the
//! same on every machine and need no system fonts.

use crate::{PlotError, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The series colours, in order (matplotlib's first six).
pub const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
];

/// The font family every text of a figure uses.
pub const FONT: &str = "sans-serif";

/// Registers the embedded font with plotters (once per process).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded bytes are a valid TrueType font; a failure would be a
        // build defect, reported by the first text drawn.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

/// One curve of a panel.
pub struct Curve<'a> {
    pub label: String,
    pub colour: RGBColor,
    pub points: &'a [(f64, f64)],
    /// A dot on every point (sparse curves: kNN every epoch).
    pub markers: bool,
}

/// Where a panel's legend goes.
#[derive(Clone, Copy)]
pub enum Legend {
    UpperRight,
    LowerRight,
}

/// One chart: title, axes, curves, reference lines.
pub struct Panel<'a> {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub curves: Vec<Curve<'a>>,
    /// A logarithmic y axis (used only when every value is positive).
    pub log_y: bool,
    /// A grey dashed horizontal line with its legend text.
    pub reference: Option<(f64, String)>,
    /// Dashed vertical lines (x, colour): where a run was first "collapsing".
    pub markers: Vec<(f64, RGBColor)>,
    pub legend: Legend,
}

/// Run (or series) `i`'s colour: [`PALETTE`], cycled.
pub fn colour(i: usize) -> RGBColor {
    let [r, g, b] = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// The series legend of `chart` at `position`, in the figures' one style.
pub fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(err)
}

/// Pixel size of one panel.
pub const PANEL_W: u32 = 760;
pub const PANEL_H: u32 = 300;

/// A plotters error as a [`PlotError`].
pub fn err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

/// A chart with nothing to show: its frame and `message` in grey.
pub fn no_data<DB: DrawingBackend>(
    builder: &mut ChartBuilder<'_, '_, DB>,
    message: &str,
) -> Result<()> {
    let chart = builder
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(err)?;
    chart
        .plotting_area()
        .draw(&Text::new(
            message.to_string(),
            (0.4, 0.5),
            (FONT, 17).into_font().color(&RGBColor(150, 150, 150)),
        ))
        .map_err(err)?;
    Ok(())
}

/// Draws `panels` on a grid of `cols` columns, filled column by column
/// (`rows` panels a column), onto `root`.
pub fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel<'_>],
    cols: usize,
    rows: usize,
) -> Result<()> {
    register_font();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((rows, cols));
    for (i, p) in panels.iter().enumerate() {
        let (col, row) = (i / rows, i % rows);
        // A blank cell of the grid (a shorter column).
        if p.title.is_empty() && p.curves.iter().all(|c| c.points.is_empty()) {
            continue;
        }
        draw_panel(&areas[row * cols + col], p)?;
    }
    root.present().map_err(err)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel<'_>) -> Result<()> {
    let pts: Vec<(f64, f64)> = p
        .curves
        .iter()
        .flat_map(|c| c.points.iter().copied())
        .filter(|q| q.0.is_finite() && q.1.is_finite())
        .collect();
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&p.title, (FONT, 19))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if pts.is_empty() {
        return no_data(&mut builder, "no data");
    }
    let (x0, x1) = range(pts.iter().map(|q| q.0), false);
    let x0 = x0.min(0.0);
    let log = p.log_y && pts.iter().all(|q| q.1 > 0.0);
    // A log axis is a linear one over ln(y), with tick labels in y.
    let ty = |y: f64| if log { y.ln() } else { y };
    let (ylo, yhi) = range(
        pts.iter()
            .map(|q| q.1)
            .chain(p.reference.as_ref().map(|r| r.0)),
        log,
    );
    let (y0, y1) = (ty(ylo), ty(yhi));
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215));
    if log {
        mesh.y_labels(0);
    }
    mesh.draw().map_err(err)?;
    if log {
        let grid = RGBColor(215, 215, 215);
        let style: TextStyle = (FONT, 14).into_font().color(&BLACK);
        let base = area.get_base_pixel();
        for t in log_ticks(ylo, yhi) {
            chart
                .draw_series(LineSeries::new(vec![(x0, t.ln()), (x1, t.ln())], grid))
                .map_err(err)?;
            let label = tick_label(t);
            let (w, h) = area.estimate_text_size(&label, &style).map_err(err)?;
            let (px, py) = chart.backend_coord(&(x0, t.ln()));
            let at = (px - base.0 - 8 - w as i32, py - base.1 - h as i32 / 2);
            area.draw(&Text::new(label, at, style.clone()))
                .map_err(err)?;
        }
    }
    if let Some((r, label)) = &p.reference {
        let grey = RGBColor(140, 140, 140);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, ty(*r)), (x1, ty(*r))],
                8,
                5,
                grey.stroke_width(1),
            ))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1))
            });
    }
    for &(e, c) in &p.markers {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(e, y0), (e, y1)],
                6,
                4,
                c.stroke_width(2),
            ))
            .map_err(err)?;
    }
    for c in &p.curves {
        let colour = c.colour;
        let points: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter(|q| q.1.is_finite() && (!log || q.1 > 0.0))
            .map(|q| (q.0, ty(q.1)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(c.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        if c.markers || points.len() == 1 {
            chart
                .draw_series(points.iter().map(|&q| Circle::new(q, 3, colour.filled())))
                .map_err(err)?;
        }
    }
    legend(
        &mut chart,
        match p.legend {
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        },
    )?;
    Ok(())
}

/// Tick values for a log axis over `lo..hi`: 1, 2, 5 × 10^k when that gives
/// three or more, else evenly spaced round values (a range within a decade).
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut k = lo.log10().floor() as i32;
    while 10f64.powi(k) <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            if (lo..=hi).contains(&v) {
                out.push(v);
            }
        }
        k += 1;
    }
    if out.len() >= 3 {
        return out;
    }
    nice_ticks(lo, hi, 6)
        .into_iter()
        .filter(|v| (lo..=hi).contains(v) && *v > 0.0)
        .collect()
}

fn tick_label(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.0e}")
    } else {
        s.to_string()
    }
}

/// A range covering `values`, padded by 5 % (on a log scale, by a ratio).
fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if log {
        let (lo, hi) = if hi <= lo {
            (lo / 1.5, hi * 1.5)
        } else {
            (lo, hi)
        };
        let pad = (hi / lo).powf(0.05);
        return (lo / pad, hi * pad);
    }
    if hi <= lo {
        let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// Renders to `path`: SVG when it ends in `.svg`, else PNG; atomically.
pub fn save(path: &Path, panels: &[Panel<'_>], cols: usize, rows: usize) -> Result<()> {
    let (w, h) = (cols as u32 * PANEL_W, rows as u32 * PANEL_H);
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let bytes = if svg {
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
            draw(&root, panels, cols, rows)?;
        }
        text.into_bytes()
    } else {
        let img = render_rgb(panels, cols, rows)?;
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(PlotError::Png)?;
        png
    };
    mocca_train::files::write_atomic(path, &bytes)?;
    Ok(())
}

/// The panels as an RGB image (what the PNG holds).
pub fn render_rgb(panels: &[Panel<'_>], cols: usize, rows: usize) -> Result<image::RgbImage> {
    let (w, h) = (cols as u32 * PANEL_W, rows as u32 * PANEL_H);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root, panels, cols, rows)?;
    }
    image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| PlotError::Draw("bitmap of the wrong size".into()))
}

pub fn min_max(it: impl Iterator<Item = f64>) -> (f64, f64) {
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

pub fn fmt_tick(v: f64, ticks: &[f64]) -> String {
    let step = if ticks.len() > 1 {
        (ticks[1] - ticks[0]).abs()
    } else {
        1.0
    };
    // A tick a rounding error away from 0 (a sum of steps) is 0, not "-0.0".
    if v.abs() < step * 1e-6 || v == 0.0 {
        return "0".into();
    }
    if step < 1e-3 || v.abs() >= 1e5 {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

//! The sweep's plot: accuracy against the swept value, one line per series, each point's
//! mean with an error bar (± one standard deviation over the seeds) and each seed's value as
//! a small dot; drawn with plotters on the same [`crate::figure`] as the run curves.

use crate::figure::{self, colour, err, fmt_tick, min_max, nice_ticks, FONT, PALETTE};
use crate::{PlotError, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// How the x axis places the points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Powers of two evenly spaced (K, batch sizes).
    Log2,
    /// Evenly spaced and labelled, in [`Chart::categories`]' order.
    Category,
}

/// Where a point sits on the x axis.
#[derive(Clone, Debug, PartialEq)]
pub enum X {
    Num(f64),
    Cat(String),
}

/// One point of a series.
pub struct Mark {
    pub x: X,
    pub mean: f64,
    pub std: Option<f64>,
    /// Each seed's value.
    pub values: Vec<f64>,
}

pub struct Series {
    pub name: String,
    pub marks: Vec<Mark>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub scale: Scale,
    pub series: Vec<Series>,
    /// Every point's x label in sweep order: the category axis's order.
    pub categories: Vec<String>,
}

const W: u32 = 860;
const H: u32 = 560;

fn x_text(x: &X) -> String {
    match x {
        X::Num(v) => format!("{v}"),
        X::Cat(c) => c.clone(),
    }
}

/// A colour halfway to white, for the seeds' dots.
fn light(i: usize) -> RGBColor {
    let [r, g, b] = PALETTE[i % PALETTE.len()].map(|v| ((v as u16 + 255) / 2) as u8);
    RGBColor(r, g, b)
}

/// Draws the chart onto `root`.
pub fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Chart) -> Result<()> {
    figure::register_font();
    root.fill(&WHITE).map_err(err)?;
    // The x positions: log2 of the value, the value, or the category's index.
    let mut cats: Vec<String> = Vec::new();
    for t in c.categories.iter().cloned().chain(
        c.series
            .iter()
            .flat_map(|s| s.marks.iter().map(|m| x_text(&m.x))),
    ) {
        if !cats.contains(&t) {
            cats.push(t);
        }
    }
    let pos = |x: &X| -> f64 {
        match (c.scale, x) {
            (Scale::Log2, X::Num(v)) => v.max(f64::MIN_POSITIVE).log2(),
            (Scale::Linear, X::Num(v)) => *v,
            (_, x) => {
                let t = x_text(x);
                cats.iter().position(|c| *c == t).unwrap_or(0) as f64
            }
        }
    };
    let xs: Vec<f64> = c
        .series
        .iter()
        .flat_map(|s| s.marks.iter().map(|m| pos(&m.x)))
        .collect();
    let ys: Vec<f64> = c
        .series
        .iter()
        .flat_map(|s| {
            s.marks.iter().flat_map(|m| {
                let sd = m.std.unwrap_or(0.0);
                m.values.iter().copied().chain([m.mean - sd, m.mean + sd])
            })
        })
        .filter(|v| v.is_finite())
        .collect();
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&c.title, (FONT, 21))
        .margin(14)
        .x_label_area_size(52)
        .y_label_area_size(70);
    if xs.is_empty() || ys.is_empty() {
        figure::no_data(&mut builder, "no kNN results yet")?;
        return root.present().map_err(err);
    }
    let (mut xmin, mut xmax) = min_max(xs.iter().copied());
    // Ticks: integer powers of two, every value, or round numbers.
    let xticks: Vec<(f64, String)> = match c.scale {
        Scale::Log2 => {
            let (a, b) = (xmin.floor() as i64, xmax.ceil() as i64);
            let every = ((b - a) / 10 + 1).max(1);
            (a..=b)
                .filter(|e| (e - a) % every == 0)
                .map(|e| (e as f64, format!("{}", 2f64.powi(e as i32))))
                .collect()
        }
        Scale::Linear => {
            let t = nice_ticks(xmin, xmax.max(xmin + 1e-12), 8);
            t.iter().map(|&v| (v, fmt_tick(v, &t))).collect()
        }
        Scale::Category => cats
            .iter()
            .enumerate()
            .map(|(i, t)| (i as f64, t.clone()))
            .collect(),
    };
    match c.scale {
        Scale::Category => {
            xmin = -0.5;
            xmax = cats.len() as f64 - 0.5;
        }
        _ => {
            xmin = xmin.min(xticks.first().map_or(xmin, |t| t.0));
            xmax = xmax.max(xticks.last().map_or(xmax, |t| t.0));
            let pad = ((xmax - xmin) * 0.05).max(0.25);
            xmin -= pad;
            xmax += pad;
        }
    }
    let (mut ymin, mut ymax) = min_max(ys.iter().copied());
    // Accuracies: an error bar past 0 or 100 % says nothing the axis needs to show.
    (ymin, ymax) = (ymin.max(0.0), ymax.min(100.0));
    if ymax - ymin < 1.0 {
        ymin -= 0.5;
        ymax += 0.5;
    }
    let pad = (ymax - ymin) * 0.06;
    let (ymin, ymax) = (ymin - pad, ymax + pad);
    let mut chart = builder
        .build_cartesian_2d(xmin..xmax, ymin..ymax)
        .map_err(err)?;
    let x_desc = if c.scale == Scale::Log2 {
        format!("{} (log2 scale)", c.x_label)
    } else {
        c.x_label.clone()
    };
    chart
        .configure_mesh()
        .x_labels(0)
        .disable_x_mesh()
        .x_desc(x_desc)
        .y_desc(&c.y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(err)?;
    // The x ticks by hand: powers of two or category names at their positions.
    let style: TextStyle = (FONT, 14).into_font().color(&BLACK);
    let base = root.get_base_pixel();
    for (t, label) in &xticks {
        chart
            .draw_series(LineSeries::new(
                vec![(*t, ymin), (*t, ymax)],
                RGBColor(215, 215, 215),
            ))
            .map_err(err)?;
        let (w, _) = root.estimate_text_size(label, &style).map_err(err)?;
        let (px, py) = chart.backend_coord(&(*t, ymin));
        let at = (px - base.0 - w as i32 / 2, py - base.1 + 8);
        root.draw(&Text::new(label.clone(), at, style.clone()))
            .map_err(err)?;
    }
    // Series side by side around each x, so error bars at one x do not hide each other.
    let n = c.series.len() as f64;
    let shift_px = 7.0;
    let px_per_x = (xmax - xmin) / (W as f64 - 120.0);
    for (i, s) in c.series.iter().enumerate() {
        let col = colour(i);
        let shift = (i as f64 - (n - 1.0) / 2.0) * shift_px * px_per_x;
        let mut pts: Vec<(f64, f64)> = s
            .marks
            .iter()
            .map(|m| (pos(&m.x) + shift, m.mean))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (20, 0)], col.stroke_width(3))
                    + Circle::new((10, 0), 4, col.filled())
            });
        for m in &s.marks {
            let x = pos(&m.x) + shift;
            let dot = 5.0 * px_per_x;
            chart
                .draw_series(
                    m.values
                        .iter()
                        .map(|&v| Circle::new((x + dot, v), 2, light(i).filled())),
                )
                .map_err(err)?;
            if let Some(sd) = m.std {
                let (lo, hi) = ((m.mean - sd).max(ymin), (m.mean + sd).min(ymax));
                let cap = 4.0 * px_per_x;
                for seg in [
                    vec![(x, lo), (x, hi)],
                    vec![(x - cap, lo), (x + cap, lo)],
                    vec![(x - cap, hi), (x + cap, hi)],
                ] {
                    chart
                        .draw_series(LineSeries::new(seg, col.stroke_width(2)))
                        .map_err(err)?;
                }
            }
            chart
                .draw_series(std::iter::once(Circle::new((x, m.mean), 4, col.filled())))
                .map_err(err)?;
        }
    }
    figure::legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)
}

/// The chart as an RGB image (what the PNG holds).
pub fn render(c: &Chart) -> Result<image::RgbImage> {
    let mut buf = vec![0u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        draw(&root, c)?;
    }
    image::RgbImage::from_raw(W, H, buf)
        .ok_or_else(|| PlotError::Draw("bitmap of the wrong size".into()))
}

/// Writes the chart as PNG and as SVG (`stem.png`, `stem.svg`), atomically.
pub fn save(stem: &Path, c: &Chart) -> Result<()> {
    let mut png = Vec::new();
    render(c)?
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(PlotError::Png)?;
    mocca_train::files::write_atomic(&stem.with_extension("png"), &png)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        draw(&root, c)?;
    }
    mocca_train::files::write_atomic(&stem.with_extension("svg"), svg.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(scale: Scale) -> Chart {
        let mark = |x: X, mean: f64| Mark {
            x,
            mean,
            std: Some(1.5),
            values: vec![mean - 1.5, mean, mean + 1.5],
        };
        Chart {
            title: "fig 3".into(),
            x_label: "K".into(),
            y_label: "kNN top-1 (%)".into(),
            scale,
            series: vec![
                Series {
                    name: "queue".into(),
                    marks: vec![mark(X::Num(256.0), 40.0), mark(X::Num(16384.0), 44.0)],
                },
                Series {
                    name: "bank".into(),
                    marks: vec![mark(X::Num(1024.0), 38.0)],
                },
            ],
            categories: vec![],
        }
    }

    #[test]
    fn each_series_is_drawn_in_its_colour() {
        for scale in [Scale::Log2, Scale::Linear, Scale::Category] {
            let img = render(&chart(scale)).unwrap();
            for (i, min) in [(0, 400), (1, 100)] {
                let n = img.pixels().filter(|p| p.0 == PALETTE[i]).count();
                assert!(n > min, "{scale:?} series {i}: {n} pixels");
            }
        }
    }

    #[test]
    fn no_runs_is_a_picture_that_says_so() {
        let mut c = chart(Scale::Log2);
        c.series.clear();
        let img = render(&c).unwrap();
        assert_eq!((img.width(), img.height()), (W, H));
        // Nothing but the frame, the axes and the text: no series colour.
        assert!(!img.pixels().any(|p| p.0 == PALETTE[0]));
    }
}

//! The sweep's plot: accuracy against the swept value, one line per series, each point's
//! mean with an error bar (± one standard deviation over the seeds) and each seed's value as
//! a small dot; drawn with `cargo xtask plot`'s pieces (bitmap font, lines, ticks).

use super::spec::{Scale, X};
use crate::plot::{
    fill_rect, fmt_tick, font, frame, hline, line, nice_ticks, text, vline, PALETTE,
};
use image::{Rgb, RgbImage};

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

const W: u32 = 820;
const PLOT_H: u32 = 420;
const LEFT: i64 = 78;
const RIGHT: i64 = 24;
const TOP: i64 = 14;
const BOTTOM: i64 = 52;

fn x_text(x: &X) -> String {
    match x {
        X::Num(v) => format!("{v}"),
        X::Cat(c) => c.clone(),
    }
}

/// A colour halfway to white, for the seeds' dots.
fn light(c: [u8; 3]) -> Rgb<u8> {
    Rgb(c.map(|v| ((v as u16 + 255) / 2) as u8))
}

pub fn render(c: &Chart) -> RgbImage {
    let title_h = 30u32;
    let legend_h = 18 * c.series.len() as u32 + 8;
    let h = title_h + legend_h + PLOT_H;
    let mut img = RgbImage::from_pixel(W, h, Rgb([255, 255, 255]));
    let black = Rgb([0, 0, 0]);
    let grid = Rgb([225, 225, 225]);
    text(&mut img, &c.title, LEFT, 8, 2, black);
    for (i, s) in c.series.iter().enumerate() {
        let col = Rgb(PALETTE[i % PALETTE.len()]);
        let y = title_h as i64 + 4 + 18 * i as i64;
        fill_rect(&mut img, LEFT, y + 3, 24, 4, col);
        fill_rect(&mut img, LEFT + 9, y + 2, 6, 6, col);
        text(&mut img, &s.name, LEFT + 32, y, 2, black);
    }
    let top = (title_h + legend_h) as i64;
    let (x0, x1) = (LEFT, W as i64 - RIGHT);
    let (y0, y1) = (top + TOP, h as i64 - BOTTOM);

    // The x positions: log2 of the value, the value, or the category's index.
    let mut cats: Vec<String> = Vec::new();
    for t in &c.categories {
        if !cats.contains(t) {
            cats.push(t.clone());
        }
    }
    for s in &c.series {
        for m in &s.marks {
            let t = x_text(&m.x);
            if !cats.contains(&t) {
                cats.push(t);
            }
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
    if xs.is_empty() || ys.is_empty() {
        text(
            &mut img,
            "NO KNN RESULTS YET",
            (x0 + x1) / 2 - 100,
            (y0 + y1) / 2,
            2,
            Rgb([150, 150, 150]),
        );
        frame(&mut img, x0, y0, x1, y1, black);
        return img;
    }
    let (mut xmin, mut xmax) = crate::plot::min_max(xs.iter().copied());
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
    let (mut ymin, mut ymax) = crate::plot::min_max(ys.iter().copied());
    // Accuracies: an error bar past 0 or 100 % says nothing the axis needs to show.
    (ymin, ymax) = (ymin.max(0.0), ymax.min(100.0));
    if ymax - ymin < 1.0 {
        ymin -= 0.5;
        ymax += 0.5;
    }
    let yt = nice_ticks(ymin, ymax, 6);
    let (ymin, ymax) = (yt[0].min(ymin), yt[yt.len() - 1].max(ymax));
    let px = |x: f64| x0 as f64 + (x - xmin) / (xmax - xmin) * (x1 - x0) as f64;
    let py = |y: f64| y1 as f64 - (y - ymin) / (ymax - ymin) * (y1 - y0) as f64;
    for (t, label) in &xticks {
        let x = px(*t).round() as i64;
        vline(&mut img, x, y0, y1, grid);
        let w = font::text_width(label, 1) as i64;
        text(&mut img, label, x - w / 2, y1 + 6, 1, black);
    }
    for &t in &yt {
        let y = py(t).round() as i64;
        hline(&mut img, x0, x1, y, grid);
        let label = fmt_tick(t, &yt);
        let w = font::text_width(&label, 1) as i64;
        text(&mut img, &label, x0 - 6 - w, y - 3, 1, black);
    }
    let xl = if c.scale == Scale::Log2 {
        format!("{} (log2 scale)", c.x_label)
    } else {
        c.x_label.clone()
    };
    let w = font::text_width(&xl, 2) as i64;
    text(&mut img, &xl, (x0 + x1) / 2 - w / 2, y1 + 24, 2, black);
    // The y title, above the axis's labels.
    text(&mut img, &c.y_label, 6, y0 - 12, 1, black);
    // Series side by side around each x, so error bars at one x do not hide each other.
    let n = c.series.len() as f64;
    for (i, s) in c.series.iter().enumerate() {
        let base = PALETTE[i % PALETTE.len()];
        let col = Rgb(base);
        let shift = (i as f64 - (n - 1.0) / 2.0) * 7.0;
        let mut pts: Vec<(f64, f64)> = s
            .marks
            .iter()
            .map(|m| (px(pos(&m.x)) + shift, py(m.mean)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in pts.windows(2) {
            line(&mut img, w[0].0, w[0].1, w[1].0, w[1].1, col);
        }
        for m in &s.marks {
            let x = (px(pos(&m.x)) + shift).round() as i64;
            for v in &m.values {
                fill_rect(
                    &mut img,
                    x + 5,
                    py(*v).round() as i64 - 1,
                    3,
                    3,
                    light(base),
                );
            }
            if let Some(sd) = m.std {
                let (ya, yb) = (
                    py((m.mean + sd).min(ymax)).round() as i64,
                    py((m.mean - sd).max(ymin)).round() as i64,
                );
                fill_rect(&mut img, x, ya, 2, yb - ya + 1, col);
                fill_rect(&mut img, x - 4, ya, 10, 2, col);
                fill_rect(&mut img, x - 4, yb, 10, 2, col);
            }
            fill_rect(&mut img, x - 3, py(m.mean).round() as i64 - 3, 8, 8, col);
        }
    }
    frame(&mut img, x0, y0, x1, y1, black);
    img
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
            let img = render(&chart(scale));
            for (i, min) in [(0, 400), (1, 100)] {
                let col = Rgb(PALETTE[i]);
                let n = img.pixels().filter(|p| **p == col).count();
                assert!(n > min, "{scale:?} series {i}: {n} pixels");
            }
        }
    }

    #[test]
    fn no_runs_is_a_picture_that_says_so() {
        let mut c = chart(Scale::Log2);
        c.series.clear();
        let img = render(&c);
        assert_eq!(img.width(), W);
    }
}

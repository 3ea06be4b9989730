//! `cargo xtask aug-preview`: a PNG grid of augmented views, one row per
//! image, the original in the first column and its views beside it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use mocca_aug::{ImageU8, MultiView, Preset, Transform};
use mocca_core::fs::WriteError;

const USAGE: &str =
    "usage: cargo xtask aug-preview --preset NAME --data DIR --out FILE.png [options]

  --preset NAME   mocov1, mocov2, simclr, mocov1-cifar, mocov2-cifar, simclr-cifar
  --data DIR      dataset folder (CIFAR-10 binary, MNIST, image folder)
  --out FILE      PNG to write
  --size N        output side of the views (default: the preset's, 224 or 32)
  --images N      rows (default 8), spread over the dataset
  --views N       views per image (default 6)
  --seed N        augmentation seed (default 0)
  --split S       train or test (default train)
  --scale N       draw every pixel N x N times (default: 1, or 3 for views under 64 px)";

struct Options {
    preset: Preset,
    data: PathBuf,
    out: PathBuf,
    size: Option<usize>,
    images: usize,
    views: usize,
    seed: u64,
    split: mocca_data::Split,
    scale: Option<usize>,
}

/// `None`: the help was asked for, and printed.
fn parse(args: &[String]) -> Result<Option<Options>> {
    let (mut preset, mut data, mut out) = (None, None, None);
    let mut o = Options {
        preset: Preset::SimClr,
        data: PathBuf::new(),
        out: PathBuf::new(),
        size: None,
        images: 8,
        views: 6,
        seed: 0,
        split: mocca_data::Split::Train,
        scale: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value"))
                .cloned()
        };
        let count = |name: &str, v: String| -> Result<usize> {
            let n: usize = v
                .parse()
                .with_context(|| format!("{name}: `{v}` is not a count"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        };
        match a.as_str() {
            "--preset" => {
                preset = Some(
                    value("--preset")?
                        .parse::<Preset>()
                        .map_err(anyhow::Error::msg)?,
                )
            }
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--size" => o.size = Some(count("--size", value("--size")?)?),
            "--images" => o.images = count("--images", value("--images")?)?,
            "--views" => o.views = count("--views", value("--views")?)?,
            "--scale" => o.scale = Some(count("--scale", value("--scale")?)?),
            "--seed" => {
                let v = value("--seed")?;
                o.seed = v
                    .parse()
                    .with_context(|| format!("--seed: `{v}` is not an integer"))?;
            }
            "--split" => {
                o.split = match value("--split")?.as_str() {
                    "train" => mocca_data::Split::Train,
                    "test" => mocca_data::Split::Test,
                    other => bail!("--split: expected train or test, got `{other}`"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option `{other}`\n\n{USAGE}"),
        }
    }
    o.preset = preset.with_context(|| format!("--preset is required\n\n{USAGE}"))?;
    o.data = data.with_context(|| format!("--data is required\n\n{USAGE}"))?;
    o.out = out.with_context(|| format!("--out is required\n\n{USAGE}"))?;
    Ok(Some(o))
}

/// An RGB canvas, drawn cell by cell.
struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![255; width * height * 3],
        }
    }

    /// Draws `pixel(y, x)` for a `h x w` picture at `(top, left)`, each pixel
    /// as a `scale x scale` block.
    fn draw(
        &mut self,
        top: usize,
        left: usize,
        h: usize,
        w: usize,
        scale: usize,
        pixel: impl Fn(usize, usize) -> [u8; 3],
    ) {
        for y in 0..h * scale {
            for x in 0..w * scale {
                let p = pixel(y / scale, x / scale);
                let o = ((top + y) * self.width + left + x) * 3;
                self.rgb[o..o + 3].copy_from_slice(&p);
            }
        }
    }

    /// Writes the PNG atomically ([`mocca_core::fs::write_atomic_with`]).
    fn save(&self, path: &Path) -> Result<()> {
        if path.file_name().is_none() {
            bail!("--out has no file name");
        }
        let write = |tmp: &Path| {
            image::save_buffer_with_format(
                tmp,
                &self.rgb,
                self.width as u32,
                self.height as u32,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
        };
        mocca_core::fs::write_atomic_with(path, write).map_err(|e| match e {
            WriteError::Write(e) => anyhow!(e).context(format!("writing {}", path.display())),
            WriteError::Io(e) => anyhow!(e).context(format!("writing {}", path.display())),
        })
    }
}

/// Still parsed by hand, below.
pub type Args = crate::cli::Raw;

pub fn run(args: Args) -> Result<()> {
    let args = &args.args[..];
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    let ds = mocca_data::open(&o.data, o.split)
        .with_context(|| format!("opening {}", o.data.display()))?;
    if ds.is_empty() {
        bail!(
            "{}: the {} split holds no images",
            o.data.display(),
            o.split
        );
    }
    let size = o.size.unwrap_or(o.preset.default_size());
    let pipeline = o.preset.compose(size)?;
    // Views are shown before normalisation: undo the final Normalize.
    let (mean, std) = match pipeline.transforms().last() {
        Some(Transform::Normalize(n)) => (n.mean(), n.std()),
        _ => ([0.0; 3], [1.0; 3]),
    };
    let views = MultiView::repeat(pipeline, o.views)?;

    let rows = o.images.min(ds.len());
    let indices: Vec<usize> = (0..rows).map(|r| r * ds.len() / rows).collect();
    let images = indices
        .iter()
        .map(|&i| {
            let v = ds.image(i);
            ImageU8::new(v.pixels, v.height, v.width, v.channels)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let ids: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    let batches = views.apply_batch(&images, &ids, o.seed, 0)?;

    let scale = o.scale.unwrap_or(if size < 64 { 3 } else { 1 });
    let cell = size * scale;
    let gap = 4;
    let cols = o.views + 1;
    let mut canvas = Canvas::new(
        cols * cell + (cols + 1) * gap,
        rows * cell + (rows + 1) * gap,
    );
    let plane = size * size;
    for (r, img) in images.iter().enumerate() {
        let top = gap + r * (cell + gap);
        // The original, fitted into the cell (nearest neighbour, aspect kept).
        let (h, w, c) = (img.height(), img.width(), img.channels());
        let fit = (cell as f64 / h as f64).min(cell as f64 / w as f64);
        let (fh, fw) = (
            ((h as f64 * fit) as usize).max(1),
            ((w as f64 * fit) as usize).max(1),
        );
        let px = img.pixels();
        canvas.draw(
            top + (cell - fh) / 2,
            gap + (cell - fw) / 2,
            fh,
            fw,
            1,
            |y, x| {
                let (sy, sx) = ((y * h / fh).min(h - 1), (x * w / fw).min(w - 1));
                let o = (sy * w + sx) * c;
                if c == 3 {
                    [px[o], px[o + 1], px[o + 2]]
                } else {
                    [px[o]; 3]
                }
            },
        );
        for (v, batch) in batches.iter().enumerate() {
            let data = &batch.data()[r * 3 * plane..(r + 1) * 3 * plane];
            let left = gap + (v + 1) * (cell + gap);
            canvas.draw(top, left, size, size, scale, |y, x| {
                std::array::from_fn(|ch| {
                    let v = data[ch * plane + y * size + x] * std[ch] + mean[ch];
                    (v.clamp(0.0, 1.0) * 255.0).round() as u8
                })
            });
        }
    }
    canvas.save(&o.out)?;
    println!(
        "wrote {} ({} images x {} views of {}, {size}x{size}, seed {})",
        o.out.display(),
        rows,
        o.views,
        o.preset.name(),
        o.seed
    );
    Ok(())
}

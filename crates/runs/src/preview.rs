//! What an augmentation pipeline does, as `cargo xtask aug-preview` shows it: a PNG grid of augmented views, one row per
//! image, the original in the first column and its views beside it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use mocca_aug::{ImageU8, MultiView, Preset, Transform};
use mocca_core::fs::WriteError;

/// Which pipeline, on which images, drawn how (counts at least 1).
#[derive(Clone, Debug)]
pub struct PreviewOptions {
    /// mocov1, mocov2, simclr, mocov1-cifar, mocov2-cifar, simclr-cifar, instdisc-cifar
    pub preset: Preset,
    /// Dataset folder (CIFAR-10 binary, MNIST, image folder)
    pub data: PathBuf,
    /// The PNG to write
    pub out: PathBuf,
    /// Output side of the views [default: the preset's, 224 or 32]
    pub size: Option<usize>,
    /// Rows, spread over the dataset
    pub images: usize,
    /// Views per image
    pub views: usize,
    /// Augmentation seed
    pub seed: u64,
    /// train or test
    pub split: mocca_data::Split,
    /// Draw every pixel N x N times [default: 1, or 3 for views under 64 px]
    pub scale: Option<usize>,
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

/// Writes the grid of `o`'s views to `o.out` (PNG, atomically).
pub fn preview(o: &PreviewOptions) -> Result<()> {
    if [o.images, o.views].contains(&0) || o.size == Some(0) || o.scale == Some(0) {
        bail!("images, views, size and scale must be at least 1");
    }
    // Only the images shown are decoded, whatever the folder's size.
    let streamed = mocca_data::OpenOptions {
        streaming: mocca_data::Streaming::Always,
        ..Default::default()
    };
    let ds = mocca_data::open_images(&o.data, o.split, &streamed)
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
    let loaded = ds.load(&indices, mocca_data::OnBadFile::Fail)?;
    let images = loaded
        .views()
        .iter()
        .map(|v| ImageU8::new(v.pixels, v.height, v.width, v.channels))
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

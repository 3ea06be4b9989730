//! The random parameters the `mocov2-cifar` / `simclr-cifar` view draws (RandomResizedCrop(32)
//! scale (0.08, 1), flip p 0.5, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2),
//! one CSV line per view, for comparing their distributions with torchvision's
//! (`scripts/aug_draws.py`). Each view draws from its own generator, `view_seed(seed, epoch,
//! sample, view)`, in the pipeline's documented order (tests/golden/aug/README.md, "Other
//! draws"), which the golden tests hold bit-exact to torchvision v2.
//!
//!     cargo run --release -p mocca-aug --example draws -- 20000 > ours.csv

use mocca_aug::{view_seed, ColorJitter, RandomResizedCrop, TorchGenerator, DEFAULT_RATIO};

fn main() -> Result<(), String> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("the number of views must be a whole number, not `{a}`"))?,
        None => 20_000,
    };
    let crop = RandomResizedCrop::new([32, 32], (0.08, 1.0), DEFAULT_RATIO, true).unwrap();
    let jitter = ColorJitter::simclr(0.5).unwrap();
    println!("scale,ratio,flip,jitter,order,brightness,contrast,saturation,hue,gray");
    for i in 0..n {
        let mut rng = TorchGenerator::new(view_seed(0, 0, i / 2, (i % 2) as u32));
        let b = crop.sample_params(32, 32, &mut rng);
        let flip = rng.rand() < 0.5;
        let applied = rng.rand() < 0.8;
        let j = applied.then(|| jitter.sample_params(&mut rng));
        let gray = rng.rand() < 0.2;
        let f = |v: Option<f32>| v.map_or(String::new(), |v| v.to_string());
        let (order, bcsh) = match &j {
            Some(p) => (
                p.order.iter().map(|o| o.to_string()).collect::<String>(),
                [p.brightness, p.contrast, p.saturation, p.hue].map(f),
            ),
            None => (String::new(), [(); 4].map(|_| String::new())),
        };
        println!(
            "{},{},{},{},{order},{},{}",
            (b.height * b.width) as f64 / 1024.0,
            b.width as f64 / b.height as f64,
            flip as u8,
            applied as u8,
            bcsh.join(","),
            gray as u8,
        );
    }
    Ok(())
}

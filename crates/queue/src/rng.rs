//! The initial rows of queues and memory banks, drawn from the shared seeded generator (its
//! whole state is one `u64`, so queues and banks save and restore it exactly).

use mocca_core::SplitMix64;

/// `rows × dim` row-major unit vectors: Gaussian rows, normalised (a uniform direction on the
/// sphere, as MoCo's `normalize(randn)`).
pub(crate) fn unit_rows(rng: &mut SplitMix64, rows: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * dim);
    let mut row = vec![0.0f64; dim];
    for _ in 0..rows {
        row.iter_mut()
            .for_each(|v| *v = rng.normal_from_uniform01_nonzero());
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        out.extend(row.iter().map(|v| (v / norm) as f32));
    }
    out
}

/// `rows × dim` row-major entries uniform in `±1/√(dim/3)`, lemniscate's memory initialisation
/// (`torch.rand(n, d).mul_(2·stdv).add_(−stdv)`, `stdv = 1/√(d/3)`).
pub(crate) fn uniform_rows(rng: &mut SplitMix64, rows: usize, dim: usize) -> Vec<f32> {
    let stdv = 1.0 / (dim as f64 / 3.0).sqrt();
    (0..rows * dim)
        .map(|_| (rng.uniform01() * 2.0 * stdv - stdv) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rows_have_unit_norm() {
        let rows = unit_rows(&mut SplitMix64::new(1), 4, 9);
        for r in rows.chunks(9) {
            let n: f32 = r.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn uniform_rows_stay_within_lemniscates_bound_and_have_unit_mean_square_norm() {
        let (rows, dim) = (2000, 12);
        let v = uniform_rows(&mut SplitMix64::new(3), rows, dim);
        let bound = (3.0f32 / dim as f32).sqrt();
        assert!(v.iter().all(|x| x.abs() <= bound));
        let mean_sq: f32 = v.iter().map(|x| x * x).sum::<f32>() / rows as f32;
        assert!((mean_sq - 1.0).abs() < 0.03, "{mean_sq}");
    }
}

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
}

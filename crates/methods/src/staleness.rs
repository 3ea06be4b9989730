//! How stale a memory bank is: the cosine of each query to its own bank row
//! (its positive), to the rows written earlier in this epoch, and to the rows
//! not yet written in this epoch.
//!
//! A memory bank (InstDisc, Wu et al. 2018, "Unsupervised Feature Learning
//! via Non-Parametric Instance Discrimination") scores each query against
//! rows written by the encoder as it was when that image was last visited:
//! its own row is one epoch old (a random vector in the first epoch), the
//! rows written earlier in this epoch are younger, the rows not yet written
//! this epoch are up to one epoch old. The paper's proximal regularization
//! is aimed at exactly this lag. When the encoder moves faster
//! than the bank, the queries resemble the young rows of *other* images more
//! than their own old row, the positive scores below the negatives and the
//! loss rises above `log(K + 1)` — what [`BankCosines`] measures, step by
//! step, from the step's own embeddings.
//!
//! Cost: one pass over the bank (ℓ2-normalising its rows and summing them
//! by set; the mean cosine of a query to a set of unit rows is the query's
//! dot product with their mean), O(M·d) for M rows: about 10 ms at
//! M = 50,000, d = 128 on one core.
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mocca_methods::staleness::bank_cosines;
//!
//! let dev = Device::Cpu;
//! // A bank of four rows; the batch is images 0 and 1, image 2 was written
//! // earlier in this epoch, image 3 not yet.
//! let bank = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 0.], [-1., 0.]], &dev)?;
//! let queries = Tensor::new(&[[1f32, 0.], [1., 0.]], &dev)?;
//! let positives = bank.narrow(0, 0, 2)?; // rows 0 and 1 as the loss scored them
//! let c = bank_cosines(&queries, &positives, &bank, &[0, 1], &[2])?;
//! assert_eq!(c.own, 0.5);              // mean of cos 1 (image 0) and cos 0 (image 1)
//! assert_eq!(c.written, Some(1.0));    // both queries point at row 2
//! assert_eq!(c.unwritten, Some(-1.0)); // and away from row 3
//! assert_eq!((c.written_rows, c.unwritten_rows), (1, 1));
//! # Ok::<(), mocca_methods::MethodError>(())
//! ```

use std::fmt;

use candle_core::{DType, Tensor};

use crate::error::{input_err, Result};

/// Mean cosines of one step's queries to the memory bank, by how recently
/// the rows were written (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BankCosines {
    /// Mean over the batch of `cos(q_i, own row of i)`, the own row as the
    /// loss scored it (before this step's update).
    pub own: f64,
    /// Mean over the batch and over the rows written earlier in this epoch
    /// (other images) of the cosine; `None` when no row qualifies.
    pub written: Option<f64>,
    /// The same over the rows not yet written in this epoch (the batch's own
    /// rows excluded); `None` when no row qualifies.
    pub unwritten: Option<f64>,
    /// How many rows were written earlier in this epoch.
    pub written_rows: usize,
    /// How many rows were not (the batch's rows excluded).
    pub unwritten_rows: usize,
}

impl fmt::Display for BankCosines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        write!(
            f,
            "cos to own row {:.3}, to rows written this epoch {}, to rows not yet written {}",
            self.own,
            opt(self.written),
            opt(self.unwritten)
        )
    }
}

/// [`BankCosines`] of one step.
///
/// - `queries`: `[N, d]`, the step's query embeddings;
/// - `positives`: `[N, d]`, each query's own bank row as the loss scored it;
/// - `bank`: `[M, d]`, the bank now (rows of `batch` may already hold their
///   update: they are left out of both sets);
/// - `batch`: the dataset index of each query (distinct, `< M`);
/// - `written`: the rows written earlier in this epoch (the indices of the
///   epoch's earlier batches; repeats and rows of `batch` are ignored).
///
/// Every row and query is ℓ2-normalised first (a zero row stays zero).
/// Errors on shapes that do not agree and on an index out of range.
pub fn bank_cosines(
    queries: &Tensor,
    positives: &Tensor,
    bank: &Tensor,
    batch: &[usize],
    written: &[usize],
) -> Result<BankCosines> {
    let (n, d) = queries.dims2()?;
    let (m, bd) = bank.dims2()?;
    if positives.dims() != [n, d] {
        return Err(input_err(format!(
            "positives must be [{n}, {d}] like the queries, got {:?}",
            positives.dims()
        )));
    }
    if bd != d {
        return Err(input_err(format!(
            "the bank's rows have width {bd}, the queries {d}"
        )));
    }
    if batch.len() != n {
        return Err(input_err(format!(
            "{n} queries need {n} batch indices, got {}",
            batch.len()
        )));
    }
    if n == 0 {
        return Err(input_err("bank cosines of an empty batch"));
    }
    if let Some(&bad) = batch.iter().chain(written).find(|&&i| i >= m) {
        return Err(input_err(format!(
            "row index {bad} is out of range for a bank of {m} rows"
        )));
    }

    // 0: not yet written, 1: written earlier this epoch, 2: in the batch.
    let mut set = vec![0u8; m];
    for &i in written {
        set[i] = 1;
    }
    for &i in batch {
        set[i] = 2;
    }
    let rows = bank.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut sums = [vec![0f64; d], vec![0f64; d]];
    let mut counts = [0usize; 2];
    let mut unit = vec![0f64; d];
    for (r, &s) in rows.chunks_exact(d).zip(&set) {
        if s == 2 {
            continue;
        }
        normalised(r, &mut unit);
        for (acc, u) in sums[s as usize].iter_mut().zip(&unit) {
            *acc += u;
        }
        counts[s as usize] += 1;
    }

    let q = queries
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let p = positives
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut qn = vec![0f64; d];
    let mut pn = vec![0f64; d];
    let (mut own, mut to_set) = (0f64, [0f64; 2]);
    for (qi, pi) in q.chunks_exact(d).zip(p.chunks_exact(d)) {
        normalised(qi, &mut qn);
        normalised(pi, &mut pn);
        own += dot(&qn, &pn);
        for (acc, sum) in to_set.iter_mut().zip(&sums) {
            *acc += dot(&qn, sum);
        }
    }
    let mean = |k: usize| (counts[k] > 0).then(|| to_set[k] / (n * counts[k]) as f64);
    Ok(BankCosines {
        own: own / n as f64,
        written: mean(1),
        unwritten: mean(0),
        written_rows: counts[1],
        unwritten_rows: counts[0],
    })
}

fn normalised(v: &[f32], out: &mut [f64]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    for (o, &x) in out.iter_mut().zip(v) {
        *o = x as f64 * scale;
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn rows_are_normalised_before_the_cosine() {
        let bank = t(&[[3., 0.], [0., 5.], [2., 2.]]);
        let c = bank_cosines(&t(&[[10., 0.]]), &t(&[[4., 0.]]), &bank, &[0], &[2]).unwrap();
        assert!((c.own - 1.0).abs() < 1e-12);
        assert!((c.written.unwrap() - 0.5f64.sqrt()).abs() < 1e-12);
        assert!(c.unwritten.unwrap().abs() < 1e-12);
    }

    #[test]
    fn the_batch_rows_are_in_neither_set_and_repeats_count_once() {
        let bank = t(&[[1., 0.], [0., 1.], [1., 0.], [0., 1.]]);
        let c = bank_cosines(&t(&[[1., 0.]]), &t(&[[1., 0.]]), &bank, &[0], &[0, 2, 2]).unwrap();
        assert_eq!((c.written_rows, c.unwritten_rows), (1, 2));
        assert_eq!(c.written, Some(1.0));
        assert_eq!(c.unwritten, Some(0.0));
    }

    #[test]
    fn an_empty_set_has_no_mean() {
        let bank = t(&[[1., 0.], [0., 1.]]);
        let c = bank_cosines(&t(&[[1., 0.]]), &t(&[[0., 1.]]), &bank, &[0], &[]).unwrap();
        assert_eq!(c.written, None);
        assert_eq!(c.unwritten, Some(0.0));
        assert_eq!(c.own, 0.0);
    }

    #[test]
    fn an_index_outside_the_bank_is_an_error_naming_it() {
        let bank = t(&[[1., 0.], [0., 1.]]);
        let e = bank_cosines(&t(&[[1., 0.]]), &t(&[[1., 0.]]), &bank, &[0], &[7]).unwrap_err();
        assert!(e.to_string().contains("row index 7"), "{e}");
    }

    #[test]
    fn positives_of_another_shape_are_an_error() {
        let bank = t(&[[1., 0.], [0., 1.]]);
        let e = bank_cosines(&t(&[[1., 0.]]), &bank, &bank, &[0], &[]).unwrap_err();
        assert!(e.to_string().contains("positives must be [1, 2]"), "{e}");
    }
}

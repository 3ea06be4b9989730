//! How stale a dictionary is: the cosine of a step's queries to the keys
//! they are contrasted with, by how long ago those keys were made.
//!
//! **Memory bank** ([`bank_cosines`]). A memory bank (InstDisc, Wu et al.
//! 2018, "Unsupervised Feature Learning via Non-Parametric Instance
//! Discrimination") scores each query against
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
//! **Momentum queue** ([`queue_cosines`]). MoCo's queue (He et al. 2020)
//! holds the keys of the last `K / N` steps, each made by the momentum
//! encoder of its step; the paper's argument for the queue is that these
//! keys stay *consistent* although they come from different encoders.
//! [`QueueCosines`] measures how consistent: the mean cosine of the step's
//! queries to the keys of each age, so that a drift of the key encoder shows
//! as a trend over the ages.
//!
//! Cost: one pass over the bank or queue (ℓ2-normalising its rows and summing them
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
    let rows = flat_f32(bank)?;
    let (sums, counts) = unit_sums_by_set(&rows, d, 2, |r| (set[r] < 2).then_some(set[r] as usize));

    let q = flat_f32(queries)?;
    let p = flat_f32(positives)?;
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

/// The momentum queue as the last step left it, for [`queue_cosines`]:
/// its `[K, d]` keys, the row the next enqueue writes, and how many steps
/// have enqueued so far, each `keys_per_step` keys in batch order (one per
/// query: the keys of the last step are the queries' positives).
#[derive(Debug, Clone, Copy)]
pub struct KeyQueue<'a> {
    pub keys: &'a Tensor,
    pub ptr: usize,
    pub steps: u64,
    pub keys_per_step: usize,
}

/// Mean cosines of one step's queries to the queue's keys by age (see the
/// [module docs](self)), read after the step enqueued its keys.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueCosines {
    /// Mean over the batch of `cos(q_i, k_i)`, each query to its own key.
    pub own: f64,
    /// `by_age[a]`: mean over the batch and over the keys enqueued `a` steps
    /// before this step's (`a = 0`: this step's keys of the *other* images,
    /// which the next step scores at age 1) of the cosine. The oldest keys the
    /// step was scored against were overwritten by its own, so the ages run
    /// to `K / N − 1`; fewer while the queue is filling.
    pub by_age: Vec<f64>,
    /// The same over the rows still holding the queue's random start
    /// (`None` once every row has been written).
    pub initial: Option<f64>,
}

impl fmt::Display for QueueCosines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cos to own key {:.3}, to keys of age", self.own)?;
        for (a, c) in self.by_age.iter().enumerate() {
            write!(f, " {a}: {c:.3}")?;
        }
        if let Some(c) = self.initial {
            write!(f, ", to the random start {c:.3}")?;
        }
        Ok(())
    }
}

/// [`QueueCosines`] of one step: `queries` `[N, d]` (the step's queries, in
/// the order their keys were enqueued) against the `queue` the step left.
///
/// The key of query `i` is row `(ptr − N + i) mod K`; it is `own` and is
/// left out of age 0 for that query only. Ages are counted in steps of
/// `keys_per_step` rows back from the pointer (a last age may be shorter
/// when `N` does not divide `K`). Everything is ℓ2-normalised first.
/// Errors on fewer than 2 queries, when `keys_per_step` is not `N`, on a width that does not agree,
/// when the queue has not been written yet or holds fewer than `N` rows.
pub fn queue_cosines(queries: &Tensor, queue: KeyQueue<'_>) -> Result<QueueCosines> {
    let (n, d) = queries.dims2()?;
    let (k, kd) = queue.keys.dims2()?;
    if kd != d {
        return Err(input_err(format!(
            "the queue's keys have width {kd}, the queries {d}"
        )));
    }
    if n < 2 {
        return Err(input_err(format!(
            "queue cosines need at least 2 queries (age 0 is the other images' keys), got {n}"
        )));
    }
    if queue.keys_per_step != n {
        return Err(input_err(format!(
            "{n} queries need a queue that took {n} keys a step (one per query), got {}",
            queue.keys_per_step
        )));
    }
    if n > k || queue.ptr >= k {
        return Err(input_err(format!(
            "a queue of {k} rows (pointer {}) cannot hold a step of {n} keys",
            queue.ptr
        )));
    }
    if queue.steps == 0 {
        return Err(input_err("the queue has not been written yet"));
    }
    let filled = (queue.steps as u128 * n as u128).min(k as u128) as usize;
    let ages = filled.div_ceil(n);
    // Rows back from the pointer: `back` 0 is the last key enqueued.
    let back_of = |r: usize| (queue.ptr + k - 1 - r) % k;

    let rows = flat_f32(queue.keys)?;
    // sums[a] over the rows of age a; the last set the random start.
    let (sums, counts) = unit_sums_by_set(&rows, d, ages + 1, |r| {
        let back = back_of(r);
        Some(if back < filled { back / n } else { ages })
    });
    let own_unit = |row: usize| {
        let mut u = vec![0f64; d];
        normalised(&rows[row * d..(row + 1) * d], &mut u);
        u
    };

    let q = flat_f32(queries)?;
    let mut qn = vec![0f64; d];
    let mut own = 0f64;
    let mut to_age = vec![0f64; ages + 1];
    for (i, qi) in q.chunks_exact(d).enumerate() {
        normalised(qi, &mut qn);
        let own_row = (queue.ptr + k - n + i) % k;
        let c_own = dot(&qn, &own_unit(own_row));
        own += c_own;
        for (a, (acc, sum)) in to_age.iter_mut().zip(&sums).enumerate() {
            let (dot_sum, count) = if a == 0 {
                (dot(&qn, sum) - c_own, counts[0] - 1)
            } else {
                (dot(&qn, sum), counts[a])
            };
            if count > 0 {
                *acc += dot_sum / count as f64;
            }
        }
    }
    let mean = |a: usize| to_age[a] / n as f64;
    let by_age = (0..ages).map(mean).collect();
    Ok(QueueCosines {
        own: own / n as f64,
        by_age,
        initial: (counts[ages] > 0).then(|| mean(ages)),
    })
}

fn flat_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Sums of the ℓ2-normalised rows (width `d`) by set, and each set's count:
/// `set_of(r)` puts row `r` into one of `sets` sets, or none.
fn unit_sums_by_set(
    rows: &[f32],
    d: usize,
    sets: usize,
    set_of: impl Fn(usize) -> Option<usize>,
) -> (Vec<Vec<f64>>, Vec<usize>) {
    let mut sums = vec![vec![0f64; d]; sets];
    let mut counts = vec![0usize; sets];
    let mut unit = vec![0f64; d];
    for (r, row) in rows.chunks_exact(d).enumerate() {
        let Some(s) = set_of(r) else { continue };
        normalised(row, &mut unit);
        for (acc, u) in sums[s].iter_mut().zip(&unit) {
            *acc += u;
        }
        counts[s] += 1;
    }
    (sums, counts)
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

    fn queue(rows: &[[f32; 2]], ptr: usize, steps: u64) -> (Tensor, usize, u64) {
        (t(rows), ptr, steps)
    }

    fn read(q: &Tensor, (keys, ptr, steps): &(Tensor, usize, u64)) -> Result<QueueCosines> {
        queue_cosines(
            q,
            KeyQueue {
                keys,
                ptr: *ptr,
                steps: *steps,
                keys_per_step: q.dims()[0],
            },
        )
    }

    #[test]
    fn queue_ages_count_back_from_the_pointer_in_steps() {
        // K 6, 2 keys a step, pointer 2: rows 0-1 this step's keys (age 0),
        // rows 4-5 the step before (age 1), rows 2-3 two steps before (age 2).
        let q = (
            t(&[[1., 0.], [1., 0.], [0., 1.], [0., 1.], [-1., 0.], [-1., 0.]]),
            2,
            3,
        );
        let c = read(&t(&[[1., 0.], [1., 0.]]), &q).unwrap();
        assert_eq!(c.own, 1.0);
        assert_eq!(c.by_age, vec![1.0, -1.0, 0.0]);
        assert_eq!(c.initial, None);
    }

    #[test]
    fn age_zero_leaves_out_each_querys_own_key_only() {
        // Query 0's key is row 0 (cos 1), query 1's is row 1 (cos 1); each
        // sees the other's key at age 0: cos 0 for both.
        let q = queue(&[[1., 0.], [0., 1.], [5., 5.], [5., 5.]], 2, 2);
        let c = read(&t(&[[1., 0.], [0., 1.]]), &q).unwrap();
        assert_eq!(c.own, 1.0);
        assert_eq!(c.by_age[0], 0.0);
        assert!((c.by_age[1] - 0.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_filling_queue_reads_its_random_start_apart() {
        // One step written (rows 0-1, pointer 2) of K 6: rows 2-5 are the start.
        let q = queue(
            &[[1., 0.], [1., 0.], [1., 0.], [1., 0.], [0., 1.], [0., -1.]],
            2,
            1,
        );
        let c = read(&t(&[[1., 0.], [1., 0.]]), &q).unwrap();
        assert_eq!(c.by_age, vec![1.0]);
        assert_eq!(c.initial, Some(0.5));
    }

    #[test]
    fn the_ages_wrap_around_the_end_of_the_queue() {
        // Pointer 0: the last step wrote rows 2-3 (age 0), rows 0-1 are age 1.
        let q = queue(&[[0., 1.], [0., 1.], [1., 0.], [1., 0.]], 0, 5);
        let c = read(&t(&[[1., 0.], [1., 0.]]), &q).unwrap();
        assert_eq!((c.own, c.by_age.clone()), (1.0, vec![1.0, 0.0]));
    }

    #[test]
    fn a_queue_that_takes_another_number_of_keys_a_step_is_an_error() {
        let (keys, ptr, steps) = queue(&[[1., 0.], [0., 1.], [1., 0.], [0., 1.]], 2, 1);
        let e = queue_cosines(
            &t(&[[1., 0.], [1., 0.]]),
            KeyQueue {
                keys: &keys,
                ptr,
                steps,
                keys_per_step: 4,
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("took 2 keys a step (one per query), got 4"),
            "{e}"
        );
    }

    #[test]
    fn an_unwritten_queue_is_an_error() {
        let q = queue(&[[1., 0.], [0., 1.]], 0, 0);
        let e = read(&t(&[[1., 0.], [1., 0.]]), &q).unwrap_err();
        assert!(e.to_string().contains("not been written"), "{e}");
    }
}

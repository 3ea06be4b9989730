//! The losses of instance discrimination with a memory bank (Wu et al. 2018,
//! "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
//! InstDisc; code: zhirongw/lemniscate.pytorch): every training image is its
//! own class, and its "class weight" is its row of the memory bank.
//!
//! - [`NonParametricSoftmaxLoss`]: the full softmax over all `n` rows of the
//!   bank (the paper's eq. 2; lemniscate's `LinearAverage` followed by
//!   `nn.CrossEntropyLoss`, what its README's CIFAR command `--nce-k 0` runs);
//! - [`NCELoss`]: noise-contrastive estimation against `K` rows drawn from a
//!   uniform noise distribution (eq. 3–6; lemniscate's `NCEAverage` and
//!   `NCECriterion`), with the normaliser `Z` fixed from the first batch as
//!   lemniscate fixes it ([`NCELoss::normaliser`]).
//!
//! The features are L2-normalised inside (`x / max(‖x‖, 1e-12)`), with the
//! gradient through the normalisation (lemniscate's network ends with its
//! `Normalize` layer). The bank rows are used as given and get no gradient:
//! the bank is updated by the caller after the backward pass, so the gradient
//! sees the rows from before the update, as lemniscate's backward does.

use candle_core::{DType, Tensor};

use crate::composed::{cross_entropy, normalize};
use crate::{validate, ContrastiveOutput, LossError};

/// lemniscate's `NCECriterion` epsilon.
const NCE_EPS: f64 = 1e-7;

/// The non-parametric softmax of InstDisc over the whole memory bank:
/// `loss = mean_b CE(f̂_b · bankᵀ / τ, y_b)`, the sample's own row `y_b` the
/// target (lemniscate's `LinearAverage` + `nn.CrossEntropyLoss`).
#[derive(Clone, Debug)]
pub struct NonParametricSoftmaxLoss {
    temperature: f64,
}

impl NonParametricSoftmaxLoss {
    /// Errors with [`LossError::InvalidTemperature`] unless τ is finite and > 0
    /// (InstDisc: 0.07 on ImageNet, 0.1 in lemniscate's CIFAR command).
    pub fn new(temperature: f64) -> Result<Self, LossError> {
        Ok(Self {
            temperature: validate::temperature(temperature)?,
        })
    }

    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// The loss of features `f` (`[B, D]`) of the samples `targets` (their
    /// rows in `bank`, `[n, D]`). Accuracy: the fraction of samples whose own
    /// row has the largest logit.
    pub fn forward(
        &self,
        f: &Tensor,
        bank: &Tensor,
        targets: &[usize],
    ) -> Result<ContrastiveOutput, LossError> {
        let (b, rows) = check(f, bank)?;
        let targets = target_column(targets, b, rows, f)?;
        let f = compute(f)?;
        let logits = normalize(&f)?
            .matmul(&bank.detach().to_dtype(f.dtype())?.t()?)?
            .affine(1.0 / self.temperature, 0.0)?;
        let positive = logits.gather(&targets, 1)?;
        let (loss, accuracy) = cross_entropy(&logits, &positive)?;
        Ok(ContrastiveOutput { loss, accuracy })
    }
}

/// Noise-contrastive estimation of InstDisc (lemniscate's `NCEAverage` +
/// `NCECriterion`). For sample `b` and drawn rows `idx[b] = [y_b, n_1, …, n_K]`
/// (column 0 the sample's own row, then `K` noise rows drawn uniformly with
/// replacement, which may repeat and may be `y_b` itself):
/// `P_bk = exp(f̂_b · bank[idx_bk] / τ) / Z`, `Pn = 1/n`, and
///
/// `loss = −(1/B) Σ_b [ log(P_b0 / (P_b0 + K·Pn + ε)) + Σ_{k≥1} log(K·Pn / (P_bk + K·Pn + ε)) ]`
///
/// with `ε = 1e-7`. `Z` is a constant: lemniscate sets it once, on the first
/// batch, to `mean(exp(f̂·bank[idx]/τ)) · n` ([`normaliser`](Self::normaliser))
/// and keeps it for the whole run; the caller stores it (it belongs in a
/// checkpoint).
#[derive(Clone, Debug)]
pub struct NCELoss {
    temperature: f64,
}

impl NCELoss {
    /// Errors with [`LossError::InvalidTemperature`] unless τ is finite and > 0.
    pub fn new(temperature: f64) -> Result<Self, LossError> {
        Ok(Self {
            temperature: validate::temperature(temperature)?,
        })
    }

    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// `exp(f̂ · bank[idx] / τ)`, `[B, K + 1]`, without a `[B, K+1, D]` graph
    /// beyond the gather itself.
    fn scores(&self, f: &Tensor, bank: &Tensor, idx: &Tensor) -> Result<Tensor, LossError> {
        let (b, k1) = idx.dims2()?;
        let d = f.dim(1)?;
        let rows = bank
            .detach()
            .to_dtype(f.dtype())?
            .index_select(&idx.flatten_all()?, 0)?
            .reshape((b, k1, d))?;
        let dots = rows.matmul(&normalize(f)?.unsqueeze(2)?)?.squeeze(2)?;
        Ok(dots.affine(1.0 / self.temperature, 0.0)?.exp()?)
    }

    /// lemniscate's normaliser from a (first) batch: `mean(exp(f̂·bank[idx]/τ)) · n`,
    /// over all `B·(K+1)` scores, rounded to f32 as lemniscate's float32
    /// buffer holds it. No gradient flows through it.
    pub fn normaliser(&self, f: &Tensor, bank: &Tensor, idx: &Tensor) -> Result<f64, LossError> {
        let (b, rows) = check(f, bank)?;
        let idx = check_idx(idx, b, rows, f)?;
        let s = self.scores(&compute(f)?.detach(), bank, &idx)?;
        let mean = s.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok((mean * rows as f64) as f32 as f64)
    }

    /// The NCE loss of features `f` (`[B, D]`) against the rows `idx` (`[B, K+1]`
    /// u32 or i64, column 0 each sample's own row) of `bank` (`[n, D]`), with
    /// the normaliser `z`. Accuracy: the fraction of samples whose own row
    /// scores highest among its `K + 1`.
    pub fn forward(
        &self,
        f: &Tensor,
        bank: &Tensor,
        idx: &Tensor,
        z: f64,
    ) -> Result<ContrastiveOutput, LossError> {
        let (b, rows) = check(f, bank)?;
        let idx = check_idx(idx, b, rows, f)?;
        if !(z.is_finite() && z > 0.0) {
            return Err(LossError::InvalidNormaliser(z));
        }
        let k1 = idx.dim(1)?;
        let k = (k1 - 1) as f64;
        let f = compute(f)?;
        let p = self.scores(&f, bank, &idx)?.affine(1.0 / z, 0.0)?;
        let kpn = k / rows as f64;
        let denom = p.affine(1.0, kpn + NCE_EPS)?;
        let p0 = p.narrow(1, 0, 1)?;
        let log_pos = p0.div(&denom.narrow(1, 0, 1)?)?.log()?.sum_all()?;
        let loss = if k1 > 1 {
            let log_neg = denom
                .narrow(1, 1, k1 - 1)?
                .recip()?
                .affine(kpn, 0.0)?
                .log()?
                .sum_all()?;
            (log_pos + log_neg)?
        } else {
            log_pos
        };
        let loss = loss.affine(-1.0 / b as f64, 0.0)?;
        let max = p.max_keepdim(1)?;
        let accuracy = p0.ge(&max)?.to_dtype(DType::F32)?.mean_all()?;
        Ok(ContrastiveOutput { loss, accuracy })
    }
}

/// f32 stays f32, f64 stays f64, half precision computes in f32.
fn compute(f: &Tensor) -> Result<Tensor, LossError> {
    let dtype = if f.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let f = f.to_dtype(dtype)?;
    validate::finite("f", &f)?;
    Ok(f)
}

/// `f` a `[B, D]` batch and `bank` a `[n, D]` matrix of the same width on the
/// same device; returns `(B, n)`.
fn check(f: &Tensor, bank: &Tensor) -> Result<(usize, usize), LossError> {
    let (b, d) = validate::batch("f", f)?;
    let (rows, dn) = validate::matrix("bank", bank)?;
    if dn != d {
        return Err(LossError::ShapeMismatch {
            name: "bank",
            got: bank.dims().to_vec(),
            expected: format!("[n, {d}] (the width of the features)"),
        });
    }
    if rows == 0 {
        return Err(LossError::NoNegatives { name: "bank" });
    }
    validate::same_device("bank", bank, "f", f)?;
    Ok((b, rows))
}

/// The sample indices as a `[B, 1]` u32 column for `gather`.
fn target_column(
    targets: &[usize],
    b: usize,
    rows: usize,
    f: &Tensor,
) -> Result<Tensor, LossError> {
    let bad = |reason: String| LossError::InvalidIndices {
        name: "targets",
        reason,
    };
    if targets.len() != b {
        return Err(bad(format!(
            "{} sample indices for a batch of {b} features",
            targets.len()
        )));
    }
    if let Some(&t) = targets.iter().find(|&&t| t >= rows) {
        return Err(bad(format!("holds row {t} but the bank has {rows} rows")));
    }
    let idx: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
    Ok(Tensor::from_vec(idx, (b, 1), f.device())?)
}

/// `[B, K+1]` integer rows below `rows`, as u32.
fn check_idx(idx: &Tensor, b: usize, rows: usize, f: &Tensor) -> Result<Tensor, LossError> {
    let bad = |reason: String| LossError::InvalidIndices {
        name: "idx",
        reason,
    };
    let &[bi, k1] = idx.dims() else {
        return Err(bad(format!(
            "expected a [{b}, K+1] matrix of bank rows, got shape {:?}",
            idx.dims()
        )));
    };
    if bi != b || k1 == 0 {
        return Err(bad(format!(
            "has shape [{bi}, {k1}]; expected [{b}, K+1]: each sample's own row, then its K noise rows"
        )));
    }
    validate::same_device("idx", idx, "f", f)?;
    let idx = match idx.dtype() {
        DType::U32 => idx.clone(),
        DType::I64 => {
            let min = idx.min_all()?.to_scalar::<i64>()?;
            if min < 0 {
                return Err(bad(format!("holds the negative row {min}")));
            }
            idx.to_dtype(DType::U32)?
        }
        other => {
            return Err(bad(format!(
                "has dtype {other:?}; expected u32 or i64 row indices"
            )))
        }
    };
    let max = idx.max_all()?.to_scalar::<u32>()? as usize;
    if max >= rows {
        return Err(bad(format!("holds row {max} but the bank has {rows} rows")));
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn unit(rows: &[[f64; 2]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn the_softmax_is_cross_entropy_over_every_bank_row() {
        // f = (1, 0); rows at 0°, 90°, 180°: logits 1/τ, 0, −1/τ with τ = 0.5.
        let f = unit(&[[2.0, 0.0]]);
        let bank = unit(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]);
        let loss = NonParametricSoftmaxLoss::new(0.5).unwrap();
        let out = loss.forward(&f, &bank, &[0]).unwrap();
        let lse = (2f64.exp() + 1.0 + (-2f64).exp()).ln();
        let got = out.loss.to_scalar::<f64>().unwrap();
        assert!((got - (lse - 2.0)).abs() < 1e-12, "{got}");
        assert_eq!(out.accuracy.to_scalar::<f32>().unwrap(), 1.0);
        let wrong = loss.forward(&f, &bank, &[1]).unwrap();
        assert!((wrong.loss.to_scalar::<f64>().unwrap() - lse).abs() < 1e-12);
        assert_eq!(wrong.accuracy.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn nce_follows_lemniscates_criterion_with_the_given_normaliser() {
        let f = unit(&[[1.0, 0.0]]);
        let bank = unit(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]]);
        let idx = Tensor::new(&[[0u32, 1, 3]], &Device::Cpu).unwrap();
        let loss = NCELoss::new(0.5).unwrap();
        let z = 7.0;
        let out = loss.forward(&f, &bank, &idx, z).unwrap();
        let p = [2f64.exp() / z, 1.0 / z, 1.2f64.exp() / z];
        let kpn = 2.0 / 4.0;
        let expected = -((p[0] / (p[0] + kpn + 1e-7)).ln()
            + (kpn / (p[1] + kpn + 1e-7)).ln()
            + (kpn / (p[2] + kpn + 1e-7)).ln());
        let got = out.loss.to_scalar::<f64>().unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn the_nce_normaliser_is_the_mean_score_times_the_bank_size_in_f32() {
        let f = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let bank = unit(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]);
        let idx = Tensor::new(&[[0u32, 2], [1, 1]], &Device::Cpu).unwrap();
        let z = NCELoss::new(1.0)
            .unwrap()
            .normaliser(&f, &bank, &idx)
            .unwrap();
        let mean = (1f64.exp() + (-1f64).exp() + 1f64.exp() + 1f64.exp()) / 4.0;
        assert_eq!(z, (mean * 3.0) as f32 as f64);
    }

    #[test]
    fn gradients_reach_the_features_and_not_the_bank() {
        let f = Var::from_tensor(&unit(&[[0.3, 0.9], [1.0, 0.2]])).unwrap();
        let bank = Var::from_tensor(&unit(&[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])).unwrap();
        let idx = Tensor::new(&[[1u32, 0, 2], [0, 2, 2]], &Device::Cpu).unwrap();
        let out = NCELoss::new(0.1)
            .unwrap()
            .forward(f.as_tensor(), bank.as_tensor(), &idx, 3.0)
            .unwrap();
        let grads = out.loss.backward().unwrap();
        assert!(grads.get(f.as_tensor()).is_some());
        assert!(grads.get(bank.as_tensor()).is_none());
    }

    #[test]
    fn bad_indices_are_named() {
        let f = unit(&[[1.0, 0.0]]);
        let bank = unit(&[[1.0, 0.0], [0.0, 1.0]]);
        let err = NonParametricSoftmaxLoss::new(0.1)
            .unwrap()
            .forward(&f, &bank, &[2])
            .unwrap_err();
        assert!(err.to_string().contains("holds row 2"), "{err}");
        let idx = Tensor::new(&[[0u32, 5]], &Device::Cpu).unwrap();
        let err = NCELoss::new(0.1)
            .unwrap()
            .forward(&f, &bank, &idx, 1.0)
            .unwrap_err();
        assert!(err.to_string().contains("holds row 5"), "{err}");
        let err = NCELoss::new(0.1)
            .unwrap()
            .forward(
                &f,
                &bank,
                &Tensor::new(&[[0u32]], &Device::Cpu).unwrap(),
                0.0,
            )
            .unwrap_err();
        assert!(err.to_string().contains("normaliser"), "{err}");
    }
}

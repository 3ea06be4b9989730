//! Seeded parameter initialisation.
//!
//! Candle's CPU random generator cannot be seeded (`Device::set_seed` fails on
//! the CPU), so models built from a plain `VarMap` start from different
//! weights on every run. [`seeded_var_builder`] returns a `VarBuilder` over a
//! `VarMap` that draws each new variable from the initialiser the model asks
//! for (`Init::Kaiming`, `Randn`, `Uniform`, `Const`, with candle's formulas)
//! using a generator seeded from `(seed, variable name)`: the same seed gives
//! the same weights on any device, in any construction order.

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

use mocca_core::SplitMix64;

struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed through one SplitMix64 step.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64::new(seed ^ h).next_u64()
}

/// Draws a tensor from `init` with a generator seeded by `seed`.
fn draw(init: Init, shape: &Shape, seed: u64) -> Vec<f64> {
    let n = shape.elem_count();
    let mut rng = SplitMix64::new(seed);
    let uniform = |rng: &mut SplitMix64, lo: f64, up: f64| lo + (up - lo) * rng.uniform01();
    match init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => (0..n).map(|_| uniform(&mut rng, lo, up)).collect(),
        Init::Randn { mean, stdev } => (0..n).map(|_| mean + stdev * rng.normal()).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| uniform(&mut rng, -bound, bound)).collect()
                }
                NormalOrUniform::Normal => (0..n).map(|_| std * rng.normal()).collect(),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.map.data().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "shape mismatch for {name}: stored {:?}, requested {:?}",
                    var.shape(),
                    shape
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = draw(init, &shape, name_seed(self.seed, name));
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let data = self.map.data().lock().unwrap_or_else(|p| p.into_inner());
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype)?.to_device(device),
            None => candle_core::bail!("no variable named `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }
}

/// A `VarBuilder` that creates missing variables in `varmap` from seeded
/// draws (see the module docs); existing variables are returned as they are.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend: Box<dyn SimpleBackend> = Box::new(SeededVarMap {
        map: varmap.clone(),
        seed,
    });
    VarBuilder::from_backend(backend, dtype, device.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_weights_and_names_get_different_streams() {
        let build = |seed| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
            let a = vb
                .get_with_hints((64, 32), "a", candle_nn::init::DEFAULT_KAIMING_NORMAL)
                .unwrap();
            let b = vb
                .get_with_hints((64, 32), "b", candle_nn::init::DEFAULT_KAIMING_NORMAL)
                .unwrap();
            (a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap())
        };
        let (a1, b1) = build(3);
        let (a2, b2) = build(3);
        let (a3, _) = build(4);
        assert_eq!(a1, a2);
        assert_eq!(b1, b2);
        assert_ne!(a1, b1);
        assert_ne!(a1, a3);
    }

    #[test]
    fn kaiming_normal_draws_have_the_requested_spread() {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
        let w = vb
            .get_with_hints((256, 128), "w", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // std = sqrt(2 / fan_in) = sqrt(2 / 128) = 0.125; 32768 draws.
        assert!(mean.abs() < 0.004, "{mean}");
        assert!((var.sqrt() - 0.125).abs() < 0.002, "{}", var.sqrt());
        // The variable is in the VarMap, trainable.
        assert_eq!(vm.all_vars().len(), 1);
    }
}

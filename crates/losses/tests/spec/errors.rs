//! Bad input returns the error that names the problem, on both paths.

use crate::common::{pseudo_random, unit_rows, BOTH};
use candle_core::{DType, Device, Tensor};
use mocca_losses::{InfoNCEConfig, InfoNCELoss, LossError, NTXentConfig, NTXentLoss};

fn ntxent(implementation: mocca_losses::Implementation) -> NTXentLoss {
    NTXentLoss::new(NTXentConfig {
        temperature: 0.5,
        implementation,
    })
    .unwrap()
}

fn infonce(implementation: mocca_losses::Implementation) -> InfoNCELoss {
    InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.2,
        implementation,
        ..Default::default()
    })
    .unwrap()
}

fn x(rows: usize, cols: usize) -> Tensor {
    pseudo_random(rows, cols, rows as u64 * 31 + cols as u64, 1.0, DType::F32)
}

fn with_value(t: &Tensor, row: usize, col: usize, v: f32) -> Tensor {
    let mut data = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    data[row * t.dims()[1] + col] = v;
    Tensor::from_vec(data, t.dims(), &Device::Cpu).unwrap()
}

#[test]
fn temperature_must_be_positive_and_finite() {
    for t in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let e = NTXentLoss::new(NTXentConfig {
            temperature: t,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(e, LossError::InvalidTemperature(v) if v.to_bits() == t.to_bits()),
            "{e}"
        );
        let e = InfoNCELoss::new(InfoNCEConfig {
            temperature: t,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, LossError::InvalidTemperature(_)), "{e}");
    }
}

#[test]
fn views_of_different_shapes_are_a_shape_mismatch_naming_the_second_view() {
    for imp in BOTH {
        let e = ntxent(imp).forward(&x(4, 8), &x(5, 8)).unwrap_err();
        assert!(
            matches!(e, LossError::ShapeMismatch { name: "z1", .. }),
            "{e}"
        );
        let e = infonce(imp)
            .forward(&x(4, 8), &x(4, 6), &unit_rows(10, 8, 1, DType::F32))
            .unwrap_err();
        assert!(
            matches!(e, LossError::ShapeMismatch { name: "k", .. }),
            "{e}"
        );
        let e = infonce(imp)
            .forward_symmetric(
                &x(4, 8),
                &x(4, 8),
                &x(4, 8),
                &x(3, 8),
                &unit_rows(10, 8, 1, DType::F32),
            )
            .unwrap_err();
        assert!(
            matches!(e, LossError::ShapeMismatch { name: "k2", .. }),
            "{e}"
        );
    }
}

#[test]
fn negatives_of_another_width_are_a_shape_mismatch() {
    let e = infonce(Default::default())
        .forward(&x(4, 8), &x(4, 8), &unit_rows(10, 7, 1, DType::F32))
        .unwrap_err();
    assert!(
        matches!(
            e,
            LossError::ShapeMismatch {
                name: "negatives",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("[K, 8]"), "{e}");
}

#[test]
fn non_matrix_inputs_are_rejected() {
    let v = Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap();
    let e = ntxent(Default::default()).forward(&v, &v).unwrap_err();
    assert!(matches!(e, LossError::NotAMatrix { name: "z0", .. }), "{e}");
}

#[test]
fn empty_batch_embedding_and_negatives_are_named() {
    for imp in BOTH {
        let e = ntxent(imp).forward(&x(0, 8), &x(0, 8)).unwrap_err();
        assert!(matches!(e, LossError::EmptyBatch { name: "z0" }), "{e}");
        let e = infonce(imp)
            .forward_end_to_end(&x(3, 0), &x(3, 0))
            .unwrap_err();
        assert!(matches!(e, LossError::EmptyEmbedding { name: "q" }), "{e}");
        let e = infonce(imp)
            .forward(&x(3, 8), &x(3, 8), &x(0, 8))
            .unwrap_err();
        assert!(
            matches!(e, LossError::NoNegatives { name: "negatives" }),
            "{e}"
        );
    }
}

#[test]
fn integer_inputs_are_an_unsupported_dtype() {
    let t = Tensor::zeros((2, 3), DType::U32, &Device::Cpu).unwrap();
    let e = ntxent(Default::default()).forward(&t, &t).unwrap_err();
    assert!(
        matches!(
            e,
            LossError::UnsupportedDType {
                name: "z0",
                dtype: DType::U32
            }
        ),
        "{e}"
    );
}

#[test]
fn non_finite_values_name_the_input_that_holds_them() {
    let negatives = unit_rows(50, 8, 2, DType::F32);
    for imp in BOTH {
        let e = ntxent(imp)
            .forward(&x(4, 8), &with_value(&x(4, 8), 2, 3, f32::NAN))
            .unwrap_err();
        assert!(
            matches!(e, LossError::NonFinite { name: "z1" }),
            "{imp:?}: {e}"
        );
        let e = infonce(imp)
            .forward(
                &with_value(&x(4, 8), 0, 0, f32::INFINITY),
                &x(4, 8),
                &negatives,
            )
            .unwrap_err();
        assert!(
            matches!(e, LossError::NonFinite { name: "q" }),
            "{imp:?}: {e}"
        );
        let e = infonce(imp)
            .forward_end_to_end(&x(4, 8), &with_value(&x(4, 8), 3, 7, f32::NEG_INFINITY))
            .unwrap_err();
        assert!(
            matches!(e, LossError::NonFinite { name: "k" }),
            "{imp:?}: {e}"
        );
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = infonce(imp)
                .forward(&x(4, 8), &x(4, 8), &with_value(&negatives, 41, 5, bad))
                .unwrap_err();
            assert!(
                matches!(e, LossError::NonFinite { name: "negatives" }),
                "{imp:?} {bad}: {e}"
            );
        }
    }
}

#[test]
fn half_precision_non_finite_values_are_caught_too() {
    let q = with_value(&x(4, 8), 1, 1, f32::NAN)
        .to_dtype(DType::BF16)
        .unwrap();
    let e = infonce(Default::default())
        .forward_end_to_end(&q, &x(4, 8))
        .unwrap_err();
    assert!(matches!(e, LossError::NonFinite { name: "q" }), "{e}");
}

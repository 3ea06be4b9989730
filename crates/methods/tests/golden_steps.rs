//! Whole training steps against the reference code itself: the MoCo CIFAR-10 colab's MoCo and
//! lightly's SimCLR, float64 trajectories of 3–4 consecutive steps (tests/golden/methods/README.md),
//! run through the public `MoCo` and `SimCLR` API from the references' starting weights, views
//! and key permutations, on both backends. Every step's loss and every element of every final
//! tensor must be within `1e-4 · max(1, max |expected tensor|)`.

mod golden_support;

use candle_core::Device;
use golden_support::{
    array, assert_state, case, fc_head_key as colab_key, index_lists, int, load, num, tensor,
    values, Check, TOL,
};
use mocca_backbones::{Backend, MoCoProjectionHead, ResNetConfig, SimCLRProjectionHead, Stem};
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::LrSchedule;
use mocca_methods::{
    BackboneEncoder, Encoder, Method, MoCo, MoCoConfig, NegativeSource, SimCLR, SimCLRConfig,
    SymmetricReduction,
};

const MOCO_CASES: [&str; 4] = [
    "asymmetric_w1_16_b8_i16_k32_split2",
    "symmetric_w1_32_b8_i16_k32_split2",
    "asymmetric_w1_32_b16_i12_k64_split4_m0.9",
    "asymmetric_w1_32_b8_i16_k16_nosplit",
];
const SIMCLR_CASES: [&str; 2] = ["w1_16_b16_i16_hidden32", "w1_32_b12_i12_hidden16"];

/// Cases of `make_golden.py --seed-offset N` (`<kind>/offsetN/<case>`) that an f32 running sum
/// in BatchNorm's per-channel reductions failed, kept as regression tests of their f64
/// accumulation (tests/golden/methods/README.md, "Accuracy"): before it, the fast backend
/// missed each of them by 1.3x to 360x, the native one `offset10/asymmetric…` by 28x and
/// `offset1/w1_32…` by 4.8x.
const MOCO_OFFSET_CASES: [&str; 4] = [
    "offset9/asymmetric_w1_32_b8_i16_k16_nosplit",
    "offset1/symmetric_w1_32_b8_i16_k32_split2",
    "offset6/symmetric_w1_32_b8_i16_k32_split2",
    "offset10/asymmetric_w1_16_b8_i16_k32_split2",
];
const SIMCLR_OFFSET_CASES: [&str; 1] = ["offset1/w1_32_b12_i12_hidden16"];

fn moco_case(name: &str, backend: Backend) {
    let c = case(&format!("methods/moco_colab/{name}.json"));
    run_moco_case(&c, backend).assert_passes();
}

/// One colab case through `MoCo` on `backend`: every step's loss, and both encoders and the
/// queue after the last step.
fn run_moco_case(c: &serde_json::Value, backend: Backend) -> Check {
    let mut check = Check::default();
    let name = c["name"].as_str().unwrap();
    let (batch, dim, k) = (
        int(c, "batch_size"),
        int(c, "out_dim"),
        int(c, "queue_size"),
    );
    let (m, lr) = (num(c, "momentum"), num(c, "lr"));
    let symmetric = c["symmetric"].as_bool().unwrap();
    let steps = c["steps"].as_array().unwrap();
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: num(c, "width"),
        bn_splits: int(c, "bn_splits"),
        backend,
        ..ResNetConfig::resnet18()
    };
    let head = MoCoProjectionHead {
        output_dim: dim,
        ..MoCoProjectionHead::v1(backbone.feature_dim())
    };
    let config = MoCoConfig {
        negatives: NegativeSource::queue(k),
        temperature: num(c, "temperature"),
        symmetric,
        symmetric_reduction: SymmetricReduction::Sum,
        per_view_queues: false,
        momentum: m,
        cosine_momentum: false,
        momentum_end: 1.0,
        end_to_end_detach_keys: false,
        shuffle_bn: true,
        optimizer: OptimizerConfig::sgd(lr, num(c, "sgd_momentum"), num(c, "weight_decay")),
        lr_schedule: LrSchedule::Constant { lr },
        total_steps: steps.len() as u64,
        seed: 0,
    };
    let build = || {
        let e = BackboneEncoder::new(&backbone, head.into(), 0, &Device::Cpu)?;
        load(&e, &c["initial_query_encoder"], colab_key);
        Ok(e)
    };
    let mut moco = MoCo::new(config, build, &Device::Cpu).unwrap();
    moco.replace_queue(&tensor(&array(&c["initial_queue"])))
        .unwrap();
    for (t, s) in steps.iter().enumerate() {
        let views = [tensor(&array(&s["x1"])), tensor(&array(&s["x2"]))];
        let perms = index_lists(&s["key_permutations"]);
        assert_eq!(perms[0].len(), batch);
        let stats = moco
            .step_with_key_permutations(&views, &[], &perms)
            .unwrap();
        check.close(
            &format!("{name} step {t} loss"),
            &[stats.loss],
            &[num(s, "loss")],
        );
        assert_eq!(
            moco.queue_ptr(),
            Some(int(s, "queue_ptr_after")),
            "{name} step {t} ptr"
        );
    }
    let q = moco.query_encoder();
    assert_state(
        &mut check,
        name,
        q,
        &c["final_query_encoder"],
        colab_key,
        |_, v| v,
    );
    // The colab updates the key encoder at the start of a step, we at the end of one: ours
    // holds one more update, m·θk + (1 − m)·θq, of the parameters (its BatchNorm statistics come
    // from its own forward passes and are not updated).
    let final_q = c["final_query_encoder"].as_object().unwrap();
    let parameters: Vec<String> = q.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_state(
        &mut check,
        &format!("{name} key encoder"),
        moco.key_encoder().unwrap(),
        &c["final_key_encoder"],
        colab_key,
        |key, v| {
            if !parameters.contains(&colab_key(key)) {
                return v;
            }
            let theta_q = array(&final_q[key]).data;
            v.iter()
                .zip(&theta_q)
                .map(|(k, q)| m * k + (1.0 - m) * q)
                .collect()
        },
    );
    check.close(
        &format!("{name} queue"),
        &values(moco.dictionary().unwrap()),
        &array(&c["final_queue"]).data,
    );
    check
}

#[test]
fn moco_matches_the_colab_asymmetric_with_two_strided_bn_groups() {
    moco_case(MOCO_CASES[0], Backend::Native);
}

#[test]
fn moco_matches_the_colab_symmetric_sum() {
    moco_case(MOCO_CASES[1], Backend::Native);
}

#[test]
fn moco_matches_the_colab_with_four_bn_groups_and_momentum_0_9() {
    moco_case(MOCO_CASES[2], Backend::Native);
}

#[test]
fn moco_matches_the_colab_with_plain_batch_norm() {
    moco_case(MOCO_CASES[3], Backend::Native);
}

#[test]
fn moco_on_the_fast_backend_matches_the_colab_in_every_case() {
    for name in MOCO_CASES {
        moco_case(name, Backend::Fast);
    }
}

#[test]
fn moco_matches_the_colab_at_other_seed_offsets_on_both_backends() {
    for name in MOCO_OFFSET_CASES {
        for backend in [Backend::Native, Backend::Fast] {
            moco_case(name, backend);
        }
    }
}

fn simclr_case(name: &str, backend: Backend) {
    let c = case(&format!("methods/simclr_lightly/{name}.json"));
    run_simclr_case(&c, backend).assert_passes();
}

/// One lightly SimCLR case on `backend`: every step's loss and the final state.
fn run_simclr_case(c: &serde_json::Value, backend: Backend) -> Check {
    let mut check = Check::default();
    let name = c["name"].as_str().unwrap();
    let lr = num(c, "lr");
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: num(c, "width"),
        backend,
        ..ResNetConfig::resnet18()
    };
    let head = SimCLRProjectionHead {
        hidden_dim: int(c, "head_hidden_dim"),
        output_dim: int(c, "out_dim"),
        ..SimCLRProjectionHead::new(backbone.feature_dim())
    };
    let encoder = BackboneEncoder::new(&backbone, head.into(), 0, &Device::Cpu).unwrap();
    // lightly's keys are already ours: `backbone.<torchvision>`, `head.layers.{0,1,3,4}`.
    let same = |k: &str| k.to_string();
    load(&encoder, &c["initial_state"], same);
    let config = SimCLRConfig {
        temperature: num(c, "temperature"),
        optimizer: OptimizerConfig::sgd(lr, num(c, "sgd_momentum"), num(c, "weight_decay")),
        lr_schedule: LrSchedule::Constant { lr },
    };
    let mut simclr = SimCLR::new(config, encoder, &Device::Cpu).unwrap();
    for (t, s) in c["steps"].as_array().unwrap().iter().enumerate() {
        let views = [tensor(&array(&s["x0"])), tensor(&array(&s["x1"]))];
        let stats = simclr.step(&views, &[]).unwrap();
        check.close(
            &format!("{name} step {t} loss"),
            &[stats.loss],
            &[num(s, "loss")],
        );
    }
    assert_state(
        &mut check,
        name,
        simclr.shared_encoder(),
        &c["final_state"],
        same,
        |_, v| v,
    );
    check
}

#[test]
fn simclr_matches_lightly_with_a_wider_hidden_layer() {
    simclr_case(SIMCLR_CASES[0], Backend::Native);
}

#[test]
fn simclr_matches_lightly_at_tau_0_2() {
    simclr_case(SIMCLR_CASES[1], Backend::Native);
}

#[test]
fn simclr_on_the_fast_backend_matches_lightly_in_every_case() {
    for name in SIMCLR_CASES {
        simclr_case(name, Backend::Fast);
    }
}

#[test]
fn simclr_matches_lightly_at_other_seed_offsets_on_both_backends() {
    for name in SIMCLR_OFFSET_CASES {
        for backend in [Backend::Native, Backend::Fast] {
            simclr_case(name, backend);
        }
    }
}

/// Every `.json` / `.json.gz` file under `dir` (recursively), in path order.
fn golden_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            golden_files(&p, out);
        } else if name.ends_with(".json") || name.ends_with(".json.gz") {
            out.push(p);
        }
    }
}

fn read_golden(path: &std::path::Path) -> serde_json::Value {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    }
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Cases made by `make_golden.py` outside the repository (e.g. `--seed-offset N` for
/// N = 1..20, each into its own folder): `MOCCA_EXTRA_GOLDEN=DIR cargo test -p mocca-methods
/// --test golden_steps extra -- --nocapture` runs every `moco_colab` and `simclr_lightly` case
/// of every `.json`/`.json.gz` file under DIR on both backends, final state checked, prints
/// each run's worst scaled error and fails if any run misses the tolerance.
/// `MOCCA_EXTRA_GOLDEN_CASES=SUBSTRING` keeps only the cases whose file path or name contains
/// it. Without `MOCCA_EXTRA_GOLDEN` it runs nothing (and says so).
#[test]
fn extra_golden_cases_from_mocca_extra_golden() {
    let Some(dir) = std::env::var_os("MOCCA_EXTRA_GOLDEN") else {
        eprintln!("MOCCA_EXTRA_GOLDEN is not set: no extra golden cases run");
        return;
    };
    let filter = std::env::var("MOCCA_EXTRA_GOLDEN_CASES").unwrap_or_default();
    let mut files = Vec::new();
    golden_files(std::path::Path::new(&dir), &mut files);
    let (mut runs, mut failed) = (0, Vec::new());
    for path in &files {
        let file = read_golden(path);
        let reference = file["reference"].as_str().unwrap_or("");
        for c in file["cases"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap();
            if !format!("{} {name}", path.display()).contains(&filter) {
                continue;
            }
            for backend in [Backend::Native, Backend::Fast] {
                let check = match reference {
                    "moco_colab" => run_moco_case(c, backend),
                    "simclr_lightly" => run_simclr_case(c, backend),
                    _ => continue,
                };
                runs += 1;
                let verdict = if check.failures.is_empty() {
                    "pass"
                } else {
                    "FAIL"
                };
                let line = format!(
                    "{} {reference}/{name} {backend:?}: {verdict}, worst scaled error {:.2e} ({:.2}x tol) at {}",
                    path.display(),
                    check.worst,
                    check.worst / TOL,
                    check.worst_what
                );
                println!("{line}");
                if !check.failures.is_empty() {
                    failed.push(format!("{line}\n  {}", check.failures.join("\n  ")));
                }
            }
        }
    }
    println!(
        "{runs} run(s) of extra golden cases, {} failed",
        failed.len()
    );
    assert!(
        runs > 0,
        "no moco_colab or simclr_lightly case under {dir:?}"
    );
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

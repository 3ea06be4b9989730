//! The torchvision references of `tests/golden/aug` (see its README for the
//! formulas and tolerances): every op, the composed chain, and the exact random
//! draws of RandomResizedCrop and ColorJitter.

#[path = "../../../tests/golden/golden.rs"]
mod golden;

use golden::{load, Array};
use mocca_aug::{
    functional as F, ColorJitter, ImageF32, Jitter, RandomResizedCrop, TorchGenerator,
};
use serde_json::Value;

const TOL_OP: f64 = 2e-6;
const TOL_COMPOSE: f64 = 1e-5;

fn image(v: &Value) -> ImageF32 {
    let a = Array::from_json(v);
    let [c, h, w] = [a.shape[0], a.shape[1], a.shape[2]];
    ImageF32::new(a.f32(), c, h, w).unwrap()
}

fn f(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn pair_f32(v: &Value) -> [f32; 2] {
    [f(&v[0]), f(&v[1])]
}

fn triple(v: &Value) -> [f32; 3] {
    [f(&v[0]), f(&v[1]), f(&v[2])]
}

fn pair_usize(v: &Value) -> [usize; 2] {
    [
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    ]
}

/// Max |got - expected|, after checking the shape.
fn max_diff(got: &ImageF32, expected: &Value, case: &str) -> f64 {
    let e = Array::from_json(expected);
    assert_eq!(got.shape().to_vec(), e.shape, "{case}: shape");
    got.data()
        .iter()
        .zip(&e.data)
        .map(|(&g, &x)| (g as f64 - x as f32 as f64).abs())
        .fold(0.0, f64::max)
}

fn resized_crop(x: &ImageF32, p: &Value) -> ImageF32 {
    F::resized_crop(
        x,
        p["top"].as_i64().unwrap(),
        p["left"].as_i64().unwrap(),
        p["height"].as_u64().unwrap() as usize,
        p["width"].as_u64().unwrap() as usize,
        pair_usize(&p["size"]),
        p["antialias"].as_bool().unwrap(),
    )
    .unwrap()
}

fn apply_op(op: &str, x: &ImageF32, p: &Value) -> ImageF32 {
    if op == "resized_crop" {
        return resized_crop(x, p);
    }
    let mut y = x.clone();
    match op {
        "hflip" => F::horizontal_flip(&mut y),
        "brightness" => F::adjust_brightness(&mut y, f(&p["brightness_factor"])),
        "contrast" => F::adjust_contrast(&mut y, f(&p["contrast_factor"])).unwrap(),
        "saturation" => F::adjust_saturation(&mut y, f(&p["saturation_factor"])).unwrap(),
        "hue" => F::adjust_hue(&mut y, f(&p["hue_factor"])).unwrap(),
        "grayscale" => F::rgb_to_grayscale(&mut y).unwrap(),
        "gaussian_blur" => {
            F::gaussian_blur(&mut y, pair_usize(&p["kernel_size"]), pair_f32(&p["sigma"])).unwrap()
        }
        "solarize" => F::solarize(&mut y, f(&p["threshold"])),
        "normalize" => F::normalize(&mut y, triple(&p["mean"]), triple(&p["std"])).unwrap(),
        other => panic!("unknown op {other}"),
    }
    y
}

/// Runs every case of one op file; returns the worst difference.
fn check_op_file(name: &str, tol: f64) -> f64 {
    let doc = load(&format!("aug/{name}.json"));
    let op = doc["op"].as_str().unwrap();
    let mut worst = 0.0f64;
    for case in doc["cases"].as_array().unwrap() {
        let cname = case["name"].as_str().unwrap();
        let got = apply_op(op, &image(&case["input"]), &case["params"]);
        let d = max_diff(&got, &case["expected"], cname);
        assert!(d <= tol, "{cname}: max |diff| {d:e} > {tol:e}");
        worst = worst.max(d);
    }
    eprintln!("{name}: worst max |diff| = {worst:e}");
    worst
}

#[test]
fn resized_crop_matches_torchvision_with_and_without_antialias() {
    check_op_file("resized_crop", TOL_OP);
}

#[test]
fn resized_crop_without_resize_is_an_exact_crop() {
    let doc = load("aug/resized_crop.json");
    for case in doc["cases"].as_array().unwrap() {
        let p = &case["params"];
        let size = pair_usize(&p["size"]);
        let box_hw = [
            p["height"].as_u64().unwrap() as usize,
            p["width"].as_u64().unwrap() as usize,
        ];
        if size == box_hw {
            let got = resized_crop(&image(&case["input"]), p);
            assert_eq!(
                max_diff(&got, &case["expected"], case["name"].as_str().unwrap()),
                0.0
            );
        }
    }
}

#[test]
fn hflip_matches_torchvision_exactly() {
    assert_eq!(check_op_file("hflip", 0.0), 0.0);
}

#[test]
fn brightness_matches_torchvision() {
    check_op_file("brightness", TOL_OP);
}

#[test]
fn contrast_matches_torchvision() {
    check_op_file("contrast", TOL_OP);
}

#[test]
fn saturation_matches_torchvision() {
    check_op_file("saturation", TOL_OP);
}

#[test]
fn hue_matches_torchvision() {
    check_op_file("hue", TOL_OP);
}

#[test]
fn grayscale_matches_torchvision() {
    check_op_file("grayscale", TOL_OP);
}

#[test]
fn gaussian_blur_matches_torchvision() {
    check_op_file("gaussian_blur", TOL_OP);
}

#[test]
fn solarize_matches_torchvision_exactly() {
    assert_eq!(check_op_file("solarize", 0.0), 0.0);
}

#[test]
fn normalize_matches_torchvision() {
    check_op_file("normalize", TOL_OP);
}

/// The README's fixed chain, recording every stage.
fn chain(x: &ImageF32, p: &Value) -> Vec<(String, ImageF32)> {
    let mut stages = Vec::new();
    let mut y = resized_crop(x, &p["resized_crop"]);
    stages.push(("resized_crop".to_string(), y.clone()));
    if p["hflip"].as_bool().unwrap() {
        F::horizontal_flip(&mut y);
    }
    stages.push(("hflip".to_string(), y.clone()));
    let j = &p["color_jitter"];
    for id in j["order"].as_array().unwrap() {
        let name = ["brightness", "contrast", "saturation", "hue"][id.as_u64().unwrap() as usize];
        if j[name].is_null() {
            continue;
        }
        let v = f(&j[name]);
        match name {
            "brightness" => F::adjust_brightness(&mut y, v),
            "contrast" => F::adjust_contrast(&mut y, v).unwrap(),
            "saturation" => F::adjust_saturation(&mut y, v).unwrap(),
            _ => F::adjust_hue(&mut y, v).unwrap(),
        }
        stages.push((name.to_string(), y.clone()));
    }
    if p["grayscale"].as_bool().unwrap() {
        F::rgb_to_grayscale(&mut y).unwrap();
    }
    stages.push(("grayscale".to_string(), y.clone()));
    let b = &p["gaussian_blur"];
    if !b.is_null() {
        F::gaussian_blur(&mut y, pair_usize(&b["kernel_size"]), pair_f32(&b["sigma"])).unwrap();
    }
    stages.push(("gaussian_blur".to_string(), y.clone()));
    if !p["solarize"].is_null() {
        F::solarize(&mut y, f(&p["solarize"]["threshold"]));
    }
    stages.push(("solarize".to_string(), y.clone()));
    let n = &p["normalize"];
    F::normalize(&mut y, triple(&n["mean"]), triple(&n["std"])).unwrap();
    stages.push(("normalize".to_string(), y));
    stages
}

#[test]
fn composed_chain_matches_torchvision_at_every_stage() {
    let doc = load("aug/compose.json");
    let mut worst = 0.0f64;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let stages = chain(&image(&case["input"]), &case["params"]);
        let d = max_diff(&stages.last().unwrap().1, &case["expected"], name);
        assert!(d <= TOL_COMPOSE, "{name}: max |diff| {d:e}");
        worst = worst.max(d);
        if let Some(inter) = case.get("intermediate") {
            for st in inter.as_array().unwrap() {
                let after = st["after"].as_str().unwrap();
                let got = &stages.iter().find(|(n, _)| n == after).unwrap().1;
                let d = max_diff(got, st, after);
                let tol = if after == "normalize" {
                    TOL_COMPOSE
                } else {
                    TOL_OP
                };
                assert!(d <= tol, "{name} after {after}: max |diff| {d:e}");
            }
        }
    }
    eprintln!("compose: worst max |diff| = {worst:e}");
}

#[test]
fn crop_params_reproduce_torch_draws_exactly() {
    let doc = load("aug/crop_params.json");
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let inp = &case["input"];
        let (h, w) = (
            inp["height"].as_u64().unwrap() as usize,
            inp["width"].as_u64().unwrap() as usize,
        );
        let scale = (
            inp["scale"][0].as_f64().unwrap(),
            inp["scale"][1].as_f64().unwrap(),
        );
        let ratio = (
            inp["ratio"][0].as_f64().unwrap(),
            inp["ratio"][1].as_f64().unwrap(),
        );
        let seed = case["seed"].as_u64().unwrap() as u32;
        let draws = case["draws"].as_array().unwrap();

        // The raw generator and torch's mappings, draw by draw.
        let mut g = TorchGenerator::new(seed);
        for d in draws {
            let mut probe = g.clone();
            assert_eq!(
                probe.next_u32() as u64,
                d["u32"].as_u64().unwrap(),
                "{name}: u32"
            );
            match d["kind"].as_str().unwrap() {
                "uniform" => {
                    let v = g.uniform(d["low"].as_f64().unwrap(), d["high"].as_f64().unwrap());
                    // Compared as f32: serde_json's default parser may be 1 f64-ulp off.
                    assert_eq!(
                        v,
                        d["value"].as_f64().unwrap() as f32,
                        "{name}: uniform value"
                    );
                }
                _ => {
                    let v = g.randint(d["low"].as_i64().unwrap(), d["high"].as_i64().unwrap());
                    assert_eq!(v, d["value"].as_i64().unwrap(), "{name}: randint value");
                }
            }
        }

        // The sampler: same box, same number of draws.
        let crop = RandomResizedCrop::new([8, 8], scale, ratio, true).unwrap();
        let mut g = TorchGenerator::new(seed);
        let b = crop.sample_params(h, w, &mut g);
        let e = &case["expected"];
        assert_eq!(
            [b.top, b.left, b.height, b.width],
            ["top", "left", "height", "width"].map(|k| e[k].as_u64().unwrap() as usize),
            "{name}: crop box"
        );
        let mut after = TorchGenerator::new(seed);
        for _ in 0..draws.len() {
            after.next_u32();
        }
        assert_eq!(g.next_u32(), after.next_u32(), "{name}: number of draws");
    }
}

fn jitter_arg(v: &Value) -> Jitter {
    match v {
        Value::Array(a) => Jitter::Range(a[0].as_f64().unwrap(), a[1].as_f64().unwrap()),
        n => Jitter::Strength(n.as_f64().unwrap()),
    }
}

#[test]
fn jitter_ranges_and_draws_reproduce_torch_exactly() {
    let doc = load("aug/jitter_params.json");
    let names = ["brightness", "contrast", "saturation", "hue"];
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let inp = &case["input"];
        let j = ColorJitter::new(
            jitter_arg(&inp["brightness"]),
            jitter_arg(&inp["contrast"]),
            jitter_arg(&inp["saturation"]),
            jitter_arg(&inp["hue"]),
        );
        let e = &case["expected"];
        if e.get("error").is_some() {
            assert!(j.is_err(), "{name}: expected a validation error");
            continue;
        }
        let j = j.unwrap();
        for (k, range) in names.iter().zip(j.ranges()) {
            let want = e[*k]
                .as_array()
                .map(|r| (r[0].as_f64().unwrap(), r[1].as_f64().unwrap()));
            assert_eq!(range, want, "{name}: {k} range");
        }
        for s in case["samples"].as_array().unwrap() {
            let mut g = TorchGenerator::new(s["seed"].as_u64().unwrap() as u32);
            let p = j.sample_params(&mut g);
            let order: Vec<u64> = p.order.iter().map(|&o| o as u64).collect();
            let want: Vec<u64> = s["fn_idx"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(order, want, "{name}: order");
            let got = [p.brightness, p.contrast, p.saturation, p.hue];
            for (k, v) in names.iter().zip(got) {
                let want = s["factors"][*k].as_f64().map(|x| x as f32);
                assert_eq!(v, want, "{name}: {k} factor");
            }
        }
    }
}

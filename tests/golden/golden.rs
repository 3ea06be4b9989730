//! Loader for the gzipped golden references in `tests/golden/`.
//!
//! Included by each crate's tests with
//! `#[path = "../../../tests/golden/golden.rs"] mod golden;`
//! and needs the dev-dependencies `serde_json` and `flate2`.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

/// Folder holding the golden files (this file's folder).
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("tests/golden/golden.rs").is_file())
        .expect("workspace root with tests/golden above CARGO_MANIFEST_DIR")
        .join("tests/golden")
}

/// Parses `<dir>/<rel>.gz`, e.g. `load("losses/ntxent.json")`.
pub fn load(rel: &str) -> serde_json::Value {
    let path = dir().join(format!("{rel}.gz"));
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()))
}

/// A `{"shape": [...], "data": [...]}` array of the golden files.
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn from_json(v: &serde_json::Value) -> Self {
        let shape = v["shape"]
            .as_array()
            .expect("array has a shape")
            .iter()
            .map(|d| d.as_u64().expect("shape entries are integers") as usize)
            .collect::<Vec<_>>();
        let data = v["data"]
            .as_array()
            .expect("array has data")
            .iter()
            .map(|x| x.as_f64().expect("data entries are numbers"))
            .collect::<Vec<_>>();
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape and data length agree"
        );
        Self { shape, data }
    }

    pub fn f32(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }

    pub fn max_abs(&self) -> f64 {
        self.data.iter().fold(0.0f64, |m, x| m.max(x.abs()))
    }
}

//! The sweep file: a base (method, recipe, `set` overrides), axes of config values, grids
//! (several sets of axes, their union is the sweep) and seeds; expanded into points, each
//! point's config built and validated exactly as `cargo xtask train` builds it.

use anyhow::{anyhow, bail, Context, Result};
use mocca_recipes::config::{ConfigBuilder, MethodName, Recipe, TrainConfig};
use serde::{Deserialize, Serialize};

/// A sweep as its file (or the command line, or `OUT/sweep.toml`) describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The table's and the plot's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// moco, mocov2 or simclr (a grid may name its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// cifar, cifar100, stl10 or paper [default: cifar].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// Every point runs once with each seed (`--seed S`).
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// `key=value` overrides of every point, as `train --set` takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    /// Axes of every grid (the product of all a grid's axes is its points).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub axis: Vec<Axis>,
    /// Groups of points, each one series of the plot; the sweep is their union.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grid: Vec<Grid>,
    #[serde(default)]
    pub report: ReportSpec,
}

/// One axis: a key and its values, or several keys moving together (zipped).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Zipped keys: each entry of `values` is an array with one value per key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    pub values: Vec<toml::Value>,
    /// The name in folder names and the legend [default: the first key's last part].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The plotted value of each entry [default: the (first) value, where it is a number].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x: Vec<f64>,
    /// Each entry's label in folder names and the table [default: the values].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// The series' name (legend, folder names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub axis: Vec<Axis>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// The plot's x-axis title [default: the x axis's name].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_label: Option<String>,
    /// linear, log2 (K, batch sizes) or category (evenly spaced, labelled) [default: linear
    /// where every x is a number, else category].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    /// Which kNN record is the accuracy, by a part of its layer's name: backbone or head
    /// [default: the run's eval.layer].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    Linear,
    Log2,
    Category,
}

/// Where a point sits on the plot's x axis.
pub use mocca_plot::chart::X;

/// One grid point: one config, run once per seed in `OUT/<name>/seed<S>/`.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Folder name, unique in the sweep.
    pub name: String,
    /// The plot line it belongs to.
    pub series: String,
    pub x: X,
    /// The x entry's label (table).
    pub x_text: String,
    pub method: MethodName,
    pub recipe: Recipe,
    /// `key=value` assignments in the order `train --set` applies them.
    pub sets: Vec<String>,
}

impl Point {
    /// The point's config for `seed`, as `train` resolves it (preset, then the sets).
    pub fn config(&self, seed: u64) -> Result<TrainConfig> {
        let mut b = ConfigBuilder::from_preset(self.method, self.recipe)?;
        for s in &self.sets {
            b.set(s)?;
        }
        b.set(&format!("seed={seed}"))?;
        Ok(b.build()?)
    }
}

/// Keys a sweep may not vary: they belong to the sweep itself or to one invocation.
const RESERVED: &[(&str, &str)] = &[
    (
        "method",
        "give `method` in the sweep file (or a grid's own)",
    ),
    (
        "recipe",
        "give `recipe` in the sweep file (or a grid's own)",
    ),
    ("seed", "give `seeds = [...]`"),
    ("data.path", "give `--data DIR` to the sweep"),
    ("run.stop_after_steps", "a sweep runs every run to its end"),
];

fn check_key(key: &str, what: &str) -> Result<()> {
    let key = key.trim();
    if let Some((_, why)) = RESERVED.iter().find(|(k, _)| *k == key) {
        bail!("{what}: `{key}` cannot be set by a sweep: {why}");
    }
    if key.starts_with("seeds.") {
        bail!("{what}: `{key}` cannot be set by a sweep: give `seeds = [...]`");
    }
    Ok(())
}

fn check_sets(sets: &[String], what: &str) -> Result<()> {
    for s in sets {
        let (key, _) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("{what}: expected key=value, got `{s}`"))?;
        check_key(key, what)?;
    }
    Ok(())
}

/// A value as a folder-name and table label: strings without quotes.
fn label_of(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(label_of).collect::<Vec<_>>().join("-"),
        other => other.to_string(),
    }
}

fn number_of(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        toml::Value::Array(a) => a.first().and_then(number_of),
        _ => None,
    }
}

/// Letters, digits, `.`, `-` and `_` only, so every name is a plain folder name.
fn folder_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One entry of an axis, resolved.
struct Entry {
    name: String,
    label: String,
    x: Option<f64>,
    /// The x for the table: the label, or with an explicit `x` both (`255 (batch 256)`).
    x_text: String,
    sets: Vec<String>,
}

impl Axis {
    fn keys(&self, what: &str) -> Result<Vec<String>> {
        match (&self.key, self.keys.is_empty()) {
            (Some(k), true) => Ok(vec![k.clone()]),
            (None, false) => Ok(self.keys.clone()),
            (Some(_), false) => bail!("{what}: give `key` or `keys`, not both"),
            (None, true) => bail!("{what}: `key` (or zipped `keys`) is missing"),
        }
    }

    fn entries(&self, what: &str) -> Result<Vec<Entry>> {
        let keys = self.keys(what)?;
        for k in &keys {
            check_key(k, what)?;
        }
        let what = format!("{what} ({})", keys.join(", "));
        if self.values.is_empty() {
            bail!("{what}: `values` is empty");
        }
        for (list, field) in [(self.x.len(), "x"), (self.labels.len(), "labels")] {
            if list != 0 && list != self.values.len() {
                bail!(
                    "{what}: `{field}` has {list} entries for {} values",
                    self.values.len()
                );
            }
        }
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| keys[0].rsplit('.').next().unwrap_or(&keys[0]).to_string());
        let mut out = Vec::new();
        for (i, v) in self.values.iter().enumerate() {
            let parts: Vec<toml::Value> = if keys.len() == 1 {
                vec![v.clone()]
            } else {
                match v {
                    toml::Value::Array(a) if a.len() == keys.len() => a.clone(),
                    other => bail!(
                        "{what}: zipped value {} is `{other}`; each value is an array of {} \
                         (one per key)",
                        i + 1,
                        keys.len()
                    ),
                }
            };
            let sets = keys
                .iter()
                .zip(&parts)
                .map(|(k, v)| format!("{}={v}", k.trim()))
                .collect();
            let label = self.labels.get(i).cloned().unwrap_or_else(|| label_of(v));
            let x_text = match self.x.get(i) {
                Some(x) if format!("{x}") != label => format!("{x} ({name} {label})"),
                _ => label.clone(),
            };
            out.push(Entry {
                name: name.clone(),
                label,
                x: self.x.get(i).copied().or_else(|| number_of(v)),
                x_text,
                sets,
            });
        }
        Ok(out)
    }
}

impl Spec {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| anyhow!("{origin}: {}", e.to_string().trim_end()))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a sweep spec serialises")
    }

    /// Every point, each config built and validated; errors name the point and the key.
    pub fn points(&self) -> Result<Vec<Point>> {
        if self.seeds.is_empty() {
            bail!("the sweep has no seeds: give `seeds = [0, 1, 2]` (or --seeds 0,1,2)");
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.seeds {
            if !seen.insert(s) {
                bail!("seed {s} is listed twice");
            }
        }
        check_sets(&self.set, "set")?;
        let grids = if self.grid.is_empty() {
            vec![Grid::default()]
        } else {
            self.grid.clone()
        };
        let several = grids.len() > 1;
        let mut points: Vec<Point> = Vec::new();
        for (gi, g) in grids.iter().enumerate() {
            let what = match &g.name {
                Some(n) => format!("grid `{n}`"),
                None => format!("grid {}", gi + 1),
            };
            if several && g.name.is_none() {
                bail!("{what}: a sweep with several grids names each (`name = ...`)");
            }
            check_sets(&g.set, &format!("{what}: set"))?;
            let method = g
                .method
                .as_deref()
                .or(self.method.as_deref())
                .ok_or_else(|| {
                    anyhow!(
                        "{what}: which method? give `method = \"moco\"` ({})",
                        MethodName::NAMES
                    )
                })?;
            let method = MethodName::parse(method).with_context(|| what.clone())?;
            let recipe = match g.recipe.as_deref().or(self.recipe.as_deref()) {
                Some(r) => Recipe::parse(r).with_context(|| what.clone())?,
                None => Recipe::Cifar,
            };
            let mut axes = Vec::new();
            for (ai, a) in self.axis.iter().enumerate() {
                axes.push(a.entries(&format!("axis {}", ai + 1))?);
            }
            for (ai, a) in g.axis.iter().enumerate() {
                axes.push(a.entries(&format!("{what}: axis {}", ai + 1))?);
            }
            for combo in product(&axes.iter().map(Vec::len).collect::<Vec<_>>()) {
                let entries: Vec<&Entry> = combo
                    .iter()
                    .enumerate()
                    .map(|(a, &i)| &axes[a][i])
                    .collect();
                let mut name: Vec<String> = g.name.iter().cloned().collect();
                name.extend(entries.iter().map(|e| format!("{}-{}", e.name, e.label)));
                let name = if name.is_empty() {
                    "run".to_string()
                } else {
                    folder_safe(&name.join("_"))
                };
                let (x_entry, others) = match entries.split_last() {
                    Some((last, rest)) => (Some(*last), rest),
                    None => (None, &entries[..]),
                };
                let mut series: Vec<String> = g.name.iter().cloned().collect();
                series.extend(others.iter().map(|e| format!("{}={}", e.name, e.label)));
                let series = if series.is_empty() {
                    self.title
                        .clone()
                        .unwrap_or_else(|| method.as_str().to_string())
                } else {
                    series.join(", ")
                };
                let (x, x_text) = match x_entry {
                    Some(e) => (
                        e.x.map_or_else(|| X::Cat(e.label.clone()), X::Num),
                        e.x_text.clone(),
                    ),
                    None => (X::Cat(series.clone()), series.clone()),
                };
                let mut sets = self.set.clone();
                sets.extend(g.set.iter().cloned());
                sets.extend(entries.iter().flat_map(|e| e.sets.iter().cloned()));
                let p = Point {
                    name,
                    series,
                    x,
                    x_text,
                    method,
                    recipe,
                    sets,
                };
                if points.iter().any(|q| q.name == p.name) {
                    bail!(
                        "two points are both named `{}`: give the grids different names or the \
                         axes `labels`",
                        p.name
                    );
                }
                p.config(self.seeds[0])
                    .with_context(|| format!("point `{}` ({})", p.name, p.sets.join(" ")))?;
                points.push(p);
            }
        }
        if self.report.scale == Some(Scale::Log2) {
            if let Some(p) = points.iter().find(|p| !matches!(p.x, X::Num(v) if v > 0.0)) {
                bail!(
                    "report.scale = \"log2\" needs a positive number as each point's x; point \
                     `{}` has {}",
                    p.name,
                    p.x_text
                );
            }
        }
        Ok(points)
    }

    /// Whether this is the `saved` sweep with seeds added (every saved seed kept, all else
    /// the same): its finished runs stay valid, and a rerun only adds the new seeds' runs.
    pub fn adds_seeds_to(&self, saved: &Spec) -> bool {
        let mut same = self.clone();
        same.seeds.clone_from(&saved.seeds);
        same == *saved
            && self.seeds.len() > saved.seeds.len()
            && saved.seeds.iter().all(|s| self.seeds.contains(s))
    }

    /// A line per difference from `other` (the sweep saved in the folder), for the refusal.
    pub fn differences(&self, saved: &Spec) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what}: {b} (saved) → {a} (now)"));
            }
        };
        diff(
            "title",
            format!("{:?}", self.title),
            format!("{:?}", saved.title),
        );
        diff(
            "method",
            format!("{:?}", self.method),
            format!("{:?}", saved.method),
        );
        diff(
            "recipe",
            format!("{:?}", self.recipe),
            format!("{:?}", saved.recipe),
        );
        diff(
            "seeds",
            format!("{:?}", self.seeds),
            format!("{:?}", saved.seeds),
        );
        diff("set", format!("{:?}", self.set), format!("{:?}", saved.set));
        diff("axis", one_line(&self.axis), one_line(&saved.axis));
        diff("grid", one_line(&self.grid), one_line(&saved.grid));
        diff("report", one_line(&self.report), one_line(&saved.report));
        out
    }
}

/// A part of the spec in one line (JSON), for the difference messages.
fn one_line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Every combination of one index per axis, the last axis fastest; one empty combination
/// for no axes.
fn product(lens: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for &n in lens {
        out = out
            .into_iter()
            .flat_map(|c| {
                (0..n).map(move |i| {
                    let mut c = c.clone();
                    c.push(i);
                    c
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        Spec::parse(text, "test.toml").unwrap()
    }

    #[test]
    fn axes_expand_to_their_product_the_last_axis_as_x() {
        let s = spec(
            r#"
            method = "moco"
            seeds = [0, 1, 2]
            set = ["model.width=0.125", "epochs=2"]
            [[axis]]
            key = "moco.negatives"
            values = ["queue", "bank"]
            [[axis]]
            key = "moco.queue_size"
            name = "K"
            values = [1024, 4096]
            "#,
        );
        let p = s.points().unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "negatives-queue_K-1024",
                "negatives-queue_K-4096",
                "negatives-bank_K-1024",
                "negatives-bank_K-4096"
            ]
        );
        assert_eq!(p[2].series, "negatives=bank");
        assert_eq!(p[2].x, X::Num(1024.0));
        assert_eq!(
            p[3].sets,
            [
                "model.width=0.125",
                "epochs=2",
                "moco.negatives=\"bank\"",
                "moco.queue_size=4096"
            ]
        );
        let cfg = p[3].config(7).unwrap();
        let m = cfg.moco.unwrap();
        assert_eq!((m.queue_size, cfg.seed, cfg.epochs), (4096, 7, 2));
        assert_eq!(m.negatives, mocca_recipes::config::Negatives::Bank);
    }

    #[test]
    fn grids_are_series_and_zipped_axes_move_keys_together() {
        let s = spec(
            r#"
            method = "moco"
            seeds = [0]
            set = ["batch_size=256"]
            [[grid]]
            name = "end-to-end"
            set = ["moco.negatives=end-to-end"]
            [[grid.axis]]
            keys = ["batch_size", "moco.bn_splits"]
            name = "batch"
            values = [[256, 8], [512, 8]]
            x = [255, 511]
            labels = ["256", "512"]
            [[grid]]
            name = "queue"
            [[grid.axis]]
            key = "moco.queue_size"
            name = "K"
            values = [256, 4096]
            [[grid]]
            name = "simclr"
            method = "simclr"
            "#,
        );
        let p = s.points().unwrap();
        let got: Vec<(&str, &str, &X)> = p
            .iter()
            .map(|p| (p.name.as_str(), p.series.as_str(), &p.x))
            .collect();
        assert_eq!(
            got[0],
            ("end-to-end_batch-256", "end-to-end", &X::Num(255.0))
        );
        assert_eq!(got[1].0, "end-to-end_batch-512");
        assert_eq!(got[3], ("queue_K-4096", "queue", &X::Num(4096.0)));
        assert_eq!(got[4], ("simclr", "simclr", &X::Cat("simclr".into())));
        assert_eq!(p[1].config(0).unwrap().batch_size, 512);
        assert_eq!(
            (p[1].x_text.as_str(), p[3].x_text.as_str()),
            ("511 (batch 512)", "4096")
        );
        assert_eq!(p[4].method, MethodName::Simclr);
    }

    #[test]
    fn an_unknown_key_or_value_fails_naming_the_point_and_the_key() {
        for (bad, named) in [
            (r#"set = ["moco.qeue_size=4"]"#, "qeue_size"),
            (r#"set = ["moco.negatives=ring"]"#, "moco.negatives"),
            (r#"set = ["epochs=0"]"#, "epochs"),
        ] {
            let s = spec(&format!("method = \"moco\"\nseeds = [0]\n{bad}\n"));
            let e = format!("{:#}", s.points().unwrap_err());
            assert!(e.contains(named) && e.contains("point `run`"), "{bad}: {e}");
        }
        let e = Spec::parse("method = \"moco\"\nsed = [0]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sed") && e.contains("f.toml"), "{e}");
        let s = spec(
            "method = \"moco\"\nseeds = [0]\n[[axis]]\nkey = \"moco.momentum\"\nvalues = [0.9, 2.0]\n",
        );
        let e = format!("{:#}", s.points().unwrap_err());
        assert!(
            e.contains("momentum-2.0") && e.contains("moco.momentum"),
            "{e}"
        );
        // SimCLR has no [moco]: a moco key on a simclr grid is an error before anything runs.
        let s = spec("method = \"simclr\"\nseeds = [0]\nset = [\"moco.momentum=0.9\"]\n");
        let e = format!("{:#}", s.points().unwrap_err());
        assert!(e.contains("moco"), "{e}");
    }

    #[test]
    fn reserved_keys_duplicate_names_and_bad_shapes_are_refused() {
        for (text, says) in [
            ("method = \"moco\"\nseeds = [0]\nset = [\"seed=3\"]\n", "seeds = [...]"),
            ("method = \"moco\"\nseeds = []\n", "no seeds"),
            ("method = \"moco\"\nseeds = [1, 1]\n", "listed twice"),
            ("seeds = [0]\n", "which method"),
            (
                "method = \"moco\"\nseeds = [0]\n[[axis]]\nkeys = [\"epochs\", \"batch_size\"]\nvalues = [1]\n",
                "each value is an array of 2",
            ),
            (
                "method = \"moco\"\nseeds = [0]\n[[axis]]\nkey = \"epochs\"\nvalues = [1, 2]\nx = [1]\n",
                "`x` has 1 entries for 2 values",
            ),
            (
                "method = \"moco\"\nseeds = [0]\n[[axis]]\nkey = \"epochs\"\nvalues = [1, 2]\nlabels = [\"a\", \"a\"]\n",
                "both named `epochs-a`",
            ),
            (
                "method = \"moco\"\nseeds = [0]\n[report]\nscale = \"log2\"\n[[axis]]\nkey = \"moco.momentum\"\nvalues = [0.0, 0.9]\n",
                "log2",
            ),
        ] {
            let e = format!("{:#}", spec(text).points().unwrap_err());
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_spec_survives_its_saved_form_and_differences_are_named() {
        let s = spec(
            r#"
            title = "m"
            method = "moco"
            seeds = [0, 1]
            set = ["epochs=2"]
            [[axis]]
            key = "moco.momentum"
            values = [0.0, 0.9, 0.99]
            [report]
            scale = "category"
            "#,
        );
        let saved = Spec::parse(&s.to_toml(), "saved").unwrap();
        assert_eq!(saved, s);
        assert!(s.differences(&saved).is_empty());
        let mut t = s.clone();
        t.seeds.push(2);
        t.axis[0].values.pop();
        let d = t.differences(&s);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].starts_with("seeds: [0, 1] (saved) → [0, 1, 2] (now)"),
            "{d:?}"
        );
        assert!(d[1].starts_with("axis:") && d[1].contains("0.99"), "{d:?}");
    }

    #[test]
    fn a_sweep_with_more_seeds_extends_the_saved_one_and_fewer_or_other_seeds_do_not() {
        let saved = spec(
            r#"
            method = "moco"
            seeds = [0, 1]
            [[axis]]
            key = "moco.momentum"
            values = [0.9, 0.99]
            "#,
        );
        let with = |seeds: &[u64]| {
            let mut s = saved.clone();
            s.seeds = seeds.to_vec();
            s
        };
        assert_eq!(saved.seeds, [0, 1]);
        assert!(with(&[0, 1, 2]).adds_seeds_to(&saved));
        assert!(with(&[2, 1, 0]).adds_seeds_to(&saved));
        assert!(!with(&[0, 1]).adds_seeds_to(&saved));
        assert!(!with(&[0]).adds_seeds_to(&saved));
        assert!(!with(&[0, 2, 3]).adds_seeds_to(&saved));
        let mut other = with(&[0, 1, 2]);
        other.title = Some("another".into());
        assert!(!other.adds_seeds_to(&saved));
    }

    #[test]
    fn the_shipped_sweep_files_parse_and_validate() {
        for (name, text) in crate::sweep::SHIPPED {
            let s = Spec::parse(text, name).unwrap();
            let p = s.points().unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(s.seeds.len() >= 3, "{name}");
            for q in &p {
                let cfg = q.config(0).unwrap();
                assert_eq!(cfg.model.width, 0.125, "{name} {}", q.name);
            }
        }
    }
}

//! `cargo xtask train`: its command line. The flags, `--set` and their order become a
//! [`TrainRequest`]; [`mocca_runs::train`] resolves it and runs it.

use anyhow::Result;
use mocca_recipes::config::{DeviceKind, MethodName, Negatives, Precision, Recipe};
use mocca_runs::train::TrainRequest;
use std::path::PathBuf;

/// `cargo xtask train`: everything but the config-override flags, which come from
/// [`OVERRIDES`] through [`Overrides`].
#[derive(clap::Args, Debug, Default)]
#[command(
    about = "Train an encoder without labels: moco|mocov2|mocov3|simclr|instdisc|byol|simsiam",
    long_about = "Trains an encoder without labels. Settings come from an embedded preset \
(method x recipe), then --config, then --set and the flags below (in command-line order, later \
wins); the resolved config is saved as RUN/config.toml.",
    after_help = "Ctrl-C checkpoints at the next step boundary and exits (a second Ctrl-C quits \
at once; the last checkpoint stays intact)."
)]
pub struct Args {
    /// The method: moco, mocov2, mocov3, simclr, instdisc, byol or simsiam [default: the config
    /// file's `method`]
    #[arg(value_name = "METHOD", value_parser = |s: &str| MethodName::parse(s).map_err(|e| e.to_string()))]
    method: Option<MethodName>,
    /// Preset family: cifar (the MoCo CIFAR-10 colab, lightly's CIFAR-10 benchmark), cifar100
    /// (the same on CIFAR-100), stl10 (96 px on STL-10's train+unlabeled images), paper
    /// (ImageNet), paper-vit (MoCo v3's ViT-S/16), imagenet100 (solo-learn's ImageNet-100
    /// settings) [default: the config file's `recipe`, else cifar]
    #[arg(long, value_name = "cifar|cifar100|stl10|paper|paper-vit|imagenet100",
          value_parser = |s: &str| Recipe::parse(s).map_err(|e| e.to_string()))]
    recipe: Option<Recipe>,
    /// Overrides, any subset of the config's keys [default: none, the preset alone]
    #[arg(long = "config", value_name = "FILE.toml")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    /// Print the resolved config and exit
    #[arg(long)]
    print_config: bool,
    /// Never use the network (also MOCCA_NO_DOWNLOAD=1); the error says what to fetch by hand,
    /// and where. MOCCA_DOWNLOAD_MIRROR=URL downloads from URL/<file>
    #[arg(long)]
    no_download: bool,
    /// Stop the run (with a checkpoint of the steps done) at a file that does not decode,
    /// instead of skipping it with a warning (config key run.skip_bad_files = false)
    #[arg(long)]
    strict: bool,
    /// Run folder [default: runs/<method>-<recipe>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its checkpoint; only run settings may change
    /// [default DIR: --out]
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    resume: Option<Option<PathBuf>>,
}

/// How a flag's value becomes the TOML of its `--set`.
#[derive(Clone, Copy)]
enum Value {
    /// Written as given: numbers, checked when the config is built.
    Toml,
    /// Quoted as a TOML string; the check runs at parse time, where the flag name is known.
    Str(Option<fn(&str) -> Result<()>>),
}

/// A flag that is shorthand for `--set KEY=VALUE`.
struct Override {
    flag: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
    value: Value,
}

/// A flag whose value is TOML as written (numbers, booleans).
const fn flag(
    flag: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> Override {
    Override {
        flag,
        key,
        value_name,
        help,
        value: Value::Toml,
    }
}

/// A flag whose value is a string (quoted in the assignment), checked by `check` if given.
const fn text(
    name: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
    check: Option<fn(&str) -> Result<()>>,
) -> Override {
    Override {
        value: Value::Str(check),
        ..flag(name, key, value_name, help)
    }
}

/// The config-override flags: the one place a flag, its config key and its help are written.
const OVERRIDES: &[Override] = &[
    text(
        "data",
        "data.path",
        "DIR",
        "Dataset folder: CIFAR-10, CIFAR-100 or STL-10 binary, MNIST, image folder [default: \
         $MOCCA_DATA, else the first of ./data and the per-user cache $XDG_CACHE_HOME/mocca or \
         ~/.cache/mocca that holds the recipe's dataset; if none does, it is downloaded into the \
         cache from its official URL, MD5-checked, resumable]",
        None,
    ),
    text(
        "device",
        "run.device",
        "auto|cpu|cuda",
        "auto: CUDA GPU 0 if this build has CUDA and the GPU opens, else the CPU (said on \
         stderr) [default: the preset's, auto]",
        Some(|v| DeviceKind::parse(v).map(drop).map_err(Into::into)),
    ),
    flag("epochs", "epochs", "N", "Training epochs"),
    flag("batch-size", "batch_size", "N", "Images per step"),
    flag("width", "model.width", "X", "Backbone width multiplier"),
    flag("temperature", "loss.temperature", "X", "Loss temperature"),
    flag(
        "lr",
        "optimizer.lr",
        "X",
        "The learning rate used, whatever the batch size",
    ),
    flag(
        "base-lr",
        "optimizer.base_lr",
        "X",
        "A rate for the preset's reference batch (optimizer.lr_scale_batch), scaled linearly \
         with --batch-size (the preset's own rule, if it has one)",
    ),
    flag(
        "seed",
        "seed",
        "N",
        "Seeds everything (--init-seed, --data-seed, --aug-seed seed parts separately)",
    ),
    flag(
        "init-seed",
        "seeds.init",
        "N",
        "Seeds the weights (and queue, shuffle-BN and bank draws) [default: from --seed]",
    ),
    flag(
        "data-seed",
        "seeds.data",
        "N",
        "Seeds the data order [default: from --seed]",
    ),
    flag(
        "aug-seed",
        "seeds.augmentation",
        "N",
        "Seeds the augmentations [default: from --seed]",
    ),
    text(
        "precision",
        "model.precision",
        "f32|bf16",
        "bf16: mixed precision (f32 master weights and optimiser state, bf16 activations; for \
         CUDA)",
        Some(|v| Precision::parse(v).map(drop).map_err(Into::into)),
    ),
    text(
        "negatives",
        "moco.negatives",
        "queue|bank|end-to-end",
        "MoCo's negatives",
        Some(|v| Negatives::parse(v).map(drop).map_err(Into::into)),
    ),
    flag(
        "queue-size",
        "moco.queue_size",
        "K",
        "MoCo's queue (or bank) size",
    ),
    flag(
        "knn-every",
        "eval.knn_every",
        "N",
        "kNN accuracy every N epochs (0: only at the end)",
    ),
    flag(
        "knn-train-limit",
        "run.knn_train_limit",
        "N",
        "kNN monitoring on N training images",
    ),
    flag(
        "knn-test-limit",
        "run.knn_test_limit",
        "N",
        "kNN monitoring on N test images",
    ),
    flag(
        "collapse-every",
        "run.collapse_every",
        "N",
        "Collapse monitor (embedding std, RankMe, alignment, uniformity) every N steps (0: off) \
         [default: 10]",
    ),
    flag(
        "checkpoint-every-steps",
        "run.checkpoint_every_steps",
        "N",
        "Also checkpoint every N steps",
    ),
    flag(
        "keep-checkpoints",
        "run.keep_checkpoints",
        "N",
        "Checkpoints kept, the newest included; --resume falls back on the older ones when the \
         newest is damaged [default: 2]",
    ),
    flag(
        "stop-after-steps",
        "run.stop_after_steps",
        "N",
        "Checkpoint and stop after step N (resume later)",
    ),
];

const SET: &str = "set";

impl Override {
    fn arg(&self) -> clap::Arg {
        // A default the help does not already name is the preset's (or the resumed run's).
        let help = if self.help.contains("[default") {
            format!("{} (config key {})", self.help, self.key)
        } else {
            format!(
                "{} (config key {}) [default: the preset's]",
                self.help, self.key
            )
        };
        let arg = clap::Arg::new(self.flag)
            .long(self.flag)
            .value_name(self.value_name)
            .help(help)
            .action(clap::ArgAction::Append)
            .allow_negative_numbers(true);
        match self.value {
            Value::Str(Some(check)) => arg.value_parser(move |v: &str| {
                check(v).map(|()| v.to_string()).map_err(|e| e.to_string())
            }),
            _ => arg,
        }
    }

    fn assignment(&self, v: &str) -> String {
        match self.value {
            Value::Toml => format!("{}={v}", self.key),
            Value::Str(_) => format!("{}={}", self.key, toml::Value::String(v.to_string())),
        }
    }
}

/// `--set` and the [`OVERRIDES`] flags as `key=value` assignments in command-line order.
#[derive(Debug, Default)]
struct Overrides {
    sets: Vec<String>,
}

impl clap::FromArgMatches for Overrides {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut sets: Vec<(usize, String)> = Vec::new();
        let mut collect = |id: &str, to_assignment: &dyn Fn(&str) -> String| {
            if let (Some(values), Some(indices)) = (m.get_many::<String>(id), m.indices_of(id)) {
                sets.extend(indices.zip(values.map(|v| to_assignment(v))));
            }
        };
        collect(SET, &|v| v.to_string());
        for o in OVERRIDES {
            collect(o.flag, &|v| o.assignment(v));
        }
        sets.sort_by_key(|(i, _)| *i);
        Ok(Self {
            sets: sets.into_iter().map(|(_, s)| s).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Overrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let set = clap::Arg::new(SET)
            .long(SET)
            .value_name("KEY=VALUE")
            .help("One override, e.g. --set moco.queue_size=8192; repeatable [default: none]")
            .action(clap::ArgAction::Append);
        OVERRIDES
            .iter()
            .fold(cmd.arg(set), |cmd, o| cmd.arg(o.arg()))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl Args {
    /// What the library runs: the flags as config assignments, in command-line order.
    fn request(&self) -> TrainRequest {
        TrainRequest {
            method: self.method,
            recipe: self.recipe,
            config_file: self.config_file.clone(),
            sets: self
                .overrides
                .sets
                .iter()
                .cloned()
                .chain(self.strict.then(|| "run.skip_bad_files=false".to_string()))
                .collect(),
            out: self.out.clone(),
            resume: self.resume.clone(),
            allow_download: mocca_runs::fetch::downloads_allowed(self.no_download),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let plan = mocca_runs::train::plan(&a.request())?;
    if a.print_config {
        print!("{}", plan.config().to_toml());
        return Ok(());
    }
    mocca_runs::train::execute(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use mocca_recipes::config::ConfigBuilder;
    use mocca_runs::fetch;

    /// `train`'s arguments alone, as `cargo xtask train` parses them.
    #[derive(Parser)]
    struct Train {
        #[command(flatten)]
        args: Args,
    }

    fn parse_args(s: &str) -> Result<Args> {
        let argv = std::iter::once("train").chain(s.split_whitespace());
        Ok(Train::try_parse_from(argv)?.args)
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_become_config_overrides() {
        let a = parse_args(
            "mocov2 --epochs 3 --batch-size 64 --data /tmp/d --negatives bank --out runs/x",
        )
        .unwrap();
        let cfg = mocca_runs::train::plan(&a.request())
            .map(|p| p.config().clone())
            .unwrap();
        assert_eq!((cfg.epochs, cfg.batch_size), (3, 64));
        assert_eq!(cfg.data.path.as_deref(), Some("/tmp/d"));
        assert_eq!(cfg.moco.unwrap().negatives, Negatives::Bank);
        assert_eq!(a.out, Some(PathBuf::from("runs/x")));
    }

    #[test]
    fn flags_and_sets_apply_in_command_line_order() {
        let a = parse_args(
            "moco --epochs 3 --set epochs=4 --lr 0.5 --set optimizer.lr=0.25 --epochs 5",
        )
        .unwrap();
        assert_eq!(
            a.overrides.sets,
            [
                "epochs=3",
                "epochs=4",
                "optimizer.lr=0.5",
                "optimizer.lr=0.25",
                "epochs=5"
            ]
        );
        let cfg = mocca_runs::train::plan(&a.request())
            .map(|p| p.config().clone())
            .unwrap();
        assert_eq!(cfg.epochs, 5);
        assert_eq!(cfg.optimizer.lr, Some(0.25));
        let a = parse_args("moco --device cpu --precision bf16 --data /tmp/d").unwrap();
        assert_eq!(
            a.overrides.sets,
            [
                r#"run.device="cpu""#,
                r#"model.precision="bf16""#,
                r#"data.path="/tmp/d""#
            ]
        );
    }

    #[test]
    fn every_override_flag_sets_a_config_key() {
        for o in OVERRIDES {
            // A value of the kind the flag's value name says.
            let v = match o.value_name {
                "N" | "K" => "4096".to_string(),
                "X" => "0.5".to_string(),
                choices => choices.split('|').next().unwrap().to_string(),
            };
            let a = parse_args(&format!("mocov2 --{} {v}", o.flag)).unwrap();
            assert_eq!(a.overrides.sets, [o.assignment(&v)], "--{}", o.flag);
            let mut b = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
            b.set(&a.overrides.sets[0]).unwrap();
            let cfg = b
                .build()
                .unwrap_or_else(|e| panic!("--{} {v}: {e:#}", o.flag));
            assert_eq!(cfg.method, MethodName::Mocov2);
        }
    }

    #[test]
    fn a_misspelt_flag_suggests_the_right_one() {
        let err = crate::run(args("train moco --epoch 3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--epoch"), "{err}");
        assert!(err.contains("similar argument exists: '--epochs'"), "{err}");
        assert!(
            !err.starts_with("error:"),
            "cli_main adds the prefix: {err}"
        );
    }

    #[test]
    fn help_lists_every_option_with_its_default_and_returns() {
        assert!(crate::run(args("train --help")).is_ok());
        assert!(crate::run(args("train -h")).is_ok());
        assert!(crate::run(args("help train")).is_ok());
        let mut cli = crate::cli::Cli::command();
        let train = cli.find_subcommand_mut("train").unwrap();
        let help = train.render_help().to_string();
        for arg in train.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} missing:\n{help}"
            );
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            if takes_value && long != "help" {
                let text = arg.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(
                    text.contains("[default") || !arg.get_default_values().is_empty(),
                    "--{long} does not say its default: {text}"
                );
            }
        }
        for env in ["MOCCA_DATA", "MOCCA_NO_DOWNLOAD", "MOCCA_DOWNLOAD_MIRROR"] {
            assert!(help.contains(env), "{env} missing:\n{help}");
        }
    }

    #[test]
    fn no_download_is_a_flag_of_this_invocation_not_a_config_key() {
        let a = parse_args("moco --no-download --epochs 2").unwrap();
        assert!(a.no_download);
        assert!(!fetch::downloads_allowed(a.no_download));
        // It holds for this invocation only: nothing of it is saved with the run.
        assert!(!mocca_runs::train::plan(&a.request())
            .map(|p| p.config().clone())
            .unwrap()
            .to_toml()
            .contains("download"));
        assert!(!parse_args("moco").unwrap().no_download);
    }

    #[test]
    fn strict_turns_off_skipping_files_that_do_not_decode() {
        let plan = |args| mocca_runs::train::plan(&parse_args(args).unwrap().request()).unwrap();
        assert!(!plan("moco --strict").config().run.skip_bad_files);
        assert!(plan("moco").config().run.skip_bad_files);
    }

    #[test]
    fn recipe_flag_selects_the_paper_preset() {
        let a = parse_args("moco --recipe paper").unwrap();
        let cfg = mocca_runs::train::plan(&a.request())
            .map(|p| p.config().clone())
            .unwrap();
        assert_eq!(cfg.moco.unwrap().queue_size, 65536);
        assert_eq!(cfg.loss.temperature, 0.07);
    }

    #[test]
    fn bad_flag_values_are_errors_naming_the_flag() {
        let err = parse_args("moco --device tpu").err().unwrap().to_string();
        assert!(err.contains("device `tpu`"), "{err}");
        assert!(err.contains("--device"), "{err}");
        let err = parse_args("moco --frobnicate").err().unwrap().to_string();
        assert!(err.contains("--frobnicate"), "{err}");
        let a = parse_args("moco --epochs many").unwrap();
        let err = mocca_runs::train::plan(&a.request())
            .map(|p| p.config().clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochs"), "{err}");
    }

    #[test]
    fn method_is_required_without_a_config_file() {
        let a = parse_args("--epochs 3").unwrap();
        assert!(mocca_runs::train::plan(&a.request())
            .map(|p| p.config().clone())
            .unwrap_err()
            .to_string()
            .contains("which method"));
    }

    #[test]
    fn resume_takes_an_optional_folder() {
        let a = parse_args("--resume runs/a --knn-every 2").unwrap();
        assert_eq!(a.resume, Some(Some(PathBuf::from("runs/a"))));
        let a = parse_args("--resume --out runs/b").unwrap();
        assert_eq!(a.resume, Some(None));
        let a = parse_args("--out runs/b --resume").unwrap();
        assert_eq!(a.resume, Some(None));
    }
}

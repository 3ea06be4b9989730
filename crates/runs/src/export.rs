//! Exporting a run's trained backbone, as `cargo xtask export RUN --out
//! backbone.safetensors` does: the backbone alone, with torchvision's state-dict keys (`conv1.weight`,
//! `layer1.0.bn1.running_mean`, `num_batches_tracked` as int64), for
//! `torchvision.models.resnet18().load_state_dict(...)`.

use crate::folder::{checkpoint_path, load_checkpoint, read_checkpoint_meta};
use anyhow::Result;
use candle_core::Device;
use mocca_backbones::StateDict;
use mocca_recipes::config::{Arch, EncoderChoice, LayerChoice, Stem, TrainConfig};
use mocca_recipes::setup;
use std::path::Path;

/// Writes the backbone of `run`'s `encoder` (a run folder or checkpoint file) to `out` with
/// torchvision's key names, and prints the PyTorch lines that load it.
pub fn export(run: &Path, out: &Path, encoder: EncoderChoice) -> Result<()> {
    let ckpt = checkpoint_path(run)?;
    let cfg = read_checkpoint_meta(&ckpt)?.config;
    let source = setup::feature_source(&cfg, encoder, LayerChoice::Backbone)?;
    let (state, meta) = load_checkpoint(&ckpt, &Device::Cpu)?;
    let meta = meta.meta;
    let enc = setup::encoder_from_state(&cfg, source.encoder, &state, &Device::Cpu)?;
    let backbone = enc.backbone();
    backbone.save_safetensors(out)?;
    let n = backbone.state_dict()?.len();
    println!(
        "wrote {} ({n} tensors: {} backbone at step {}, torchvision key names)",
        out.display(),
        source.encoder,
        meta.global_step
    );
    println!(
        "load it in PyTorch with:\n{}",
        python_snippet(&cfg, &out.display().to_string())
    );
    Ok(())
}

/// The torchvision code that takes this backbone: the CIFAR stem and the
/// missing classifier need two attribute changes; other widths have no
/// torchvision constructor.
fn python_snippet(cfg: &TrainConfig, path: &str) -> String {
    let ctor = match cfg.model.arch {
        Arch::Resnet18 => "resnet18",
        Arch::Resnet34 => "resnet34",
        Arch::Resnet50 => "resnet50",
        Arch::VitTiny | Arch::VitSmall => {
            let name = if cfg.model.arch == Arch::VitTiny {
                "tiny"
            } else {
                "small"
            };
            let (s, p) = (
                cfg.data.image_size,
                cfg.model.vit_patch_size(cfg.data.image_size),
            );
            return format!(
                "  import timm\n  from safetensors.torch import load_file\n  model = \
                 timm.create_model(\"vit_{name}_patch16_224\", num_classes=0, img_size={s}, \
                 patch_size={p})\n  model.load_state_dict(load_file(\"{path}\"))"
            );
        }
    };
    let mut s = format!(
        "  import torch, torchvision\n  from safetensors.torch import load_file\n  model = torchvision.models.{ctor}()\n"
    );
    if cfg.model.stem == Stem::Cifar {
        s.push_str(
            "  model.conv1 = torch.nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)  # CIFAR stem\n  model.maxpool = torch.nn.Identity()\n",
        );
    }
    s.push_str(&format!(
        "  model.fc = torch.nn.Identity()  # no classifier was trained\n  model.load_state_dict(load_file(\"{path}\"))"
    ));
    if cfg.model.width != 1.0 {
        s.push_str(&format!(
            "\n  # note: width {} is not a torchvision width; build the model with matching channel counts",
            cfg.model.width
        ));
    }
    s
}

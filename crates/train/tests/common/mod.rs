//! Builders the trainer's integration tests share.

use candle_core::Device;
use mocca_backbones::{ResNetConfig, SimCLRProjectionHead, Stem};
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::LrSchedule;
use mocca_methods::{BackboneEncoder, Method, SimCLR, SimCLRConfig};

/// SimCLR on a width-0.125 CIFAR ResNet-18 (init seed 7), SGD at a constant `lr`.
pub fn simclr(lr: f64) -> Box<dyn Method> {
    let dev = Device::Cpu;
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        ..ResNetConfig::resnet18()
    };
    let head = SimCLRProjectionHead::new(backbone.feature_dim());
    let encoder = BackboneEncoder::new(&backbone, head.into(), 7, &dev).unwrap();
    let config = SimCLRConfig {
        temperature: 0.5,
        optimizer: OptimizerConfig::sgd(lr, 0.9, 5e-4),
        lr_schedule: LrSchedule::Constant { lr },
    };
    Box::new(SimCLR::new(config, encoder, &dev).unwrap())
}

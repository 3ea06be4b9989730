#!/usr/bin/env python3
"""Learning curves of the *reference implementations' own code*, on the CPU, at a small width.

This script runs three references beside mocca, so that our curves can be compared with theirs:

  colab-moco      MoCo v2 CIFAR-10 demo notebook (facebookresearch/moco, branch colab-notebook,
                  commit f7364915bc4e9161427d7c6bb4f454fa0f171337). Download:
                  https://raw.githubusercontent.com/facebookresearch/moco/colab-notebook/colab/moco_cifar10_demo.ipynb
  lightly-simclr  lightly's CIFAR-10 benchmark (lightly-ai/lightly,
  lightly-moco    docs/source/getting_started/benchmarks/cifar10_benchmark.py, commit
  lightly-byol    e8d317fc5a87f4387a85a35e689869039ec249ee), its SimCLRModel / MocoModel /
  lightly-simsiam BYOLModel / SimSiamModel. Download:
                  https://raw.githubusercontent.com/lightly-ai/lightly/master/docs/source/getting_started/benchmarks/cifar10_benchmark.py
  lemniscate-instdisc
                  InstDisc (Wu et al. 2018), its authors' code: zhirongw/lemniscate.pytorch, commit
                  f7cfe298357cb2b169cd59eb540aca24bed1f9b8, a checkout of the whole repository
                  (cifar.py imports its models/, lib/, datasets/ and test.py). Download:
                  git clone https://github.com/zhirongw/lemniscate.pytorch && git -C lemniscate.pytorch
                  checkout f7cfe29

  mocov3-official MoCo v3 (Chen, Xie & He 2021), its authors' code: facebookresearch/moco-v3,
                  commit c349e6e24f40d3fedb22d973f92defa4cedf37a7, a checkout of the repository
                  (moco/builder.py, moco/optimizer.py, moco/loader.py and main_moco.py's train
                  loop). Download: git clone https://github.com/facebookresearch/moco-v3

The reference files are NOT part of this repository and must never be copied into it: they are
taken by path (--colab, --lightly-benchmark, --lemniscate), their sha256 is checked (a mismatch
warns), and their code is executed (`exec` of the notebook's code cells / of the benchmark
module's text / of cifar.py's text with lemniscate's own packages imported from its folder) with
the smallest set of patches that lets it run on one CPU thread, at a width (and a batch size,
where the reference has one setting for it), on the local CIFAR-10 binary files. Their models,
losses, transforms, training steps, optimizers, lr schedules and kNN monitors are theirs,
unchanged. What this script writes itself: the data classes that serve the local binary files,
the narrow torchvision ResNet (colab), the per-epoch outer loop (colab, lemniscate) / the
Lightning Trainer and a recording Callback (lightly), and the metrics output.

Patches, colab-moco (moco_cifar10_demo.ipynb):
  C1  torch.Tensor.cuda and torch.nn.Module.cuda return self (CPU run; the notebook calls .cuda()).
  C2  torch.set_num_threads(1), set_num_interop_threads(1) (one core).
  C3  imports cell: the three `gpu_info` lines (IPython `!nvidia-smi -i 0` shell escape, not
      Python, and its print) are dropped.
  C4  after the imports cell, in the exec namespace: `tqdm` -> a silent pass-through with
      set_description (no progress bars in logs); `resnet` -> an object whose resnet18(num_classes,
      norm_layer) returns torchvision's ResNet with stage planes int(64*width*{1,2,4,8}) (see
      WidthResNet: torchvision's own __init__ and init loop run on the narrow layers); `CIFAR10`
      -> the CIFAR10 class of make_bin_cifar10(), which reads the local binary files (no
      download here) and behaves like torchvision's CIFAR10 (.data HWC uint8, .targets,
      .classes, PIL -> transform -> (img, target)),
      so the notebook's `CIFAR10Pair(CIFAR10)` subclasses it.
  C5  args cell: after it runs, args.epochs, args.batch_size, args.lr are set from the command line,
      args.results_dir points into --out (args.cos = True and everything else as the notebook sets).
  C6  data cell: `num_workers=16` -> `num_workers=0` (three DataLoaders; one process, one core).
  C7  encoder cell: `nn.Conv2d(3, 64,` -> `nn.Conv2d(3, int(64*width),` (the CIFAR stem conv
      that the notebook puts in place of conv1, at the stem width).
  C8  the last cell (optimizer, resume, training loop, checkpoint saving) is not executed; its
      optimizer line is executed as it stands, and this script's loop calls the notebook's
      train(model, train_loader, optimizer, epoch, args) for epoch 1..epochs, then its test().
  C9  kNN monitor: the notebook's test()/knn_predict on torch.utils.data.Subset views of its own
      memory/test datasets (evenly spaced indices; a Subset that also exposes .classes/.targets,
      which test() reads), every epoch and at epoch 0, on encoder_q (what the notebook scores,
      layer "head") and on encoder_q.net without its final fc (pooled, flattened backbone, layer
      "backbone"); after the last epoch also on the notebook's own full memory_loader/test_loader.
  C10 --limit-train N (smoke tests only): train_loader rebuilt over Subset(train_data, range(N))
      with the notebook's DataLoader arguments.
  C12 --stop-after-epochs N: the driver's epoch loop stops after epoch N of the --epochs
      schedule and runs no kNN (early-loss proxies, scripts/seed_tail.py); nothing else changes.
  C11 --seed S: random.seed(S); numpy.random.seed(S); torch.manual_seed(S) before the encoder cell.

Patches, lightly-simclr / lightly-moco (cifar10_benchmark.py), all text replacements:
  L1  `max_epochs = 200` -> --epochs;  `batch_size = 128` -> --batch-size (its own
      `lr_factor = batch_size / 128` then scales the lr, as lightly does).
  L2  `num_workers = 8` -> 0 (one process, one core).
  L3  `strategy = None` -> `"auto"` (PyTorch Lightning >= 2, as its own comment says);
      `devices = ...` -> 1, `accelerator = ...` -> "cpu".
  L4  every `ResNetGenerator("resnet-18"` -> `ResNetGenerator("resnet-18", width=W` (lightly's own
      width argument); `SimCLRProjectionHead(512, 512, 128)` and `MoCoProjectionHead(512, 512, 128)`
      -> `(F, F, 128)` with F = int(512*W) (hidden = feature width).
  L5  the module is cut before its bottom loop (`models = [` onwards), which is not executed.
  L6  lightly.data.LightlyDataset is replaced, before the exec, by the class of
      make_bin_lightly_dataset(), taking (input_dir, transform): the local binary files (train
      if "train" in input_dir else test), returning (transform(PIL image), target, filename) as
      LightlyDataset does.
  L7  if scikit-learn is not installed, a stub `sklearn.cluster.KMeans` (raises if used) is put in
      sys.modules: the module imports it at top level for SMoGModel only, which is never run.
  L8  torch.set_num_threads(1), set_num_interop_threads(1).
  L9  Trainer: pl.Trainer(max_epochs, accelerator="cpu", devices=1, logger=False,
      enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
      inference_mode=False, callbacks=[recorder]); trainer.fit(model, train_dataloaders=<its
      train_ssl loader>, val_dataloaders=<its test loader>). The sanity check is off because
      epoch 0 is measured by a full trainer.validate before fit (a separate Trainer with the
      same settings).
      inference_mode=False: validation runs under torch.no_grad() (as in Lightning 1.x, which the
      benchmark was written for) instead of torch.inference_mode(). With inference mode, lightly's
      SplitBatchNorm.train(False) (MocoModel) rebuilds its running_mean/var as inference tensors
      during validation and the next training step fails ("Inference tensors cannot be saved for
      backward"). No gradients either way; the same numbers.
  L10 kNN monitor: its BenchmarkModule validation (knn_predict, k 200, t 0.1, on the backbone)
      with its get_data_loaders() called on Subset views of its dataset_train_kNN / dataset_test
      (evenly spaced indices); after fit, model.dataloader_kNN is set to the full kNN loader and
      trainer.validate runs on the full test loader (the full protocol).
  L11 --limit-train N (smoke tests only): the SSL train dataset is Subset(range(N)).
  L12 --seed S: pl.seed_everything(S) before the datasets and the model are built, as its loop does.
  L13 module-level SwaV transform: `crop_max_scales=[1.0]` added beside its one crop size
      (crop_sizes=[32], crop_min_scales=[0.14]); lightly 1.6.0 requires one max scale per crop
      size and raises at import otherwise. SwaV is never run here; SimCLR/MoCo use
      simclr_transform, which is untouched.
  L14 MocoModel: `NTXentLoss(temperature=0.1, memory_bank_size=4096)` -> `memory_bank_size=(4096,
      128)`; lightly 1.6.0 no longer infers the feature dimension from the first batch and raises
      on a bare int. 128 is the output of its MoCoProjectionHead(..., 128); same bank, same loss.
  L15 (part of L4) BYOLModel: `BYOLProjectionHead(512, 1024, 256)` -> `(W*512, 1024, 256)`;
      SimSiamModel (and the other models whose heads start so): every projection head's first
      block `(512, 2048, ...)` -> `(W*512, 2048, ...)`:
      the heads' input is the narrow backbone's feature width; their hidden and output widths,
      the predictors and everything else are the benchmark's.

Patches, mocov3-official (moco-v3 at c349e6e; moco/builder.py, moco/optimizer.py,
moco/loader.py imported from the checkout; from main_moco.py the text of train(),
adjust_learning_rate(), adjust_moco_momentum(), AverageMeter and ProgressMeter is executed, not
its main(), which needs a distributed process group and ImageFolder):
  V1  torch.Tensor.cuda / nn.Module.cuda return self; torch.set_num_threads(1),
      set_num_interop_threads(1) (one core, as C1/C2).
  V2  one process: moco.builder.concat_all_gather is the identity and
      torch.distributed.get_rank() is 0 (the keys are the batch's own, as on one GPU).
  V3  base_encoder: torchvision's resnet18(zero_init_residual=True) at the width (the colab's
      WidthResNet, C4) with the CIFAR stem put in before MoCo builds and copies its encoders
      (conv1 3x3 stride 1 padding 1 without bias, PyTorch's default init; maxpool Identity);
      MoCo_ResNet(base_encoder, dim 256, mlp_dim 4096, T 1.0) as main_moco.py's defaults.
  V4  data: main_moco.py's augmentation1 / augmentation2 (BYOL's recipe, TwoCropsTransform, its
      Solarize) with two changes for 32 px CIFAR-10: RandomResizedCrop(224 -> 32) and no
      GaussianBlur (the two RandomApply([GaussianBlur]) lines dropped), as the CIFAR BYOL
      recipes of lightly and solo-learn; ImageNet normalisation as main_moco.py; the training
      images from the local binary files; DataLoader(shuffle=True, drop_last=True,
      num_workers=0) with --batch-size.
  V5  args: lr 0.6 x batch / 256 (main_moco.py scales it so), weight decay 1e-6, momentum 0.9,
      moco_m 0.99 with --moco-m-cos, warmup 10 epochs, --epochs; optimizer moco.optimizer.LARS
      as main_moco.py builds it; GradScaler and autocast as it calls them (both disabled on a
      CPU, which they say in a warning).
  V6  kNN monitor (not in moco-v3): lightly.utils.benchmarking.knn_predict (k 200, t 0.1),
      the protocol of the other runs, on the base encoder's pooled backbone features
      (L2-normalised), every epoch and at epoch 0 on the subsets, then on the full sets; the
      per-step loss is read from the SummaryWriter train() writes to (a recording stand-in).
  V7  --limit-train N (smoke tests only): the training set is Subset(range(N)).

Patches, lemniscate-instdisc (lemniscate.pytorch at f7cfe29: cifar.py, test.py, models/, lib/,
datasets/; every file's sha256 is checked, a mismatch warns):
  I1  torch.Tensor.cuda and torch.nn.Module.cuda return self (CPU run: test.py's kNN and
      NCEAverage's AliasMethod call .cuda()).
  I2  torch.set_num_threads(1), set_num_interop_threads(1) (one core).
  I3  the --lemniscate folder goes first on sys.path, so that cifar.py's `import models`,
      `import datasets`, `from lib... import`, `from test import NN, kNN` load lemniscate's own
      files (asserted by path; Python's own `test` package must not be loaded already). If SciPy is
      not installed, stub `scipy.ndimage(.filters, .interpolation)` modules whose functions raise
      are put in sys.modules: cifar.py imports lib/custom_transforms.py, which imports them at top
      level, and uses nothing from it.
  I4  data: while lemniscate's `datasets` package is imported, torchvision.datasets.CIFAR10 is the
      class of make_bin_cifar10_v02() (restored afterwards), so that its CIFAR10Instance, unchanged,
      subclasses it: the local binary files (`root`, `download=True` ignored: no download), and,
      for compatibility, torchvision 0.2's attribute names that CIFAR10Instance.__getitem__ and
      test.py read (train_data / train_labels / test_data / test_labels as aliases of .data /
      .targets; torchvision >= 0.3 renamed them and its CIFAR10Instance raises AttributeError).
  I5  cifar.py: `args = parser.parse_args()` -> parse_args(ARGV), ARGV = the README's CIFAR
      command `--nce-k 0 --nce-t 0.1 --lr 0.03` (full softmax, LinearAverage + CrossEntropyLoss),
      --nce-k / --nce-t / --lr from this script's command line (--nce-k 4096: cifar.py's own default,
      NCEAverage + NCECriterion); --low-dim 128 and --nce-m 0.5 are its defaults.
  I6  cifar.py: `device = 'cuda' if torch.cuda.is_available() else 'cpu'` -> `device = 'cpu'`.
  I7  cifar.py: `num_workers=2` -> `num_workers=0` (trainloader, testloader); test.py:
      `num_workers=1` -> `num_workers=0` (the recompute loader of NN and kNN). One process.
  I8  cifar.py is cut before its epoch loop (`for epoch in range(start_epoch, start_epoch+200):`
      and everything after it: training, kNN, checkpoint saving, the final kNN are not executed);
      this script calls its train(epoch) for epoch = 0 .. E-1 (counted from 0, as its loop does;
      its adjust_learning_rate runs inside train(), unchanged: lr 0.03 until epoch 80) and then
      the kNN monitor (I13).
  I9  width: models/resnet_cifar.py is executed with its widths replaced, W = --width:
      `self.in_planes = 64`, `nn.Conv2d(3, 64,`, `nn.BatchNorm2d(64)` (the stem) -> int(64*W);
      `_make_layer(block, 64|128|256|512,` -> int(64*W*{1,2,4,8}); `nn.Linear(512*block.expansion,
      low_dim)` -> `nn.Linear(int(512*W)*block.expansion, low_dim)`. It is registered as
      `models.resnet_cifar` before `models` is imported, so `models.__dict__['ResNet18']` in
      cifar.py is the narrow ResNet (asserted); nothing else in the file changes.
  I10 compatibility: test.py `targets.cuda(async=True)` -> `targets.cuda(non_blocking=True)` (4x):
      `async` is a reserved word since Python 3.7 and the file does not parse otherwise.
  I11 compatibility, NCE only (--nce-k > 0): lib/NCEAverage.py backward,
      `gradOutput.data.resize_(batchSize, 1, K+1)` -> `gradOutput = gradOutput.data.resize_(...)`:
      in PyTorch 0.4 resizing `.data` resized the tensor itself; since 1.0 `.data` is a new alias
      each time, so the next line's `torch.bmm(gradOutput.data, weight)` received the 2-D tensor
      ("batch1 must be a 3D tensor"). The same resize, kept. (forward's `x.data.resize_(B, D, 1)`
      is used inline and still works; the `x.data.resize_(B, D)` after it restored a shape that no
      longer changes.) Checked: the loss, the gradient and the bank update equal an autograd
      re-implementation of NCEAverage + NCECriterion on the same draws (4e-8).
      lib/LinearAverage.py (the default, --nce-k 0) runs unpatched.
  I12 loss record: cifar.py's `criterion` is wrapped, in the exec namespace, by a recorder that
      calls it unchanged and keeps loss.item() and the batch size; an epoch's loss_mean is what its
      train() keeps in its AverageMeter (mean weighted by batch size), which train() prints per
      batch but does not return. train()'s per-batch print is unchanged (stdout).
  I13 kNN monitor, the parity protocol: test.py's own kNN(epoch, net, lemniscate, trainloader,
      testloader, 200, args.nce_t, recompute_memory=1), what cifar.py runs once after training
      (training features recomputed with the test transform in eval mode; weighted vote, k 200,
      sigma = nce_t = 0.1), on evenly spaced subsets of 10,000 train / 2,000 test images (Subset
      views exposing train_labels, and the transform that kNN swaps for the test transform,
      forwarded to the dataset; batch 100, shuffle off, as cifar.py's testloader), at epoch 0 and
      after every epoch; after the last epoch on the full sets (cifar.py's trainset and
      testloader: 50,000 / 10,000; its last line). `lemniscate` is a stand-in whose `.memory` is a
      zero scratch tensor (n_train x dim): kNN's recompute writes the features into
      `lemniscate.memory.t()`, which during training would overwrite the training bank. Layers:
      "head" = net itself (the 128-d L2-normalised output that lemniscate scores) and "backbone" =
      the input of net.linear (the pooled layer4, captured by a forward hook on the unchanged
      net), L2-normalised (kNN scores raw inner products; the net normalises only the head).
      This is what the colab (C9) and lightly (L10) runs and `cargo xtask train --knn-every 1
      --knn-train-limit 10000 --knn-test-limit 2000` measure: recomputed features on the same
      evenly spaced images. lemniscate's own per-epoch monitor is different: kNN(...,
      recompute_memory=0) scores the full test set against the memory bank (features of augmented
      views, each up to an epoch old, momentum-averaged); that is I14, off by default.
  I14 --bank-knn: also lemniscate's own per-epoch monitor, kNN(epoch, net, lemniscate,
      trainloader, testloader, 200, args.nce_t, 0) with the real bank, after every epoch; recorded
      as kind "knn_bank" (learning_curves.py does not read it).
  I15 --limit-train N (smoke tests only): trainloader rebuilt over Subset(trainset, range(N)) with
      cifar.py's DataLoader arguments (batch 128, shuffle); the bank keeps its 50,000 rows.
      --no-full-knn (smoke tests and timing only) skips the full-protocol kNN at the end.
  I16 --seed S: random.seed(S); numpy.random.seed(S); torch.manual_seed(S) before cifar.py runs
      (it seeds nothing; the first draws are the network's initial weights).
  Left as it is (a difference from mocca's `instdisc` recipe, not patched): cifar.py's
  DataLoader keeps the last partial batch (391 steps an epoch, the last of 80 images); mocca
  drops it (390). Batch 128 is cifar.py's own, fixed (no --batch-size for this reference).

Output (--out DIR): metrics.jsonl (mocca's trainer schema: "knn" and "epoch" records, flushed as
they happen) and run.json (reference, sha256s, versions, settings, threads, CPU, times, images/s).

Usage:
  reference_curves.py colab-moco     --colab NB --data DIR --out DIR --seed S [--width 0.125]
        [--batch-size 256] [--epochs 10] [--lr 0.03] [--knn-train-limit 10000]
        [--knn-test-limit 2000] [--limit-train N]
  reference_curves.py lightly-simclr --lightly-benchmark PY --data DIR --out DIR --seed S [...]
  reference_curves.py lightly-moco   --lightly-benchmark PY --data DIR --out DIR --seed S [...]
  reference_curves.py lemniscate-instdisc --lemniscate DIR --data DIR --out DIR --seed S
        [--width 0.125] [--epochs 10] [--lr 0.03] [--nce-k 0] [--nce-t 0.1]
        [--knn-train-limit 10000] [--knn-test-limit 2000] [--bank-knn] [--limit-train N]
        [--no-full-knn]
  reference_curves.py init-stats --colab NB --lightly-benchmark PY --out FILE [--width 0.125]
Needs: torch, torchvision, lightly, pytorch_lightning, pandas, numpy, pillow (lemniscate-instdisc:
torch, torchvision, numpy, pillow).
"""
import argparse
import datetime
import functools
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
import types

import numpy as np

COLAB_SHA256 = "9f1ecd3668e1d85573011815240ac4a2d6ac2f00058a0c2bd01bdb2a8d03160b"
LIGHTLY_SHA256 = "c51bd23b9d6c95883f684a73ba4b26a462d5faf6bb1dc55ee60ba6694b6da154"
COLAB_URL = ("https://raw.githubusercontent.com/facebookresearch/moco/colab-notebook/colab/"
             "moco_cifar10_demo.ipynb")
LIGHTLY_URL = ("https://raw.githubusercontent.com/lightly-ai/lightly/master/docs/source/"
               "getting_started/benchmarks/cifar10_benchmark.py")
LEMNISCATE_URL = "https://github.com/zhirongw/lemniscate.pytorch"
LEMNISCATE_COMMIT = "f7cfe298357cb2b169cd59eb540aca24bed1f9b8"
# Every file of that commit that `cifar.py` executes or imports (directly or through a package).
LEMNISCATE_SHA256 = {
    "cifar.py": "55547b89849c2405a5366d17dcd43cc825a144efde247f35ba98afff89a6d24e",
    "test.py": "6e018778b395f92515a1a80417102131949e1a1e4ff38d535092a3d1fb1a5da3",
    "lib/__init__.py": "5e49ea838dc30f3eeacf6ca7815f6e3adcf77f467a970d978676790fd90377e1",
    "lib/LinearAverage.py": "0ef7fe6b00f53420d507a258f58856fef0bd893978c90c5b22583c6965714712",
    "lib/NCEAverage.py": "06cc436d40adad916ce998eca0cf267e1ea08d0c239bd0901710767686ed1621",
    "lib/NCECriterion.py": "f9118878d0b51fc4d843399572a5a9dd6b8512b8473363a26542026cfc0890c4",
    "lib/alias_multinomial.py": "ea090455e6b9898e75478a0d2e6a56301564cc964ab36b34d0d58fb1b2231fdf",
    "lib/custom_transforms.py": "ea909eeb54a27a9f557efffc855113aba5164a2da9a17f6b9f1d41a80ede188a",
    "lib/normalize.py": "c3d8652a6a04399659d269dc89a85eab566e237a4758db32910ad4b3ef5e8c99",
    "lib/utils.py": "d03f7562a00665a97c9f1d89700d6cd629d81a0d6daab8f85aabf4a26dd8764a",
    "models/__init__.py": "eef5d47b9fc520b9da7202fa4818baddedff78a126fc0730c97249d5972aee8c",
    "models/resnet.py": "2814268b3fc9cb15e7b6e398d116feb97627409120dbe91319e8d44f4539ea0c",
    "models/resnet_cifar.py": "3515516a48c4feb363cefb07f61a80793dc587561d9ff6eb132e00cbeff78f58",
    "datasets/__init__.py": "ef2cbdd81206789f156b0af02cec96a0549d10a01f40e78fd8cd6447605db04f",
    "datasets/cifar.py": "921aa47fef068ebaa59b9cc8a6a6e6c55bb17e0b55053b11684aab3a4741414c",
    "datasets/folder.py": "6492e71f8f0e14cdba317ccdbde51132b0e16de1885b1d678642d07db6aa3bfc",
    "datasets/mnist.py": "dd6ce7c2c066e49719859cc370d17857f2375cbb57236896f92f285bb8e78758",
}


# ----------------------------------------------------------------------------- utilities

def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha(path, expected, what):
    got = sha256_of(path)
    if got != expected:
        print(f"WARNING: {what} {path} has sha256 {got}, expected {expected}; "
              "running it anyway", file=sys.stderr, flush=True)
    return got


def replace_exact(text, old, new, count=None, what=""):
    """Text patch; fails loudly if the reference does not contain `old` (count times)."""
    n = text.count(old)
    if n == 0 or (count is not None and n != count):
        raise SystemExit(f"patch {what!r}: expected {count or '>=1'} occurrence(s) of {old!r}, "
                         f"found {n}; is this the right reference file?")
    return text.replace(old, new)


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def set_threads():
    import torch
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def seed_all(s):
    import torch
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def even_indices(n_total, limit):
    if limit is None or limit <= 0 or limit >= n_total:
        return list(range(n_total))
    return [i * n_total // limit for i in range(limit)]


class Metrics:
    """metrics.jsonl writer, one flushed line per record."""

    def __init__(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        self.f = open(os.path.join(out_dir, "metrics.jsonl"), "a", buffering=1)

    def write(self, rec):
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())
        print("metrics:", json.dumps(rec), flush=True)

    def knn(self, step, epoch, top1, k, t, layer, n_train, n_test):
        self.write({"kind": "knn", "step": int(step), "epoch": int(epoch),
                    "top1": round(float(top1), 4), "k": int(k), "t": float(t),
                    "encoder": "query", "layer": layer,
                    "n_train": int(n_train), "n_test": int(n_test)})

    def epoch(self, step, epoch, loss_mean, seconds, extra=None):
        self.write({"kind": "epoch", "step": int(step), "epoch": int(epoch),
                    "loss_mean": round(float(loss_mean), 6), "seconds": round(float(seconds), 3),
                    **(extra or {})})


# ----------------------------------------------------------------------------- data

@functools.lru_cache(maxsize=None)
def load_cifar_bin(data_dir, train):
    """CIFAR-10 binary format: 1 label byte + R, G, B planes of 32x32. -> (N,32,32,3) uint8, labels."""
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    raw = np.concatenate([np.fromfile(os.path.join(data_dir, f), dtype=np.uint8) for f in files])
    raw = raw.reshape(-1, 3073)
    labels = raw[:, 0].astype(np.int64)
    data = np.ascontiguousarray(raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return data, [int(x) for x in labels]


def cifar_classes(data_dir):
    with open(os.path.join(data_dir, "batches.meta.txt")) as f:
        names = [ln.strip() for ln in f if ln.strip()]
    assert len(names) == 10, names
    return names


def make_bin_cifar10(data_dir):
    """A stand-in for torchvision.datasets.CIFAR10 over the local binary files."""
    import torch
    from PIL import Image

    class CIFAR10(torch.utils.data.Dataset):
        def __init__(self, root=None, train=True, transform=None, target_transform=None,
                     download=False):
            self.root, self.train = root, train
            self.transform, self.target_transform = transform, target_transform
            self.data, self.targets = load_cifar_bin(data_dir, bool(train))
            self.targets = list(self.targets)
            self.classes = cifar_classes(data_dir)
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        def __getitem__(self, index):
            img, target = self.data[index], self.targets[index]
            img = Image.fromarray(img)
            if self.transform is not None:
                img = self.transform(img)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return img, target

        def __len__(self):
            return len(self.data)

    return CIFAR10


def make_bin_lightly_dataset(data_dir):
    """A stand-in for lightly.data.LightlyDataset(input_dir, transform) over the local files."""
    import torch
    from PIL import Image

    class LightlyDataset(torch.utils.data.Dataset):
        def __init__(self, input_dir, transform=None, **kwargs):
            self.input_dir = input_dir
            self.transform = transform
            self.train = "train" in str(input_dir)
            self._classes = cifar_classes(data_dir)
            self._arrays = None  # loaded on first use (init-stats never reads images)

        def _load(self):
            if self._arrays is None:
                self._arrays = load_cifar_bin(data_dir, self.train)
            return self._arrays

        def __getitem__(self, index):
            data, targets = self._load()
            target = targets[index]
            img = Image.fromarray(data[index])
            if self.transform is not None:
                img = self.transform(img)
            fname = f"{self._classes[target]}/{index}.png"
            return img, target, fname

        def __len__(self):
            return len(self._load()[0])

    return LightlyDataset


def monitor_subset(dataset, indices):
    """torch Subset that also exposes .classes and .targets (the colab's test() reads them)."""
    from torch.utils.data import Subset

    class MonitorSubset(Subset):
        @property
        def classes(self):
            return self.dataset.classes

        @property
        def targets(self):
            t = self.dataset.targets
            return [t[i] for i in self.indices]

    return MonitorSubset(dataset, indices)


# ----------------------------------------------------------------------------- colab width

def make_width_resnet_module(width):
    """Object with resnet18(num_classes, norm_layer): torchvision ResNet at a width multiplier."""
    import torch.nn as nn
    from torchvision.models.resnet import BasicBlock, ResNet

    stem = int(64 * width)

    class WidthResNet(ResNet):
        def __init__(self, block, layers, **kw):
            self._width = width
            self._started = False
            super().__init__(block, layers, **kw)
            # torchvision builds fc as Linear(512*expansion, ...) after the layers; rebuild it
            # at the narrow feature width (torchvision's init loop leaves Linear at its default).
            self.fc = nn.Linear(int(512 * width) * block.expansion, self.fc.out_features)

        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if not self._started:
                # first stage: start at the stem width; rebuild the (7x7) conv1 and bn1 there,
                # before torchvision's init loop runs over self.modules().
                self._started = True
                self.inplanes = stem
                self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
                self.bn1 = self._norm_layer(stem)
            planes = int(64 * width * (planes // 64))
            return super()._make_layer(block, planes, blocks, stride=stride, dilate=dilate)

    def resnet18(num_classes=1000, norm_layer=None, **kw):
        return WidthResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes,
                           norm_layer=norm_layer, **kw)

    return types.SimpleNamespace(resnet18=resnet18, WidthResNet=WidthResNet)


class QuietTqdm:
    """Pass-through replacement for tqdm in the exec namespace."""

    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self):
        return len(self.iterable)

    def set_description(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass

    def close(self):
        pass


def patch_cuda_noop():
    import torch
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self


# ----------------------------------------------------------------------------- colab runner

def colab_code_cells(path):
    with open(path) as f:
        nb = json.load(f)
    cells = []
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            src = c["source"]
            cells.append("".join(src) if isinstance(src, list) else src)
    return cells


def colab_prepare(nb_path, data_dir, width, seed, overrides=None, upto_model=False,
                  defs_only=False):
    """Exec the notebook's code cells (patched) into a namespace. Returns (ns, last_cell)."""
    cells = colab_code_cells(nb_path)
    last = cells[-1]
    assert "torch.optim.SGD" in last and "training loop" in last, "unexpected last cell"
    stem = int(64 * width)
    ns = {"__name__": "__colab__"}
    for src in cells[:-1]:
        if "!nvidia-smi" in src:
            # C3: IPython shell escape + its print
            for line in ["gpu_info = !nvidia-smi -i 0\n", "gpu_info = '\\n'.join(gpu_info)\n",
                         "print(gpu_info)\n"]:
                src = replace_exact(src, line, "", 1, "C3 drop nvidia-smi")
        if "class CIFAR10Pair" in src:
            if defs_only:
                continue
            src = replace_exact(src, "num_workers=16", "num_workers=0", 3, "C6 num_workers")
        if "class ModelBase" in src:
            src = replace_exact(src, "nn.Conv2d(3, 64,", f"nn.Conv2d(3, {stem},", 1, "C7 stem")
            if seed is not None:
                seed_all(seed)  # C11
        if "model = ModelMoCo(" in src and defs_only:
            # init-stats: only the definitions are needed; build nothing
            src = src[: src.index("# create model")]
        if defs_only and ("def train(" in src or "def test(" in src):
            continue
        if defs_only and "parser = argparse" in src:
            continue
        exec(compile(src, nb_path, "exec"), ns)
        if "from torchvision.datasets import CIFAR10" in src:
            # C4
            ns["tqdm"] = QuietTqdm
            ns["resnet"] = make_width_resnet_module(width)
            ns["CIFAR10"] = make_bin_cifar10(data_dir)
        if "args = parser.parse_args('')" in src and overrides:
            for k, v in overrides.items():  # C5
                setattr(ns["args"], k, v)
            print("args after overrides:", ns["args"], flush=True)
    return ns, last


def run_colab(a):
    import torch
    from torch.utils.data import DataLoader, Subset

    set_threads()
    patch_cuda_noop()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sha = check_sha(a.colab, COLAB_SHA256, "colab notebook")
    overrides = {"epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr, "cos": True,
                 "results_dir": os.path.join(out, "colab_results")}
    info = run_info_start(a, "colab-moco", {"colab": {"path": os.path.abspath(a.colab),
                                                     "sha256": sha, "expected": COLAB_SHA256,
                                                     "url": COLAB_URL}})
    t_start = time.time()
    ns, last = colab_prepare(a.colab, a.data, a.width, a.seed, overrides)
    args, model = ns["args"], ns["model"]
    assert args.cos is True and args.epochs == a.epochs

    # C8: the optimizer line of the last cell, as it stands
    opt_lines = [ln for ln in last.splitlines() if ln.startswith("optimizer = ")]
    assert opt_lines == ["optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, "
                         "weight_decay=args.wd, momentum=0.9)"], opt_lines
    exec(opt_lines[0], ns)
    optimizer = ns["optimizer"]

    train_loader = ns["train_loader"]
    if a.limit_train:  # C10
        train_loader = DataLoader(Subset(ns["train_data"], range(a.limit_train)),
                                  batch_size=args.batch_size, shuffle=True, num_workers=0,
                                  pin_memory=True, drop_last=True)
    memory_data, test_data = ns["memory_data"], ns["test_data"]
    tr_idx = even_indices(len(memory_data), a.knn_train_limit)
    te_idx = even_indices(len(test_data), a.knn_test_limit)
    # C9: same DataLoader arguments as the notebook's memory/test loaders
    mem_sub = DataLoader(monitor_subset(memory_data, tr_idx), batch_size=args.batch_size,
                         shuffle=False, num_workers=0, pin_memory=True)
    test_sub = DataLoader(monitor_subset(test_data, te_idx), batch_size=args.batch_size,
                          shuffle=False, num_workers=0, pin_memory=True)
    train, test = ns["train"], ns["test"]
    metrics = Metrics(out)
    backbone = torch.nn.Sequential(*list(model.encoder_q.net.children())[:-1])
    assert isinstance(list(model.encoder_q.net.children())[-1], torch.nn.Linear)

    def monitor(epoch, step, mem_loader, tst_loader):
        for layer, net in (("head", model.encoder_q), ("backbone", backbone)):
            t0 = time.time()
            acc = test(net, mem_loader, tst_loader, epoch, args)
            metrics.knn(step, epoch, acc, args.knn_k, args.knn_t, layer,
                        len(mem_loader.dataset), len(tst_loader.dataset))
            print(f"  kNN {layer}: {acc:.2f}% ({time.time() - t0:.1f}s)", flush=True)

    stop = a.stop_after_epochs
    if not stop:
        monitor(0, 0, mem_sub, test_sub)
    steps_per_epoch = len(train_loader)
    train_seconds, steps = 0.0, 0
    for epoch in range(1, (stop or args.epochs) + 1):
        t0 = time.time()
        loss = train(model, train_loader, optimizer, epoch, args)
        dt = time.time() - t0
        train_seconds += dt
        steps += steps_per_epoch
        metrics.epoch(steps, epoch, loss, dt)
        print(f"epoch {epoch}/{args.epochs} loss {loss:.4f} lr "
              f"{optimizer.param_groups[0]['lr']:.6f} {dt:.1f}s "
              f"({steps_per_epoch * args.batch_size / dt:.1f} img/s)", flush=True)
        if not stop:
            monitor(epoch, steps, mem_sub, test_sub)
    # full protocol on the notebook's own loaders
    if not stop:
        monitor(args.epochs, steps, ns["memory_loader"], ns["test_loader"])
    run_info_end(info, out, t_start, train_seconds, steps * args.batch_size,
                 extra={"colab_args": vars(args), "steps_per_epoch": steps_per_epoch})


# ----------------------------------------------------------------------------- lightly runner

def lightly_prepare(path, data_dir, width, epochs, batch_size):
    """Exec the benchmark module (patched, bottom loop cut) into a namespace."""
    import lightly.data

    lightly.data.LightlyDataset = make_bin_lightly_dataset(data_dir)  # L6
    try:
        import sklearn.cluster  # noqa: F401
    except ImportError:  # L7
        sk = types.ModuleType("sklearn")
        skc = types.ModuleType("sklearn.cluster")

        class KMeans:
            def __init__(self, *a, **k):
                raise RuntimeError("scikit-learn is not installed (stub for SMoGModel only)")

        skc.KMeans = KMeans
        sk.cluster = skc
        sys.modules.setdefault("sklearn", sk)
        sys.modules.setdefault("sklearn.cluster", skc)
    with open(path) as f:
        src = f.read()
    feat = int(512 * width)
    src = replace_exact(src, "\nmodels = [\n", "\n__CUT__", 1, "L5")
    src = src[: src.index("\n__CUT__")] + "\n"
    src = replace_exact(src, "\nmax_epochs = 200\n", f"\nmax_epochs = {epochs}\n", 1, "L1")
    src = replace_exact(src, "\nbatch_size = 128\n", f"\nbatch_size = {batch_size}\n", 1, "L1")
    src = replace_exact(src, "\nnum_workers = 8\n", "\nnum_workers = 0\n", 1, "L2")
    src = replace_exact(src, "    strategy = None", '    strategy = "auto"', 1, "L3")
    src = replace_exact(src, "devices = torch.cuda.device_count() if torch.cuda.is_available() "
                        "else 1\n", "devices = 1\n", 1, "L3")
    src = replace_exact(src, 'accelerator = "gpu" if torch.cuda.is_available() else "cpu"\n',
                        'accelerator = "cpu"\n', 1, "L3")
    src = replace_exact(src, 'ResNetGenerator("resnet-18"',
                        f'ResNetGenerator("resnet-18", width={width!r}', None, "L4")
    src = replace_exact(src, "SimCLRProjectionHead(512, 512, 128)",
                        f"SimCLRProjectionHead({feat}, {feat}, 128)", None, "L4")
    src = replace_exact(src, "MoCoProjectionHead(512, 512, 128)",
                        f"MoCoProjectionHead({feat}, {feat}, 128)", 1, "L4")
    src = replace_exact(src, "BYOLProjectionHead(512, 1024, 256)",
                        f"BYOLProjectionHead({feat}, 1024, 256)", 1, "L15")
    src = replace_exact(src, "(512, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),",
                        f"({feat}, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),", None, "L15")
    # L13: lightly 1.6.0's SwaVTransform checks len(crop_max_scales) == len(crop_sizes)
    src = replace_exact(src, "    crop_min_scales=[0.14],\n",
                        "    crop_min_scales=[0.14],\n    crop_max_scales=[1.0],\n", 1, "L13")
    # L14: lightly 1.6.0's memory bank needs (size, dim); dim = the MoCo head's output, 128
    src = replace_exact(src, "memory_bank_size=4096,", "memory_bank_size=(4096, 128),", 1, "L14")
    ns = {"__name__": "cifar10_benchmark", "__file__": os.path.abspath(path)}
    exec(compile(src, path, "exec"), ns)
    return ns


def run_lightly(a, model_name):
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import Subset

    set_threads()  # L8
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sha = check_sha(a.lightly_benchmark, LIGHTLY_SHA256, "lightly benchmark")
    ref = {"SimCLRModel": "lightly-simclr", "MocoModel": "lightly-moco",
           "BYOLModel": "lightly-byol", "SimSiamModel": "lightly-simsiam"}[model_name]
    info = run_info_start(a, ref, {"lightly_benchmark": {
        "path": os.path.abspath(a.lightly_benchmark), "sha256": sha, "expected": LIGHTLY_SHA256,
        "url": LIGHTLY_URL}})
    t_start = time.time()
    ns = lightly_prepare(a.lightly_benchmark, a.data, a.width, a.epochs, a.batch_size)
    Model = ns[model_name]

    pl.seed_everything(a.seed)  # L12
    ds_ssl = ns["create_dataset_train_ssl"](Model)
    if a.limit_train:  # L11
        ds_ssl = Subset(ds_ssl, range(a.limit_train))
    full_knn, full_test = ns["dataset_train_kNN"], ns["dataset_test"]
    tr_idx = even_indices(len(full_knn), a.knn_train_limit)
    te_idx = even_indices(len(full_test), a.knn_test_limit)
    # L10: its own get_data_loaders() over Subset views, then over the full datasets
    ns["dataset_train_kNN"], ns["dataset_test"] = Subset(full_knn, tr_idx), Subset(full_test, te_idx)
    dl_ssl, dl_knn_sub, dl_test_sub = ns["get_data_loaders"](batch_size=ns["batch_size"],
                                                             dataset_train_ssl=ds_ssl)
    ns["dataset_train_kNN"], ns["dataset_test"] = full_knn, full_test
    _, dl_knn_full, dl_test_full = ns["get_data_loaders"](batch_size=ns["batch_size"],
                                                          dataset_train_ssl=ds_ssl)
    model = Model(dl_knn_sub, ns["classes"])
    print(model, flush=True)
    metrics = Metrics(out)

    class Recorder(pl.Callback):
        def __init__(self):
            self.epochs_started = 0
            self.losses = []
            self.t0 = self.t_last = None
            self.pending = False
            self.train_seconds = 0.0
            self.steps = 0
            self.val_sizes = (len(dl_knn_sub.dataset), len(dl_test_sub.dataset))

        def on_train_epoch_start(self, trainer, pl_module):
            self.epochs_started += 1
            self.losses = []
            self.t0 = time.time()
            self.t_last = self.t0
            self.pending = True
            self.lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss.detach()))
            self.t_last = time.time()

        def _flush_epoch(self, trainer):
            if not self.pending:
                return
            self.pending = False
            dt = self.t_last - self.t0
            self.train_seconds += dt
            self.steps = trainer.global_step
            n = len(self.losses)
            metrics.epoch(trainer.global_step, self.epochs_started, sum(self.losses) / max(n, 1),
                          dt)
            print(f"epoch {self.epochs_started}/{a.epochs} loss {sum(self.losses) / max(n, 1):.4f}"
                  f" lr {self.lr:.6f} {dt:.1f}s ({n * a.batch_size / max(dt, 1e-9):.1f} img/s)",
                  flush=True)

        def on_validation_start(self, trainer, pl_module):
            self._flush_epoch(trainer)
            self.tv = time.time()

        def on_train_epoch_end(self, trainer, pl_module):
            self._flush_epoch(trainer)

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            acc = trainer.callback_metrics["kNN_accuracy"]
            metrics.knn(trainer.global_step, self.epochs_started, float(acc), pl_module.knn_k,
                        pl_module.knn_t, "backbone", *self.val_sizes)
            print(f"  kNN backbone: {float(acc):.2f}% ({time.time() - self.tv:.1f}s)", flush=True)

    rec = Recorder()

    def make_trainer():
        return pl.Trainer(max_epochs=ns["max_epochs"], accelerator=ns["accelerator"],
                          devices=ns["devices"], strategy=ns["strategy"], logger=False,
                          enable_checkpointing=False, enable_progress_bar=False,
                          num_sanity_val_steps=0, inference_mode=False, callbacks=[rec])

    make_trainer().validate(model, dataloaders=dl_test_sub, verbose=False)  # epoch 0
    trainer = make_trainer()
    trainer.fit(model, train_dataloaders=dl_ssl, val_dataloaders=dl_test_sub)
    # full protocol
    model.dataloader_kNN = dl_knn_full
    rec.val_sizes = (len(dl_knn_full.dataset), len(dl_test_full.dataset))
    trainer.validate(model, dataloaders=dl_test_full, verbose=False)
    run_info_end(info, out, t_start, rec.train_seconds, rec.steps * ns["batch_size"],
                 extra={"lightly_settings": {k: ns[k] for k in (
                     "max_epochs", "num_workers", "knn_k", "knn_t", "classes", "batch_size",
                     "lr_factor", "devices", "accelerator", "strategy")},
                     # SimSiamModel alone does not scale its lr with the batch.
                     "lightly_lr": 6e-2 * (1 if model_name == "SimSiamModel"
                                           else ns["lr_factor"]), "model": model_name,
                     "steps_per_epoch": len(dl_ssl), "max_accuracy": model.max_accuracy})


# ----------------------------------------------------------------------------- lemniscate runner

def make_bin_cifar10_v02(data_dir):
    """make_bin_cifar10()'s class with torchvision 0.2's attribute names (I4), which
    lemniscate's CIFAR10Instance.__getitem__ and test.py read."""
    base = make_bin_cifar10(data_dir)

    class CIFAR10(base):
        train_data = property(lambda self: self.data)
        test_data = property(lambda self: self.data)
        train_labels = property(lambda self: self.targets)
        test_labels = property(lambda self: self.targets)

    return CIFAR10


def lemniscate_subset(dataset, indices):
    """Subset for test.py's kNN (I13): exposes train_labels (kNN reads
    trainloader.dataset.train_labels) and forwards .transform (kNN swaps it) to the dataset."""
    from torch.utils.data import Subset

    class KnnSubset(Subset):
        @property
        def train_labels(self):
            t = self.dataset.targets
            return [t[i] for i in self.indices]

        @property
        def transform(self):
            return self.dataset.transform

        @transform.setter
        def transform(self, value):
            self.dataset.transform = value

    return KnnSubset(dataset, indices)


def stub_scipy_if_missing():
    """I3: lib/custom_transforms.py imports scipy.ndimage at top level; cifar.py uses none of it."""
    try:
        import scipy.ndimage  # noqa: F401
        return False
    except ImportError:
        pass

    def missing(*a, **k):
        raise RuntimeError("SciPy is not installed (stub for lib/custom_transforms.py only)")

    sp = types.ModuleType("scipy")
    nd = types.ModuleType("scipy.ndimage")
    filters = types.ModuleType("scipy.ndimage.filters")
    interp = types.ModuleType("scipy.ndimage.interpolation")
    filters.gaussian_filter = nd.gaussian_filter = missing
    interp.map_coordinates = interp.rotate = interp.zoom = missing
    nd.filters, nd.interpolation, sp.ndimage = filters, interp, nd
    for name, mod in (("scipy", sp), ("scipy.ndimage", nd), ("scipy.ndimage.filters", filters),
                      ("scipy.ndimage.interpolation", interp)):
        sys.modules.setdefault(name, mod)
    return True


def lemniscate_check(root):
    """sha256 of every file cifar.py runs (a mismatch warns) and the checkout's commit."""
    files = {}
    for rel, expected in LEMNISCATE_SHA256.items():
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: --lemniscate must be a checkout of "
                             f"{LEMNISCATE_URL} at {LEMNISCATE_COMMIT[:7]}")
        files[rel] = {"sha256": check_sha(path, expected, f"lemniscate {rel}"),
                      "expected": expected}
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    if commit and commit != LEMNISCATE_COMMIT:
        print(f"WARNING: {root} is at commit {commit}, expected {LEMNISCATE_COMMIT}",
              file=sys.stderr, flush=True)
    return {"path": os.path.abspath(root), "commit": commit, "expected_commit": LEMNISCATE_COMMIT,
            "url": LEMNISCATE_URL, "files": files}


def lemniscate_module(root, rel, name, patches=()):
    """Exec one of lemniscate's files, text-patched, as module `name` (registered in
    sys.modules before it runs, as an import would)."""
    path = os.path.join(root, rel)
    with open(path) as f:
        src = f.read()
    for old, new, count, what in patches:
        src = replace_exact(src, old, new, count, what)
    mod = types.ModuleType(name)
    mod.__file__ = os.path.abspath(path)
    mod.__package__ = name.rpartition(".")[0]
    sys.modules[name] = mod
    exec(compile(src, path, "exec"), mod.__dict__)
    return mod


def lemniscate_prepare(root, data_dir, width, argv, seed):
    """Import lemniscate's packages from `root` (patched) and exec cifar.py up to its epoch loop."""
    import torchvision.datasets

    root = os.path.abspath(root)
    for name in ("test", "models", "datasets", "lib"):  # I3
        m = sys.modules.get(name)
        if m is not None and not os.path.abspath(getattr(m, "__file__", "") or "").startswith(root):
            raise SystemExit(f"a module named {name!r} is already imported from "
                             f"{getattr(m, '__file__', None)}; lemniscate's would be shadowed")
    sys.path.insert(0, root)
    stubbed = stub_scipy_if_missing()

    # I4: CIFAR10Instance subclasses the stand-in
    tv_cifar10 = torchvision.datasets.CIFAR10
    stand_in = make_bin_cifar10_v02(data_dir)
    torchvision.datasets.CIFAR10 = stand_in
    try:
        import datasets as lem_datasets
    finally:
        torchvision.datasets.CIFAR10 = tv_cifar10
    assert issubclass(lem_datasets.CIFAR10Instance, stand_in), "CIFAR10Instance's base"

    # I9: the narrow ResNet, in place before `models` imports it
    planes = [int(64 * width * f) for f in (1, 2, 4, 8)]
    width_patches = [
        ("        self.in_planes = 64\n", f"        self.in_planes = {planes[0]}\n", 1, "I9"),
        ("nn.Conv2d(3, 64, kernel_size=3", f"nn.Conv2d(3, {planes[0]}, kernel_size=3", 1, "I9"),
        ("        self.bn1 = nn.BatchNorm2d(64)\n",
         f"        self.bn1 = nn.BatchNorm2d({planes[0]})\n", 1, "I9"),
    ] + [(f"self._make_layer(block, {p0}, ", f"self._make_layer(block, {p}, ", 1, "I9")
         for p0, p in zip((64, 128, 256, 512), planes)] + [
        ("nn.Linear(512*block.expansion, low_dim)",
         f"nn.Linear({int(512 * width)}*block.expansion, low_dim)", 1, "I9")]
    import lib  # noqa: F401  (lemniscate's lib package: the parent of the modules below)
    rc = lemniscate_module(root, "models/resnet_cifar.py", "models.resnet_cifar", width_patches)
    import models
    assert models.ResNet18 is rc.ResNet18, "models.ResNet18 is not the width-patched one"

    # I11: NCE backward on PyTorch >= 1.0 (LinearAverage runs unpatched)
    lemniscate_module(root, "lib/NCEAverage.py", "lib.NCEAverage", [
        ("        gradOutput.data.resize_(batchSize, 1, K+1)\n",
         "        gradOutput = gradOutput.data.resize_(batchSize, 1, K+1)\n", 1, "I11")])
    # I10, I7: test.py
    lemniscate_module(root, "test.py", "test", [
        ("targets.cuda(async=True)", "targets.cuda(non_blocking=True)", 4, "I10"),
        ("num_workers=1)", "num_workers=0)", 2, "I7")])
    for name in ("lib", "models", "datasets", "lib.NCEAverage", "lib.LinearAverage",
                 "lib.NCECriterion", "test"):
        __import__(name)
        f = os.path.abspath(sys.modules[name].__file__)
        assert f.startswith(root + os.sep), f"{name} loaded from {f}, not from {root}"

    cut = "\nfor epoch in range(start_epoch, start_epoch+200):\n"
    with open(os.path.join(root, "cifar.py")) as f:
        src = f.read()
    src = replace_exact(src, cut, "\n__CUT__", 1, "I8")
    src = src[: src.index("\n__CUT__")] + "\n"  # I8
    src = replace_exact(src, "args = parser.parse_args()\n",
                        f"args = parser.parse_args({list(argv)!r})\n", 1, "I5")
    src = replace_exact(src, "device = 'cuda' if torch.cuda.is_available() else 'cpu'\n",
                        "device = 'cpu'\n", 1, "I6")
    src = replace_exact(src, "num_workers=2)", "num_workers=0)", 2, "I7")
    ns = {"__name__": "lemniscate_cifar", "__file__": os.path.join(root, "cifar.py")}
    if seed is not None:
        seed_all(seed)  # I16
    exec(compile(src, os.path.join(root, "cifar.py"), "exec"), ns)
    ns["__scipy_stubbed__"] = stubbed
    return ns


def run_lemniscate(a):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Subset

    set_threads()  # I2
    patch_cuda_noop()  # I1
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    for lim in (a.knn_train_limit, a.knn_test_limit):
        # test.py's recompute writes batch b at columns b*len(batch): exact only for full batches
        if lim and lim % 100:
            raise SystemExit("--knn-train-limit / --knn-test-limit must be multiples of 100 "
                             "(test.py's kNN recomputes in batches of 100)")
    if 0 < a.knn_train_limit < 200:
        raise SystemExit("--knn-train-limit must be at least k = 200 (or 0: all images)")
    files = lemniscate_check(a.lemniscate)
    info = run_info_start(a, "lemniscate-instdisc", {"lemniscate": files})
    t_start = time.time()
    argv = ["--nce-k", str(a.nce_k), "--nce-t", repr(a.nce_t), "--lr", repr(a.lr)]
    ns = lemniscate_prepare(a.lemniscate, a.data, a.width, argv, a.seed)
    args, net, lemniscate = ns["args"], ns["net"], ns["lemniscate"]
    test_mod = sys.modules["test"]
    kNN = test_mod.kNN
    assert ns["kNN"] is kNN
    print(net, flush=True)
    print("lemniscate args:", args, "| objective:",
          "NCEAverage + NCECriterion" if hasattr(lemniscate, "K") else
          "LinearAverage + CrossEntropyLoss", flush=True)

    trainset, testset = ns["trainset"], ns["testset"]
    full_trainloader, testloader = ns["trainloader"], ns["testloader"]
    if a.limit_train:  # I15
        ns["trainloader"] = DataLoader(Subset(trainset, range(a.limit_train)), batch_size=128,
                                       shuffle=True, num_workers=0)

    # I12: record what train()'s AverageMeter keeps
    class RecordingCriterion:
        def __init__(self, crit):
            self.crit, self.losses, self.sizes = crit, [], []

        def __call__(self, outputs, targets):
            loss = self.crit(outputs, targets)
            self.losses.append(loss.item())
            self.sizes.append(outputs.size(0))
            return loss

    rec = RecordingCriterion(ns["criterion"])
    ns["criterion"] = rec

    # I13: the monitor's nets and the stand-in bank
    pooled = {}

    def capture(module, inputs, output):
        if pooled.get("on"):
            pooled["x"] = inputs[0]

    net.linear.register_forward_hook(capture)  # observes only; the output is unchanged

    class Backbone(torch.nn.Module):
        """net's pooled layer4 (the input of net.linear), L2-normalised."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            pooled["on"] = True
            try:
                self.net(x)
            finally:
                pooled["on"] = False
            return F.normalize(pooled.pop("x"), dim=1)

    layers = (("head", net, args.low_dim), ("backbone", Backbone(net), int(512 * a.width)))
    tr_idx = even_indices(len(trainset), a.knn_train_limit)
    te_idx = even_indices(len(testset), a.knn_test_limit)
    # testloader's arguments (batch 100, no shuffle); only .dataset of the train loader is read
    knn_train_sub = DataLoader(lemniscate_subset(trainset, tr_idx), batch_size=100,
                               shuffle=False, num_workers=0)
    knn_test_sub = DataLoader(lemniscate_subset(testset, te_idx), batch_size=100, shuffle=False,
                              num_workers=0)
    metrics = Metrics(out)

    def monitor(epoch, step, trl, tel):
        for layer, model, dim in layers:
            t0 = time.time()
            scratch = types.SimpleNamespace(memory=torch.zeros(len(trl.dataset), dim))
            acc = 100.0 * kNN(epoch, model, scratch, trl, tel, 200, args.nce_t, 1)
            metrics.knn(step, epoch, acc, 200, args.nce_t, layer, len(trl.dataset),
                        len(tel.dataset))
            print(f"  kNN {layer}: {acc:.2f}% ({time.time() - t0:.1f}s)", flush=True)

    monitor(0, 0, knn_train_sub, knn_test_sub)
    train_seconds, train_cpu, steps, images = 0.0, 0.0, 0, 0
    epoch_s = []
    for epoch in range(a.epochs):  # I8: cifar.py's loop counts epochs from 0
        rec.losses, rec.sizes = [], []
        t0, c0 = time.time(), time.process_time()
        ns["train"](epoch)
        dt, cpu = time.time() - t0, time.process_time() - c0
        n = len(rec.losses)
        loss = sum(l * b for l, b in zip(rec.losses, rec.sizes)) / max(sum(rec.sizes), 1)
        train_seconds += dt
        train_cpu += cpu
        steps += n
        images += sum(rec.sizes)
        epoch_s.append(dt)
        lr = ns["optimizer"].param_groups[0]["lr"]
        metrics.epoch(steps, epoch + 1, loss, dt, extra={
            "steps": n, "seconds_per_step": round(dt / max(n, 1), 4),
            "cpu_seconds": round(cpu, 3), "lr": lr})
        print(f"epoch {epoch + 1}/{a.epochs} loss {loss:.4f} lr {lr:.6f} {dt:.1f}s "
              f"({n} steps, {dt / max(n, 1):.3f} s/step, {cpu / max(n, 1):.3f} CPU s/step, "
              f"{sum(rec.sizes) / dt:.1f} img/s)", flush=True)
        monitor(epoch + 1, steps, knn_train_sub, knn_test_sub)
        if a.bank_knn:  # I14
            t0 = time.time()
            acc = 100.0 * kNN(epoch, net, lemniscate, full_trainloader, testloader, 200,
                              args.nce_t, 0)
            metrics.write({"kind": "knn_bank", "step": steps, "epoch": epoch + 1,
                           "top1": round(acc, 4), "k": 200, "t": args.nce_t, "layer": "head",
                           "n_train": len(trainset), "n_test": len(testset),
                           "features": "memory bank (lemniscate's own monitor)"})
            print(f"  kNN memory bank (lemniscate's monitor): {acc:.2f}% "
                  f"({time.time() - t0:.1f}s)", flush=True)
    # full protocol: cifar.py's last line, kNN(0, net, lemniscate, trainloader, testloader, 200,
    # args.nce_t, 1), on its full trainset and testloader
    if not a.no_full_knn:
        monitor(a.epochs, steps, full_trainloader, testloader)
    run_info_end(info, out, t_start, train_seconds, images, extra={
        "lemniscate_args": vars(args),
        "objective": ("nce: NCEAverage + NCECriterion" if hasattr(lemniscate, "K")
                      else "softmax: LinearAverage + CrossEntropyLoss"),
        "steps_per_epoch": len(ns["trainloader"]), "batch_size": 128,
        "epoch_seconds": [round(x, 1) for x in epoch_s],
        "seconds_per_step": round(train_seconds / max(steps, 1), 4),
        "cpu_seconds_per_step": round(train_cpu / max(steps, 1), 4),
        "loadavg_at_end": os.getloadavg(),
        "scipy_stubbed": ns["__scipy_stubbed__"],
        "width_planes": [int(64 * a.width * f) for f in (1, 2, 4, 8)],
        "patches": ["I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "I10", "I11", "I12",
                    "I13"] + (["I14"] if a.bank_knn else []) +
                   (["I15"] if a.limit_train else []) + ["I16"]})


# ----------------------------------------------------------------------------- moco-v3 runner

MOCOV3_COMMIT = "c349e6e24f40d3fedb22d973f92defa4cedf37a7"
MOCOV3_URL = "https://github.com/facebookresearch/moco-v3"


def mocov3_train_functions(root):
    """main_moco.py's train loop and its helpers, executed from its text (not its main())."""
    import math  # noqa: F401  (adjust_* use it)
    import torch

    src = open(os.path.join(root, "main_moco.py")).read()
    start = src.index("def train(train_loader, model, optimizer, scaler, summary_writer, epoch, args):")
    end = src.index("if __name__ == '__main__':")
    ns = {"torch": torch, "math": __import__("math"), "time": time, "shutil": __import__("shutil")}
    exec(compile(src[start:end], os.path.join(root, "main_moco.py"), "exec"), ns)
    return ns


def mocov3_model(width):
    """moco-v3's MoCo_ResNet (projector 4096 -> 256, predictor 4096, T 1.0) over a
    torchvision ResNet-18 at `width` with the CIFAR stem (V2, V3); moco-v3's checkout must be
    on sys.path."""
    import torch
    import torch.nn as nn
    import moco.builder

    moco.builder.concat_all_gather = lambda t: t  # V2
    torch.distributed.get_rank = lambda *args, **kw: 0
    width_mod = make_width_resnet_module(width)  # V3
    stem = int(64 * width)

    def base_encoder(num_classes=1000, **kw):
        m = width_mod.WidthResNet(__import__("torchvision").models.resnet.BasicBlock,
                                  [2, 2, 2, 2], num_classes=num_classes,
                                  zero_init_residual=True)
        m.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
        return m

    return moco.builder.MoCo_ResNet(base_encoder, 256, 4096, 1.0)


def run_mocov3(a):
    import functools as ft

    import torch
    import torch.nn as nn
    import torchvision.transforms as T
    from lightly.utils.benchmarking import knn_predict
    from torch.utils.data import DataLoader, Subset

    set_threads()  # V1
    patch_cuda_noop()
    seed_all(a.seed)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    info = run_info_start(a, "mocov3-official", {"mocov3": {
        "path": os.path.abspath(a.mocov3), "commit": MOCOV3_COMMIT, "url": MOCOV3_URL}})
    t_start = time.time()
    sys.path.insert(0, os.path.abspath(a.mocov3))
    import moco.builder
    import moco.loader
    import moco.optimizer

    fns = mocov3_train_functions(a.mocov3)
    model = mocov3_model(a.width)
    print(model, flush=True)

    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])  # V4
    aug1 = [T.RandomResizedCrop(32, scale=(0.08, 1.)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    aug2 = [T.RandomResizedCrop(32, scale=(0.08, 1.)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([moco.loader.Solarize()], p=0.2),
            T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    CIFAR10 = make_bin_cifar10(a.data)
    train_set = CIFAR10(train=True, transform=moco.loader.TwoCropsTransform(
        T.Compose(aug1), T.Compose(aug2)))
    if a.limit_train:  # V7
        train_set = Subset(train_set, range(a.limit_train))
    loader = DataLoader(train_set, batch_size=a.batch_size, shuffle=True, num_workers=0,
                        drop_last=True)
    args = types.SimpleNamespace(  # V5
        lr=0.6 * a.batch_size / 256, weight_decay=1e-6, momentum=0.9, moco_m=0.99,
        moco_m_cos=True, warmup_epochs=10, epochs=a.epochs, gpu=None, rank=0,
        print_freq=10 ** 9)
    optimizer = moco.optimizer.LARS(model.parameters(), args.lr,
                                    weight_decay=args.weight_decay, momentum=args.momentum)
    scaler = torch.cuda.amp.GradScaler()

    class Recorder:  # V6: train() writes every step's loss here
        def __init__(self):
            self.losses = []

        def add_scalar(self, tag, value, step):
            if tag == "loss":
                self.losses.append(float(value))

    eval_t = T.Compose([T.ToTensor(), normalize])
    knn_train, knn_test = CIFAR10(train=True, transform=eval_t), CIFAR10(train=False,
                                                                         transform=eval_t)
    tr_idx = even_indices(len(knn_train), a.knn_train_limit)
    te_idx = even_indices(len(knn_test), a.knn_test_limit)
    metrics = Metrics(out)

    @torch.no_grad()
    def features(ds):
        net = model.base_encoder
        was = net.training
        net.eval()
        body = nn.Sequential(*list(net.children())[:-1])  # the pooled backbone, without fc
        feats, labels = [], []
        for x, y in DataLoader(ds, batch_size=256, shuffle=False, num_workers=0):
            feats.append(nn.functional.normalize(body(x).flatten(1), dim=1))
            labels.append(torch.as_tensor(y))
        net.train(was)
        return torch.cat(feats), torch.cat(labels)

    def monitor(epoch, step, tr, te):
        fb, lb = features(tr)
        ft_, lt = features(te)
        pred = knn_predict(ft_, fb.t().contiguous(), lb, 10, 200, 0.1)
        acc = 100.0 * (pred[:, 0] == lt).float().mean().item()
        metrics.knn(step, epoch, acc, 200, 0.1, "backbone", len(tr), len(te))
        print(f"  kNN backbone: {acc:.2f}%", flush=True)

    sub_tr, sub_te = Subset(knn_train, tr_idx), Subset(knn_test, te_idx)
    monitor(0, 0, sub_tr, sub_te)
    train_seconds, steps = 0.0, 0
    for epoch in range(a.epochs):
        rec = Recorder()
        t0 = time.time()
        fns["train"](loader, model, optimizer, scaler, rec, epoch, args)
        dt = time.time() - t0
        train_seconds += dt
        steps += len(rec.losses)
        mean = sum(rec.losses) / max(len(rec.losses), 1)
        metrics.epoch(steps, epoch + 1, mean, dt)
        print(f"epoch {epoch + 1}/{a.epochs} loss {mean:.4f} {dt:.1f}s "
              f"({len(rec.losses) * a.batch_size / max(dt, 1e-9):.1f} img/s)", flush=True)
        monitor(epoch + 1, steps, sub_tr, sub_te)
    monitor(a.epochs, steps, knn_train, knn_test)
    run_info_end(info, out, t_start, train_seconds, steps * a.batch_size,
                 extra={"lr": args.lr, "steps_per_epoch": len(loader),
                        "width_planes": [int(64 * a.width * f) for f in (1, 2, 4, 8)],
                        "patches": ["V1", "V2", "V3", "V4", "V5", "V6"] +
                                   (["V7"] if a.limit_train else [])})


# ----------------------------------------------------------------------------- run.json

def versions():
    v = {"python": sys.version.split()[0]}
    for mod in ("torch", "torchvision", "lightly", "pytorch_lightning", "numpy", "PIL", "pandas",
                "scipy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            v[mod] = None
    return v


def run_info_start(a, reference, files):
    import torch
    info = {"reference": reference, "files": files, "versions": versions(),
            "settings": {k: v for k, v in vars(a).items() if k != "func"},
            "seed": a.seed, "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(),
            "cpu_model": cpu_model(), "host": platform.node(),
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "argv": sys.argv, "start_time": datetime.datetime.now().astimezone().isoformat(),
            "status": "running"}
    with open(os.path.join(os.path.abspath(a.out), "run.json"), "w") as f:
        json.dump(info, f, indent=2, default=str)
    return info


def run_info_end(info, out, t_start, train_seconds, train_images, extra):
    import torch
    info.update(extra)
    info["torch_num_threads"] = torch.get_num_threads()
    info["end_time"] = datetime.datetime.now().astimezone().isoformat()
    info["wall_seconds"] = round(time.time() - t_start, 1)
    info["train_seconds"] = round(train_seconds, 1)
    info["train_images"] = int(train_images)
    info["train_images_per_s"] = round(train_images / train_seconds, 2) if train_seconds else None
    info["status"] = "done"
    with open(os.path.join(out, "run.json"), "w") as f:
        json.dump(info, f, indent=2, default=str)
    print("run.json:", json.dumps({k: info[k] for k in (
        "wall_seconds", "train_seconds", "train_images_per_s")}), flush=True)


# ----------------------------------------------------------------------------- init-stats

def init_stats(a):
    import torch

    set_threads()
    patch_cuda_noop()
    res = {"width": a.width, "seeds": list(range(10)), "versions": versions(), "models": {}}
    res["files"] = {"colab": {"path": os.path.abspath(a.colab),
                              "sha256": check_sha(a.colab, COLAB_SHA256, "colab notebook")},
                    "lightly_benchmark": {"path": os.path.abspath(a.lightly_benchmark),
                                          "sha256": check_sha(a.lightly_benchmark,
                                                              LIGHTLY_SHA256, "lightly")}}

    def collect(build):
        acc = {}
        for s in range(10):
            seed_all(s)
            m = build()
            for name, p in m.named_parameters():
                d = acc.setdefault(name, {"name": name, "shape": list(p.shape), "numel": p.numel(),
                                          "means": [], "stds": []})
                d["means"].append(float(p.detach().double().mean()))
                d["stds"].append(float(p.detach().double().std()) if p.numel() > 1 else 0.0)
        rows = []
        for d in acc.values():
            rows.append({"name": d["name"], "shape": d["shape"], "numel": d["numel"],
                         "mean": float(np.mean(d["means"])), "std": float(np.mean(d["stds"])),
                         "std_of_mean_over_seeds": float(np.std(d["means"]))})
        return rows

    ns, _ = colab_prepare(a.colab, a.data, a.width, None, defs_only=True)
    res["models"]["colab_ModelBase"] = {
        "build": f"ModelBase(feature_dim=128, arch='resnet18', bn_splits=8), width {a.width}",
        "params": collect(lambda: ns["ModelBase"](feature_dim=128, arch="resnet18", bn_splits=8))}
    lns = lightly_prepare(a.lightly_benchmark, a.data, a.width, 10, 256)
    res["models"]["lightly_SimCLRModel"] = {
        "build": f"SimCLRModel(None, 10) (backbone + projection_head), width {a.width}",
        "params": collect(lambda: lns["SimCLRModel"](None, 10))}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    for k, v in res["models"].items():
        print(k, len(v["params"]), "parameters tensors,",
              sum(r["numel"] for r in v["params"]), "values")


# ----------------------------------------------------------------------------- CLI

def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Reference files (never copied into this repository):\n  --colab: {COLAB_URL}\n"
               f"  --lightly-benchmark: {LIGHTLY_URL}\n"
               f"  --lemniscate: a checkout of {LEMNISCATE_URL} at {LEMNISCATE_COMMIT[:7]}\n"
               "See the module docstring for every patch.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    hc = f"path of moco_cifar10_demo.ipynb (download: {COLAB_URL})"
    hl = f"path of cifar10_benchmark.py (download: {LIGHTLY_URL})"
    for name in ("colab-moco", "lightly-simclr", "lightly-moco", "lightly-byol",
                 "lightly-simsiam"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True, help="folder with cifar-10-batches-bin files")
        p.add_argument("--out", required=True)
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--width", type=float, default=0.125)
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--epochs", type=int, default=10)
        if name == "colab-moco":
            p.add_argument("--lr", type=float, default=0.03,
                           help="colab: 0.06 for batch 512, 0.03 for batch 256 (default 0.03)")
            p.add_argument("--stop-after-epochs", type=int, default=None,
                           help="train only epochs 1..N of the --epochs schedule, no kNN at all "
                                "(early-loss proxies: scripts/seed_tail.py)")
            p.add_argument("--colab", required=True, help=hc)
        else:
            p.add_argument("--lightly-benchmark", required=True, help=hl)
        p.add_argument("--knn-train-limit", type=int, default=10000)
        p.add_argument("--knn-test-limit", type=int, default=2000)
        p.add_argument("--limit-train", type=int, default=None,
                       help="smoke tests only: train on the first N images")
    p = sub.add_parser("lemniscate-instdisc",
                       help="InstDisc: lemniscate.pytorch's cifar.py (patches I1-I16)")
    p.add_argument("--lemniscate", required=True,
                   help=f"a checkout of {LEMNISCATE_URL} at {LEMNISCATE_COMMIT[:7]}")
    p.add_argument("--data", required=True, help="folder with cifar-10-batches-bin files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.03, help="cifar.py --lr (default 0.03)")
    p.add_argument("--nce-k", type=int, default=0,
                   help="cifar.py --nce-k: 0 = full softmax (the README's CIFAR command, the "
                        "default here), 4096 = NCE (cifar.py's own default)")
    p.add_argument("--nce-t", type=float, default=0.1, help="cifar.py --nce-t (default 0.1)")
    p.add_argument("--knn-train-limit", type=int, default=10000)
    p.add_argument("--knn-test-limit", type=int, default=2000)
    p.add_argument("--bank-knn", action="store_true",
                   help="also lemniscate's own per-epoch monitor (memory bank vs full test set)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="smoke tests only: train on the first N images")
    p.add_argument("--no-full-knn", action="store_true",
                   help="smoke tests and timing only: skip the full-protocol kNN at the end")
    p = sub.add_parser("mocov3-official",
                       help="MoCo v3 (ResNet): moco-v3's builder, LARS and train loop (V1-V7)")
    p.add_argument("--mocov3", required=True,
                   help=f"a checkout of {MOCOV3_URL} at {MOCOV3_COMMIT[:7]}")
    p.add_argument("--data", required=True, help="folder with cifar-10-batches-bin files")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--knn-train-limit", type=int, default=10000)
    p.add_argument("--knn-test-limit", type=int, default=2000)
    p.add_argument("--limit-train", type=int, default=None,
                   help="smoke tests only: train on the first N images")
    p = sub.add_parser("init-stats")
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--data", default="data/cifar-10-batches-bin")
    p.add_argument("--colab", required=True, help=hc)
    p.add_argument("--lightly-benchmark", required=True, help=hl)
    a = ap.parse_args()
    if a.cmd == "colab-moco":
        run_colab(a)
    elif a.cmd == "lightly-simclr":
        run_lightly(a, "SimCLRModel")
    elif a.cmd == "lightly-moco":
        run_lightly(a, "MocoModel")
    elif a.cmd == "lightly-byol":
        run_lightly(a, "BYOLModel")
    elif a.cmd == "lightly-simsiam":
        run_lightly(a, "SimSiamModel")
    elif a.cmd == "lemniscate-instdisc":
        run_lemniscate(a)
    elif a.cmd == "mocov3-official":
        run_mocov3(a)
    else:
        init_stats(a)


if __name__ == "__main__":
    main()

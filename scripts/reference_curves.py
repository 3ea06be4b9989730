#!/usr/bin/env python3
"""Learning curves of the *reference implementations' own code*, on the CPU, at a small width.

This script runs two references beside mocca, so that our curves can be compared with theirs:

  colab-moco      MoCo v2 CIFAR-10 demo notebook (facebookresearch/moco, branch colab-notebook,
                  commit f7364915bc4e9161427d7c6bb4f454fa0f171337). Download:
                  https://raw.githubusercontent.com/facebookresearch/moco/colab-notebook/colab/moco_cifar10_demo.ipynb
  lightly-simclr  lightly's CIFAR-10 benchmark (lightly-ai/lightly,
  lightly-moco    docs/source/getting_started/benchmarks/cifar10_benchmark.py, commit
                  e8d317fc5a87f4387a85a35e689869039ec249ee), its SimCLRModel / MocoModel. Download:
                  https://raw.githubusercontent.com/lightly-ai/lightly/master/docs/source/getting_started/benchmarks/cifar10_benchmark.py

The reference files are NOT part of this repository and must never be copied into it: they are
taken by path (--colab, --lightly-benchmark), their sha256 is checked (a mismatch warns), and their
code is executed (`exec` of the notebook's code cells / of the benchmark module's text) with the
smallest set of patches that lets it run on one CPU thread, at a width and a batch size, on the
local CIFAR-10 binary files. Their models, losses, transforms, training steps, optimizers, lr
schedules and kNN monitors are theirs, unchanged. What this script writes itself: the data
classes that serve the local binary files, the narrow torchvision ResNet, the per-epoch outer
loop (colab) / the Lightning Trainer and a recording Callback (lightly), and the metrics output.

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

Output (--out DIR): metrics.jsonl (mocca's trainer schema: "knn" and "epoch" records, flushed as
they happen) and run.json (reference, sha256s, versions, settings, threads, CPU, times, images/s).

Usage:
  reference_curves.py colab-moco     --colab NB --data DIR --out DIR --seed S [--width 0.125]
        [--batch-size 256] [--epochs 10] [--lr 0.03] [--knn-train-limit 10000]
        [--knn-test-limit 2000] [--limit-train N]
  reference_curves.py lightly-simclr --lightly-benchmark PY --data DIR --out DIR --seed S [...]
  reference_curves.py lightly-moco   --lightly-benchmark PY --data DIR --out DIR --seed S [...]
  reference_curves.py init-stats --colab NB --lightly-benchmark PY --out FILE [--width 0.125]
Needs: torch, torchvision, lightly, pytorch_lightning, pandas, numpy, pillow.
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

    def epoch(self, step, epoch, loss_mean, seconds):
        self.write({"kind": "epoch", "step": int(step), "epoch": int(epoch),
                    "loss_mean": round(float(loss_mean), 6), "seconds": round(float(seconds), 3)})


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

    monitor(0, 0, mem_sub, test_sub)
    steps_per_epoch = len(train_loader)
    train_seconds, steps = 0.0, 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        loss = train(model, train_loader, optimizer, epoch, args)
        dt = time.time() - t0
        train_seconds += dt
        steps += steps_per_epoch
        metrics.epoch(steps, epoch, loss, dt)
        print(f"epoch {epoch}/{args.epochs} loss {loss:.4f} lr "
              f"{optimizer.param_groups[0]['lr']:.6f} {dt:.1f}s "
              f"({steps_per_epoch * args.batch_size / dt:.1f} img/s)", flush=True)
        monitor(epoch, steps, mem_sub, test_sub)
    # full protocol on the notebook's own loaders
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
    ref = "lightly-simclr" if model_name == "SimCLRModel" else "lightly-moco"
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
                     "lightly_lr": 6e-2 * ns["lr_factor"], "model": model_name,
                     "steps_per_epoch": len(dl_ssl), "max_accuracy": model.max_accuracy})


# ----------------------------------------------------------------------------- run.json

def versions():
    v = {"python": sys.version.split()[0]}
    for mod in ("torch", "torchvision", "lightly", "pytorch_lightning", "numpy", "PIL", "pandas"):
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
               f"  --lightly-benchmark: {LIGHTLY_URL}\nSee the module docstring for every patch.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    hc = f"path of moco_cifar10_demo.ipynb (download: {COLAB_URL})"
    hl = f"path of cifar10_benchmark.py (download: {LIGHTLY_URL})"
    for name in ("colab-moco", "lightly-simclr", "lightly-moco"):
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
            p.add_argument("--colab", required=True, help=hc)
        else:
            p.add_argument("--lightly-benchmark", required=True, help=hl)
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
    else:
        init_stats(a)


if __name__ == "__main__":
    main()

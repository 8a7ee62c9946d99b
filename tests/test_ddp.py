"""DDP on 2 CPU processes (gloo): n_critic holds on every rank, ranks decode different samples, grids and
metrics are written by rank 0 only, and the run resumes under DDP from its checkpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

PROBE = '''
import json, os
from lightning.pytorch import Callback
import lightning_gan.callbacks.sample_grid as sample_grid


class Probe(Callback):
    """Counts each rank's optimizer steps, PNG grids and the first latent batches; writes them at the end."""

    def __init__(self):
        self.counts = {"d": 0, "g": 0, "png": 0}
        self.z = []

    def setup(self, trainer, pl_module, stage):
        save_png = sample_grid.save_png

        def counting(*args, **kwargs):
            self.counts["png"] += 1
            return save_png(*args, **kwargs)

        sample_grid.save_png = counting

    def on_train_start(self, trainer, pl_module):
        opt_g, opt_d = (getattr(o, "optimizer", o) for o in trainer.optimizers)
        opt_g.register_step_post_hook(lambda *a: self.counts.__setitem__("g", self.counts["g"] + 1))
        opt_d.register_step_post_hook(lambda *a: self.counts.__setitem__("d", self.counts["d"] + 1))
        noise = pl_module.training_noise

        def recording(n, **kwargs):
            labels, z = noise(n, **kwargs)
            self.z.append(round(float(z.sum()), 4))
            return labels, z

        pl_module.training_noise = recording

    def on_train_end(self, trainer, pl_module):
        name = f"rank{trainer.global_rank}-step{trainer.global_step}.json"
        path = os.path.join(os.environ["PROBE_DIR"], name)
        with open(path, "w") as f:
            p = pl_module.augment.p.item() if pl_module.augment.enabled else None
            json.dump({**self.counts, "z": self.z[:2], "world": trainer.world_size, "augment_p": p}, f)
'''

CONFIG = """
trainer:
  log_every_n_steps: 1
  callbacks:
    - class_path: lightning_gan.callbacks.SampleGrid
      init_args: {every_n_steps: 2, num_samples: 16}
    - class_path: lightning_gan.callbacks.GANMetrics
      init_args: {every_n_steps: 2, num_samples: 64}
    - class_path: ddp_probe.Probe
"""


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory):
    """The folder of DDP runs, and how to start one (``lightning-gan fit`` on 2 processes) in it."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "ddp_probe.py").write_text(PROBE)
    (root / "ddp.yaml").write_text(textwrap.dedent(CONFIG))
    env = {**os.environ, "PYTHONPATH": f"{root}:{os.environ.get('PYTHONPATH', '')}", "PROBE_DIR": str(root),
           "OMP_NUM_THREADS": "1"}  # fmt: skip

    def fit(max_steps: int, *extra: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable, "-m", "lightning_gan", "fit", "--config", str(REPO / "configs" / "dcgan.yaml"),
            "--config", str(root / "ddp.yaml"), f"--trainer.default_root_dir={root / 'run'}",
            "--trainer.accelerator=cpu", "--trainer.devices=2",
            "--trainer.strategy=ddp", f"--trainer.max_steps={max_steps}",
            "--model.n_critic=3", "--data.batch_size=16", "--model.generator.init_args.base_channels=8",
            "--model.discriminator.init_args.base_channels=8", "--trainer.enable_progress_bar=false", *extra,
        ]  # fmt: skip
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        return result

    return root, fit


@pytest.fixture(scope="module")
def ddp(ddp_fit):
    root, fit = ddp_fit
    fit(4)
    fit(6, "--ckpt_path=last")
    return root


def probe(root, rank: int, step: int) -> dict:
    return json.loads((root / f"rank{rank}-step{step}.json").read_text())


def test_n_critic_holds_on_every_rank(ddp):
    for rank in (0, 1):
        first, resumed = probe(ddp, rank, 4), probe(ddp, rank, 6)
        assert first["world"] == 2
        assert (first["d"], first["g"]) == (3 * 4, 4) and (resumed["d"], resumed["g"]) == (3 * 2, 2)


def test_ranks_decode_different_latent_vectors(ddp):
    assert probe(ddp, 0, 4)["z"] != probe(ddp, 1, 4)["z"]


def test_grids_and_metrics_are_written_by_rank_zero_only(ddp):
    assert probe(ddp, 0, 4)["png"] > 0 and probe(ddp, 1, 4)["png"] == 0
    (metrics,) = (ddp / "run").glob("**/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    fid_steps = [int(float(r["step"])) for r in rows if r.get("metrics/fid")]
    assert fid_steps == [2, 4, 6]  # once per evaluation: one writer


def test_the_run_resumes_under_ddp_in_its_folder(ddp):
    (last,) = (ddp / "run").glob("**/checkpoints/last.ckpt")
    import torch

    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6
    (metrics,) = (ddp / "run").glob("**/metrics.csv")
    steps = sorted({int(float(r["step"])) for r in csv.DictReader(metrics.open()) if r.get("loss/g")})
    assert steps == [1, 2, 3, 4, 5, 6]


def test_the_stabilisers_train_under_ddp(ddp_fit):
    """Feature matching, mode seeking, historical averages (buffers DDP broadcasts), lazy R1 (a double
    backward through D's input gradient), clipping, instance noise and adaptive augmentation (r_t summed over
    the ranks) together, on 2 ranks."""
    ddp, fit = ddp_fit
    flags = [
        "--model.feature_matching=1", "--model.mode_seeking=1", "--model.hist_avg_g=0.1",
        "--model.hist_avg_d=0.1", "--model.r1_weight=1", "--model.r1_every=2",
        "--model.discriminator.init_args.norm=layer", "--model.grad_clip_g=1", "--model.grad_clip_d=1",
        "--model.instance_noise=uniform", "--model.instance_noise_scale=0.01",
        "--model.augment=translation,color", "--model.augment_p=0.5", "--model.augment_adaptive=true",
        "--model.augment_target=0.6", "--model.augment_ada_steps=8",
        f"--trainer.default_root_dir={ddp / 'stabilised'}",
    ]  # fmt: skip
    fit(5, *flags)  # 5 steps: its probe files are not those of the `ddp` runs (4 and 6 steps)
    import torch

    (last,) = (ddp / "stabilised").glob("**/checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert state["loss_terms.hist_d.count"].item() == 5 * 3 and state["loss_terms.hist_g.count"].item() == 5
    # p moved from 0.5 at step 4 by the r_t of both ranks, to the same value on each
    assert (
        probe(ddp, 0, 5)["augment_p"] == probe(ddp, 1, 5)["augment_p"] == state["augment.p"].item() in (0, 1)
    )
    (metrics,) = (ddp / "stabilised").glob("**/metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("loss/fm")]
    assert len(rows) == 5 and all(float(r["loss/fm"]) < float("inf") and r["loss/r1"] != "nan" for r in rows)

from lightning_gan.callbacks.checkpoint import GANCheckpoint
from lightning_gan.callbacks.divergence import DivergenceWatch
from lightning_gan.callbacks.ema import GeneratorEMA
from lightning_gan.callbacks.loss_curves import LossCurves
from lightning_gan.callbacks.metrics import GANMetrics
from lightning_gan.callbacks.requeue import SlurmRequeue
from lightning_gan.callbacks.sample_grid import SampleGrid

__all__ = [
    "DivergenceWatch",
    "GANCheckpoint",
    "GANMetrics",
    "GeneratorEMA",
    "LossCurves",
    "SampleGrid",
    "SlurmRequeue",
]

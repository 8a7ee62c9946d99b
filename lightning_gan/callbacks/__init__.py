from lightning_gan.callbacks.checkpoint import GANCheckpoint
from lightning_gan.callbacks.sample_grid import SampleGrid

__all__ = ["GANCheckpoint", "SampleGrid"]

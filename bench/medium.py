"""The medium SD-layout model the benches share: big enough that the UNet dominates a step.

The tiny SD pipeline (`dnp_batch.tiny.sd_pipeline`: its text encoder, VAE and DDIM) with a bigger
UNet (channels (64, 128), two layers a block, 5.6 M parameters), random weights, 32² latents (256²
images). Built from configs: nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

SIZE = 256  # pixels: 32² latents through the tiny VAE's factor 8


def medium_pipeline():
    from dnp_batch.tiny import sd_pipeline

    pipe = sd_pipeline(sample_size=SIZE // 8, block_out_channels=(64, 128), layers_per_block=2)
    pipe.register_to_config(_name_or_path="medium-sd (random weights)")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_medium(out: Path) -> Path:
    """The medium model as a diffusers directory (safetensors) that `load_pipeline` and a job's
    `model:` read like any other."""
    medium_pipeline().save_pretrained(out, safe_serialization=True)
    return out

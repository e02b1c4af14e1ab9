"""The medium SD-layout model the benches share: big enough that the UNet dominates a step.

The tiny SD's text encoder and VAE with a bigger UNet (channels (64, 128), two layers a block,
5.6 M parameters), random weights, 32² latents (256² images), DDIM. Built from configs: nothing
is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

SIZE = 256  # pixels: 32² latents through the tiny VAE's factor 8


def medium_pipeline():
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from dnp_batch.tiny import SD_SCHEDULER_CONFIG, _text_config, _vae, clip_tokenizer

    tok = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=SIZE // 8, in_channels=4, out_channels=4, block_out_channels=(64, 128),
                                layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    torch.manual_seed(1)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)),
                                   tokenizer=tok, unet=unet, scheduler=DDIMScheduler.from_config(SD_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.register_to_config(_name_or_path="medium-sd (random weights)")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_medium(out: Path) -> Path:
    """The medium model as a diffusers directory (safetensors) that `load_pipeline` and a job's
    `model:` read like any other."""
    medium_pipeline().save_pretrained(out, safe_serialization=True)
    return out

"""The two speed options bench/gpu.py found worth offering, on the CPU through the same code a GPU
run takes: a replacement VAE (`vae:`, e.g. SDXL's fp16-fix) and `compile_unet: true`."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from dnp_batch import generate, load_pipeline
from dnp_batch.config import load_config
from dnp_batch.stages import check_sources
from dnp_batch.tiny import ensure_tiny


@pytest.fixture(scope="module")
def other_vae(tmp_path_factory):
    """The tiny SDXL's VAE with its decoder's last conv changed: a VAE that decodes differently."""
    vae = AutoencoderKL.from_pretrained(ensure_tiny("sdxl") / "vae")
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(-0.5)
    out = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(out, safe_serialization=True)
    return out


def images(pipe):
    out = generate(pipe, ["a red fox"], [0], method="cfg", num_inference_steps=2, output_type="np")
    return np.stack(out.images)


def test_vae_option_decodes_with_the_replacement_vae(other_vae):
    swapped = load_pipeline(ensure_tiny("sdxl"), vae=other_vae)
    by_hand = load_pipeline(ensure_tiny("sdxl"))
    stock = images(by_hand)
    by_hand.vae = AutoencoderKL.from_pretrained(other_vae)
    assert np.array_equal(images(swapped), images(by_hand))
    assert not np.array_equal(images(swapped), stock)


def test_a_vae_folder_without_config_is_refused_before_any_work(tmp_path):
    cfg = load_config(None, model="tiny-sdxl", vae=str(tmp_path))
    with pytest.raises(ValueError, match="is not a diffusers AutoencoderKL directory"):
        check_sources(cfg)


def test_compile_unet_gives_the_same_latents():
    eager = load_pipeline(ensure_tiny("sd"))
    compiled = load_pipeline(ensure_tiny("sd"), compile_unet=True)
    a = generate(eager, ["a red fox"], [0], method="cfg", num_inference_steps=2, output_type="latent").images
    b = generate(compiled, ["a red fox"], [0], method="cfg", num_inference_steps=2, output_type="latent").images
    # inductor fuses and reorders float32 arithmetic: a few ulps per op over 2 steps on latents of
    # magnitude ~10 (a wrong graph would differ by ~1); 1e-4 bounds the rounding
    assert torch.allclose(torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b)), atol=1e-4)
    assert type(compiled.unet).__name__ == "UNet2DConditionModel"  # compiled in place: still the diffusers model

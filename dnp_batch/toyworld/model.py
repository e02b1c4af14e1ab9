"""The toy-world pipeline's parts: a grammar-word CLIP tokenizer, an exact identity VAE (latents =
normalised pixels, `vae_scale_factor` 1), a small CLIP text encoder and a small UNet.

The VAE is built, not trained. Encoder and decoder are one-level `AutoencoderKL` nets whose
resnet branches are zeroed (identity); the final GroupNorm + SiLU is made exactly invertible by
putting each colour channel in its own group as (u, -u, K, -K): the group mean is 0, its variance
(mean(u²) + K²)/2 is K²/2 up to a relative 1e-4 for K = 100, and SiLU(u) - SiLU(-u) = u. So
`decode(encode(x)) == x` to ~1e-4 (a small fraction of a grey level), and latents are
`(pixel - mean) / std` per RGB channel (pixels in [-1, 1]; statistics of the training
distribution) with a 4th channel that is 0 and ignored by the decoder; `scaling_factor` = 1.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..published import SD_SCHEDULER_CONFIG, bytes_to_unicode
from .data import IMAGE_SIZE, WORDS, dataset

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 16  # longest caption: 12 tokens with BOS/EOS
LATENT_CHANNELS = 4
_K = 100.0  # the constant channel of the invertible GroupNorm (see the module docstring)
_GROUPS = 4
_VAE_CHANNELS = 4 * _GROUPS


# ---- tokenizer ------------------------------------------------------------------------------


def word_merges(words=WORDS) -> list[tuple[str, str]]:
    """Byte-pair merges, learnt greedily on the grammar's words (most frequent pair first, ties
    by the pair), until every word is one token; so the grammar's words never split."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in sorted(set(words))]
    merges = []
    while any(len(s) > 1 for s in seqs):
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == pair:
                    s[i : i + 2] = [s[i] + s[i + 1]]
                i += 1
    return merges


def write_tokenizer_files(directory: Path) -> None:
    """CLIP-style byte-level BPE vocab.json + merges.txt: bytes, bytes + </w>, the merges' results
    (every grammar word among them), BOS, EOS."""
    symbols = bytes_to_unicode()
    merges = word_merges()
    tokens = symbols + [s + "</w>" for s in symbols]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b)
            seen.add(a + b)
    tokens += [BOS, EOS]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                          encoding="utf-8")


def build_tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(Path(tmp))
        tok = CLIPTokenizer.from_pretrained(tmp, model_max_length=MAX_LENGTH, pad_token=EOS)
    for key in ("is_local", "local_files_only"):  # as dnp_batch.tiny: keep the saved config clean
        tok.init_kwargs.pop(key, None)
    return tok


# ---- the identity VAE -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def pixel_stats(n: int = 4096, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of training pixels in [-1, 1] (rounded to 4 decimals; cached)."""
    x = np.stack([im for im, _, _ in dataset(n, seed)]).astype(np.float64) / 127.5 - 1.0
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _centre_tap(conv: torch.nn.Conv2d, out_ch: int, in_ch: int, value: float) -> None:
    conv.weight.data[out_ch, in_ch, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = value


def _zero_resnet_branches(module: torch.nn.Module) -> None:
    for name, sub in module.named_modules():
        if name.endswith("conv2") and isinstance(sub, torch.nn.Conv2d):
            torch.nn.init.zeros_(sub.weight)
            torch.nn.init.zeros_(sub.bias)


def _invertible_norm(norm: torch.nn.GroupNorm) -> None:
    """Channels (u, -u, K, -K) per group: scale u back to itself, silence the constants."""
    norm.weight.data.zero_()
    norm.bias.data.zero_()
    for g in range(3):
        norm.weight.data[4 * g : 4 * g + 2] = _K / math.sqrt(2.0)


def _split_channels(conv: torch.nn.Conv2d, scale: list[float], offset: list[float], paired_input: bool) -> None:
    """conv -> per colour g: (u, -u, K, -K) with u = scale·(input_g) + offset (input_g = x_g, or
    h_{4g} - h_{4g+1} for a paired input)."""
    conv.weight.data.zero_()
    conv.bias.data.zero_()
    for g in range(3):
        for sign, ch in ((1.0, 4 * g), (-1.0, 4 * g + 1)):
            if paired_input:
                _centre_tap(conv, ch, 4 * g, sign * scale[g])
                _centre_tap(conv, ch, 4 * g + 1, -sign * scale[g])
            else:
                _centre_tap(conv, ch, g, sign * scale[g])
            conv.bias.data[ch] = sign * offset[g]
        conv.bias.data[4 * g + 2] = _K
        conv.bias.data[4 * g + 3] = -_K


def build_vae(mean: Sequence[float], std: Sequence[float]) -> AutoencoderKL:
    """The exact identity VAE for pixels normalised by (mean, std); see the module docstring."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"],
        block_out_channels=[_VAE_CHANNELS], layers_per_block=1, latent_channels=LATENT_CHANNELS,
        norm_num_groups=_GROUPS, sample_size=IMAGE_SIZE, scaling_factor=1.0, mid_block_add_attention=False,
    )
    with torch.no_grad():
        enc, dec = vae.encoder, vae.decoder
        _zero_resnet_branches(vae)
        # encoder: x -> (x, -x, K, -K) -> norm/SiLU -> mean = (x - m)/s, logvar = -30 (a point mass)
        _split_channels(enc.conv_in, [1.0] * 3, [0.0] * 3, paired_input=False)
        _invertible_norm(enc.conv_norm_out)
        enc.conv_out.weight.data.zero_()
        enc.conv_out.bias.data.zero_()
        for g in range(3):
            _centre_tap(enc.conv_out, g, 4 * g, 1.0 / std[g])
            _centre_tap(enc.conv_out, g, 4 * g + 1, -1.0 / std[g])
            enc.conv_out.bias.data[g] = -mean[g] / std[g]
        enc.conv_out.bias.data[LATENT_CHANNELS:] = -30.0
        for conv in (vae.quant_conv, vae.post_quant_conv):
            conv.weight.data.zero_()
            conv.bias.data.zero_()
            for c in range(conv.weight.shape[0]):
                conv.weight.data[c, c, 0, 0] = 1.0
        # decoder: z -> (u, -u, K, -K) with u = z·s + m -> norm/SiLU -> u
        dec.conv_in.weight.data.zero_()
        dec.conv_in.bias.data.zero_()
        for g in range(3):
            for sign, ch in ((1.0, 4 * g), (-1.0, 4 * g + 1)):
                _centre_tap(dec.conv_in, ch, g, sign * std[g])
                dec.conv_in.bias.data[ch] = sign * mean[g]
            dec.conv_in.bias.data[4 * g + 2] = _K
            dec.conv_in.bias.data[4 * g + 3] = -_K
        _invertible_norm(dec.conv_norm_out)
        dec.conv_out.weight.data.zero_()
        dec.conv_out.bias.data.zero_()
        for g in range(3):
            _centre_tap(dec.conv_out, g, 4 * g, 1.0)
            _centre_tap(dec.conv_out, g, 4 * g + 1, -1.0)
    return vae


def images_to_latents(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 4, H, W) latents, exactly what the VAE's encoder gives (its mode)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    z = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return torch.cat([z, torch.zeros_like(z[:, :1])], dim=1)


# ---- text encoder and UNet ----------------------------------------------------------------------

TEXT_HIDDEN = 64

# The UNets and text encoders tried (train.py's `--arch`). "v1" is the first committed model:
# cross-attention at 8² only. "v2" adds cross-attention (and so self-attention) at 16², where two
# objects of size 5–7 are a few pixels apart, and a wider 8² level; "v2-text4" also deepens the
# text encoder (CLIP's causal mask means only tokens after "left of" know the relation).
_ATTENTION_AT_16 = dict(  # 32², 16² and 8² levels; cross-attention (and self-attention) at 16² and 8²
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
ARCHITECTURES: dict[str, dict] = {
    "v1": dict(unet=dict(block_out_channels=(32, 64, 64),
                         down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),  # attention at 8²
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")), text_layers=3),
    "v2": dict(unet=dict(block_out_channels=(32, 64, 96), **_ATTENTION_AT_16), text_layers=3),
    "v2-narrow": dict(unet=dict(block_out_channels=(32, 64, 64), **_ATTENTION_AT_16), text_layers=3),
    "v2-text4": dict(unet=dict(block_out_channels=(32, 64, 96), **_ATTENTION_AT_16), text_layers=4),
}


def build_text_encoder(tok: CLIPTokenizer, seed: int, layers: int = 3) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=TEXT_HIDDEN, intermediate_size=128, num_attention_heads=4,
        num_hidden_layers=layers, projection_dim=TEXT_HIDDEN, max_position_embeddings=MAX_LENGTH,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))


def unet_config(arch: str = "v1") -> dict:
    """The full `UNet2DConditionModel` config of an architecture in `ARCHITECTURES`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown toy architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return dict(sample_size=IMAGE_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
                cross_attention_dim=TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=32,
                **ARCHITECTURES[arch]["unet"])


UNET_CONFIG = unet_config("v1")


def build_unet(seed: int, arch: str = "v1", **overrides) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**unet_config(arch), **overrides})


# The toy model's noise schedule (v3): SD's scaled-linear betas rescaled to zero terminal SNR,
# v-prediction, trailing spacing (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are
# Flawed", WACV 2024). At t = T the latent is pure noise (ᾱ_T = 0), so nothing of the image's layout
# survives to the first sampling step and the model has to take it from the words. The first model
# (v1) used SD's schedule as it is (`SD_SCHEDULER_CONFIG`: √ᾱ_T = 0.068, leading spacing), which left
# a 13×13 shape visible at t = T.
SCHEDULES: dict[str, dict] = {
    "sd": dict(SD_SCHEDULER_CONFIG),
    "zsnr-v": {**SD_SCHEDULER_CONFIG, "rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
               "timestep_spacing": "trailing"},
}


def build_pipeline(vae, text_encoder, tokenizer, unet, schedule: str = "zsnr-v") -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_config(SCHEDULES[schedule]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )

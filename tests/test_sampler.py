"""cfg / np / dns against diffusers' own pipelines, on the tiny SD and SDXL models."""

import os

import numpy as np
import pytest
import torch

from dnp_batch import generate, load_pipeline
from dnp_batch.models import set_scheduler
from dnp_batch.families import family_of

from numerics import BATCH_TOL, FORM_TOL, PIPELINE_TOL, assert_close

STEPS, SIZE, W = 5, 64, 6.0
PROMPT, NEG, SEED = "a red cube on a blue table", "blurry, low quality", 11


def diffusers_call(pipe, method, output_type, seed=SEED, prompt=PROMPT, neg=NEG):
    """The diffusers pipeline call that docs/METHODS.md pins for each method."""
    kw = dict(guidance_scale=W, num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type=output_type,
              generator=torch.Generator().manual_seed(seed))
    if method == "cfg":
        return pipe(prompt=prompt, **kw).images
    if method == "np":
        return pipe(prompt=prompt, negative_prompt=neg, **kw).images
    # dns: positive ∅, negative p
    if family_of(pipe).name != "sdxl":
        return pipe(prompt="", negative_prompt=prompt, **kw).images
    embeds, _, pooled, _ = pipe.encode_prompt([""], do_classifier_free_guidance=False)
    return pipe(prompt_embeds=torch.zeros_like(embeds), pooled_prompt_embeds=torch.zeros_like(pooled),
                negative_prompt=prompt, **kw).images


def ours(pipe, method, output_type, seeds=(SEED,), prompts=(PROMPT,), negs=(NEG,)):
    return generate(pipe, list(prompts), list(seeds), method=method,
                    negative_prompts=list(negs) if method == "np" else None, guidance_scale=W,
                    num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type=output_type).images


@pytest.fixture(params=["sd", "sdxl"])
def pipe(request, tiny_sd, tiny_sdxl):
    return tiny_sd if request.param == "sd" else tiny_sdxl


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m", "euler_a"])
@pytest.mark.parametrize("method", ["cfg", "np", "dns"])
def test_equals_diffusers(pipe, scheduler, method):
    set_scheduler(pipe, scheduler)
    ref_latents = diffusers_call(pipe, method, "latent")
    got_latents = ours(pipe, method, "latent")
    assert got_latents.shape == ref_latents.shape
    assert_close(got_latents, ref_latents, PIPELINE_TOL, "latents vs diffusers")
    ref_images = diffusers_call(pipe, method, "np")
    got_images = ours(pipe, method, "np")
    assert_close(got_images, ref_images, PIPELINE_TOL, "images vs diffusers")


def test_methods_differ(pipe):
    """The three methods are not accidentally the same chain."""
    cfg, np_, dns = (ours(pipe, m, "latent") for m in ("cfg", "np", "dns"))
    assert not torch.allclose(cfg, np_) and not torch.allclose(cfg, dns)


@pytest.mark.parametrize("scheduler", ["euler", "euler_a"])
def test_batch_of_mixed_prompts_and_seeds_equals_diffusers_one_by_one(pipe, scheduler):
    set_scheduler(pipe, scheduler)
    prompts = ["a red cube", "a green sphere under a lamp", "a red cube"]
    seeds = [3, 3, 8]
    got = ours(pipe, "np", "latent", seeds=seeds, prompts=prompts, negs=["dark", "", "dark"])
    for j, (p, s, n) in enumerate(zip(prompts, seeds, ["dark", "", "dark"])):
        ref = diffusers_call(pipe, "np", "latent", seed=s, prompt=p, neg=n)
        assert_close(got[j:j + 1], ref, BATCH_TOL, "batch vs diffusers one by one")


def test_pil_output_and_records(pipe):
    out = generate(pipe, ["a cat", "a dog"], [0, 1], method="cfg", num_inference_steps=2, height=SIZE, width=SIZE)
    assert [im.size for im in out.images] == [(SIZE, SIZE)] * 2
    rec = out.records[1]
    assert rec["prompt"] == "a dog" and rec["seed"] == 1 and rec["method"] == "cfg"
    assert rec["negative_prompt"] is None and rec["guidance_scale"] == 7.0 and rec["num_inference_steps"] == 2
    assert rec["nfe"] == 4 and rec["seconds"] > 0 and rec["scheduler"] == type(pipe.scheduler).__name__
    assert rec["id"] != out.records[0]["id"]


def test_bfloat16_path_runs_through_the_same_code(tiny_sdxl_dir):
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    # torch's bfloat16 flash attention on the CPU packs with VNNI on an AVX-512 machine and raises
    # ("pack_vnni2 is only supported when avx512 is supported") once ATEN_CPU_CAPABILITY=default
    # forces the plain kernels (seen on an Intel Xeon); what this tests is our dtype path, so there
    # torch's math attention runs instead.
    forced = os.environ.get("ATEN_CPU_CAPABILITY") == "default"
    with sdpa_kernel(SDPBackend.MATH) if forced else nullcontext():
        pipe = load_pipeline(tiny_sdxl_dir, dtype="bf16")
        out = generate(pipe, ["a cat"], [0], method="answer", num_inference_steps=4, height=SIZE, width=SIZE,
                       output_type="np")
        latents = generate(pipe, ["a cat"], [0], method="answer", num_inference_steps=4, height=SIZE, width=SIZE,
                           output_type="latent").images
    assert out.images.shape == (1, SIZE, SIZE, 3) and np.isfinite(out.images).all()
    assert out.records[0]["dtype"] == "bfloat16"
    assert latents.dtype == torch.bfloat16


class _DiffusersGuider:
    """A sampler strategy whose guidance is diffusers' own guider object (the reference for APG)."""

    def __init__(self, guider):
        self.guider = guider

    def __call__(self, denoise, scheduler, i, t, z, batch):
        from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

        eps_null, eps_p = denoise(scheduler, z, t, [batch.null, batch.pos])
        self.guider.set_state(i, len(scheduler.timesteps), t)
        if i == 0 and self.guider.adaptive_projected_guidance_momentum is not None:  # as its prepare_inputs
            self.guider.momentum_buffer = MomentumBuffer(self.guider.adaptive_projected_guidance_momentum)
        return self.guider.forward(eps_p, eps_null).pred


@pytest.mark.parametrize("settings", [dict(), dict(momentum=-0.5), dict(eta=0.0, norm_threshold=2.0),
                                      dict(momentum=0.3, norm_threshold=0.0, eta=0.5)])
def test_apg_equals_diffusers_adaptive_projected_guidance(pipe, settings):
    """APG (docs/METHODS.md §APG) against diffusers' AdaptiveProjectedGuidance guider on the same UNet
    predictions and scheduler, over a whole chain (momentum included), bit for bit."""
    from diffusers.guiders import AdaptiveProjectedGuidance

    from dnp_batch import families, methods

    set_scheduler(pipe, "euler")
    apg = methods.ApgSettings(**settings)
    got = generate(pipe, [PROMPT, "a dog"], [SEED, 3], method=apg, guidance_scale=W, num_inference_steps=STEPS,
                   height=SIZE, width=SIZE, output_type="latent")
    guider = AdaptiveProjectedGuidance(guidance_scale=W, adaptive_projected_guidance_momentum=apg.momentum,
                                       adaptive_projected_guidance_rescale=apg.norm_threshold, eta=apg.eta)
    run = methods.Call(pipe, methods.get("cfg"), W, W, 0.0, STEPS, SIZE, SIZE)
    pos = families.encode_texts(pipe, [PROMPT, "a dog"], SIZE, SIZE)
    null = families.null_cond(pipe, pos, SIZE, SIZE)
    ref = run.chain(families.denoiser(pipe), _DiffusersGuider(guider), pos, null, None, [SEED, 3])
    assert torch.equal(got.images, ref)
    assert got.records[0]["apg"] == apg.model_dump() and got.records[0]["nfe"] == 2 * STEPS


def _apg(pipe, monkeypatch=None, **settings):
    """APG latents for two samples, and whether its norm clip bit at any step (a spy on the clip)."""
    from dnp_batch import guidance, methods

    bit = []
    if monkeypatch is not None:
        real = guidance.apg

        def spy(eps_null, eps_p, diff, w, eta=1.0, norm_threshold=15.0):
            norms = diff.flatten(1).norm(dim=1)
            bit.append(bool(norm_threshold > 0 and (norms > norm_threshold).any()))
            return real(eps_null, eps_p, diff, w, eta, norm_threshold)

        monkeypatch.setattr(guidance, "apg", spy)
    out = generate(pipe, [PROMPT, "a dog"], [SEED, 3], method=methods.ApgSettings(**settings), guidance_scale=W,
                   num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="latent")
    return out.images, any(bit)


def test_apg_is_cfg_unless_its_norm_clip_bites(pipe, monkeypatch):
    """With eta = 1 and no momentum, APG's parallel and orthogonal parts add back to eps_p - eps_∅,
    so APG is CFG up to float rounding wherever the norm clip does not bite. At the default
    threshold (15) whether it bites on these tiny random models depends on rounding, so the default
    case asserts what holds either way: equal to CFG when it did not bite (it equals diffusers'
    guider in both cases: test above). With no clip (threshold 0) it must equal CFG; with a clip
    forced to bite at every step (threshold 1e-3) it must not."""
    set_scheduler(pipe, "euler")
    cfg = ours(pipe, "cfg", "latent", seeds=(SEED, 3), prompts=(PROMPT, "a dog"))
    default, bit = _apg(pipe, monkeypatch)
    if not bit:
        assert_close(default, cfg, FORM_TOL, "APG (clip did not bite) vs CFG")
    unclipped, bit = _apg(pipe, monkeypatch, norm_threshold=0.0)
    assert not bit
    assert_close(unclipped, cfg, FORM_TOL, "APG without a clip vs CFG")
    forced, bit = _apg(pipe, monkeypatch, norm_threshold=1e-3)
    assert bit
    assert (forced - cfg).abs().max() > 100 * FORM_TOL


# SD 2.x's and zero-SNR fine-tunes' schedule (Lin et al., WACV 2024), which the v3 toy model also uses:
# v-prediction, betas rescaled to zero terminal SNR, trailing spacing (the first step is t = T, where
# sqrt(alpha_bar) = 0). diffusers' own pipeline call is the oracle, as above.
ZSNR_V = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
@pytest.mark.parametrize("method", ["cfg", "np", "dns"])
def test_equals_diffusers_with_v_prediction_and_zero_terminal_snr(tiny_sd, scheduler, method):
    from dnp_batch.models import SCHEDULERS

    tiny_sd.scheduler = SCHEDULERS[scheduler].from_config({**dict(tiny_sd.scheduler.config), **ZSNR_V})
    tiny_sd.scheduler.set_timesteps(STEPS)
    assert float(tiny_sd.scheduler.alphas_cumprod[int(tiny_sd.scheduler.timesteps[0])]) < 1e-6  # nothing left at t_0
    ref = diffusers_call(tiny_sd, method, "latent")
    got = ours(tiny_sd, method, "latent")
    assert torch.isfinite(got).all()
    assert_close(got, ref, PIPELINE_TOL, "latents vs diffusers, zero-SNR v-prediction")
    assert_close(ours(tiny_sd, method, "np"), diffusers_call(tiny_sd, method, "np"), PIPELINE_TOL,
                 "images vs diffusers, zero-SNR v-prediction")

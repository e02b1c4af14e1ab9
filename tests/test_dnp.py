"""auto-DNP, human DNP (phase two) and CNP in the library API (docs/METHODS.md §DNP, §CNP)."""

import numpy as np
import pytest
import torch

from dnp_batch import CnpSettings, DnpSettings, generate
from dnp_batch.api import fresh_seed
from dnp_batch.captioner import Captioner
from dnp_batch.models import set_scheduler
from dnp_batch.tiny import build_tiny

SIZE, STEPS = 64, 6
from numerics import BATCH_TOL, assert_close


class FixedCaptioner:
    """Returns the given captions in turn and counts the images it was shown."""

    model_id = "fixed"

    def __init__(self, *captions):
        self.captions, self.images = list(captions), []

    def caption(self, images):
        self.images.extend(images)
        return [self.captions[(len(self.images) - len(images) + j) % len(self.captions)] for j in range(len(images))]


@pytest.fixture(scope="module")
def blip2(tmp_path_factory):
    return Captioner(build_tiny("blip2", tmp_path_factory.mktemp("blip2") / "m"), max_new_tokens=8)


@pytest.fixture(params=["sd", "sdxl"])
def pipe(request, tiny_sd, tiny_sdxl):
    return tiny_sd if request.param == "sd" else tiny_sdxl


def run(pipe, method, prompts=("a cat", "a dog"), seeds=(3, 4), **kw):
    return generate(pipe, list(prompts), list(seeds), method=method, num_inference_steps=STEPS, height=SIZE, width=SIZE,
                    output_type="latent", **kw)


@pytest.mark.parametrize("scheduler", ["euler", "euler_a"])
def test_auto_dnp_equals_np_with_the_recorded_caption(pipe, blip2, scheduler):
    set_scheduler(pipe, scheduler)
    auto = run(pipe, "auto-dnp", captioner=blip2)
    captions = [r["negative_prompt"] for r in auto.records]
    assert all(isinstance(c, str) and c == c.strip() for c in captions)
    nonempty = [j for j, c in enumerate(captions) if c]
    assert nonempty, "the tiny BLIP-2 should caption at least one of these DNS images"
    for j in nonempty:
        ref = run(pipe, "np", prompts=[auto.records[j]["prompt"]], seeds=[auto.records[j]["seed"]],
                  negative_prompts=[captions[j]])
        assert_close(auto.images[j:j + 1], ref.images, BATCH_TOL, "batch composition")
    assert all(r["nfe"] == 4 * STEPS and r["captions"] == 1 and r["captioner"]["model"] for r in auto.records)


def test_auto_dnp_dns_images_are_the_dns_method_images(tiny_sd, blip2):
    auto = generate(tiny_sd, ["a cat"], [3], method="auto-dnp", captioner=blip2, num_inference_steps=STEPS,
                    height=SIZE, width=SIZE)
    dns = generate(tiny_sd, ["a cat"], [3], method="dns", num_inference_steps=STEPS, height=SIZE, width=SIZE)
    assert np.array_equal(np.asarray(auto.dns_images[0]), np.asarray(dns.images[0]))
    assert dns.dns_images is None


def test_empty_caption_falls_back_to_no_negative_and_is_flagged(pipe):
    auto = run(pipe, "auto-dnp", captioner=FixedCaptioner("a blurry photo", "   "))
    cfg = run(pipe, "cfg")
    np_ = run(pipe, "np", negative_prompts=["a blurry photo", "x"])
    assert [r["empty_negative"] for r in auto.records] == [False, True]
    assert [r["negative_prompt"] for r in auto.records] == ["a blurry photo", ""]
    assert_close(auto.images[1:], cfg.images[1:], BATCH_TOL, "batch composition")
    assert_close(auto.images[:1], np_.images[:1], BATCH_TOL, "batch composition")


def test_dnp_with_blank_human_negative_falls_back_to_cfg(tiny_sd):
    dnp = run(tiny_sd, "dnp", negative_prompts=["", "a dark room"])
    assert [r["empty_negative"] for r in dnp.records] == [True, False]
    assert_close(dnp.images[:1], run(tiny_sd, "cfg").images[:1], BATCH_TOL, "batch composition")


def test_auto_dnp_fresh_seed(tiny_sd):
    cap = FixedCaptioner("grass")
    auto = run(tiny_sd, DnpSettings(same_seed=False), captioner=cap)
    assert [r["np_seed"] for r in auto.records] == [fresh_seed(3), fresh_seed(4)] and fresh_seed(3) != 3
    ref = run(tiny_sd, "np", seeds=(fresh_seed(3), fresh_seed(4)), negative_prompts=["grass", "grass"])
    assert_close(auto.images, ref.images, BATCH_TOL, "batch composition")
    assert not torch.allclose(auto.images, run(tiny_sd, "auto-dnp", captioner=cap).images)


@pytest.mark.parametrize("steps,every", [(4, 1), (5, 2), (6, 3), (5, 10)])
def test_cnp_counts_match_the_formula(tiny_sdxl, steps, every):
    rows, cap = [], FixedCaptioner("fog", "rain", "")
    hook = tiny_sdxl.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        out = generate(tiny_sdxl, ["a cat"], [1], method=CnpSettings(every=every), captioner=cap, num_inference_steps=steps,
                       height=SIZE, width=SIZE, output_type="latent")
    finally:
        hook.remove()
    refreshes = list(range(0, steps, every))
    nfe = 2 * steps + 2 * sum(steps - i for i in refreshes)
    record = out.records[0]
    assert sum(rows) == nfe == record["nfe"]
    assert record["captions"] == len(refreshes) == len(cap.images) == len(record["cnp_captions"])
    assert record["cnp_every"] == every and record["negative_prompt"] == record["cnp_captions"][-1]
    assert len(out.dns_images) == 1


def test_cnp_with_one_refresh_equals_auto_dnp(pipe):
    """every >= T: one refresh, from z_T: the DNS chain, its caption, then NP — i.e. auto-DNP."""
    cnp = run(pipe, CnpSettings(every=STEPS), captioner=FixedCaptioner("a dark room", "grass"))
    auto = run(pipe, "auto-dnp", captioner=FixedCaptioner("a dark room", "grass"))
    assert_close(cnp.images, auto.images, BATCH_TOL, "batch composition")


def test_cnp_refreshes_change_the_result(tiny_sd):
    once = run(tiny_sd, CnpSettings(every=STEPS), captioner=FixedCaptioner("fog", "fog", "a cat"))
    often = run(tiny_sd, CnpSettings(every=1), captioner=FixedCaptioner("fog", "fog", "a cat"))
    assert not torch.allclose(once.images, often.images)


def test_captioned_methods_need_a_captioner_and_valid_every(tiny_sd):
    with pytest.raises(ValueError, match="needs a captioner"):
        run(tiny_sd, "auto-dnp")
    with pytest.raises(ValueError, match="cnp.every must be an integer >= 1"):
        run(tiny_sd, CnpSettings(every=0), captioner=FixedCaptioner("x"))

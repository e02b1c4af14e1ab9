"""ANSWER's invariants (docs/METHODS.md §ANSWER) on the tiny models."""

import pytest
import torch

from dnp_batch import AnswerSettings, generate, guidance
from dnp_batch.methods.answer import answer_nfe, negative_from_x0
from dnp_batch.models import set_scheduler

SIZE = 64
from chains import replay_main_chain, scheduler_state
from numerics import BATCH_TOL, FORM_TOL, assert_close


@pytest.fixture(params=["sd", "sdxl"])
def pipe(request, tiny_sd, tiny_sdxl):
    return tiny_sd if request.param == "sd" else tiny_sdxl


def run(pipe, method="answer", prompts=("a red cube",), seeds=(5,), steps=6, **kw):
    return generate(pipe, list(prompts), list(seeds), method=method, num_inference_steps=steps, height=SIZE, width=SIZE,
                    output_type="latent", **kw)


@pytest.mark.parametrize("scheduler", ["euler", "dpmpp_2m", "euler_a"])
def test_k_zero_is_bit_identical_to_cfg(pipe, scheduler):
    set_scheduler(pipe, scheduler)
    cfg = run(pipe, "cfg", prompts=("a cat", "a dog"), seeds=(1, 2)).images
    for answer in (AnswerSettings(k=0), AnswerSettings(until=0.0)):
        got = run(pipe, answer, prompts=("a cat", "a dog"), seeds=(1, 2)).images
        assert torch.equal(got, cfg)


def test_answer_with_k_differs_from_cfg(pipe):
    assert not torch.allclose(run(pipe, "answer").images, run(pipe, "cfg").images)


@pytest.mark.parametrize("scheduler", ["euler", "dpmpp_2m", "euler_a", "ddim", "ddim-zsnr-v"])
def test_main_scheduler_state_is_untouched_by_the_minichain(pipe, scheduler):
    """Replay the main chain's guided eps through a fresh scheduler with no mini-chain: the latents and
    the scheduler's whole state (step index, multistep history, noise drawn) match after every step.
    `ddim-zsnr-v`: v-prediction with zero terminal SNR and trailing spacing."""
    set_scheduler(pipe, scheduler.split("-")[0])
    if scheduler.endswith("zsnr-v"):
        pipe.scheduler = type(pipe.scheduler).from_config({
            **dict(pipe.scheduler.config), "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
            "timestep_spacing": "trailing"})
    seeds, steps = [5, 9], 6
    seen = []
    run(pipe, prompts=("a cat", "a dog"), seeds=seeds, steps=steps, method=AnswerSettings(k=2, until=1.0),
        callback=lambda s: seen.append((s["eps"].clone(), s["z"].clone(), scheduler_state(s["scheduler"]))))
    assert len(seen) == steps
    replay_main_chain(pipe, seen, seeds, steps, SIZE)


@pytest.mark.parametrize(
    "steps,answer",
    [
        (6, AnswerSettings()),
        (10, AnswerSettings()),
        (7, AnswerSettings(k=3, until=1.0)),
        (8, AnswerSettings(k=4, until=0.75, shape="linear")),
        (6, AnswerSettings(k=2, negative_eps="uncond")),
        (6, AnswerSettings(k=1, negative_eps="cond", normalize="channel")),
    ],
)
def test_unet_calls_match_the_nfe_formula(tiny_sdxl, steps, answer):
    rows = []
    hook = tiny_sdxl.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        out = run(tiny_sdxl, steps=steps, method=answer)
    finally:
        hook.remove()
    ks = answer.schedule(steps)
    expected = 2 * steps + 2 * sum(ks)
    if answer.negative_eps != "dns_guided":  # the chain's end needs one branch, not two
        expected -= sum(1 for k in ks if k > 0)
    assert sum(rows) == expected == out.records[0]["nfe"]
    # One batched call per main step and per mini-chain step: never a lone branch where a pair is due.
    assert len(rows) == steps + sum(ks)


def test_nfe_default_schedule_is_120_at_30_steps(tiny_sd):
    rows = []
    hook = tiny_sd.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        out = generate(tiny_sd, ["a cat", "a dog"], [0, 1], method="answer", num_inference_steps=30, height=32, width=32,
                       output_type="latent")
    finally:
        hook.remove()
    assert sum(rows) == 2 * 120  # two samples share each batched call
    assert out.records[0]["nfe"] == out.records[1]["nfe"] == 120
    assert out.records[0]["answer"]["k_schedule"] == [2] * 15 + [0] * 15


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m"])
def test_mixed_batch_equals_one_by_one(pipe, scheduler):
    set_scheduler(pipe, scheduler)
    prompts, seeds = ["a cat", "a dog on a sofa", "a cat"], [4, 4, 7]
    batch = run(pipe, prompts=prompts, seeds=seeds).images
    for j, (p, s) in enumerate(zip(prompts, seeds)):
        single = run(pipe, prompts=(p,), seeds=(s,)).images
        assert_close(batch[j:j + 1], single, BATCH_TOL, "mixed batch vs one by one")


def test_euler_ancestral_is_reproducible(pipe):
    set_scheduler(pipe, "euler_a")
    a = run(pipe, prompts=("a cat", "a dog"), seeds=(1, 2)).images
    b = run(pipe, prompts=("a cat", "a dog"), seeds=(1, 2)).images
    assert torch.equal(a, b)
    swapped = run(pipe, prompts=("a dog", "a cat"), seeds=(2, 1)).images
    assert_close(swapped[[1, 0]], a, BATCH_TOL, "swapped batch order")


def test_dnp_with_a_given_negative_equals_np(pipe):
    kw = dict(prompts=("a cat", "a dog"), seeds=(1, 2), negative_prompts=["a dark blurry room", "grass"])
    dnp = run(pipe, "dnp", **kw)
    assert torch.equal(dnp.images, run(pipe, "np", **kw).images)
    assert [r["negative_prompt"] for r in dnp.records] == ["a dark blurry room", "grass"]
    assert dnp.records[0]["method"] == "dnp"


@pytest.mark.parametrize("mode", ["global", "channel"])
def test_normalized_negative_has_the_reference_statistics(tiny_sd, mode, monkeypatch):
    """Catch the negative eps inside a real run and check Normalize's output statistics."""
    caught = []
    original = guidance.normalize

    def spy(x, reference, m):
        out = original(x, reference, m)
        caught.append((out, reference))
        return out

    monkeypatch.setattr(guidance, "normalize", spy)
    run(tiny_sd, steps=4, method=AnswerSettings(normalize=mode))
    assert len(caught) == 2  # K > 0 on the first half of 4 steps
    dims = (1, 2, 3) if mode == "global" else (2, 3)
    # float32: the statistics of the normalised tensor, recomputed, differ from the reference's by
    # the rounding of two sums over 256 (or 64) values of magnitude ~1 (~1e-7 each): 1e-5 bounds it.
    for out, ref in caught:
        torch.testing.assert_close(out.mean(dims), ref.mean(dims), rtol=0, atol=1e-5)
        torch.testing.assert_close(out.std(dims), ref.std(dims), rtol=1e-5, atol=1e-6)


def test_normalize_modes_and_negative_eps_change_the_result(tiny_sd):
    base = run(tiny_sd).images
    for answer in (AnswerSettings(normalize="channel"), AnswerSettings(normalize="none"),
                   AnswerSettings(negative_eps="uncond"), AnswerSettings(negative_eps="cond"),
                   AnswerSettings(shape="linear", k=3)):
        assert not torch.allclose(run(tiny_sd, method=answer).images, base), answer


def test_callback_sees_every_step(tiny_sd):
    steps = []
    run(tiny_sd, steps=4, callback=lambda s: steps.append(s["i"]))
    assert steps == [0, 1, 2, 3]


# ---- answer.negative_scale (λ) and answer.negative_eps: x0 (docs/METHODS.md §ANSWER, updated) ----


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_negative_scale_zero_is_bit_identical_to_cfg_and_runs_no_minichain(pipe, scheduler):
    set_scheduler(pipe, scheduler)
    cfg = run(pipe, "cfg", prompts=("a cat", "a dog"), seeds=(1, 2))
    got = run(pipe, AnswerSettings(negative_scale=0.0), prompts=("a cat", "a dog"), seeds=(1, 2))
    assert torch.equal(got.images, cfg.images)
    assert got.records[0]["nfe"] == 12 and got.records[0]["answer"]["negative_scale"] == 0.0


def test_negative_scale_null_is_the_papers_form_and_w_minus_one_equals_it(pipe):
    """λ = null computes step 3 as written (today's bits); λ = w - 1 is the same update in the
    CFG + push form (equal up to float rounding); another λ changes the result."""
    w = 4.0
    paper = run(pipe, guidance_scale=w).images
    assert torch.equal(run(pipe, guidance_scale=w, method=AnswerSettings(negative_scale=None)).images, paper)
    same = run(pipe, guidance_scale=w, method=AnswerSettings(negative_scale=w - 1)).images
    assert_close(same, paper, FORM_TOL, "lambda = w - 1 vs the paper's form")
    assert not torch.allclose(run(pipe, guidance_scale=w, method=AnswerSettings(negative_scale=0.5)).images, paper)


def test_answer_guidance_is_cfg_plus_the_push():
    g = torch.Generator().manual_seed(0)
    e0, ep, en = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(guidance.answer_guidance(e0, ep, en, 5.0, 2.5),
                               e0 + 5.0 * (ep - e0) + 2.5 * (e0 - en), rtol=0, atol=1e-12)
    assert torch.equal(guidance.answer_guidance(e0, ep, en, 5.0, 0.0), guidance.cfg(e0, ep, 5.0))
    assert torch.equal(guidance.answer_guidance(e0, ep, en, 5.0), guidance.negative_prompt_guidance(en, ep, 5.0))


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m"])
@pytest.mark.parametrize("prediction_type,zero_snr", [("epsilon", False), ("v_prediction", False),
                                                      ("v_prediction", True)])
def test_x0_conversion_matches_a_hand_computation(tiny_sd, scheduler, prediction_type, zero_snr):
    """The chain-end prediction at (z-, t_e) -> x0- -> the prediction that explains z_{t_i}. With
    zero terminal SNR (trailing spacing) the chain starts at step 0, t = T, where nothing of x0 is left."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpmpp_2m": DPMSolverMultistepScheduler}[scheduler]
    zsnr = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"} if zero_snr else {}
    sched = cls.from_config({**dict(tiny_sd.scheduler.config), "prediction_type": prediction_type, **zsnr})
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(1)
    z, z_end, pred = (torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    i, e = (0, 2) if zero_snr else (2, 4)
    if zero_snr:
        assert float(sched.alphas_cumprod[int(sched.timesteps[i])]) < 1e-6
    if scheduler == "euler":  # sigma space: z = x0 + s·eps; v as EulerDiscreteScheduler converts it
        s_e, s_i = float(sched.sigmas[e]), float(sched.sigmas[i])
        if prediction_type == "epsilon":
            x0 = z_end - s_e * pred
            want = (z - x0) / s_i
        else:
            x0 = pred * (-s_e / (s_e**2 + 1) ** 0.5) + z_end / (s_e**2 + 1)
            want = (z / (s_i**2 + 1) - x0) * (s_i**2 + 1) ** 0.5 / s_i
    else:  # VP: z = sqrt(a)·x0 + sqrt(1 - a)·eps, a = alphas_cumprod[t]
        a_e = float(sched.alphas_cumprod[int(sched.timesteps[e])])
        a_i = float(sched.alphas_cumprod[int(sched.timesteps[i])])
        if prediction_type == "epsilon":
            x0 = (z_end - (1 - a_e) ** 0.5 * pred) / a_e**0.5
            want = (z - a_i**0.5 * x0) / (1 - a_i) ** 0.5
        else:
            x0 = a_e**0.5 * z_end - (1 - a_e) ** 0.5 * pred
            eps = (z - a_i**0.5 * x0) / (1 - a_i) ** 0.5
            want = a_i**0.5 * eps - (1 - a_i) ** 0.5 * x0
    got = negative_from_x0(sched, pred, z_end, e, z, i)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpmpp_2m"])
def test_x0_negative_runs_with_the_nfe_of_dns_guided(tiny_sd, scheduler):
    set_scheduler(tiny_sd, scheduler)
    answer = AnswerSettings(negative_eps="x0", normalize="none")
    out = run(tiny_sd, method=answer)
    assert out.records[0]["nfe"] == answer_nfe(6, answer.schedule(6), "x0") == 6 * 2 + 2 * 2 * 3
    assert torch.isfinite(out.images).all()
    assert not torch.allclose(out.images, run(tiny_sd, method=AnswerSettings(normalize="none")).images)


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_answer_on_zero_terminal_snr_v_prediction(tiny_sd, scheduler):
    """SD 2.x's / the v3 toy model's schedule: K = 0 is CFG bit for bit, both negative modes stay
    finite from the t = T step (sqrt(alpha_bar) = 0) on, and the mini-chain leaves the main chain alone."""
    from dnp_batch.models import SCHEDULERS

    zsnr = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    tiny_sd.scheduler = SCHEDULERS[scheduler].from_config({**dict(tiny_sd.scheduler.config), **zsnr})
    cfg = run(tiny_sd, "cfg").images
    assert torch.equal(run(tiny_sd, method=AnswerSettings(k=0)).images, cfg)
    for mode in ("dns_guided", "x0"):
        got = run(tiny_sd, method=AnswerSettings(k=2, until=1.0, negative_eps=mode)).images
        assert torch.isfinite(got).all() and not torch.allclose(got, cfg), mode

"""The flow-matching families (docs/METHODS.md §Flow-matching families) on their tiny twins, SD3.5
and Qwen-Image: cfg / np / dns against the diffusers pipelines themselves, and every method's
invariants there."""

import copy

import pytest
import torch

from dnp_batch import AnswerSettings, ApgSettings, families, generate
from dnp_batch.methods.answer import negative_from_x0

from chains import replay_main_chain, scheduler_state
from numerics import BATCH_TOL, FORM_TOL, PIPELINE_TOL, assert_close

STEPS, SIZE, W = 5, 64, 6.0
PROMPT, NEG, SEED = "a red cube on a blue table", "blurry, low quality", 11


@pytest.fixture(params=["sd3", "qwenimage"])
def pipe(request):
    return request.getfixturevalue(f"tiny_{request.param}")


def diffusers_call(pipe, method, output_type, seed=SEED, prompt=PROMPT, neg=NEG):
    """The pipeline call docs/METHODS.md pins for each method: ∅ is SD3's "" and Qwen-Image's " "
    (its true CFG runs only with a negative prompt); dns is positive ∅, negative p. Latents as the
    pipeline returns them (Qwen-Image's packed into 2×2-patch tokens)."""
    kw = dict(num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type=output_type,
              generator=torch.Generator().manual_seed(seed))
    if families.family_of(pipe).name == "qwenimage":
        kw["true_cfg_scale"], null = W, " "
    else:
        kw["guidance_scale"], null = W, ""
    if method == "cfg":
        out = pipe(prompt=prompt, negative_prompt=None if null == "" else null, **kw).images
    elif method == "np":
        out = pipe(prompt=prompt, negative_prompt=neg, **kw).images
    else:
        out = pipe(prompt=null, negative_prompt=prompt, **kw).images
    return torch.as_tensor(out)


def as_pipeline_returns(pipe, latents):
    """Our latents (N, C, H, W) in the layout the pipeline's `output_type="latent"` gives."""
    if families.family_of(pipe).name == "qwenimage":
        from dnp_batch.families.qwenimage import pack

        return pack(latents)
    return latents


def ours(pipe, method, output_type="latent", seeds=(SEED,), prompts=(PROMPT,), negs=(NEG,), steps=STEPS, **kw):
    return generate(pipe, list(prompts), list(seeds), method=method,
                    negative_prompts=list(negs) if method == "np" else None, guidance_scale=W,
                    num_inference_steps=steps, height=SIZE, width=SIZE, output_type=output_type, **kw)


@pytest.mark.parametrize("method", ["cfg", "np", "dns"])
def test_equals_diffusers(pipe, method):
    """Bit for bit: the loop batches [∅ or n, p] into one transformer call as the pipeline does."""
    for output_type in ("latent", "np"):
        ref = diffusers_call(pipe, method, output_type)
        got = torch.as_tensor(ours(pipe, method, output_type).images)
        got = as_pipeline_returns(pipe, got) if output_type == "latent" else got
        assert got.shape == ref.shape
        assert_close(got, ref, PIPELINE_TOL, f"{output_type} vs diffusers")


def test_batch_of_mixed_prompts_and_seeds_equals_diffusers_one_by_one(pipe):
    prompts, seeds, negs = ["a red cube", "a photo of the table", "a red cube"], [3, 3, 8], ["dark", "", "dark"]
    got = ours(pipe, "np", seeds=seeds, prompts=prompts, negs=negs).images
    for j, (p, s, n) in enumerate(zip(prompts, seeds, negs)):
        assert_close(as_pipeline_returns(pipe, got[j:j + 1]), diffusers_call(pipe, "np", "latent", seed=s, prompt=p, neg=n),
                     BATCH_TOL, "batch vs diffusers one by one")


def test_records_name_the_family_scheduler_and_shift(pipe):
    rec = ours(pipe, "cfg").records[0]
    assert rec["pipeline"] == type(pipe).__name__
    assert rec["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert rec["scheduler_config"]["shift"] == pipe.scheduler.config.shift


def test_answer_k_zero_is_bit_identical_to_cfg_and_k_changes_it(pipe):
    cfg = ours(pipe, "cfg", prompts=("a cube", "a table"), seeds=(1, 2)).images
    for answer in (AnswerSettings(k=0), AnswerSettings(until=0.0), AnswerSettings(negative_scale=0.0)):
        assert torch.equal(ours(pipe, answer, prompts=("a cube", "a table"), seeds=(1, 2)).images, cfg)
    assert not torch.allclose(ours(pipe, "answer", prompts=("a cube", "a table"), seeds=(1, 2)).images, cfg)


def test_main_scheduler_state_is_untouched_by_the_minichain(pipe):
    """The main chain's guided velocities replayed through a fresh flow scheduler with no mini-chain
    reproduce the latents and the scheduler's whole state (step index, sigmas, shift) after every step."""
    seeds, steps, seen = [5, 9], 6, []
    ours(pipe, AnswerSettings(k=2, until=1.0), prompts=("a cube", "a table"), seeds=seeds, steps=steps,
         callback=lambda s: seen.append((s["eps"].clone(), s["z"].clone(), scheduler_state(s["scheduler"]))))
    assert len(seen) == steps
    replay_main_chain(pipe, seen, seeds, steps, SIZE)


@pytest.mark.parametrize("steps,answer", [(6, AnswerSettings()), (7, AnswerSettings(k=3, until=1.0)),
                                          (6, AnswerSettings(k=2, negative_eps="uncond")),
                                          (6, AnswerSettings(k=1, negative_eps="x0", normalize="channel"))])
def test_network_calls_match_the_nfe_formula(pipe, steps, answer):
    rows = []
    net = families.network(pipe)
    hook = net.register_forward_pre_hook(lambda m, args, kwargs: rows.append(kwargs["hidden_states"].shape[0]),
                                         with_kwargs=True)
    try:
        out = ours(pipe, answer, steps=steps)
    finally:
        hook.remove()
    ks = answer.schedule(steps)
    expected = 2 * steps + 2 * sum(ks) - (sum(1 for k in ks if k) if answer.negative_eps in ("uncond", "cond") else 0)
    assert sum(rows) == expected == out.records[0]["nfe"]
    # one batched call per main step and per mini-chain step (SD3, as its pipeline); one per branch (Qwen-Image's)
    assert len(rows) == (expected if families.family_of(pipe).name == "qwenimage" else steps + sum(ks))


def test_answer_mixed_batch_equals_one_by_one(pipe):
    prompts, seeds = ["a cube", "a red table on the cube", "a cube"], [4, 4, 7]
    batch = ours(pipe, "answer", prompts=prompts, seeds=seeds).images
    for j, (p, s) in enumerate(zip(prompts, seeds)):
        assert_close(batch[j:j + 1], ours(pipe, "answer", prompts=[p], seeds=[s]).images, BATCH_TOL,
                     "batch vs one by one")


def test_x0_conversion_matches_a_hand_computation(pipe):
    """Rectified flow: x0- = z- - σ_e·v-, then the velocity that explains z at σ_i: (z - x0-) / σ_i."""
    sched = copy.deepcopy(pipe.scheduler)
    families.set_timesteps(pipe, sched, 10, SIZE, SIZE)
    g = torch.Generator().manual_seed(1)
    z, z_end, v = (torch.randn(1, 16, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    i, e = 2, 4
    s_i, s_e = float(sched.sigmas[i]), float(sched.sigmas[e])
    assert 0 < s_e < s_i < 1
    x0 = z_end - s_e * v
    want = (z - x0) / s_i
    torch.testing.assert_close(negative_from_x0(sched, v, z_end, e, z, i), want, rtol=1e-12, atol=1e-12)
    # and the velocity is consistent: stepping z by it to σ = 0 lands on x0
    torch.testing.assert_close(z + (0 - s_i) * want, x0, rtol=1e-12, atol=1e-12)


def test_apg_and_every_answer_mode_run_and_stay_finite(pipe):
    cfg = ours(pipe, "cfg").images
    for method in (ApgSettings(eta=0.0), AnswerSettings(negative_eps="x0"), AnswerSettings(negative_eps="cond"),
                   AnswerSettings(shape="linear", k=3, normalize="none", negative_scale=2.0)):
        got = ours(pipe, method).images
        assert torch.isfinite(got).all() and not torch.allclose(got, cfg), method


def test_apg_without_clip_or_momentum_is_cfg(pipe):
    """APG with eta = 1 and no norm clip leaves CFG's update unchanged (the parallel part is kept)."""
    got = ours(pipe, ApgSettings(eta=1.0, norm_threshold=0.0)).images
    assert_close(got, ours(pipe, "cfg").images, FORM_TOL, "APG (eta 1, no clip) vs CFG")


def test_a_guidance_distilled_pipeline_is_refused_in_one_line(tmp_path):
    """A FLUX.1-dev layout (guidance_embeds): load_pipeline names it and the families that have a negative branch."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from dnp_batch import load_pipeline
    from dnp_batch.tiny import clip_tokenizer, t5_tokenizer

    tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(0)
    FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=AutoencoderKL(block_out_channels=[32], latent_channels=4, norm_num_groups=32, sample_size=32),
        text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                                  num_hidden_layers=1, vocab_size=1000, projection_dim=32,
                                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                                  pad_token_id=tok.pad_token_id)),
        tokenizer=tok,
        text_encoder_2=T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=1,
                                               num_heads=4, decoder_start_token_id=0)),
        tokenizer_2=t5_tok,
        transformer=FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                           attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                           pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True),
    ).save_pretrained(tmp_path / "flux", safe_serialization=True)
    with pytest.raises(ValueError) as err:
        load_pipeline(tmp_path / "flux")
    message = str(err.value)
    assert "\n" not in message and "guidance-distilled FluxPipeline" in message and "no negative branch" in message
    assert "sd, sdxl, sd3, qwenimage" in message


def test_qwenimage_rescales_each_guided_prediction_per_token(tiny_qwenimage):
    """The true-CFG rescale: per 2×2-patch token, the guided velocity has the reference branch's norm."""
    from dnp_batch.families.qwenimage import pack, rescale_to_reference

    g = torch.Generator().manual_seed(0)
    comb, ref = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    out = pack(rescale_to_reference(comb, ref))
    torch.testing.assert_close(out.norm(dim=-1), pack(ref).norm(dim=-1))
    cos = torch.nn.functional.cosine_similarity(out, pack(comb), dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos))  # direction kept
    on = ours(tiny_qwenimage, "cfg")
    assert on.records[0]["family"] == "qwenimage" and on.records[0]["norm_rescale"] is True
    assert torch.equal(ours(tiny_qwenimage, "cfg", norm_rescale=True).images, on.images)  # the default


def test_qwenimage_rescale_is_a_knob_and_other_families_refuse_it(tiny_qwenimage, tiny_sd3):
    """norm_rescale=False turns the rescale off (the ablation) and is recorded; SD3 has no such rescale."""
    off = ours(tiny_qwenimage, "cfg", norm_rescale=False)
    assert off.records[0]["norm_rescale"] is False
    assert not torch.allclose(off.images, ours(tiny_qwenimage, "cfg").images)
    with pytest.raises(ValueError, match="norm_rescale applies to the families with a rescale of guided "
                                         "predictions \\(qwenimage\\); this pipeline is family 'sd3'"):
        ours(tiny_sd3, "cfg", norm_rescale=False)


@pytest.mark.parametrize("family", ["sd3", "qwenimage"])
def test_a_vp_scheduler_swap_is_refused_in_one_line(family, request):
    """`scheduler: euler` (or any of names.SCHEDULER_CLASSES) would rebuild a VP scheduler from the
    flow-matching config; a flow family's pipeline refuses it, naming its own scheduler."""
    from dnp_batch.models import set_scheduler

    pipe = request.getfixturevalue(f"tiny_{family}")
    with pytest.raises(ValueError, match=rf"scheduler 'euler': a {family} pipeline samples with its own "
                                         r"FlowMatchEulerDiscreteScheduler \(flow matching\)") as err:
        set_scheduler(pipe, "euler")
    assert "\n" not in str(err.value) and type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"

"""The guidance math against docs/METHODS.md's formulas, on hand-made tensors."""

import pytest
import torch
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import rescale_noise_cfg as diffusers_rescale

from dnp_batch import guidance
from dnp_batch.methods.answer import answer_nfe, k_schedule


def test_cfg_np_dns_formulas_on_scalars():
    e_null, e_p, e_n = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([-2.0])
    assert guidance.cfg(e_null, e_p, 7.0).item() == 1.0 + 7.0 * (3.0 - 1.0)
    assert guidance.negative_prompt_guidance(e_n, e_p, 7.0).item() == -2.0 + 7.0 * (3.0 + 2.0)
    # DNS: NP with positive ∅ and negative p
    assert guidance.dns(e_null, e_p, 5.0).item() == 3.0 + 5.0 * (1.0 - 3.0)
    assert torch.equal(guidance.dns(e_null, e_p, 5.0), guidance.negative_prompt_guidance(e_p, e_null, 5.0))


def test_guidance_scale_one_gives_the_positive_branch():
    g = torch.Generator().manual_seed(0)
    e_null, e_p = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    torch.testing.assert_close(guidance.cfg(e_null, e_p, 1.0), e_p)
    torch.testing.assert_close(guidance.dns(e_null, e_p, 1.0), e_null)


def test_rescale_equals_diffusers():
    g = torch.Generator().manual_seed(1)
    noise_cfg, eps_p = torch.randn(3, 4, 8, 8, generator=g) * 3, torch.randn(3, 4, 8, 8, generator=g)
    for r in (0.0, 0.3, 0.7, 1.0):
        assert torch.equal(guidance.rescale_noise_cfg(noise_cfg, eps_p, r), diffusers_rescale(noise_cfg, eps_p, r))


@pytest.mark.parametrize("mode", ["global", "channel"])
def test_normalize_gives_the_reference_statistics(mode):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 16, 16, generator=g, dtype=torch.float64) * 5 + 2
    ref = torch.randn(3, 4, 16, 16, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1, 2, 3]).view(1, 4, 1, 1)
    out = guidance.normalize(x, ref, mode)
    dims = (1, 2, 3) if mode == "global" else (2, 3)
    # float64: sums of 1024 values of magnitude ~10 round to ~1e-15 each; 1e-12 (1e-10 for the
    # standardised pattern, a quotient of two such sums) bounds that with room.
    torch.testing.assert_close(out.mean(dims), ref.mean(dims), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.std(dims), ref.std(dims), rtol=0, atol=1e-12)
    # Normalize is affine per group: the standardised pattern of x is kept.
    z = lambda t: (t - t.mean(dims, keepdim=True)) / t.std(dims, keepdim=True)  # noqa: E731
    torch.testing.assert_close(z(out), z(x), rtol=0, atol=1e-10)


def test_normalize_global_and_channel_differ_and_none_is_identity():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    ref = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 4]).view(1, 4, 1, 1)
    assert not torch.allclose(guidance.normalize(x, ref, "global"), guidance.normalize(x, ref, "channel"))
    assert guidance.normalize(x, ref, "none") is x
    with pytest.raises(ValueError, match="answer.normalize"):
        guidance.normalize(x, ref, "batch")


def test_k_schedule_default_constant():
    ks = [k_schedule(i, 30) for i in range(30)]
    assert ks == [2] * 15 + [0] * 15  # DNS only while t > T/2
    assert answer_nfe(30, ks) == 120  # docs/METHODS.md: 60 + 2·2·15


def test_k_schedule_linear_goes_from_k_to_one():
    ks = [k_schedule(i, 20, k=4, until=0.5, shape="linear") for i in range(20)]
    assert ks[0] == 4 and ks[9] == 1 and ks[10:] == [0] * 10
    assert all(a >= b for a, b in zip(ks, ks[1:]))


def test_k_schedule_clamps_to_the_last_step():
    T = 6
    ks = [k_schedule(i, T, k=3, until=1.0) for i in range(T)]
    assert ks == [3, 3, 3, 2, 1, 0]
    assert all(i + k <= T - 1 for i, k in enumerate(ks))


def test_k_schedule_edges():
    assert [k_schedule(i, 10, k=0) for i in range(10)] == [0] * 10
    assert [k_schedule(i, 10, until=0.0) for i in range(10)] == [0] * 10
    assert [k_schedule(i, 1, k=2, until=1.0) for i in range(1)] == [0]
    with pytest.raises(ValueError, match="answer.shape"):
        k_schedule(0, 10, shape="cosine")


def test_answer_nfe_single_branch_modes():
    ks = [2, 2, 0]
    assert answer_nfe(3, ks, "dns_guided") == 6 + 8
    assert answer_nfe(3, ks, "uncond") == 6 + 8 - 2

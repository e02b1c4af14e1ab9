"""Bad input to the library API: a clear ValueError naming the argument, before any work."""

import pytest

from dnp_batch import AnswerSettings, generate, load_pipeline


@pytest.fixture
def pipe(tiny_sd):
    calls = []
    tiny_sd.unet.register_forward_pre_hook(lambda m, args: calls.append(1))
    yield tiny_sd
    assert calls == [], "bad input must be refused before the UNet runs"


class ScoreLike:
    """Not any method's settings."""


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(prompts=[], seeds=[]), "prompts is empty"),
        (dict(prompts="a cat", seeds=[0]), "prompts must be a list"),
        (dict(prompts=["a", "b"], seeds=[0]), "seeds has 1 entries but prompts has 2"),
        (dict(seeds=[-1]), "seeds must be non-negative"),
        (dict(method="foo"), "method must be one of"),
        (dict(method="np"), "needs negative_prompts"),
        (dict(method="np", negative_prompts=["x", "y"]), "negative_prompts must be a list with one string per prompt"),
        (dict(method="cfg", negative_prompts=["x"]), "negative_prompts only apply"),
        (dict(num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
        (dict(height=60), "height must be a positive multiple of the VAE factor 8"),
        (dict(width=0), "width must be a positive multiple"),
        (dict(output_type="jpeg"), "output_type must be one of"),
        (dict(batch_size=0), "batch_size must be"),
        (dict(method={"k": 2}),
         r"method must be a name \(cfg, .*\) or a method's settings \(.*AnswerSettings.*\); got dict"),
        (dict(method=ScoreLike()), "got ScoreLike"),
    ],
)
def test_bad_arguments(pipe, kwargs, match):
    args = dict(prompts=["a cat"], seeds=[0], method="answer", num_inference_steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate(pipe, **args)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=-1), "answer.k must be an integer >= 0"),
        (dict(k=1.5), "answer.k must be an integer"),
        (dict(until=1.5), r"answer.until must be a fraction in \[0, 1\]"),
        (dict(until=-0.1), "answer.until"),
        (dict(shape="cosine"), "answer.shape must be one of"),
        (dict(normalize="batch"), "answer.normalize must be one of"),
        (dict(negative_eps="x"), "answer.negative_eps must be one of"),
    ],
)
def test_bad_answer_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnswerSettings(**kwargs)


def test_method_is_a_name_or_its_settings_and_the_rest_keywords(tiny_sd):
    """`method=AnswerSettings(...)` names the method and sets its knobs; the name alone runs the
    method's defaults; everything after the seeds is keyword-only."""
    args = dict(num_inference_steps=6, height=32, width=32, output_type="latent")
    pipe = tiny_sd
    by_name = generate(pipe, ["a cat"], [0], method="answer", **args)
    default = generate(pipe, ["a cat"], [0], method=AnswerSettings(), **args)
    knobs = generate(pipe, ["a cat"], [0], method=AnswerSettings(k=1, until=1.0, negative_eps="uncond"), **args)
    assert by_name.images.equal(default.images) and by_name.records == [
        {**r, "seconds": by_name.records[0]["seconds"]} for r in default.records]
    assert knobs.records[0]["method"] == "answer" and knobs.records[0]["answer"]["k"] == 1
    assert not knobs.images.equal(default.images)
    assert generate(pipe, ["a cat"], [0], **args).records[0]["method"] == "cfg"  # the default method
    with pytest.raises(TypeError):
        generate(pipe, ["a cat"], [0], "answer")  # the method is keyword-only


def test_not_a_pipeline():
    with pytest.raises(ValueError, match="pipe must be a diffusers"):
        generate(object(), ["a cat"], [0], method="cfg")


def test_directory_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{tmp_path} is not a diffusers pipeline directory"):
        load_pipeline(tmp_path)

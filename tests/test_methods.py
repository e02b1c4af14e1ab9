"""The method registry (dnp_batch.methods): one list of methods, each declaring its needs, knobs and NFE."""

import pytest

from dnp_batch import generate, methods
from dnp_batch.config import JobConfig, load_config
from dnp_batch.sweep import AXES


class FixedCaptioner:
    model_id = "fixed"

    def caption(self, images):
        return ["a blurry photo"] * len(images)


def test_one_list_of_methods_everywhere():
    assert methods.METHODS == ("cfg", "np", "dns", "dnp", "auto-dnp", "cnp", "answer", "apg")
    assert JobConfig.model_fields["method"].annotation.__args__ == methods.METHODS
    for section, model in methods.sections().items():
        assert isinstance(getattr(JobConfig(), section), model)
        assert {f"{section}.{name}" for name in model.model_fields} <= set(AXES)
    with pytest.raises(ValueError, match="method must be one of cfg, np"):
        methods.get("cgf")


def test_the_static_config_declares_every_registered_section():
    """JobConfig is written field by field (a reader and a type checker see `cfg.answer`); it must
    hold exactly the method registry's sections, and the scorer registry's settings, with their models."""
    from dnp_batch import scorers
    from dnp_batch.config import ScorersSettings

    fields = JobConfig.model_fields
    assert {name: fields[name].annotation for name in methods.sections() if name in fields} == methods.sections()
    models = set(methods.sections().values())
    assert sorted(name for name, f in fields.items() if f.annotation in models) == sorted(methods.sections())
    assert {name: f.annotation for name, f in ScorersSettings.model_fields.items()} == scorers.SETTINGS


@pytest.mark.parametrize("name", methods.METHODS)
def test_nfe_formula_matches_the_measured_count(tiny_sd, name):
    m = methods.get(name)
    settings = {"answer": methods.AnswerSettings(k=2, until=1.0, negative_eps="uncond"),
                "cnp": methods.CnpSettings(every=2)}
    given = settings.get(m.section, name)  # the method's settings object, or its name
    out = generate(tiny_sd, ["a cat"], [0], method=given, num_inference_steps=5, output_type="latent",
                   negative_prompts=["fog"] if m.needs_negative else None,
                   captioner=FixedCaptioner() if m.needs_captioner else None)
    assert out.records[0]["nfe"] == m.nfe(5, settings.get(m.section)), name


def test_auto_dnp_phases_equal_the_in_process_run(tiny_sd):
    """Phase one (describe_dns) then phase two (generate with captions) is the library's auto-DNP."""
    from dnp_batch.api import describe_dns

    prompts, seeds = ["a cat", "a dog"], [3, 4]
    fresh = methods.DnpSettings(same_seed=False)
    whole = generate(tiny_sd, prompts, seeds, method=fresh, captioner=FixedCaptioner(), num_inference_steps=4,
                     output_type="latent")
    first = describe_dns(tiny_sd, prompts, seeds, captioner=FixedCaptioner(), num_inference_steps=4)
    second = generate(tiny_sd, prompts, seeds, method=fresh, captions=first.captions, num_inference_steps=4,
                      output_type="latent", captioner={"model": "fixed", "max_new_tokens": None,
                                                                         "prompt": None})
    assert second.images.equal(whole.images)
    assert first.nfe == [8, 8] and [r["nfe"] for r in second.records] == [8, 8]
    drop = ("nfe", "seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in second.records] == \
        [{k: v for k, v in r.items() if k not in drop} for r in whole.records]
    with pytest.raises(ValueError, match="captions are phase two"):
        generate(tiny_sd, prompts, seeds, method="cfg", captions=["x", "y"], num_inference_steps=2)


def test_method_settings_are_one_model_for_library_and_config():
    cfg = load_config(sets=["answer.k=3", "cnp.every=2", "dnp.same_seed=false"])
    # the built-in toy-world defaults add λ = 1 (toyworld/plugin.py TOY_DEFAULTS) to the answer section
    assert cfg.answer == methods.AnswerSettings(k=3, negative_scale=1.0) and cfg.cnp.every == 2 and cfg.dnp.same_seed is False
    with pytest.raises(ValueError, match="cnp.every must be an integer >= 1"):
        load_config(sets=["cnp.every=0"])

"""The method registry (dnp_batch.methods): one list of methods, each declaring its needs, knobs and NFE."""

import pytest

from dnp_batch import generate, methods
from dnp_batch.config import JobConfig, load_config
from dnp_batch.sweep import AXES


class FixedCaptioner:
    model_id = "fixed"

    def caption(self, images):
        return ["a blurry photo"] * len(images)


BUILT_IN = ("cfg", "np", "dns", "dnp", "auto-dnp", "cnp", "answer", "apg")


def test_one_list_of_methods_everywhere():
    assert methods.METHODS[:len(BUILT_IN)] == BUILT_IN  # a method added since (its file alone) comes after
    assert JobConfig.model_fields["method"].annotation.__args__ == methods.METHODS
    for section, model in methods.sections().items():
        assert isinstance(getattr(JobConfig(), section), model)
        assert {f"{section}.{name}" for name in model.model_fields} <= set(AXES)
    with pytest.raises(ValueError, match="method must be one of cfg, np"):
        methods.get("cgf")


def test_the_static_config_declares_every_built_in_section():
    """JobConfig is written field by field (a reader and a type checker see `cfg.answer`): every
    built-in method's section is declared with the registry's model, and the scorer registry's
    settings likewise. (A method added since is read through the registry: the next test.)"""
    from dnp_batch import scorers
    from dnp_batch.config import ScorersSettings

    fields = JobConfig.model_fields
    built_in = {methods.get(name).section for name in BUILT_IN} - {None}
    assert built_in == {"answer", "dnp", "cnp", "apg"}
    assert {name: fields[name].annotation for name in built_in} == {k: methods.sections()[k] for k in built_in}
    assert {name: f.annotation for name, f in ScorersSettings.model_fields.items()} == scorers.SETTINGS


def test_a_new_methods_section_needs_no_config_line(monkeypatch):
    """A method whose file alone declares its settings (its section undeclared in JobConfig): the
    config takes its section, checked by its model with the usual one-line messages, reads it as
    `cfg.SECTION` (its defaults when absent) and writes it into the manifest's dump; other unknown
    keys are still refused."""
    from pydantic import Field

    from dnp_batch.settings import SettingsError, Strict

    class DemoSettings(Strict):
        section = "demo"
        start: float = Field(0.0, ge=0, le=1, strict=True, description="a fraction in [0, 1]")

    registered = methods.sections()
    monkeypatch.setattr(methods, "sections", lambda: {**registered, "demo": DemoSettings})
    assert JobConfig().demo == DemoSettings()
    cfg = load_config(None, sets=["demo.start=0.25"])
    assert cfg.demo == DemoSettings(start=0.25) and cfg.answer == JobConfig().answer
    assert cfg.model_dump(mode="json")["demo"] == {"start": 0.25}
    assert JobConfig(**cfg.model_dump()) == cfg
    for sets, message in ((["demo.start=2"], "demo.start must be a fraction in [0, 1], got 2"),
                          (["demo.stat=0.5"], "demo.stat: Extra inputs are not permitted"),
                          (["demo=3"], "demo must be a mapping of its settings, got 3"),
                          (["dem.start=0.5"], "dem: Extra inputs are not permitted")):
        with pytest.raises(ValueError) as err:
            load_config(None, sets=sets)
        assert str(err.value) == f"config: {message}"
    monkeypatch.setattr(methods, "sections", lambda: registered)
    with pytest.raises(SettingsError, match="demo: Extra inputs are not permitted"):
        JobConfig(demo={})


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
    assert cfg.answer == methods.AnswerSettings(k=3) and cfg.cnp.every == 2 and cfg.dnp.same_seed is False
    with pytest.raises(ValueError, match="cnp.every must be an integer >= 1"):
        load_config(sets=["cnp.every=0"])

"""Pipeline families (dnp_batch.families): a loaded pipeline finds its adapter, others are refused."""

import pytest

from dnp_batch import families, generate
from dnp_batch.toyworld.plugin import TOY_MODEL_DIR
from dnp_batch.models import load_pipeline


def test_a_loaded_pipeline_finds_its_family(tiny_sd, tiny_sdxl, tiny_sd3, tiny_qwenimage):
    assert families.family_of(tiny_sd).name == "sd"
    assert families.family_of(tiny_sdxl).name == "sdxl"
    assert families.family_of(tiny_sd3).name == "sd3"
    assert families.family_of(tiny_qwenimage).name == "qwenimage"
    assert families.family_of(load_pipeline(TOY_MODEL_DIR)).name == "sd"
    assert list(families.FAMILIES) == ["sd", "sdxl", "sd3", "qwenimage"]


def test_a_pipeline_of_no_family_gets_one_error_naming_it(tiny_sd):
    class NotAPipeline:
        pass

    with pytest.raises(ValueError, match=r"^pipe must be a diffusers StableDiffusionPipeline or "
                                         r"StableDiffusionXLPipeline or StableDiffusion3Pipeline or QwenImagePipeline, got NotAPipeline$"):
        families.family_of(NotAPipeline())
    with pytest.raises(ValueError, match="got NotAPipeline"):
        generate(NotAPipeline(), ["a cat"], [0], method="cfg")

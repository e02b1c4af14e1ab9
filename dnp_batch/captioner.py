"""BLIP-2 captioning for auto-DNP (docs/METHODS.md §DNP step 2) (its tiny random twin: `dnp_batch.tiny`).

Greedy, unconditional by default (`max_new_tokens=30`); a hub id or a local directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from PIL import Image
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from .runtime import quiet_progress_bars, resolve_dtype

DEFAULT_CAPTIONER = "Salesforce/blip2-opt-2.7b"
BLIP2_MODEL_TYPE = "blip-2"

# transformers >= 4.56 takes `dtype` and warns on `torch_dtype`; older releases only know `torch_dtype`.
_DTYPE_KWARG = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"

def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode the image file at `path`, as RGB."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ValueError(f"cannot read image {path}: {err}") from err


def _check_blip2_dir(path: Path) -> None:
    expected = "expected a BLIP-2 model directory (config.json with model_type 'blip-2' and safetensors weights)"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} is not a BLIP-2 model: no config.json; {expected}")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a BLIP-2 model: unreadable config.json ({err}); {expected}") from err
    if model_type != BLIP2_MODEL_TYPE:
        raise ValueError(f"{path} is not a BLIP-2 model: config.json has model_type {model_type!r}; {expected}")


def check_captioner_source(id_or_dir: str | os.PathLike) -> None:
    """Cheap check before any load: an existing local path must be a BLIP-2 model dir."""
    path = Path(id_or_dir).expanduser()
    if path.exists():
        _check_blip2_dir(path)


class Captioner:
    """Batched greedy BLIP-2 captions for PIL images; optionally conditioned on a text `prompt`."""

    def __init__(
        self,
        id_or_dir: str | os.PathLike = DEFAULT_CAPTIONER,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
        max_new_tokens: int = 30,
        prompt: str | None = None,
    ):
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        self.model_id = id_or_dir
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        path = Path(id_or_dir).expanduser()
        if path.exists():
            _check_blip2_dir(path)
            self.model, self.processor = self._load(str(path))
        else:
            try:
                self.model, self.processor = self._load(str(id_or_dir))
            except Exception as err:  # hub/network errors come in many types; name the id once
                raise ValueError(
                    f"{str(id_or_dir)!r} is neither a local directory nor a loadable BLIP-2 model id: {err}"
                ) from err

    @classmethod
    def from_loaded(cls, model: Blip2ForConditionalGeneration, processor: Blip2Processor, model_id: str = "loaded",
                    max_new_tokens: int = 30, prompt: str | None = None) -> "Captioner":
        """A captioner over a BLIP-2 already built in memory (e.g. the published architecture with
        random weights, as `bench/gpu.py` measures it); dtype and device are the model's."""
        self = cls.__new__(cls)
        self.model_id, self.max_new_tokens, self.prompt = model_id, max_new_tokens, prompt
        self.model, self.processor = model.eval(), processor
        self.dtype, self.device = model.dtype, model.device
        return self

    def _load(self, source: str) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
        with quiet_progress_bars():
            model = Blip2ForConditionalGeneration.from_pretrained(
                source, use_safetensors=True, **{_DTYPE_KWARG: self.dtype}
            )
            processor = Blip2Processor.from_pretrained(source)
        return model.to(self.device).eval(), processor

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One stripped caption per image ("" where the model says nothing), in order."""
        if isinstance(images, Image.Image) or not isinstance(images, Sequence):
            raise ValueError(f"images must be a list of PIL images, got {type(images).__name__}")
        for i, img in enumerate(images):
            if not isinstance(img, Image.Image):
                raise ValueError(f"images[{i}] is a {type(img).__name__}, not a PIL image")
        if not images:
            return []
        rgb = [img if img.mode == "RGB" else img.convert("RGB") for img in images]
        text = None if self.prompt is None else [self.prompt] * len(rgb)
        inputs = self.processor(images=rgb, text=text, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        out = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens)
        new_tokens = out[:, self._prompt_length(inputs, out) :]
        return [c.strip() for c in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def _prompt_length(self, inputs: dict[str, torch.Tensor], out: torch.Tensor) -> int:
        """How many leading columns of `out` echo the model's input ids (0 if it returns only new ones)."""
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is None:  # unconditional: generate() starts from the query tokens and BOS
            config = self.model.config
            start = [config.image_token_index] * config.num_query_tokens + [config.text_config.bos_token_id]
            prompt_ids = torch.tensor([start], device=out.device).expand(out.shape[0], -1)
        n = prompt_ids.shape[1]
        return n if out.shape[1] >= n and torch.equal(out[:, :n], prompt_ids) else 0

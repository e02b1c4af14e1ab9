"""BLIP-2 captioning for auto-DNP (METHODS.md §DNP step 2), plus a tiny random BLIP-2 for tests.

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
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    BlipImageProcessor,
    GenerationConfig,
    GPT2TokenizerFast,
    OPTConfig,
)

from .models import quiet_progress_bars, resolve_dtype

DEFAULT_CAPTIONER = "Salesforce/blip2-opt-2.7b"
BLIP2_MODEL_TYPE = "blip-2"

# transformers >= 4.56 takes `dtype` and warns on `torch_dtype`; older releases only know `torch_dtype`.
_DTYPE_KWARG = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"

# OPT's layout: <s>=0, <pad>=1, </s>=2 (its BOS and EOS), <unk>=3; then BLIP-2's <image>.
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
_TINY_IMAGE_SIZE = 32
_TINY_QUERY_TOKENS = 4
_TINY_VOCAB_SIZE = 384
_TINY_MAX_POSITIONS = 256
# A fixed corpus, so the trained byte-level BPE (and hence the whole build) is deterministic.
_TINY_CORPUS = [
    "a photo of a red cube on a wooden table",
    "a blurry photo of a cat sitting on the grass",
    "a painting of a mountain and a lake at sunset",
    "a close up of a dog with a ball in its mouth",
    "two people walking down a street in the rain",
    "a bowl of fruit and a cup of coffee on a kitchen counter",
    "a black and white picture of an old car parked by a house",
    "a green field with trees and a blue sky with white clouds",
    "an abstract pattern of colorful shapes and lines",
    "a man riding a bicycle next to a river in the city",
]


def _tiny_tokenizer() -> GPT2TokenizerFast:
    """An OPT-style byte-level BPE tokenizer (BOS = EOS = </s>, pad <pad>), trained in memory."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TINY_CORPUS, trainer=trainer)
    tok = GPT2TokenizerFast(
        tokenizer_object=bpe,
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=True,  # as OPT: prompts start with </s>, like BLIP-2's default start tokens
        model_max_length=_TINY_MAX_POSITIONS,
    )
    # Left in tokenizer_config.json otherwise; local_files_only follows $HF_HUB_OFFLINE.
    for key in ("is_local", "local_files_only"):
        tok.init_kwargs.pop(key, None)
    return tok


def _tiny_config(tok: GPT2TokenizerFast) -> Blip2Config:
    heads_and_sizes = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    vision = Blip2VisionConfig(**heads_and_sizes, image_size=_TINY_IMAGE_SIZE, patch_size=4)
    qformer = Blip2QFormerConfig(**heads_and_sizes, encoder_hidden_size=32, vocab_size=len(tok))
    text = OPTConfig(
        hidden_size=32,
        ffn_dim=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        word_embed_proj_dim=32,
        vocab_size=len(tok),
        max_position_embeddings=_TINY_MAX_POSITIONS,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=_TINY_QUERY_TOKENS,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )


def _silence_unreadable_tokens(model: Blip2ForConditionalGeneration, tok: GPT2TokenizerFast) -> None:
    """Zero the embedding (= output) rows of tokens that are not printable ASCII text (EOS kept).

    A random model otherwise favours stray byte tokens that decode to U+FFFD; with zero logits
    they lose to the word tokens, so tiny captions read as (nonsense) words.
    """
    keep = {tok.eos_token_id}
    for token_id in range(len(tok)):
        text = tok.decode([token_id])
        if token_id not in tok.all_special_ids and text.strip() and text.isascii() and text.isprintable():
            keep.add(token_id)
    drop = torch.tensor([i for i in range(len(tok)) if i not in keep])
    with torch.no_grad():
        for embeddings in (model.get_input_embeddings(), model.get_output_embeddings()):  # tied in OPT
            embeddings.weight[drop] = 0.0


def build_tiny_blip2(out: Path) -> None:
    """Write a tiny random BLIP-2 (OPT text model, 32 px images) into the existing empty dir `out`."""
    out = Path(out)
    tok = _tiny_tokenizer()
    config = _tiny_config(tok)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left alone
        torch.manual_seed(0)
        model = Blip2ForConditionalGeneration(config).eval()
    _silence_unreadable_tokens(model, tok)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    image_processor = BlipImageProcessor(size={"height": _TINY_IMAGE_SIZE, "width": _TINY_IMAGE_SIZE})
    processor = Blip2Processor(image_processor, tok, num_query_tokens=_TINY_QUERY_TOKENS)
    with quiet_progress_bars():
        model.save_pretrained(out, safe_serialization=True)
        processor.save_pretrained(out)


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

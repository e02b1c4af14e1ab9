"""The scorers themselves (the registry, their settings and `load_scorer` are in `dnp_batch.scorers`):
each loads its published weights (or a tiny twin laid out like them) and scores batches of
(image, prompt) pairs. Kept apart from the registry so that reading a config loads no torch."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from .heads import load_mlp
from .names import TINY_MODELS, resolve_model
from .runtime import quiet_progress_bars
from .scorers import is_local, source
from .scoring import PRECISIONS

@contextmanager
def _quiet_root_logger():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextmanager
def quiet_loading():
    """No progress bars and no load reports (a CLIPModel checkpoint read into its vision half lists
    every text weight it leaves out) from transformers while loading."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with quiet_progress_bars():
            yield
    finally:
        transformers_logging.set_verbosity(level)


def check_pairs(images, prompts) -> None:
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; they must pair up")
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ValueError(f"images[{i}] is a {type(image).__name__}, not a PIL image")


def fetch(repo_or_dir: str, filename: str) -> Path:
    """`filename` in a local dir, or downloaded from the hub repo (cached)."""
    path = Path(repo_or_dir).expanduser()
    if path.is_dir():
        file = path / filename
        if not file.is_file():
            raise ValueError(f"{path} holds no {filename}")
        return file
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_or_dir, filename))


def load_weights(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict: safetensors, or a torch pickle read with weights_only=True (tensors only, no code);
    a checkpoint dict's `state_dict` and DataParallel's `module.` prefixes are unwrapped."""
    file = Path(file)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{file} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def companion(model_dir: str, default: str | None, marker: str) -> str:
    """A companion's location (processor, tokenizer, CLIP): the model's own local dir when it holds
    `marker` and the setting is the default or None, else the setting."""
    return model_dir if is_local(model_dir) and (Path(model_dir) / marker).exists() else default


# ---- the scorers ----


class Scorer:
    """`score(images, prompts)` -> one float per pair (None where the scorer does not apply)."""

    name = "scorer"
    model_id = ""

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float | None]:
        check_pairs(images, prompts)
        out: list[float | None] = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                stop = start + self.batch_size
                out.extend(self._score([im.convert("RGB") for im in images[start:stop]], list(prompts[start:stop])))
        return out

    def _score(self, images, prompts) -> list[float]:
        raise NotImplementedError


class ClipScore(Scorer):
    """torchmetrics' CLIP score, `max(100·cos, 0)`, with `dnp_batch.scoring.ClipScorer` (unchanged)."""

    name = "clip"

    def __init__(self, model: str, pretrained: str | None = None, device="cpu", dtype=torch.float32,
                 batch_size: int = 32):
        from .scoring import ClipScorer

        self.model_id = model if not pretrained else f"{model}:{pretrained}"
        if model in TINY_MODELS:
            model, pretrained = resolve_model(model), None
        self.clip = ClipScorer(model, pretrained=pretrained, device=device, batch_size=batch_size)

    def score(self, images, prompts):
        return self.clip.score(list(images), list(prompts))


class PickScore(Scorer):
    """PickScore: `logit_scale.exp() · cos(image_emb, text_emb)` of a CLIPModel (transformers)."""

    name = "pickscore"

    def __init__(self, settings: PickScoreSettings, device="cpu", dtype=torch.float32):
        from transformers import AutoProcessor, CLIPModel

        self.model_id, self.batch_size, self.device, self.dtype = settings.model, settings.batch_size, device, dtype
        model_dir = source(settings.model)
        processor = companion(model_dir, settings.processor, "processor_config.json") or model_dir
        with quiet_loading():
            self.processor = AutoProcessor.from_pretrained(source(processor))
            self.model = CLIPModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()

    def _score(self, images, prompts):
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        text = self.processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        image_emb = self.model.get_image_features(pixel_values=pixels).pooler_output.float()
        text_emb = self.model.get_text_features(input_ids=text["input_ids"].to(self.device),
                                                attention_mask=text["attention_mask"].to(self.device)).pooler_output
        cos = (F.normalize(image_emb, dim=-1) * F.normalize(text_emb.float(), dim=-1)).sum(-1)
        return (self.model.logit_scale.exp().float() * cos).tolist()


OPEN_CLIP_CONFIG = "open_clip_config.json"


class HpsScore(Scorer):
    """HPS v2.1: cos(image_emb, text_emb) of open_clip ViT-H-14 with the HPS checkpoint loaded."""

    name = "hps"

    def __init__(self, settings: HpsSettings, device="cpu", dtype=torch.float32):
        import open_clip

        self.model_id, self.batch_size, self.device, self.dtype = settings.model, settings.batch_size, device, dtype
        model_dir = source(settings.model)
        arch = f"local-dir:{Path(model_dir).absolute()}" if companion(model_dir, None, OPEN_CLIP_CONFIG) \
            else settings.arch
        # open_clip's own low precision (LayerNorm kept in float32, as the fp16 CUDA kernels need);
        # the float32 checkpoint is cast into it on load
        with _quiet_root_logger():  # open_clip warns that the dir has no weights: they come next
            model = open_clip.create_model(arch, None, precision=PRECISIONS[dtype])
        model.load_state_dict(load_weights(fetch(model_dir, settings.checkpoint)))
        self.model = model.to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        # HPS's own transform: resize the longest side, pad to square (as its ResizeMaxSize)
        self.preprocess = open_clip.image_transform(model.visual.image_size, is_train=False, resize_mode="longest")

    def _score(self, images, prompts):
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device, self.dtype)
        image_emb = self.model.encode_image(pixels, normalize=True).float()
        text_emb = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True).float()
        return (image_emb * text_emb).sum(-1).tolist()


class AestheticScore(Scorer):
    """LAION improved aesthetic predictor: MLP(L2-normalised CLIP ViT-L/14 image embedding); prompt unused."""

    name = "aesthetic"

    def __init__(self, settings: AestheticSettings, device="cpu", dtype=torch.float32):
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.model_id, self.batch_size, self.device, self.dtype = settings.model, settings.batch_size, device, dtype
        model_dir = source(settings.model)
        clip = source(companion(model_dir, settings.clip, "config.json"))
        with quiet_loading():
            self.processor = CLIPImageProcessor.from_pretrained(clip)
            self.clip = CLIPVisionModelWithProjection.from_pretrained(clip, dtype=dtype).to(device).eval()
        self.mlp = load_mlp(load_weights(fetch(model_dir, settings.checkpoint))).to(device)

    def _score(self, images, prompts):
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        emb = F.normalize(self.clip(pixel_values=pixels).image_embeds.float(), dim=-1)
        return self.mlp(emb).squeeze(-1).tolist()


# ImageReward's standardisation of the MLP output (ImageReward.py, v1.0)
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072
IMAGEREWARD_MAX_TOKENS = 35
_VISION_RENAMES = [  # BLIP's ViT (timm layout) -> transformers' BlipVisionModel
    (r"^cls_token$", "embeddings.class_embedding"), (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."), (r"^norm\.", "post_layernorm."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
]


def imagereward_key(key: str) -> tuple[str, str] | None:
    """An ImageReward.pt key as (part, key in transformers' module): part is vision, text or mlp;
    None for keys the score does not use."""
    if key.startswith("blip.visual_encoder."):
        rest = key[len("blip.visual_encoder."):]
        for pattern, repl in _VISION_RENAMES:
            new, n = re.subn(pattern, repl, rest)
            if n:
                return "vision", new
        return None
    if key.startswith("blip.text_encoder."):  # BLIP's med BertModel: the same names as BlipTextModel
        return "text", key[len("blip.text_encoder."):]
    if key.startswith("mlp."):
        return "mlp", key[len("mlp."):]
    return None


def imagereward_vision_config(vision: dict[str, torch.Tensor]):
    """BlipVisionConfig of BLIP's ViT, read off the weights' shapes (ViT-L/16 at 224 px in v1.0)."""
    from transformers import BlipVisionConfig

    width, _, patch, _ = vision["embeddings.patch_embedding.weight"].shape
    grid = math.isqrt(vision["embeddings.position_embedding"].shape[1] - 1)
    layers = 1 + max(int(k.split(".")[2]) for k in vision if k.startswith("encoder.layers."))
    return BlipVisionConfig(hidden_size=width, intermediate_size=vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
                            num_hidden_layers=layers, num_attention_heads=max(1, width // 64), image_size=grid * patch,
                            patch_size=patch, layer_norm_eps=1e-6, hidden_act="gelu")


def imagereward_text_config(med: dict, vision_width: int):
    """BlipTextConfig of ImageReward's med_config.json (BERT-base with cross-attention to the ViT)."""
    from transformers import BlipTextConfig

    return BlipTextConfig(
        vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"], num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"], layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        hidden_act=med.get("hidden_act", "gelu"), encoder_hidden_size=vision_width, is_decoder=True,
        pad_token_id=med.get("pad_token_id", 0), bos_token_id=None, eos_token_id=None, sep_token_id=None)


def imagereward_tokenizer(location: str):
    """BERT's tokenizer with the special tokens BLIP adds ([DEC] as BOS, [ENC])."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(location)
    if tok.bos_token != "[DEC]":
        tok.add_special_tokens({"bos_token": "[DEC]"})
    if "[ENC]" not in tok.all_special_tokens:
        tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


class ImageRewardScore(Scorer):
    """ImageReward v1.0: (MLP(text_encoder(prompt ⟂ ViT(image))[CLS]) - mean) / std."""

    name = "imagereward"

    def __init__(self, settings: ImageRewardSettings, device="cpu", dtype=torch.float32):
        from transformers import BlipTextModel, BlipVisionModel
        from torchvision import transforms

        self.model_id, self.batch_size, self.device, self.dtype = settings.model, settings.batch_size, device, dtype
        model_dir = source(settings.model)
        parts: dict[str, dict] = {"vision": {}, "text": {}, "mlp": {}}
        for key, value in load_weights(fetch(model_dir, settings.checkpoint)).items():
            where = imagereward_key(key)
            if where:
                parts[where[0]][where[1]] = value
        med = json.loads(fetch(model_dir, "med_config.json").read_text())
        vision_config = imagereward_vision_config(parts["vision"])
        self.vision = BlipVisionModel(vision_config)
        self.vision.load_state_dict(parts["vision"])
        self.text = BlipTextModel(imagereward_text_config(med, vision_config.hidden_size), add_pooling_layer=False)
        self.text.load_state_dict(parts["text"], strict=False)
        missing = [k for k in self.text.state_dict() if k not in parts["text"] and "position_ids" not in k]
        if missing:
            raise ValueError(f"{settings.checkpoint} lacks the text encoder's {missing[0]}")
        self.vision, self.text = self.vision.to(device, dtype).eval(), self.text.to(device, dtype).eval()
        self.mlp = load_mlp(parts["mlp"]).to(device)
        self.tokenizer = imagereward_tokenizer(source(companion(model_dir, settings.tokenizer, "tokenizer_config.json")))
        size = vision_config.image_size
        self.preprocess = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])

    def _score(self, images, prompts):
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device, self.dtype)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        text = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=IMAGEREWARD_MAX_TOKENS,
                              return_tensors="pt").to(self.device)
        out = self.text(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                        encoder_hidden_states=image_embeds,
                        encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device))
        rewards = self.mlp(out.last_hidden_state[:, 0, :].float()).squeeze(-1)
        return ((rewards - IMAGEREWARD_MEAN) / IMAGEREWARD_STD).tolist()

"""Tiny random diffusers pipelines, built offline from configs, for tests and the quick-start.

Weights are seeded per component, so two builds are byte-identical. Sizes are the smallest that
load offline through the real loaders and keep each architecture's layout (hidden 32, two UNet
levels, 5 text layers; the layouts of diffusers' own pipeline tests).

    python -m dnp_batch.tiny --kind sdxl --out /tmp/tiny-sdxl
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from open_clip.model import CLIP
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    BertTokenizer,
    BlipImageProcessor,
    BlipTextConfig,
    BlipTextModel,
    BlipVisionConfig,
    BlipVisionModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    GenerationConfig,
    GPT2TokenizerFast,
    CLIPVisionConfig,
    OPTConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2TokenizerFast,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from .published import QWENIMAGE_SCHEDULER_CONFIG, SD3_SCHEDULER_CONFIG, SD_SCHEDULER_CONFIG, SDXL_SCHEDULER_CONFIG, bytes_to_unicode
from .runtime import quiet_progress_bars
from .scoring import CONFIG_NAME as CLIP_CONFIG_NAME
from .scoring import WEIGHTS_NAME as CLIP_WEIGHTS_NAME

CACHE_VERSION = "v2"
MODEL_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# A few merges so common words become single tokens; everything else falls back to bytes.
_MERGES = [
    "r e", "re d</w>", "c u", "cu b", "cub e</w>", "t h", "th e</w>", "a n", "an d</w>",
    "o f</w>", "i n", "in g</w>", "p h", "ph o", "pho t", "phot o</w>",
]  # fmt: skip


def _write_tokenizer_files(directory: Path) -> None:
    """Write a CLIP-style byte-level BPE vocab.json + merges.txt (~530 tokens)."""
    symbols = bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in _MERGES] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8")


def clip_tokenizer() -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        _write_tokenizer_files(Path(tmp))
        tok = CLIPTokenizer.from_pretrained(tmp, model_max_length=MODEL_MAX_LENGTH, pad_token=EOS)
    # Loading leaves these in tokenizer_config.json; local_files_only follows $HF_HUB_OFFLINE.
    for key in ("is_local", "local_files_only"):
        tok.init_kwargs.pop(key, None)
    return tok


def _text_config(tok: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        projection_dim=32,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,  # pooled output is taken at the first EOS
        pad_token_id=tok.pad_token_id,
    )


def _vae(**kwargs) -> AutoencoderKL:
    torch.manual_seed(3)
    return AutoencoderKL(
        block_out_channels=[32, 64, 64, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        **kwargs,
    )


def sdxl_pipeline() -> StableDiffusionXLPipeline:
    """A tiny random SDXL pipeline (64 px by default, latents 8×8)."""
    tok = clip_tokenizer()
    text_config = _text_config(tok)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids × 8 + 32 pooled
        cross_attention_dim=64,  # 32 + 32 from the two text encoders
        norm_num_groups=32,
    )
    vae = _vae(scaling_factor=0.13025)  # SDXL's VAE scale, so code that hardcodes SD's shows up
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(2)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tok,
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def sd_pipeline(sample_size: int = 8, block_out_channels: tuple[int, int] = (32, 64),
                layers_per_block: int = 1) -> StableDiffusionPipeline:
    """A tiny random SD1.5-style pipeline (64 px by default, latents 8×8); the arguments size its UNet
    (bench/medium.py builds a bigger one)."""
    tok = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = _vae()
    torch.manual_seed(1)
    text_encoder = CLIPTextModel(_text_config(tok))
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=DDIMScheduler.from_config(SD_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def t5_tokenizer() -> T5TokenizerFast:
    """A T5-style tokenizer (<pad> 0, </s> 1, <unk> 2; a Unigram model over characters and a few
    words, with SentencePiece's ▁ word marker), so SD3's third text encoder runs as in the real one."""
    words = ["▁a", "▁red", "▁cube", "▁on", "▁blue", "▁table", "▁photo", "▁of", "▁the", "▁and"]
    chars = [chr(c) for c in range(32, 127)] + ["▁"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -2.0) for w in words] + [(c, -5.0) for c in chars]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=512)


def sd3_pipeline() -> StableDiffusion3Pipeline:
    """A tiny random SD3.5-style pipeline (64 px by default; 16-channel latents 8×8, 2×2 patches:
    the layout of diffusers' SD3 pipeline tests, with SD3.5-large's RMS q/k norm)."""
    tok = clip_tokenizer()
    text_config = _text_config(tok)
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=16, qk_norm="rms_norm",
    )
    torch.manual_seed(3)
    vae = AutoencoderKL(
        block_out_channels=[32, 64, 64, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=16, norm_num_groups=32, sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        scaling_factor=1.5305, shift_factor=0.0609,  # SD3's
    )
    torch.manual_seed(1)
    text_encoder = CLIPTextModelWithProjection(text_config)
    torch.manual_seed(2)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    t5_tok = t5_tokenizer()
    torch.manual_seed(4)
    text_encoder_3 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=64, d_kv=16, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER_CONFIG),
        vae=vae, text_encoder=text_encoder, tokenizer=tok, text_encoder_2=text_encoder_2, tokenizer_2=clip_tokenizer(),
        text_encoder_3=text_encoder_3, tokenizer_3=t5_tok,
    )


_QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>"]
# The words of QwenImagePipeline's prompt template (and a few for prompts), each made one token, so
# that the template's system part is 34 tokens as with the real tokenizer: the pipeline drops
# exactly that many (`prompt_template_encode_start_idx`).
_QWEN_WORDS = ["system", "user", "assistant", "Describe", " the", " image", " by", " detailing", " color", " shape",
               " size", " texture", " quantity", " text", " spatial", " relationships", " of", " objects", " and",
               " background", " a", " red", " cube", " on", " blue", " table", " photo"]


def qwen_tokenizer() -> Qwen2TokenizerFast:
    """A Qwen2-style byte-level BPE tokenizer (the chat template's special tokens; pad = <|endoftext|>)."""
    symbols = bytes_to_unicode()
    byte_of = {chr(b): symbols[b] for b in range(256)}
    vocab, merges = {sym: i for i, sym in enumerate(symbols)}, []
    for word in _QWEN_WORDS:
        w = "".join(byte_of[c] for c in word)
        for k in range(2, len(w) + 1):
            if w[:k] not in vocab:
                merges.append((w[:k - 1], w[k - 1]))
                vocab[w[:k]] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(_QWEN_SPECIAL)
    return Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None, model_max_length=32768)


def qwenimage_pipeline() -> QwenImagePipeline:
    """A tiny random Qwen-Image pipeline (64 px by default; 16-channel latents 8×8 packed into 2×2
    patches, as the real one): a 2-layer Qwen2.5-VL text encoder, a 2-block QwenImage MMDiT, the
    Wan-style VAE with Qwen-Image's latent mean/std and 8× factor; the published scheduler config."""
    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, guidance_embeds=False, axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(3)
    vae = AutoencoderKLQwenImage(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    torch.manual_seed(1)
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": len(tok), "max_position_embeddings": 1024,
                     "rope_scaling": {"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0, "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 32},
        vocab_size=len(tok), vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|image_pad|>"],
    ))
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(QWENIMAGE_SCHEDULER_CONFIG),
                             vae=vae, text_encoder=text_encoder, tokenizer=tok, transformer=transformer)


def _save_diffusers(make: Callable[[], object]) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        make().save_pretrained(out, safe_serialization=True)

    return build


# ---- tiny BLIP-2 (dnp_batch.captioner loads it) ----

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


def blip2_tokenizer() -> GPT2TokenizerFast:
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
    tok = blip2_tokenizer()
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



# ---- tiny open_clip (dnp_batch.scoring loads it) ----

# The smallest open_clip layout that loads offline; vocab_size stays 49408, the BPE vocabulary open_clip ships.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# The same keys open_clip's push_to_hf_hub.save_config_for_hf writes.
TINY_CLIP_PREPROCESS = {
    "mean": list(open_clip.OPENAI_DATASET_MEAN),
    "std": list(open_clip.OPENAI_DATASET_STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}

def build_tiny_clip(out: Path) -> None:
    """Write a tiny random open_clip model (config + safetensors) into the empty directory `out`."""
    out = Path(out)
    with torch.random.fork_rng(devices=[]):  # caller's RNG state untouched
        torch.manual_seed(0)
        model = CLIP(**copy.deepcopy(TINY_CLIP_CONFIG))
        # A random CLIP's image and text embeddings point apart, so nearly every score clips to 0.
        # Final-norm biases that project to one shared direction give scores of about 25-50 that
        # still vary with image and text: enough for reports and preference labels to mean something.
        shared = torch.randn(TINY_CLIP_CONFIG["embed_dim"])
        with torch.no_grad():
            model.ln_final.bias.copy_(shared @ torch.linalg.pinv(model.text_projection))
            model.visual.ln_post.bias.copy_(shared @ torch.linalg.pinv(model.visual.proj))
    config = {"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": TINY_CLIP_PREPROCESS}
    (out / CLIP_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file(model.state_dict(), out / CLIP_WEIGHTS_NAME, metadata={"format": "pt"})


# ---- tiny twins of the scorers (dnp_batch.scorers loads them like the published repos) ----


def _tiny_clip_model(seed: int) -> CLIPModel:
    """A tiny random transformers CLIPModel (32 px images, the tiny BPE), as PickScore's layout."""
    tok = clip_tokenizer()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=32, patch_size=8, projection_dim=32)
    config = CLIPConfig(text_config=_text_config(tok).to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    torch.manual_seed(seed)
    return CLIPModel(config).eval()


def _tiny_clip_processor() -> CLIPProcessor:
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPProcessor(image_processor=images, tokenizer=clip_tokenizer())


def build_tiny_pickscore(out: Path) -> None:
    """PickScore's layout: a CLIPModel (safetensors) with its CLIP processor in one dir."""
    with quiet_progress_bars():
        _tiny_clip_model(11).save_pretrained(out, safe_serialization=True)
        _tiny_clip_processor().save_pretrained(out)


def build_tiny_hps(out: Path) -> None:
    """HPS v2.1's layout: an open_clip checkpoint `HPS_v2.1_compressed.pt` ({"state_dict": ...}, a
    torch pickle as published) beside the tiny open_clip config that stands for ViT-H-14."""
    torch.manual_seed(12)
    model = CLIP(**copy.deepcopy(TINY_CLIP_CONFIG))
    shared = torch.randn(TINY_CLIP_CONFIG["embed_dim"])  # as build_tiny_clip: cosines that are not all ~0
    with torch.no_grad():
        model.ln_final.bias.copy_(shared @ torch.linalg.pinv(model.text_projection))
        model.visual.ln_post.bias.copy_(shared @ torch.linalg.pinv(model.visual.proj))
    config = {"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": TINY_CLIP_PREPROCESS}
    (out / CLIP_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    torch.save({"state_dict": model.state_dict()}, out / "HPS_v2.1_compressed.pt")


def _aesthetic_mlp(width: int, seed: int) -> torch.nn.Module:
    from .heads import MLP

    torch.manual_seed(seed)
    return MLP(width).eval()


def build_tiny_aesthetic(out: Path) -> None:
    """The aesthetic predictor's layout: the MLP as a torch pickle (`aesthetic-model.pth`) and, here
    in the same dir, the CLIP it reads (config.json, safetensors, preprocessor_config.json)."""
    with quiet_progress_bars():
        _tiny_clip_model(13).save_pretrained(out, safe_serialization=True)
        _tiny_clip_processor().image_processor.save_pretrained(out)
    torch.save(_aesthetic_mlp(32, 14).state_dict(), out / "aesthetic-model.pth")


# Original BLIP ViT names (timm layout) of transformers' BlipVisionModel keys: the inverse of
# dnp_batch.scorer_models.imagereward_key, so the tiny checkpoint is laid out as ImageReward.pt is.
_BLIP_VIT_NAMES = [
    (r"^embeddings\.class_embedding$", "cls_token"), (r"^embeddings\.position_embedding$", "pos_embed"),
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."), (r"^post_layernorm\.", "norm."),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
]
_TINY_BERT_WORDS = ["a", "an", "the", "of", "on", "in", "and", "with", "photo", "red", "blue", "green", "cube",
                    "ball", "cat", "dog", "fox", "city", "tea", "##pot", "astronaut", "at", "night", "x", "y", "z",
                    "q", "w", "e", "r", "t", "u", "i", "o", "p", "s", "d", "f", "g", "h", "j", "k", "l"]


def build_tiny_imagereward(out: Path) -> None:
    """ImageReward v1.0's layout: `ImageReward.pt` (a torch pickle of BLIP's and the MLP's weights
    under their original names), `med_config.json`, and here a tiny BERT tokenizer in the same dir."""
    import re

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_BERT_WORDS]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(out / "vocab.txt"))
    for key in ("is_local", "local_files_only"):
        tok.init_kwargs.pop(key, None)
    with quiet_progress_bars():
        tok.save_pretrained(out)
    vision_config = BlipVisionConfig(hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                                     image_size=32, patch_size=8, layer_norm_eps=1e-6, hidden_act="gelu")
    med = {"architectures": ["BertModel"], "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
           "num_attention_heads": 2, "max_position_embeddings": 64, "vocab_size": len(vocab) + 2,  # + [DEC], [ENC]
           "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0, "type_vocab_size": 2,
           "encoder_width": 64, "add_cross_attention": True}
    text_config = BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=32, intermediate_size=37,
                                 num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                                 encoder_hidden_size=64, is_decoder=True, pad_token_id=0,
                                 bos_token_id=None, eos_token_id=None, sep_token_id=None)
    torch.manual_seed(15)
    vision = BlipVisionModel(vision_config)
    text = BlipTextModel(text_config, add_pooling_layer=False)
    mlp = _aesthetic_mlp(32, 16)
    state = {}
    for key, value in vision.state_dict().items():
        for pattern, repl in _BLIP_VIT_NAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                state[f"blip.visual_encoder.{new}"] = value
                break
        else:
            raise AssertionError(f"no BLIP name for {key}")
    state.update({f"blip.text_encoder.{k}": v for k, v in text.state_dict().items() if "position_ids" not in k})
    state.update({f"mlp.{k}": v for k, v in mlp.state_dict().items()})
    torch.save(state, out / "ImageReward.pt")
    (out / "med_config.json").write_text(json.dumps(med, indent=2) + "\n", encoding="utf-8")


# kind -> function that writes the model files into an existing empty directory.
BUILDERS: dict[str, Callable[[Path], None]] = {
    "sdxl": _save_diffusers(sdxl_pipeline),
    "sd": _save_diffusers(sd_pipeline),
    "sd3": _save_diffusers(sd3_pipeline),
    "qwenimage": _save_diffusers(qwenimage_pipeline),
    "blip2": build_tiny_blip2,
    "clip": build_tiny_clip,
    "pickscore": build_tiny_pickscore,
    "hps": build_tiny_hps,
    "imagereward": build_tiny_imagereward,
    "aesthetic": build_tiny_aesthetic,
}


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _make_readable(root: Path) -> None:
    """mkdtemp and the safetensors writers leave owner-only modes; a shared cache needs 755/644."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def build_tiny(kind: str, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Build the tiny `kind` model into `out_dir`, atomically (temp sibling dir, then rename).

    Raises FileExistsError if `out_dir` is non-empty, unless `overwrite`.
    """
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {', '.join(sorted(BUILDERS))}")
    out = Path(out_dir).expanduser().absolute()
    if _is_nonempty_dir(out) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with torch.random.fork_rng(devices=[]), quiet_progress_bars():  # caller's RNG state untouched
            BUILDERS[kind](tmp)
        _make_readable(tmp)
        if overwrite and out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)  # fails if another process filled `out` meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $DNP_BATCH_CACHE, else $XDG_CACHE_HOME/dnp_batch or ~/.cache/dnp_batch."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("DNP_BATCH_CACHE"):
        return Path(os.environ["DNP_BATCH_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "dnp_batch"


def ensure_tiny(kind: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cached tiny `kind` model dir, building it on first use (safe across processes)."""
    path = cache_root(cache_dir).absolute() / f"tiny-{kind}-{CACHE_VERSION}"
    if _is_nonempty_dir(path):  # builds land by rename, so a non-empty dir is complete
        return path
    try:
        return build_tiny(kind, path)
    except OSError:
        if _is_nonempty_dir(path):  # another process won the race
            return path
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnp_batch.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", required=True, choices=sorted(BUILDERS))
    parser.add_argument("--out", required=True, help="directory to create (must be absent or empty)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser().absolute()
    if _is_nonempty_dir(out) and not args.force:
        parser.exit(2, f"error: {out} exists and is not empty; pass --force to replace it\n")
    if out.exists() and not out.is_dir():
        parser.exit(2, f"error: {out} exists and is not a directory\n")
    build_tiny(args.kind, out, overwrite=args.force)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

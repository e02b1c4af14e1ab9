"""Full-size SDXL throughput on a GPU with no download: the SDXL base architecture (UNet, both text
encoders, VAE) and BLIP-2 opt-2.7b, built from their published configs with random weights.

    python bench/gpu.py                       # on a GPU: 1024², fp16 (bf16 where fp16 is unsupported)
    python bench/gpu.py --smoke               # anywhere: the tiny twins at 64², 2 steps (CI runs it)
    python bench/gpu.py --family sd3          # SD3.5-large's architecture, bf16, 1024², 28 steps
    python bench/gpu.py --family qwenimage    # Qwen-Image's architecture, bf16, 1328², 50 steps
                                              # (with --smoke: their tiny twins at 64²)

For the flow-matching families it measures bare `pipe()` (SD3: `guidance_scale`; Qwen-Image:
`true_cfg_scale` with the negative " ") against `generate()` with CFG and ANSWER at batch 1/2/4,
with peak GPU memory; the SDXL-only sections (attention kernels, compile, VAE upcast) are skipped.

For batch sizes 1/2/4/8 it measures images/s of bare diffusers `pipe()` (CFG), this project's
`generate()` with CFG and ANSWER, and the two auto-DNP stages (DNS + BLIP-2 caption, then NP from
the captions), with the peak GPU memory of each; then, at one batch size, the effect on CFG of
channels-last, `torch.compile` of the UNet and the attention kernel (SDPA vs the classic one), and
the VAE decode in fp16 against SDXL's fp32 upcast. Random weights give the real architecture's
cost, not its images. Every ratio is measured in this run; the JSON (--json) keeps every number.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

# Published configs (stabilityai/stable-diffusion-xl-base-1.0 and Salesforce/blip2-opt-2.7b),
# written out so that nothing is downloaded.
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=1024, scaling_factor=0.13025, force_upcast=True,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              hidden_act="quick_gelu", projection_dim=768, vocab_size=49408, max_position_embeddings=77)
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                 hidden_act="gelu", projection_dim=1280, vocab_size=49408, max_position_embeddings=77)
BLIP2_VISION = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                    image_size=224, patch_size=14)
BLIP2_QFORMER = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     encoder_hidden_size=1408, cross_attention_frequency=2)
OPT_2_7B = dict(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32, vocab_size=50272,
                max_position_embeddings=2048, word_embed_proj_dim=2560)
BLIP2_QUERY_TOKENS = 32

# stabilityai/stable-diffusion-3.5-large: transformer/config.json, vae/config.json, text_encoder_3 (T5-XXL)
SD35_LARGE_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38, attention_head_dim=64,
    num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048,
    pos_embed_max_size=192, qk_norm="rms_norm",
)
SD3_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64, vocab_size=32128,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, decoder_start_token_id=0)
# Qwen/Qwen-Image: transformer/config.json; text_encoder (Qwen2.5-VL-7B-Instruct) config.json; the VAE's
# defaults in diffusers are Qwen-Image's (AutoencoderKLQwenImage()).
QWENIMAGE_TRANSFORMER = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                             num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
                             axes_dims_rope=(16, 56, 56))
QWEN25_VL_7B_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, max_position_embeddings=128000, rope_theta=1000000.0,
                         rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
                         vocab_size=152064, rms_norm_eps=1e-6)
QWEN25_VL_7B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2)
# The model cards' calls: (size, steps, guidance)
FLOW_DEFAULTS = {"sd3": (1024, 28, 3.5), "qwenimage": (1328, 50, 4.0)}

PROMPT = "a photograph of an astronaut riding a horse on the moon"


def sd35_large_pipeline(device, dtype):
    """SD3.5-large's architecture with random weights (tokenizers: the tiny offline ones)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from dnp_batch.published import SD3_SCHEDULER_CONFIG
    from dnp_batch.tiny import clip_tokenizer, t5_tokenizer

    tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        pipe = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**SD35_LARGE_TRANSFORMER), vae=AutoencoderKL(**SD3_VAE),
            text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L, **ids)), tokenizer=tok,
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG, **ids)), tokenizer_2=clip_tokenizer(),
            text_encoder_3=T5EncoderModel(T5Config(**T5_XXL)), tokenizer_3=t5_tok,
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER_CONFIG))
    pipe.register_to_config(_name_or_path="sd3.5-large-architecture (random weights)")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def qwenimage_pipeline(device, dtype):
    """Qwen-Image's architecture with random weights (tokenizer: the tiny offline one)."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline
    from diffusers import QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from dnp_batch.published import QWENIMAGE_SCHEDULER_CONFIG
    from dnp_batch.tiny import qwen_tokenizer

    tok = qwen_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        pipe = QwenImagePipeline(
            transformer=QwenImageTransformer2DModel(**QWENIMAGE_TRANSFORMER), vae=AutoencoderKLQwenImage(),
            text_encoder=Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
                text_config=QWEN25_VL_7B_TEXT, vision_config=QWEN25_VL_7B_VISION, vocab_size=152064)),
            tokenizer=tok, scheduler=FlowMatchEulerDiscreteScheduler.from_config(QWENIMAGE_SCHEDULER_CONFIG))
    pipe.register_to_config(_name_or_path="qwen-image-architecture (random weights)")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def sdxl_pipeline(device, dtype):
    """SDXL base's architecture with random weights, built on `device` (the tokenizers are the tiny
    offline ones: token ids, not their meaning, decide the cost)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dnp_batch.tiny import SDXL_SCHEDULER_CONFIG, clip_tokenizer

    tok = clip_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = AutoencoderKL(**SDXL_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L, **ids))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG, **ids))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tok,
                                     tokenizer_2=clip_tokenizer(), unet=unet,
                                     scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.register_to_config(_name_or_path="sdxl-base-architecture (random weights)")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def blip2_captioner(device, dtype):
    """BLIP-2 opt-2.7b's architecture with random weights, as a `Captioner`."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, GenerationConfig, OPTConfig)

    from dnp_batch.captioner import Captioner
    from dnp_batch.tiny import blip2_tokenizer

    tok = blip2_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Blip2Config(vision_config=Blip2VisionConfig(**BLIP2_VISION).to_dict(),
                         qformer_config=Blip2QFormerConfig(**BLIP2_QFORMER).to_dict(),
                         text_config=OPTConfig(**OPT_2_7B, **ids).to_dict(), num_query_tokens=BLIP2_QUERY_TOKENS,
                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    with torch.device(device):
        model = Blip2ForConditionalGeneration(config)
    # random weights rarely emit EOS, and NaN logits could stop at once: every caption is the 30-token cap
    # (a real caption is shorter), so stage 1's cost is an upper bound, the same in every run
    model.generation_config = GenerationConfig(**ids, min_new_tokens=30)
    processor = Blip2Processor(BlipImageProcessor(size={"height": 224, "width": 224}), tok,
                               num_query_tokens=BLIP2_QUERY_TOKENS)
    return Captioner.from_loaded(model.to(device, dtype), processor, "blip2-opt-2.7b-architecture (random weights)")


def tiny_models(device, dtype):
    """The smoke test's stand-ins: the tiny SDXL and BLIP-2 built from configs (dnp_batch.tiny)."""
    from dnp_batch.captioner import Captioner
    from dnp_batch.models import load_pipeline
    from dnp_batch.tiny import ensure_tiny

    pipe = load_pipeline(ensure_tiny("sdxl"), dtype=dtype, device=device)
    return pipe, Captioner(ensure_tiny("blip2"), dtype=dtype, device=device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, fn, repeats: int) -> tuple[float, float]:
    """(median seconds, peak GPU memory in GB) of fn() over `repeats` runs after one warm-up."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the tiny twins at 64², 2 steps, batch 1/2 (CPU, CI)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write every measurement here (after each one, so a cut-off run keeps its rows)")
    p.add_argument("--budget-s", type=float, help="skip what is left once this many seconds have passed")
    p.add_argument("--family", choices=["sdxl", "sd3", "qwenimage"], default="sdxl")
    args = p.parse_args(argv)
    if args.family != "sdxl":
        return flow_main(args)
    torch.set_grad_enabled(False)  # inference only, as the pipelines run
    from dnp_batch import generate
    from dnp_batch.api import describe_dns

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.steps, args.size, args.batch_sizes, args.repeats = 2, 64, "1,2", 1
        dtype = torch.bfloat16
        pipe, captioner = tiny_models(device, dtype)
    else:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        pipe, captioner = sdxl_pipeline(device, dtype), blip2_captioner(device, dtype)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {card}; dtype {str(dtype).removeprefix('torch.')}; {args.size}²; {args.steps} steps; "
          f"UNet {sum(p.numel() for p in pipe.unet.parameters()) / 1e9:.2f} B params", flush=True)
    kw = dict(guidance_scale=7.0, num_inference_steps=args.steps, height=args.size, width=args.size)
    results = {"device": card, "dtype": str(dtype), "size": args.size, "steps": args.steps, "repeats": args.repeats,
               "torch": torch.__version__, "rows": [], "skipped": []}
    started = time.perf_counter()

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)

    def record(name: str, batch: int, fn) -> None:
        if args.budget_s and time.perf_counter() - started > args.budget_s:
            results["skipped"].append(f"{name}@{batch}")
            print(f"{name:<34} batch {batch}: skipped (--budget-s {args.budget_s:g} spent)", flush=True)
            return
        seconds, peak = timed(device, fn, args.repeats)
        row = {"name": name, "batch": batch, "images_per_s": batch / seconds, "seconds": seconds, "peak_gb": peak}
        results["rows"].append(row)
        save()
        print(f"{name:<34} batch {batch}: {row['images_per_s']:7.3f} img/s  ({seconds:7.2f} s, peak {peak:5.1f} GB)",
              flush=True)

    for b in [int(x) for x in args.batch_sizes.split(",")]:
        prompts, seeds = [PROMPT] * b, list(range(b))
        record("diffusers pipe() cfg", b, lambda: pipe(prompt=prompts, generator=[torch.Generator().manual_seed(s)
                                                                                 for s in seeds], **kw))
        record("dnp_batch cfg", b, lambda: generate(pipe, prompts, seeds, method="cfg", batch_size=b, **kw))
        record("dnp_batch answer", b, lambda: generate(pipe, prompts, seeds, method="answer", batch_size=b, **kw))
        captions = describe_dns(pipe, prompts, seeds, captioner=captioner, batch_size=b, **kw).captions
        record("auto-dnp stage 1 (DNS + BLIP-2)", b,
               lambda: describe_dns(pipe, prompts, seeds, captioner=captioner, batch_size=b, **kw))
        record("auto-dnp stage 2 (NP)", b, lambda: generate(pipe, prompts, seeds, method="auto-dnp", captions=captions,
                                                            captioner={"model": "blip2"}, batch_size=b, **kw))

    b = 4 if not args.smoke else 2
    prompts, seeds = [PROMPT] * b, list(range(b))
    run_cfg = lambda: generate(pipe, prompts, seeds, method="cfg", batch_size=b, **kw)  # noqa: E731
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor())
    record("cfg, classic attention", b, run_cfg)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    record("cfg, SDPA attention (default)", b, run_cfg)
    pipe.unet.to(memory_format=torch.channels_last)
    record("cfg, channels-last UNet", b, run_cfg)
    pipe.unet.to(memory_format=torch.contiguous_format)
    if not args.smoke:
        unet = pipe.unet
        pipe.unet = torch.compile(unet)  # the default mode: max-autotune's search takes many minutes at this size
        try:
            record("cfg, torch.compile UNet", b, run_cfg)
        except Exception as e:  # a compile failure is a result too
            results["compile_error"] = f"{type(e).__name__}: {e}"[:500]
            print(f"torch.compile failed: {results['compile_error']}", flush=True)
        pipe.unet = unet

    latents = torch.randn(b, 4, args.size // 8, args.size // 8, device=device, dtype=dtype)
    from dnp_batch.families import decode

    record("VAE decode, fp32 upcast (SDXL default)", b, lambda: decode(pipe, latents, "np"))
    pipe.vae.config.force_upcast = False
    record("VAE decode, fp16/bf16 (a fixed VAE)", b, lambda: decode(pipe, latents, "np"))
    pipe.vae.config.force_upcast = True

    by = {(r["name"], r["batch"]): r for r in results["rows"]}
    for (name, batch), row in by.items():
        bare = by.get(("diffusers pipe() cfg", batch))
        if bare and name != bare["name"] and not name.startswith("VAE"):
            row["ratio_to_bare"] = row["images_per_s"] / bare["images_per_s"]
    print("ratios to bare diffusers at the same batch size: " + ", ".join(
        f"{r['name']}@{r['batch']} {r['ratio_to_bare']:.2f}" for r in results["rows"] if "ratio_to_bare" in r))
    results["seconds"] = time.perf_counter() - started
    save()
    return 0


def flow_main(args) -> int:
    """bare pipe() vs generate() CFG and ANSWER on a flow-matching family (full size on a GPU, twins with --smoke)."""
    torch.set_grad_enabled(False)
    from dnp_batch import generate
    from dnp_batch.models import load_pipeline
    from dnp_batch.tiny import ensure_tiny

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    size, steps, w = FLOW_DEFAULTS[args.family]
    batches = "1,2,4" if args.batch_sizes == "1,2,4,8" else args.batch_sizes
    if args.smoke:
        size, steps, batches, args.repeats = 64, 2, "1,2", 1
    dtype = torch.bfloat16
    if args.smoke:
        pipe = load_pipeline(ensure_tiny(args.family), dtype=dtype, device=device)
    else:
        pipe = (sd35_large_pipeline if args.family == "sd3" else qwenimage_pipeline)(device, dtype)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {card}; {args.family}; dtype bfloat16; {size}²; {steps} steps; transformer "
          f"{sum(p.numel() for p in pipe.transformer.parameters()) / 1e9:.2f} B params", flush=True)
    results = {"device": card, "family": args.family, "dtype": "bfloat16", "size": size, "steps": steps,
               "repeats": args.repeats, "torch": torch.__version__, "rows": [], "skipped": []}
    started = time.perf_counter()
    common = dict(num_inference_steps=steps, height=size, width=size)
    bare_kw = dict(true_cfg_scale=w, negative_prompt=" ") if args.family == "qwenimage" else dict(guidance_scale=w)
    for b in [int(x) for x in batches.split(",")]:
        prompts, seeds = [PROMPT] * b, list(range(b))
        runs = {
            "diffusers pipe() cfg": lambda: pipe(prompt=prompts, generator=[torch.Generator().manual_seed(s) for s in seeds],
                                                 **{**bare_kw, **({"negative_prompt": [" "] * b} if "negative_prompt" in bare_kw else {})},
                                                 **common),
            "dnp_batch cfg": lambda: generate(pipe, prompts, seeds, method="cfg", guidance_scale=w, batch_size=b, **common),
            "dnp_batch answer": lambda: generate(pipe, prompts, seeds, method="answer", guidance_scale=w, batch_size=b,
                                                 **common),
        }
        for name, fn in runs.items():
            if args.budget_s and time.perf_counter() - started > args.budget_s:
                results["skipped"].append(f"{name}@{b}")
                continue
            seconds, peak = timed(device, fn, args.repeats)
            results["rows"].append({"name": name, "batch": b, "images_per_s": b / seconds, "seconds": seconds,
                                    "peak_gb": peak})
            print(f"{name:<24} batch {b}: {b / seconds:7.3f} img/s  ({seconds:7.2f} s, peak {peak:5.1f} GB)", flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    by = {(r["name"], r["batch"]): r for r in results["rows"]}
    for (name, batch), row in by.items():
        bare = by.get(("diffusers pipe() cfg", batch))
        if bare and name != bare["name"]:
            row["ratio_to_bare"] = row["images_per_s"] / bare["images_per_s"]
    print("ratios to bare diffusers at the same batch size: " + ", ".join(
        f"{r['name']}@{r['batch']} {r['ratio_to_bare']:.2f}" for r in results["rows"] if "ratio_to_bare" in r))
    results["seconds"] = time.perf_counter() - started
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

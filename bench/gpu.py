"""Full-size SDXL throughput on a GPU with no download: the SDXL base architecture (UNet, both text
encoders, VAE) and BLIP-2 opt-2.7b, built from their published configs with random weights.

    python bench/gpu.py                       # on a GPU: 1024², fp16 (bf16 where fp16 is unsupported)
    python bench/gpu.py --smoke               # anywhere: the tiny twins at 64², 2 steps (CI runs it)

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

PROMPT = "a photograph of an astronaut riding a horse on the moon"


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
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())

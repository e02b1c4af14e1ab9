"""Train the toy-world text-to-image model on the CPU and save it as a diffusers pipeline.

    python -m dnp_batch.toyworld.train --out models/toy-shapes --seed 0 --minutes 40

A `StableDiffusionPipeline`: the exact identity VAE of `model.py` (so the diffusion runs on
normalised 32×32 pixels), a small CLIP text encoder over a grammar-word tokenizer, trained jointly
with a small UNet (standard epsilon-prediction DDPM loss on SD's scaled-linear betas, Min-SNR-5
weights, 10% of captions dropped to "" so that CFG's ∅ = the encoding of "" is learnt), AdamW
with warm-up and cosine decay, and an EMA of the weights, which is what is saved.

Deterministic for (seed, steps) on one machine: one thread, `torch.manual_seed`, and batch `i`
drawn from `numpy.random.default_rng([seed, i])` (fresh scenes every step). `--steps N` fixes the
run; `--minutes M` alone times the first steps and plans N to fit M minutes (the plan is in the
log, so `--steps N` repeats the run exactly) and stops at 1.5·M in any case; with both, M is a
hard cap. The EMA pipeline is saved every `--save-every` minutes (log `"complete": false`) and at
the end, with `train_log.json` (settings, loss curve, timings) and `train_log.txt` in OUT.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from ..models import library_versions, quiet_progress_bars
from ..tiny import SD_SCHEDULER_CONFIG
from .data import render, sample_scene
from .model import (
    MAX_LENGTH,
    UNET_CONFIG,
    build_pipeline,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    images_to_latents,
    pixel_stats,
)

DEFAULTS = dict(batch_size=32, lr=1.5e-3, warmup=100, final_lr_fraction=0.1, weight_decay=0.0, grad_clip=1.0,
                ema_decay=0.999, caption_dropout=0.1, min_snr_gamma=5.0)
CALIBRATION_STEPS = (10, 40)  # time steps [10, 40) to plan a --minutes run (all inside the warm-up)


def lr_factor(step: int, total: int, warmup: int, final: float) -> float:
    """Linear warm-up, then cosine from 1 to `final` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_data(seed: int, step: int, batch_size: int, dropout: float) -> tuple[np.ndarray, list[str]]:
    """Batch `step`'s images and captions (a caption dropped to "" with probability `dropout`)."""
    from .data import caption

    rng = np.random.default_rng([seed, step])
    scenes = [sample_scene(rng) for _ in range(batch_size)]
    drop = rng.random(batch_size) < dropout
    return np.stack([render(s) for s in scenes]), ["" if d else caption(s) for s, d in zip(scenes, drop)]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def _save(out: Path, pipe, log: dict) -> None:
    """Write the pipeline and its log into `out`, replacing it whole (temp sibling, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with quiet_progress_bars():
            pipe.save_pretrained(tmp, safe_serialization=True)
        _write_logs(tmp, log)
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_logs(directory: Path, log: dict) -> None:
    (directory / "train_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    lines = [f"# toy-shapes training log ({'complete' if log['complete'] else 'in progress'})"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in log.items() if k not in ("curve", "events", "complete")]
    lines += ["", "step  elapsed_s  lr  loss(min-snr weighted)  mse"]
    lines += [f"{r['step']:6d} {r['elapsed_s']:9.1f} {r['lr']:.2e} {r['loss']:.5f} {r['mse']:.5f}" for r in log["curve"]]
    lines += ["", *log["events"]]
    (directory / "train_log.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def train(out: str | os.PathLike, seed: int = 0, minutes: float | None = None, steps: int | None = None,
          save_every: float = 5.0, log_every: int = 10, quiet: bool = False, **overrides) -> dict:
    """Train and save into `out`; returns the log. See the module docstring. Runs on one thread
    (the caller's thread count is restored after)."""
    if minutes is None and steps is None:
        raise ValueError("give --minutes or --steps")
    hp = {**DEFAULTS, **overrides}
    unknown = set(hp) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(Path(out).expanduser().absolute(), seed, minutes, steps, save_every, log_every, quiet, hp)
    finally:
        torch.set_num_threads(threads)


def _train(out: Path, seed: int, minutes: float | None, steps: int | None, save_every: float, log_every: int,
           quiet: bool, hp: dict) -> dict:
    t_start = time.perf_counter()

    tok = build_tokenizer()
    mean, std = pixel_stats()
    vae = build_vae(mean, std)
    text_encoder = build_text_encoder(tok, seed)
    unet = build_unet(seed + 1)
    ema_text, ema_unet = copy.deepcopy(text_encoder).eval(), copy.deepcopy(unet).eval()
    for m in (vae, ema_text, ema_unet):
        m.requires_grad_(False)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    noise_sched = DDPMScheduler.from_config(SD_SCHEDULER_CONFIG)
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    id_cache: dict[str, list[int]] = {}

    def ids_for(texts: list[str]) -> torch.Tensor:
        for t in texts:
            if t not in id_cache:  # as the pipeline's encode_prompt tokenizes
                id_cache[t] = tok(t, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
        return torch.tensor([id_cache[t] for t in texts])

    log = {
        "complete": False,
        "seed": seed,
        "planned_steps": steps,
        "steps_done": 0,
        "minutes_budget": minutes,
        "settings": hp,
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
        "params": {"unet": sum(p.numel() for p in unet.parameters()),
                   "text_encoder": sum(p.numel() for p in text_encoder.parameters())},
        "vae": {"kind": "exact identity (model.py)", "pixel_mean": mean, "pixel_std": std},
        "data": "fresh scenes every step: batch i from numpy default_rng([seed, i])",
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "curve": [],
        "events": [],
    }

    def event(text: str) -> None:
        line = f"[{time.perf_counter() - t_start:8.1f}s] {text}"
        log["events"].append(line)
        if not quiet:
            print(line, flush=True)

    event(f"setup done; unet {log['params']['unet']:,} params, text encoder {log['params']['text_encoder']:,}")
    total = steps
    cap_s = None if minutes is None else minutes * 60 * (1.0 if steps is not None else 1.5)
    window_loss, window_mse = [], []
    last_save = time.perf_counter()
    t_calib = None
    step = 0
    unet.train()
    text_encoder.train()
    while total is None or step < total:
        if step == CALIBRATION_STEPS[0]:
            t_calib = time.perf_counter()
        if total is None and step == CALIBRATION_STEPS[1]:
            per_step = (time.perf_counter() - t_calib) / (CALIBRATION_STEPS[1] - CALIBRATION_STEPS[0])
            remaining = minutes * 60 - (time.perf_counter() - t_start)
            total = max(step + 1, step + int(remaining / (per_step * 1.03)))  # 3% for saves and logs
            log["planned_steps"] = total
            event(f"planned {total} steps ({per_step:.3f} s/step over steps {CALIBRATION_STEPS}); "
                  f"repeat this run with --steps {total}")
        images, texts = batch_data(seed, step, hp["batch_size"], hp["caption_dropout"])
        latents = images_to_latents(images, mean, std)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
        noisy = noise_sched.add_noise(latents, noise, t)
        hidden = text_encoder(ids_for(texts))[0]
        pred = unet(noisy, t, hidden).sample
        mse = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        weight = torch.clamp(snr[t], max=hp["min_snr_gamma"]) / snr[t]
        loss = (weight * mse).mean()
        for group in opt.param_groups:
            group["lr"] = hp["lr"] * lr_factor(step, total or 10**9, hp["warmup"], hp["final_lr_fraction"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, hp["grad_clip"])
        opt.step()
        decay = min(hp["ema_decay"], (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text_encoder, decay)
        window_loss.append(loss.item())
        window_mse.append(mse.mean().item())
        step += 1
        log["steps_done"] = step
        now = time.perf_counter()
        if step % log_every == 0:
            row = {"step": step, "elapsed_s": round(now - t_start, 1), "lr": opt.param_groups[0]["lr"],
                   "loss": float(np.mean(window_loss)), "mse": float(np.mean(window_mse))}
            log["curve"].append(row)
            window_loss, window_mse = [], []
            if not quiet and step % (log_every * 10) == 0:
                print(f"step {step}/{total} {row['elapsed_s']:.0f}s loss {row['loss']:.4f} mse {row['mse']:.4f}",
                      flush=True)
        if cap_s is not None and now - t_start > cap_s and (total is None or step < total):
            event(f"time cap {cap_s / 60:.1f} min reached at step {step} of {total}: stopping early")
            log["stopped_early"] = True
            break
        if save_every and now - last_save > save_every * 60 and (total or 0) - step > 50:
            log["minutes_elapsed"] = round((now - t_start) / 60, 2)
            _save(out, build_pipeline(vae, ema_text, tok, ema_unet), log)
            last_save = time.perf_counter()
            event(f"checkpoint at step {step} saved to {out}")

    if window_loss:  # the last partial window
        log["curve"].append({"step": step, "elapsed_s": round(time.perf_counter() - t_start, 1),
                             "lr": opt.param_groups[0]["lr"], "loss": float(np.mean(window_loss)),
                             "mse": float(np.mean(window_mse))})
    tail = [r for r in log["curve"] if r["step"] > step - 200]
    log["final_loss"] = float(np.mean([r["loss"] for r in tail]))
    log["final_mse"] = float(np.mean([r["mse"] for r in tail]))
    log["minutes_elapsed"] = round((time.perf_counter() - t_start) / 60, 2)
    log["seconds_per_step"] = round((time.perf_counter() - t_start) / max(step, 1), 4)
    log["complete"] = True
    event(f"done: {step} steps in {log['minutes_elapsed']} min; loss over the last 200 steps "
          f"{log['final_loss']:.4f} (mse {log['final_mse']:.4f})")
    _save(out, build_pipeline(vae, ema_text, tok, ema_unet), log)
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnp_batch.toyworld.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the pipeline and its log (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=None, help="time budget (plans the steps to fit)")
    parser.add_argument("--steps", type=int, default=None, help="number of steps (exact, reproducible)")
    parser.add_argument("--save-every", type=float, default=5.0, help="checkpoint every M minutes (0: only at the end)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    args = parser.parse_args(argv)
    if args.minutes is None and args.steps is None:
        parser.error("give --minutes or --steps")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    train(args.out, seed=args.seed, minutes=args.minutes, steps=args.steps, save_every=args.save_every,
          batch_size=args.batch_size, lr=args.lr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

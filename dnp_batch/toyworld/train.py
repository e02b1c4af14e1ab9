"""Train the toy-world text-to-image model on the CPU and save it as a diffusers pipeline.

    python -m dnp_batch.toyworld.train --out models/toy-shapes --steps 9000 --seed 0 --minutes 100

A `StableDiffusionPipeline`: the exact identity VAE of `model.py` (so the diffusion runs on
normalised 32×32 pixels), a small CLIP text encoder over a grammar-word tokenizer, trained jointly
with a small UNet (`--arch`, see `model.ARCHITECTURES`; standard epsilon-prediction DDPM loss on
SD's scaled-linear betas, Min-SNR-5 weights, 10% of captions dropped to "" so that CFG's ∅ = the
encoding of "" is learnt), AdamW with a linear warm-up then a constant rate, and an EMA of the
weights, which is what the pipeline holds.

Deterministic for (seed, steps, settings) on one machine: one thread; batch `i` (scenes, caption
drop-out, noise, time steps) comes from `SeedSequence([seed, i])` alone, so no RNG state carries
from step to step. The rate is constant after the warm-up, so a run of N steps is the prefix of
any longer run.

Resumable: OUT/checkpoint/ holds everything that carries over (raw and EMA weights, AdamW's
moments and step counts, the step, the settings); `--resume` continues from it and gives the
same bytes as an uninterrupted run of the same total steps. `--minutes M` stops (resumably) after
M minutes. The EMA pipeline and the checkpoint are saved every `--save-every` minutes and at the
end, with `train_log.json` (settings, loss curve, the judge's adherence on validation prompts
every `eval_every` steps, timings) and `train_log.txt`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file

from ..models import library_versions
from ..runtime import quiet_progress_bars
from .data import caption, kind_weights, prompts, render, sample_scene
from .model import (
    ARCHITECTURES,
    MAX_LENGTH,
    SCHEDULES,
    build_pipeline,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    images_to_latents,
    pixel_stats,
    unet_config,
)

DEFAULTS = dict(arch="v1", batch_size=32, lr=1.5e-3, warmup=100, cooldown=0, weight_decay=0.0, grad_clip=1.0,
                ema_decay=0.999, caption_dropout=0.1, min_snr_gamma=5.0, relation_share=0.5, schedule="zsnr-v",
                high_noise_share=0.0, high_noise_from=900,
                eval_every=500, eval_n=64, eval_w=3.0, eval_steps=20, eval_pairs=32)
# Settings added after a run was started take their default when that run is resumed.
# Validation prompts for the training curve; the held-out set of the README (evaluate.HELDOUT_PROMPT_SEED)
# is another seed, never looked at while training.
VALIDATION_PROMPT_SEED = 4321
CHECKPOINT = "checkpoint"


def lr_factor(step: int, warmup: int, steps: int | None = None, cooldown: int = 0) -> float:
    """Linear warm-up, constant, then (with `cooldown`) a linear cool-down to 0 over the last
    `cooldown` of `steps` steps. Until the cool-down starts a run can be extended bit-exactly
    (a larger `--steps` on `--resume`: see the module docstring)."""
    factor = min(1.0, (step + 1) / warmup)
    if cooldown and steps is not None and step >= steps - cooldown:
        factor *= (steps - step) / cooldown
    return factor


def loss_weight(snr: torch.Tensor, schedule: str, gamma: float) -> torch.Tensor:
    """Per-sample weight of the prediction MSE.

    "sd" (ε-prediction): Min-SNR-γ, min(SNR, γ)/SNR (Hang et al. 2023), the first model's loss.
    "zsnr-v" (v-prediction): the x0-error weight of that loss floored at 1, min(max(SNR, 1), γ),
    written as a v-MSE weight (‖v̂ - v‖² = (SNR + 1)·‖x̂0 - x0‖²): max(SNR, 1) capped at γ, over
    SNR + 1. Min-SNR's own v-form, min(SNR, γ)/(SNR + 1), is 0 at t = T, exactly where the layout
    must be learnt from the text; the floor keeps that step's x0 error at weight 1."""
    if schedule == "sd":
        return torch.clamp(snr, max=gamma) / snr
    return torch.clamp(snr, min=1.0, max=gamma) / (snr + 1)


def timesteps(gen: torch.Generator, n: int, num_train: int, share: float, high_from: int) -> torch.Tensor:
    """A batch's training time steps: uniform over [0, num_train), then (with `share` > 0) each
    sample with probability `share` redrawn uniformly from [high_from, num_train), the steps where
    x_t shows too little of the image to give its layout away, so that only the words can (v3: at
    step 10,000 the uniform draw had taught the model which axis "left of" means but not which way
    round). With `share` = 0 no extra numbers are drawn, so older runs keep their bytes."""
    t = torch.randint(0, num_train, (n,), generator=gen)
    if share > 0:
        high = torch.rand(n, generator=gen) < share
        t = torch.where(high, torch.randint(high_from, num_train, (n,), generator=gen), t)
    return t


def step_rng(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """Step `step`'s generators (numpy for scenes and drop-out, torch for noise and time steps)."""
    ss = np.random.SeedSequence([seed, step])
    return np.random.default_rng(ss), torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))


def batch_data(rng: np.random.Generator, batch_size: int, dropout: float, relation_share: float
               ) -> tuple[np.ndarray, list[str]]:
    """A batch's images and captions (a caption dropped to "" with probability `dropout`)."""
    weights = kind_weights(relation_share)
    scenes = [sample_scene(rng, weights) for _ in range(batch_size)]
    drop = rng.random(batch_size) < dropout
    return np.stack([render(s) for s in scenes]), ["" if d else caption(s) for s, d in zip(scenes, drop)]


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def _replace_dir(out: Path, fill) -> None:
    """Write `out` whole: `fill(tmp)` into a temp sibling, then rename over `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fill(tmp)
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
    lines += [f"{k}: {json.dumps(v)}" for k, v in log.items() if k not in ("curve", "evals", "events", "complete")]
    lines += ["", "step  elapsed_s  lr  loss(min-snr weighted)  mse"]
    lines += [f"{r['step']:6d} {r['elapsed_s']:9.1f} {r['lr']:.2e} {r['loss']:.5f} {r['mse']:.5f}" for r in log["curve"]]
    lines += ["", f"validation (CFG w={log['settings']['eval_w']}, {log['settings']['eval_steps']} DDIM steps, "
                  f"{log['settings']['eval_n']} prompts of seed {VALIDATION_PROMPT_SEED}, EMA weights)",
              "step  shape  colour  count  relation  all    layout_follows  fg_iou (role-swapped prompts, same seeds)"]
    lines += [f"{e['step']:6d} {e['shape']:.3f}  {e['colour']:.3f}  {e['count']:.3f}  {e['relation']:.3f}     {e['all']:.3f}"
              + (f"  {e['layout_follows']:.3f} ({e['layout_judged']})  {e['layout_fg_iou']:.3f}" if "layout_follows" in e else "")
              for e in log["evals"]]
    lines += ["", *log["events"]]
    (directory / "train_log.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _checkpoint_tensors(unet, text_encoder, ema_unet, ema_text, opt, params) -> dict[str, torch.Tensor]:
    tensors = {}
    for prefix, module in (("unet", unet), ("text", text_encoder), ("ema_unet", ema_unet), ("ema_text", ema_text)):
        tensors.update({f"{prefix}.{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()})
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"opt.{i}.{k}"] = v.detach().clone().contiguous()
    return tensors


def _load_checkpoint(path: Path, unet, text_encoder, ema_unet, ema_text, opt, params) -> None:
    tensors = load_file(path / "state.safetensors")
    for prefix, module in (("unet", unet), ("text", text_encoder), ("ema_unet", ema_unet), ("ema_text", ema_text)):
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    for i, p in enumerate(params):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if state:
            opt.state[p] = state


def train(out: str | os.PathLike, seed: int = 0, steps: int = 1000, minutes: float | None = None,
          resume: bool = False, save_every: float = 10.0, log_every: int = 10, quiet: bool = False,
          device: str = "cpu", init_from: str | os.PathLike | None = None, stop_at: int | None = None,
          **overrides) -> dict:
    """Train (or, with `resume`, continue) and save into `out`; returns the log. See the module
    docstring. Runs on one thread (the caller's thread count is restored after)."""
    hp = {**DEFAULTS, **overrides}
    unknown = set(hp) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    if hp["arch"] not in ARCHITECTURES:
        raise ValueError(f"unknown --arch {hp['arch']!r}; known: {', '.join(ARCHITECTURES)}")
    if init_from is not None and Path(init_from).expanduser().absolute() == Path(out).expanduser().absolute():
        raise ValueError("--init-from must name another directory than --out (the stage would replace its source)")
    if init_from is not None and resume:
        raise ValueError("--init-from starts a new stage in --out; to continue that stage later use --resume alone")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(Path(out).expanduser().absolute(), seed, steps, minutes, resume, save_every, log_every, quiet,
                      torch.device(device), hp, None if init_from is None else Path(init_from).expanduser().absolute(),
                      stop_at)
    finally:
        torch.set_num_threads(threads)


def _validate(pipe, hp: dict, device: torch.device) -> dict:
    """The judge's adherence of the EMA pipeline on the validation prompts (CFG at eval_w)."""
    from ..api import generate
    from .judge import judge_many

    texts = prompts(hp["eval_n"], VALIDATION_PROMPT_SEED)
    with quiet_progress_bars():
        images = generate(pipe, texts, list(range(len(texts))), method="cfg", guidance_scale=hp["eval_w"],
                          num_inference_steps=hp["eval_steps"], height=32, width=32, batch_size=64).images
    return judge_many(images, texts)


def _train(out: Path, seed: int, steps: int, minutes: float | None, resume: bool, save_every: float, log_every: int,
           quiet: bool, device: torch.device, hp: dict, init_from: Path | None = None,
           stop_at: int | None = None) -> dict:
    t_start = time.perf_counter()
    tok = build_tokenizer()
    mean, std = pixel_stats()
    vae = build_vae(mean, std).to(device)
    arch = ARCHITECTURES[hp["arch"]]
    text_encoder = build_text_encoder(tok, seed, arch["text_layers"]).to(device)
    unet = build_unet(seed + 1, hp["arch"]).to(device)
    ema_text, ema_unet = copy.deepcopy(text_encoder).eval(), copy.deepcopy(unet).eval()
    for m in (vae, ema_text, ema_unet):
        m.requires_grad_(False)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    noise_sched = DDPMScheduler.from_config(SCHEDULES[hp["schedule"]])
    v_pred = noise_sched.config.prediction_type == "v_prediction"
    alphas = noise_sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    id_cache: dict[str, list[int]] = {}

    def ids_for(texts: list[str]) -> torch.Tensor:
        for t in texts:
            if t not in id_cache:  # as the pipeline's encode_prompt tokenizes
                id_cache[t] = tok(t, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
        return torch.tensor([id_cache[t] for t in texts], device=device)

    step = 0
    ckpt = out / CHECKPOINT
    if resume and (ckpt / "state.json").is_file():
        state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        if (state["seed"], {**DEFAULTS, **state["settings"]}) != (seed, hp):
            raise ValueError(f"--resume: the checkpoint in {ckpt} was trained with seed {state['seed']} and "
                             f"{state['settings']}, not seed {seed} and {hp}; give the same settings or a new --out")
        _load_checkpoint(ckpt, unet, text_encoder, ema_unet, ema_text, opt, params)
        step = state["step"]
        log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
        log["settings"] = hp
        if hp["cooldown"] and step > log["steps"] - hp["cooldown"] and steps != log["steps"]:
            raise ValueError(f"--resume: the checkpoint at step {step} is inside the cool-down of a "
                             f"{log['steps']}-step run; give --steps {log['steps']} (it cannot be extended now)")
    elif resume:
        raise ValueError(f"--resume: no checkpoint in {ckpt}; run without --resume to start")
    else:
        log = {
            "complete": False, "seed": seed, "steps": steps, "steps_done": 0, "settings": hp,
            "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in unet_config(hp["arch"]).items()},
            "text_layers": arch["text_layers"],
            "params": {"unet": sum(p.numel() for p in unet.parameters()),
                       "text_encoder": sum(p.numel() for p in text_encoder.parameters())},
            "vae": {"kind": "exact identity (model.py)", "pixel_mean": mean, "pixel_std": std},
            "data": "batch i from SeedSequence([seed, i]): fresh scenes, drop-out, noise and time steps",
            "threads": torch.get_num_threads(), "device": str(device), "versions": library_versions(),
            "curve": [], "evals": [], "events": [], "sessions": [],
        }
    if init_from is not None:
        src = init_from / CHECKPOINT
        if not (src / "state.json").is_file():
            raise ValueError(f"--init-from: no checkpoint in {src}; give a training --out that has one")
        src_state = json.loads((src / "state.json").read_text(encoding="utf-8"))
        if src_state["seed"] != seed or {**DEFAULTS, **src_state["settings"]}["arch"] != hp["arch"]:
            raise ValueError(f"--init-from: {init_from} was trained with seed {src_state['seed']} and arch "
                             f"{src_state['settings'].get('arch', 'v1')!r}; give the same --seed and --arch")
        src_log = json.loads((init_from / "train_log.json").read_text(encoding="utf-8"))
        _load_checkpoint(src, unet, text_encoder, ema_unet, ema_text, opt, params)
        step = src_state["step"]  # batch i still comes from SeedSequence([seed, i]): no batch is repeated
        with open(src / "state.safetensors", "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        log["stages"] = [*src_log.get("stages", []),
                         {"dir": str(init_from), "seed": seed, "to_step": step, "settings": src_state["settings"],
                          "state_sha256": digest}]
        for key in ("curve", "evals", "events", "sessions"):
            log[key] = [*src_log[key], *log[key]]
        if hp["cooldown"] and step > steps - hp["cooldown"]:
            raise ValueError(f"--init-from: step {step} of {init_from} is past the start of this stage's cool-down "
                             f"(--steps {steps}, --cooldown {hp['cooldown']})")
    log["steps"] = steps
    log["sessions"].append({"from_step": step, "device": str(device)})
    session_t0 = time.perf_counter()

    def event(text: str) -> None:
        line = f"[step {step:6d}, +{time.perf_counter() - t_start:8.1f}s] {text}"
        log["events"].append(line)
        if not quiet:
            print(line, flush=True)

    def save(complete: bool) -> None:
        log["complete"] = complete
        log["steps_done"] = step
        log["sessions"][-1].update(to_step=step, minutes=round((time.perf_counter() - session_t0) / 60, 2))
        log["minutes_total"] = round(sum(s.get("minutes", 0) for s in log["sessions"]), 2)
        # a fresh tokenizer: the one in use keeps the padding and truncation of its last call in tokenizer.json
        pipe = build_pipeline(copy.deepcopy(vae).cpu(), copy.deepcopy(ema_text).cpu(), build_tokenizer(),
                              copy.deepcopy(ema_unet).cpu(), hp["schedule"])
        tensors = {k: v.cpu() for k, v in _checkpoint_tensors(unet, text_encoder, ema_unet, ema_text, opt, params).items()}
        state = {"seed": seed, "step": step, "settings": hp, "format": "state.safetensors: unet./text. raw weights, "
                 "ema_unet./ema_text. EMA weights, opt.<param index>.<exp_avg|exp_avg_sq|step> AdamW state"}

        def fill(tmp: Path) -> None:
            with quiet_progress_bars():
                pipe.save_pretrained(tmp, safe_serialization=True)
            (tmp / CHECKPOINT).mkdir()
            save_file(tensors, tmp / CHECKPOINT / "state.safetensors")
            (tmp / CHECKPOINT / "state.json").write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
            _write_logs(tmp, log)

        _replace_dir(out, fill)

    def validate() -> None:
        pipe = build_pipeline(vae, ema_text, tok, ema_unet, hp["schedule"])
        pipe.register_to_config(_name_or_path=f"{out} (training, step {step})")
        res = _validate(pipe, hp, device)
        row = {"step": step, **{k: round(v, 4) for k, v in res.items() if k != "n"}}
        text = ", ".join(f"{k} {res[k]:.3f}" for k in ("shape", "colour", "count", "relation", "all"))
        if hp["eval_pairs"]:
            from .layout import layout_test

            lay = layout_test(pipe, hp["eval_pairs"], hp["eval_w"], hp["eval_steps"])
            row.update(layout_follows=round(lay["follows_rate"], 4), layout_judged=lay["judged"],
                       layout_fg_iou=round(lay["fg_iou"], 4))
            text += f"; layout follows {lay['follows']}/{lay['judged']}, same-seed fg IoU {lay['fg_iou']:.2f}"
        log["evals"].append(row)
        event("validation: " + text)

    event(f"{f'new stage from {init_from} at step {step}' if init_from else 'resumed' if step else 'setup done'}; unet {log['params']['unet']:,} params, "
          f"text encoder {log['params']['text_encoder']:,}; {steps} steps planned")
    window_loss, window_mse = [], []
    last_save = time.perf_counter()
    unet.train()
    text_encoder.train()
    stopped = False
    while step < steps:
        rng, gen = step_rng(seed, step)
        images, texts = batch_data(rng, hp["batch_size"], hp["caption_dropout"], hp["relation_share"])
        latents = images_to_latents(images, mean, std).to(device)
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = timesteps(gen, latents.shape[0], noise_sched.config.num_train_timesteps, hp["high_noise_share"],
                      hp["high_noise_from"]).to(device)
        noisy = noise_sched.add_noise(latents, noise, t)
        hidden = text_encoder(ids_for(texts))[0]
        pred = unet(noisy, t, hidden).sample
        target = noise_sched.get_velocity(latents, noise, t) if v_pred else noise
        mse = (pred - target).pow(2).mean(dim=(1, 2, 3))
        weight = loss_weight(snr[t], hp["schedule"], hp["min_snr_gamma"])
        loss = (weight * mse).mean()
        for group in opt.param_groups:
            group["lr"] = hp["lr"] * lr_factor(step, hp["warmup"], steps, hp["cooldown"])
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
        now = time.perf_counter()
        if step % log_every == 0:
            row = {"step": step, "elapsed_s": round(now - t_start, 1), "lr": opt.param_groups[0]["lr"],
                   "loss": float(np.mean(window_loss)), "mse": float(np.mean(window_mse))}
            log["curve"].append(row)
            window_loss, window_mse = [], []
            if not quiet and step % (log_every * 10) == 0:
                print(f"step {step}/{steps} {row['elapsed_s']:.0f}s loss {row['loss']:.4f} mse {row['mse']:.4f}",
                      flush=True)
        if hp["eval_every"] and step % hp["eval_every"] == 0 and step < steps:
            validate()
        if stop_at is not None and step >= stop_at and step < steps:
            event(f"--stop-at {stop_at} reached: stopping; continue with the same command and --resume")
            stopped = True
            break
        if minutes is not None and now - session_t0 > minutes * 60 and step < steps:
            event(f"time limit of {minutes} min reached: stopping; continue with the same command and --resume")
            stopped = True
            break
        if save_every and now - last_save > save_every * 60 and steps - step > 50:
            save(False)
            last_save = time.perf_counter()
            event(f"checkpoint saved to {out}")
    if not stopped and hp["eval_every"]:
        validate()
    tail = [r for r in log["curve"] if r["step"] > step - 200]
    if tail:
        log["final_loss"] = float(np.mean([r["loss"] for r in tail]))
        log["final_mse"] = float(np.mean([r["mse"] for r in tail]))
    event(f"{'stopped' if stopped else 'done'} at step {step} of {steps}"
          + (f"; loss over the last 200 steps {log['final_loss']:.4f} (mse {log['final_mse']:.4f})" if tail else ""))
    save(not stopped)
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnp_batch.toyworld.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the pipeline, its checkpoint and log (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, required=True, help="total number of steps (exact, reproducible)")
    parser.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this many minutes")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--save-every", type=float, default=10.0, help="checkpoint every M minutes (0: only at the end)")
    parser.add_argument("--device", default="cpu", help="cpu (deterministic) or e.g. cuda for quick pilot runs")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="stop (resumably) once STEP steps are done, as a time limit would: a stage's "
                             "exact end, so that a chain of stages can be rerun to the same bytes")
    parser.add_argument("--init-from", default=None, metavar="DIR",
                        help="start a new stage in OUT from DIR's checkpoint (weights, EMA, AdamW state, step) "
                             "with these settings; the log keeps DIR's curve and names it")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hp = {k: getattr(args, k) for k in DEFAULTS}
    try:
        train(args.out, seed=args.seed, steps=args.steps, minutes=args.minutes, resume=args.resume,
              save_every=args.save_every, device=args.device, init_from=args.init_from, stop_at=args.stop_at, **hp)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

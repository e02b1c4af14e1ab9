"""Published settings of the pipelines' parts that the tiny twins (`dnp_batch.tiny`) and the toy
world's model are both built with: SD/SDXL/SD3/Qwen-Image's scheduler configs and CLIP's byte-level BPE alphabet."""

from __future__ import annotations

# Real SD/SDXL betas; extra keys (clip_sample, set_alpha_to_one, skip_prk_steps) mirror the
# SDXL base scheduler_config.json so swapping to DDIM/PNDM via from_config keeps them.
_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SDXL_SCHEDULER_CONFIG = {
    **_BETAS,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "sample_max_value": 1.0,
}
SD_SCHEDULER_CONFIG = {
    **_BETAS,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}

# stabilityai/stable-diffusion-3.5-large (and -medium, and SD3-medium): scheduler/scheduler_config.json
SD3_SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0}

# Qwen/Qwen-Image: scheduler/scheduler_config.json (the resolution-dependent exponential shift)
QWENIMAGE_SCHEDULER_CONFIG = {
    "base_image_seq_len": 256, "base_shift": 0.5, "invert_sigmas": False, "max_image_seq_len": 8192,
    "max_shift": 0.9, "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02,
    "stochastic_sampling": False, "time_shift_type": "exponential", "use_beta_sigmas": False,
    "use_dynamic_shifting": True, "use_exponential_sigmas": False, "use_karras_sigmas": False,
}


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character per byte value."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]

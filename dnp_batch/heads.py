"""Small torch heads that scorers put on top of CLIP, kept apart so the tiny twins can build them."""

from __future__ import annotations

import torch


class MLP(torch.nn.Module):
    """The improved-aesthetic-predictor head, as ImageReward reuses it: keys layers.{0,2,4,6,7}."""

    def __init__(self, width: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(width, 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16), torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def load_mlp(state: dict[str, torch.Tensor], prefix: str = "") -> MLP:
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if "layers.0.weight" not in weights:
        raise ValueError(f"no {prefix}layers.0.weight: not the aesthetic/ImageReward MLP head")
    mlp = MLP(weights["layers.0.weight"].shape[1])
    mlp.load_state_dict(weights)
    return mlp.eval()

"""dnp_batch: image datasets with Diffusion-Negative Prompting and ANSWER guidance on diffusers."""

from .api import METHODS, AnswerConfig, GenerateResult, generate, sample_id
from .models import load_pipeline

__all__ = ["METHODS", "AnswerConfig", "GenerateResult", "generate", "load_pipeline", "sample_id"]
__version__ = "0.1.0"

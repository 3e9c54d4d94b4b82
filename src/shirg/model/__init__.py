"""LaViDa-LLaDA and answering with it.

- ``llada.py`` (the masked-diffusion LM), ``lavida.py`` (tower + projector + LM in LaViDa's key layout),
  ``loading.py`` / ``adapter.py`` (checkpoints and trained adapters in).
- ``options.py`` (``MODES`` from the strategy registry, :class:`VisualOptions`), ``visual.py`` (visual
  tokens of every mode, prompt splicing), ``answer.py`` (one prefill, cached denoising, fallback
  policy), ``sampler.py`` / ``kv_cache.py`` (LLaDA's sampler, the prefix cache), ``prompt.py``,
  ``anyres.py`` (LaViDa's views), ``profile.py`` (opt-in per-stage timing).
"""

from shirg.model.adapter import apply_adapter, load_model
from shirg.model.answer import Answer, HiresFailure  # answering itself: LavidaModel.answer / model.answer.answer
from shirg.model.lavida import LavidaConfig, LavidaModel
from shirg.model.loading import load
from shirg.model.options import HIRES_MODES, LAVIDA_MODES, MODES, VisualOptions, reads_question
from shirg.model.profile import Stopwatch
from shirg.model.visual import hires_visual, lavida_visual, select_visual, splice

__all__ = [
    "HIRES_MODES", "LAVIDA_MODES", "MODES", "Answer", "HiresFailure", "LavidaConfig", "LavidaModel", "Stopwatch",
    "VisualOptions", "apply_adapter", "hires_visual", "lavida_visual", "load", "load_model",
    "reads_question", "select_visual", "splice",
]

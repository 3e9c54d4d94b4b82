"""lmms-eval resolves ``--model shirg`` to ``shirg.evaluate.lmms_plugin.models.shirg.ShirgLMMs``."""

from shirg.evaluate.lmms_plugin import ShirgLMMs

__all__ = ["ShirgLMMs"]

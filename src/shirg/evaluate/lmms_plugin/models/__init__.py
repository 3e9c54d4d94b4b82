"""What ``LMMS_EVAL_PLUGINS=shirg.evaluate.lmms_plugin`` makes lmms-eval read: model name -> class name
in ``shirg.evaluate.lmms_plugin.models.<name>``."""

AVAILABLE_MODELS = {"shirg": "ShirgLMMs"}

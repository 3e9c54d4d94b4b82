"""Evaluation: dataset loaders, metrics, the generated EntityGrid benchmark, the side-by-side runner.

- :mod:`shirg.evaluate.metrics` - ChartQA relaxed accuracy, ANLS (standard and lmms-eval), VQA
  accuracy with the standard answer normalization, EntityGrid accuracy / F1, CIDEr-D.
- :mod:`shirg.evaluate.data` - ChartQA / DocVQA / TextVQA / EntityGrid loaders (original JSON
  layouts and Hugging Face parquet).
- :mod:`shirg.entitygrid` - the EntityGrid generator (docs/entitygrid.md).
- :mod:`shirg.evaluate.evidence` - evidence recall: the share of the queried entity's patches kept.
- :mod:`shirg.evaluate.runner` - every mode on the same samples, resumable JSONL, data-parallel.
- :mod:`shirg.evaluate.summary` - per-mode tables (Markdown, CSV, JSON) and plots.
- :mod:`shirg.evaluate.lmms_plugin` - an lmms-eval model wrapper (optional extra ``lmms``).
"""

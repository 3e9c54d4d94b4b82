"""lmms-eval's ``LMMS_EVAL_PLUGINS`` route adds ``<plugin>.tasks`` to its task paths; shirg brings no
tasks of its own (lmms-eval's own task definitions are used), so this folder is empty."""

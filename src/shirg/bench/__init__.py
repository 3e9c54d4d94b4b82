"""Benchmarks: each prints a table and writes JSON; nothing here is asserted as a timing in tests.

- ``analytic.py`` - a roofline model of LaViDa-LLaDA-8B per stage and mode (``shirg bench --analytic``).
- ``hardware.py`` - the GPUs it knows (torch-free).
The commands (``shirg bench``, ``bench-kv``, ``bench-select``) parse arguments and call in here.
"""

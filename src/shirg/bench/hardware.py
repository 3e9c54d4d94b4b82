"""The GPUs the analytic roofline model knows, and its default modes (torch-free: the CLI reads it
at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

ANALYTIC_MODES = "lowres,lavida,full,shirg,pool"


@dataclass(frozen=True)
class GPU:
    name: str
    peak_flops: float  # dense bf16 tensor-core FLOP/s (no 2:4 sparsity)
    bandwidth: float  # HBM bytes/s
    memory: float  # bytes of HBM


# NVIDIA spec sheets: H100 SXM5 80GB "BF16 Tensor Core 1,979 TFLOPS*" (* with sparsity -> 989 dense),
# "GPU memory bandwidth 3.35 TB/s"; H200 SXM 141GB: same 1,979* TFLOPS, 4.8 TB/s; A100 80GB SXM:
# "BF16 Tensor Core 312 TFLOPS" (624 with sparsity), "2,039 GB/s".
GPUS = {
    "h100": GPU("NVIDIA H100 SXM5 80GB", 989e12, 3.35e12, 80e9),
    "h200": GPU("NVIDIA H200 SXM 141GB", 989e12, 4.8e12, 141e9),
    "a100": GPU("NVIDIA A100 SXM 80GB", 312e12, 2.039e12, 80e9),
}

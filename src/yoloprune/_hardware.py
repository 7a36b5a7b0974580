"""The channel multiple that runs fastest on this machine: what `--round-to auto` resolves to.

Scope: reading the CPU's vector extensions and turning them into one integer; nothing else.

ONNX Runtime's CPU provider (MLAS) runs convolutions in a blocked NCHWc layout whose block is 16
channels where the CPU has AVX-512F and 8 on every other x86-64 CPU (`NchwcBlockSize` in MLAS's
`platform.cpp`). A width that is not a multiple of the block is padded up to it (ONNX Runtime 1.32
runs a 40-channel conv as 48 on AVX-512), and a conv whose input width is not a multiple of 4 leaves
the layout for a slower path. ONNX Runtime's standard ARM builds have no NCHWc layout; NEON GEMM
kernels and TensorRT's FP16 tensor cores favour multiples of 8. Hence 16 with AVX-512F and 8
everywhere else; 16 is a multiple of 8, so it costs a GPU nothing.
"""

from __future__ import annotations

from pathlib import Path

AVX512_MULTIPLE = 16  # MLAS's NCHWc block with AVX-512F
DEFAULT_MULTIPLE = 8  # MLAS's block on other x86-64 CPUs; NEON and FP16 tensor cores


def cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields in Linux's /proc/cpuinfo ("model name", "flags", ...); empty
    where the file does not exist (macOS, Windows)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the end of the first processor's block
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def has_avx512f(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU has AVX-512F: from `flags` (Linux's names, e.g. {"avx2", "avx512f"}), else
    from /proc/cpuinfo, else from PyTorch's reading of the CPU (`get_cpu_capability`)."""
    if flags is None:
        info = cpuinfo()
        if not info:
            import torch

            return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        flags = frozenset(info.get("flags", "").split())
    return "avx512f" in flags


def channel_multiple(flags: frozenset[str] | None = None) -> int:
    """The width multiple `--round-to auto` means here: 16 with AVX-512F, 8 otherwise.

    Example:
        >>> channel_multiple(frozenset({"avx2", "avx512f"})), channel_multiple(frozenset({"avx2"}))
        (16, 8)
    """
    return AVX512_MULTIPLE if has_avx512f(flags) else DEFAULT_MULTIPLE

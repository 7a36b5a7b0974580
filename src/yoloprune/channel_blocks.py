"""The channel block a runtime computes in on this CPU: the multiple `round_to="auto"` resolves to.

Scope: reading the CPU's vector extensions and turning them, with the runtime and its precision, into
one integer; nothing else. Importable without torch (only the fallback where /proc/cpuinfo is missing
asks PyTorch).

ONNX Runtime's CPU provider (MLAS) runs convolutions in a blocked NCHWc layout whose block is 16
channels where the CPU has AVX-512F and 8 on every other x86-64 CPU (`NchwcBlockSize` in MLAS's
`platform.cpp`). A width that is not a multiple of the block is padded up to it (ONNX Runtime 1.32
runs a 40-channel conv as 48 on AVX-512), and a conv whose input width is not a multiple of 4 leaves
the layout for a slower path. ONNX Runtime's standard ARM builds have no NCHWc layout; NEON GEMM
kernels and TensorRT's FP16 tensor cores favour multiples of 8. Hence 16 with AVX-512F and 8
everywhere else; 16 is a multiple of 8, so it costs a GPU nothing.

OpenVINO's CPU plugin runs convolutions through oneDNN in blocked layouts too (nChw16c with AVX-512,
nChw8c with AVX2), in FP32 and in INT8. Measured with OpenVINO 2026.4 on an AVX-512 (VNNI) AMD EPYC,
one thread, a 3x3 conv pair at 80x80 with 64 input channels: the fastest time is a staircase with
steps at multiples of 16, in FP32 (47 and 48 channels 2.9 ms, 49 3.2 ms; 63 and 64 3.4 ms, 65 3.7 ms)
and in INT8 (47 and 48 2.1 ms, 49 2.25 ms; 63 and 64 2.3 ms, 65 2.5 ms). So OpenVINO's block is the
same as ONNX Runtime's: 16 with AVX-512F, else 8. TensorRT's tensor cores take FP16 channels in
multiples of 8 and INT8 channels in multiples of 32 (its vectorised NC/32HW32 format).
"""

from __future__ import annotations

from pathlib import Path

from yoloprune.runtimes import Runtime, precisions, runtime_of

AVX512_MULTIPLE = 16  # MLAS's NCHWc block and oneDNN's nChw16c with AVX-512F
DEFAULT_MULTIPLE = 8  # MLAS's block and oneDNN's nChw8c on other x86-64 CPUs; NEON
TENSORRT_MULTIPLE = {False: 8, True: 32}  # FP16, INT8 tensor cores


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


def channel_multiple(
    runtime: Runtime | str = Runtime.ORT, int8: bool = False, *, flags: frozenset[str] | None = None
) -> int:
    """The width multiple `round_to="auto"` means for `runtime` in INT8 (`int8`) or its float precision:
    on the CPU (ONNX Runtime, OpenVINO) 16 with AVX-512F, else 8, read from `flags` (Linux's names)
    or this machine; TensorRT 8 in FP16 and 32 in INT8, whatever the CPU.

    Example:
        >>> channel_multiple("ort", flags=frozenset({"avx2", "avx512f"})), channel_multiple("tensorrt", True)
        (16, 32)
    """
    runtime = runtime_of(runtime)
    precisions(runtime, int8)  # refuses a precision the runtime does not run
    if runtime is Runtime.TENSORRT:
        return TENSORRT_MULTIPLE[int8]
    return AVX512_MULTIPLE if has_avx512f(flags) else DEFAULT_MULTIPLE

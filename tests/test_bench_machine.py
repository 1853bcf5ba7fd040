"""Spec: a benchmark result names the CPU and which of the instruction sets onnxruntime's int8 and 4-bit kernels
choose between it has, since two hosts that differ there differ in every quantized engine's speed; results
written before the field existed still render."""

from __future__ import annotations

from benchmarks import report
from benchmarks.suite import cpu_summary

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"


def test_the_cpu_line_names_the_model_and_its_int8_instruction_sets():
    assert cpu_summary(XEON) == "Intel(R) Xeon(R) Gold; avx2, avx512f, avx512_vnni"
    assert cpu_summary("model name : AMD EPYC\nflags : fpu avx avx2 fma\n") == "AMD EPYC; avx2"


def test_a_cpu_without_any_of_them_says_so():
    assert cpu_summary("flags : fpu sse2\n") == "unknown CPU; none of avx2/avx512f/avx512_vnni/avx_vnni/amx_int8"


def test_the_machine_line_shows_the_cpu_only_when_recorded():
    machine = {"platform": "Linux-6", "cpus": 2}
    assert report._machine(machine) == "Linux-6, 2 CPUs"
    assert report._machine({**machine, "cpu": "AMD EPYC; avx2"}) == "Linux-6, 2 CPUs (AMD EPYC; avx2)"

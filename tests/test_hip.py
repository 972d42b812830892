"""The HIP binding against the real HIP runtime and headers (Debian bookworm's libamdhip64-5 and
libamdhip64-dev), with no AMD GPU: every symbol resolves, every structure matches its header byte for
byte, calls fail with HIP's own error names; and cu_num resolves from a ROCm device's properties."""

from __future__ import annotations

import ctypes
import glob
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from graph_harness.core import runtime
from graph_harness.moe.scenario import MoEScenario, resolve_cu_num
from graph_harness.suite.files import builtin_scenario_dir, load_scenarios, scenario_files

_HIP_INCLUDE = Path("/usr/include")  # libamdhip64-dev puts hip/hip_runtime_api.h there
_HIP_MISSING = not (_HIP_INCLUDE / "hip" / "hip_runtime_api.h").exists() or not glob.glob(
    "/usr/lib/*/libamdhip64.so*")
needs_hip = pytest.mark.skipif(_HIP_MISSING, reason="Debian's libamdhip64-dev and libamdhip64-5 are not installed "
                                                    "(.ci/run installs them)")
_CUDA_INCLUDE = next((Path(p).parent for p in sorted(glob.glob("/usr/local/cuda*/include/driver_types.h"))), None)


def _layout(struct: type[ctypes.Structure], prefix: str = "") -> list[tuple[str, int, int]]:
    """(field path, offset, size) of every field of `struct`, nested structures flattened."""
    out: list[tuple[str, int, int]] = []
    for name, ctype in struct._fields_:
        field = getattr(struct, name)
        path = prefix + name
        out.append((path, field.offset, field.size))
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            out += [(sub, field.offset + off, size) for sub, off, size in _layout(ctype, path + ".")]
    return out


def _c_layout(tmp_path: Path, header: str, flags: list[str], structs: dict[str, type[ctypes.Structure]],
              constants: tuple[str, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """Compile and run a probe printing the sizeof, and each field's offsetof and sizeof, of every structure, the
    fields named from the Python declarations so the two cannot drift; and the value of each constant."""
    lines = [f"#include <{header}>", "#include <stddef.h>", "#include <stdio.h>", "int main(void) {"]
    for c_name, struct in structs.items():
        lines.append(f'  printf("{c_name}\\t%zu\\n", sizeof({c_name}));')
        for path, _, _ in _layout(struct):
            lines.append(f'  printf("{c_name}.{path}\\t%zu\\t%zu\\n", offsetof({c_name}, {path}), '
                         f"sizeof((({c_name} *)0)->{path}));")
    lines += [f'  printf("{name}\\t%d\\n", (int){name});' for name in constants]
    lines += ["  return 0;", "}"]
    source = tmp_path / "probe.c"
    source.write_text("\n".join(lines) + "\n")
    subprocess.run(["gcc", *flags, str(source), "-o", str(tmp_path / "probe")], check=True, capture_output=True,
                   text=True)
    out = subprocess.run([str(tmp_path / "probe")], check=True, capture_output=True, text=True).stdout
    layout: dict[str, int] = {}
    values: dict[str, int] = {}
    for line in out.splitlines():
        name, *numbers = line.split("\t")
        if name in constants:
            values[name] = int(numbers[0])
        elif len(numbers) == 2:
            layout[name + " offset"], layout[name + " size"] = int(numbers[0]), int(numbers[1])
        else:
            layout[name] = int(numbers[0])
    return layout, values


def _py_layout(structs: dict[str, type[ctypes.Structure]]) -> dict[str, int]:
    declared: dict[str, int] = {}
    for c_name, struct in structs.items():
        declared[c_name] = ctypes.sizeof(struct)
        for path, offset, size in _layout(struct):
            declared[f"{c_name}.{path} offset"], declared[f"{c_name}.{path} size"] = offset, size
    return declared


_HIP_STRUCTS: dict[str, type[ctypes.Structure]] = {"hipMemsetParams": runtime.HipMemsetParams,
                                                  "hipMemcpy3DParms": runtime.HipMemcpy3DParms}
_CUDA_STRUCTS: dict[str, type[ctypes.Structure]] = {"struct cudaMemsetParams": runtime.CudaMemsetParams,
                                                   "struct cudaMemcpy3DParms": runtime.CudaMemcpy3DParms}


@pytest.mark.hip
@needs_hip
def test_every_symbol_resolves() -> None:
    lib = runtime.hip_library()
    binding = runtime.hip_runtime(lib)
    assert Path(lib._name).name.startswith("libamdhip64.so")
    missing = [name for name in binding.symbols if not hasattr(lib, name)]
    assert not missing, f"{lib._name} lacks {missing}"


@pytest.mark.hip
@needs_hip
@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc to compile the layout probe")
def test_hip_structures_match_the_headers(tmp_path: Path) -> None:
    # The node type numbers the binding uses for this library's version come from the same headers.
    kinds = runtime.hip_runtime().node_kinds
    layout, values = _c_layout(tmp_path, "hip/hip_runtime_api.h", ["-D__HIP_PLATFORM_AMD__", f"-I{_HIP_INCLUDE}"],
                               _HIP_STRUCTS, ("hipGraphNodeTypeMemcpy", "hipGraphNodeTypeMemset",
                                              "hipMemcpyHostToHost", "hipMemcpyDeviceToHost"))
    assert layout == _py_layout(_HIP_STRUCTS)
    assert (kinds[values["hipGraphNodeTypeMemcpy"]], kinds[values["hipGraphNodeTypeMemset"]]) == ("memcpy", "memset")
    assert (values["hipMemcpyHostToHost"], values["hipMemcpyDeviceToHost"]) == runtime._TO_HOST


@pytest.mark.hip
def test_hip_memset_params_are_not_cudas_order() -> None:
    """What the per-vendor declarations exist for: the same fields, other offsets."""
    assert [n for n, _ in runtime.HipMemsetParams._fields_] != [n for n, _ in runtime.CudaMemsetParams._fields_]
    assert runtime.HipMemsetParams.width.offset == 40
    assert runtime.CudaMemsetParams.width.offset == 24


# Not marked hip: CI's hip run must skip nothing, and a CI image need not carry CUDA's headers.
@pytest.mark.skipif(_CUDA_INCLUDE is None, reason="no CUDA headers (/usr/local/cuda*/include/driver_types.h)")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc to compile the layout probe")
def test_cuda_structures_match_the_headers(tmp_path: Path) -> None:
    layout, values = _c_layout(tmp_path, "cuda_runtime_api.h", [f"-I{_CUDA_INCLUDE}"], _CUDA_STRUCTS,
                               ("cudaGraphNodeTypeMemcpy", "cudaGraphNodeTypeMemset", "cudaMemcpyHostToHost",
                                "cudaMemcpyDeviceToHost"))
    assert layout == _py_layout(_CUDA_STRUCTS)
    kinds = runtime._CUDA_NODES
    assert (kinds[values["cudaGraphNodeTypeMemcpy"]], kinds[values["cudaGraphNodeTypeMemset"]]) == ("memcpy", "memset")
    assert (values["cudaMemcpyHostToHost"], values["cudaMemcpyDeviceToHost"]) == runtime._TO_HOST


# With no AMD GPU, Debian's HIP 5.2 answers every call below hipErrorInvalidDevice. They run in a child
# process all the same: a runtime that aborts without a device must fail this test, not the session.
_NO_DEVICE_CALLS = """
import ctypes
from graph_harness.core import runtime
rt = runtime.hip_runtime()
print("name", rt.error_name(1), rt.error_name(100))
for call in (lambda: rt.memset_async(0, 0, 16, 0), lambda: rt.graph_nodes(0), lambda: rt.memset_params(0),
             lambda: rt.memcpy_params(0)):
    try:
        call()
    except runtime.GpuError as err:
        print("raised", err.name, "|", err)
    else:
        print("returned")
"""


@pytest.mark.hip
@needs_hip
def test_calls_without_a_device_raise_the_hip_error() -> None:
    done = subprocess.run([sys.executable, "-c", _NO_DEVICE_CALLS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the HIP runtime died without a device (rc {done.returncode}): {done.stderr}"
    lines = done.stdout.splitlines()
    assert lines[0] == "name hipErrorInvalidValue hipErrorNoDevice"
    calls = ["hipMemsetAsync(0x0, 0, 16)", "hipGraphGetNodes(0x0)", "hipGraphMemsetNodeGetParams(0x0)",
             "hipGraphMemcpyNodeGetParams(0x0)"]
    assert lines[1:] == [f"raised hipErrorInvalidDevice | {call} failed: hipErrorInvalidDevice" for call in calls]


@pytest.mark.hip
def test_torch_version_hip_picks_the_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    picked: list[str] = []
    monkeypatch.setattr(runtime, "hip_runtime", lambda: picked.append("hip"))
    monkeypatch.setattr(torch.version, "hip", "6.4.43482")
    runtime.current.cache_clear()
    try:
        runtime.current()
    finally:
        runtime.current.cache_clear()
    assert picked == ["hip"]


def _rocm_device(monkeypatch: pytest.MonkeyPatch, multiprocessors: int) -> None:
    """A torch.cuda that reports one ROCm GPU: the properties torch gives for an MI300X count its CUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(multi_processor_count=multiprocessors))


@pytest.mark.hip
def test_cu_num_device_reads_the_rocm_cu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    scenarios = load_scenarios(scenario_files(builtin_scenario_dir()))
    scenario_id, scenario = next((k, s) for k, s in scenarios.items() if isinstance(s, MoEScenario))
    assert scenario.cu_num == 256
    on_device = scenario.model_copy(update={"cu_num": "device"})
    _rocm_device(monkeypatch, 304)  # MI300X; an MI355X reports 256
    assert resolve_cu_num(scenario_id, on_device) == 304
    assert resolve_cu_num(scenario_id, scenario) == 256  # a number in the scenario is never the device's


@pytest.mark.hip
def test_a_rocm_result_names_hip_not_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from graph_harness.core.results import environment

    _rocm_device(monkeypatch, 304)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "AMD Instinct MI300X")
    monkeypatch.setattr(torch.version, "hip", "6.4.43482")
    env = environment.__wrapped__()  # not the process's cached answer: this one is a made-up ROCm device
    assert (env.device, env.driver) == ("AMD Instinct MI300X", "hip 6.4.43482")

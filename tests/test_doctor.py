"""`keras-topo doctor`: the facts of this process as a dict, the advice, the printed text."""

import os

import keras
import pytest

from keras_topo import cli, doctor
from keras_topo.experiments import fast_path

CPUINFO = """processor\t: 0
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni amx_tile sha_ni
processor\t: 1
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni amx_tile sha_ni
"""


def test_cpu_features_are_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert doctor.cpu_features(path) == ["amx_tile", "avx2", "avx512_vnni", "avx512f", "fma"]
    assert doctor.cpu_features(tmp_path / "missing") == []


def test_facts_describe_this_process(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    facts = doctor.facts(path)
    assert facts["backend"] == keras.backend.backend()
    assert facts["versions"]["keras"] == keras.__version__
    assert facts["cpu"] == {
        "features": ["amx_tile", "avx2", "avx512_vnni", "avx512f", "fma"],
        "cores": len(os.sched_getaffinity(0)),
    }
    assert facts["threads"]["OMP_WAIT_POLICY"] == os.environ.get("OMP_WAIT_POLICY")
    assert facts["kernels"] == {
        "tf_onednn": fast_path.tf_onednn_enabled(),
        "tf_onednn_origin": fast_path.onednn_origin(),
        "jit_compile": fast_path.compile_options()["jit_compile"],
    }


def _facts(backend="torch", onednn=True, wait_policy="PASSIVE"):
    return {
        "backend": backend,
        "versions": {"keras_topo": "0.2.0", "keras": "3"},
        "cpu": {"features": ["avx2"], "cores": 2},
        "threads": {"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": wait_policy},
        "kernels": {"tf_onednn": onednn, "tf_onednn_origin": "o", "jit_compile": False},
    }


@pytest.mark.parametrize(
    "facts, changes",
    [
        (_facts(), []),
        (_facts("tensorflow", onednn=False), ["TF_ENABLE_ONEDNN_OPTS=1"]),
        (_facts(onednn=False), []),  # on torch, TensorFlow runs only the data pipelines
        (_facts(wait_policy=None), ["OMP_WAIT_POLICY=PASSIVE"]),
        (_facts("tensorflow", wait_policy=None), []),  # OpenMP's policy matters for torch
        (_facts("tensorflow", onednn=False, wait_policy="ACTIVE"), ["ONEDNN"]),
    ],
)
def test_advice_names_each_change(facts, changes):
    lines = doctor.advice(facts)
    assert len(lines) == len(changes)
    for line, change in zip(lines, changes, strict=True):
        assert line.startswith("export ") and change in line


def test_the_command_prints_the_facts_and_the_advice(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"backend: {keras.backend.backend()}" in out
    assert "TensorFlow oneDNN kernels: " in out and "what to change:" in out
    slow = _facts("tensorflow", onednn=False)
    assert doctor.describe(slow).endswith(doctor.advice(slow)[0])

"""compile_ahead: on an empty kernel cache a second process compiles the feature network's kernels into it; on a
warm cache nothing starts."""
import json
import os
import subprocess
import sys

import numpy as np

from attention_sampling import AttentionSamplingModel
from attention_sampling.application import compile_ahead
from nn import threads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FRESH_CACHE = """
import json, sys
from attention_sampling import AttentionSamplingModel
from attention_sampling.application import compile_ahead
model = AttentionSamplingModel(2, scale=2, patch_size=10, n_patches=2)
before = compile_ahead.feature_kernels_cached("float32", training=True)
child = compile_ahead.start(model, training=True)
code = child.wait() if child is not None else None
print(json.dumps({"before": before, "started": child is not None, "code": code,
                  "after": compile_ahead.feature_kernels_cached("float32", training=True),
                  "other_build": compile_ahead.feature_kernels_cached("float32", build="numba"),
                  "again": compile_ahead.start(model) is not None}))
"""


def _on_a_fresh_cache(script, tmp_path):
    """Run `script` in a fresh process whose Numba cache is an empty folder -> the JSON of its last line."""
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", script], env=environment, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_empty_cache_is_filled_by_one_child_and_a_warm_one_starts_none(tmp_path):
    seen = _on_a_fresh_cache(FRESH_CACHE, tmp_path)
    # The child compiles the build this process runs (the default, "pool"), not the other (a training pass's
    # fused max pool is Numba's in both: conv_kernels.correlate_build).
    assert seen == {"before": False, "started": True, "code": 0, "after": True, "other_build": False, "again": False}
    assert any((tmp_path / "cache").rglob("*.nbi"))  # Numba's index files, written by the child


def test_the_child_runs_the_feature_network_as_a_step_and_as_inference():
    """What the child runs, here in this process: the training forward and backward, and the inference."""
    for training in (True, False):
        compile_ahead.compile_features(n_classes=3, in_channels=3, patch_size=12, n_patches=2, dtype="float32",
                                       feature_width=8, training=training, build=threads.current())


def test_the_spec_is_the_models_feature_network():
    model = AttentionSamplingModel(5, scale=4, patch_size=30, n_patches=7, dtype=np.float64, feature_width=24)
    spec = compile_ahead._spec(model, training=False)
    assert spec == {"n_classes": 5, "in_channels": 3, "patch_size": 30, "n_patches": 7, "dtype": "float64",
                    "feature_width": 24, "training": False, "build": threads.current()}
    assert json.loads(json.dumps(spec)) == spec


FRESH_INFERENCE = """
import json
from attention_sampling import AttentionSamplingModel
from attention_sampling.application import compile_ahead
from nn import threads
threads.use("numba")
model = AttentionSamplingModel(2, scale=2, patch_size=10, n_patches=2)
child = compile_ahead.start_inference(model, (24, 32))
while_compiling = threads.current()
code = child.wait()
after = compile_ahead.switch_when_ready(child)
print(json.dumps({"while_compiling": while_compiling, "code": code, "after": after, "build": threads.current(),
                  "cached": compile_ahead.inference_kernels_cached("float32", build="numba"),
                  "pool_features": compile_ahead.feature_kernels_cached("float32", build="pool"),
                  "again": compile_ahead.start_inference(model, (24, 32)), "still": threads.current()}))
"""


def test_a_prediction_on_an_empty_cache_runs_the_pool_until_a_child_has_compiled_numbas_builds(tmp_path):
    seen = _on_a_fresh_cache(FRESH_INFERENCE, tmp_path)
    # The child compiles the pool's feature kernels (this process's next need), then Numba's whole prediction.
    assert seen == {"while_compiling": "pool", "code": 0, "after": None, "build": "numba", "cached": True,
                    "pool_features": True, "again": None, "still": "numba"}


class FakeChild:
    def __init__(self, returncode):
        self.returncode = returncode

    def poll(self):
        return self.returncode


def test_switch_when_ready_waits_for_the_child_and_keeps_the_pool_if_it_failed():
    previous = threads.use("pool")
    try:
        running = FakeChild(None)
        assert compile_ahead.switch_when_ready(running) is running and threads.current() == "pool"
        assert compile_ahead.switch_when_ready(FakeChild(1)) is None and threads.current() == "pool"
        assert compile_ahead.switch_when_ready(None) is None and threads.current() == "pool"
        assert compile_ahead.switch_when_ready(FakeChild(0)) is None and threads.current() == "numba"
    finally:
        threads.use(previous)


def test_start_inference_starts_nothing_for_a_process_on_the_pool(monkeypatch):
    monkeypatch.setattr(compile_ahead, "_spawn", lambda spec: (_ for _ in ()).throw(AssertionError("spawned")))
    previous = threads.use("pool")
    try:
        assert compile_ahead.start_inference(AttentionSamplingModel(2, scale=2, patch_size=10), (24, 32)) is None
        threads.use("numba")
        monkeypatch.setattr(compile_ahead, "inference_kernels_cached", lambda *args: True)
        assert compile_ahead.start_inference(AttentionSamplingModel(2, scale=2, patch_size=10), (24, 32)) is None
        assert threads.current() == "numba"
    finally:
        threads.use(previous)


def test_without_a_second_process_the_prediction_compiles_numbas_builds_itself(monkeypatch):
    monkeypatch.setattr(compile_ahead, "_spawn", lambda spec: None)
    monkeypatch.setattr(compile_ahead, "inference_kernels_cached", lambda *args: False)
    previous = threads.use("numba")
    try:
        assert compile_ahead.start_inference(AttentionSamplingModel(2, scale=2, patch_size=10), (24, 32)) is None
        assert threads.current() == "numba"
    finally:
        threads.use(previous)

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# Run from a checkout without installing: the project root holds nn/ and attention_sampling/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# No deadline: the first call of a Numba kernel compiles it. CI replays a fixed set of examples
# so that a red run can be reproduced; locally Hypothesis explores new ones every run.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory):
    """-> (workspace, run folder, data folder) of a tiny run trained for one epoch on a synthetic folder of
    request.param images per class; a module picks the size with
    pytestmark = pytest.mark.parametrize("trained", [n], indirect=True), and trains once for all its tests."""
    from attention_sampling.application.embedded import ensure_default_dataset
    from tests.commands import TINY, TRAIN, run

    workspace = tmp_path_factory.mktemp("trained")
    data = ensure_default_dataset(str(workspace / "data"), n_per_class=request.param, height=64, width=80,
                                  spot_size=8, n_spots=2, n_distractors=1)
    result = run(TRAIN, "--data", data, "--out", "run", "--epochs", 1, *TINY, cwd=workspace)
    assert result.returncode == 0, result.stderr
    return workspace, workspace / "run", data

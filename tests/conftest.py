import os
import sys

from hypothesis import HealthCheck, settings

# Run from a checkout without installing: the project root holds nn/ and attention_sampling/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# No deadline: the first call of a Numba kernel compiles it. CI replays a fixed set of examples
# so that a red run can be reproduced; locally Hypothesis explores new ones every run.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")

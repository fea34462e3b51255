"""Running the project's command lines in a test: a fresh process in a workspace that is its own cache."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, PREDICT = os.path.join(ROOT, "train.py"), os.path.join(ROOT, "predict.py")
TINY = ["--patches", "3", "--size", "12", "--scale", "4", "--replicas", "2", "--batch-size", "4", "--quiet"]


def run(script, *args, cwd):
    environment = {**os.environ, "ATTENTION_SAMPLING_CACHE": str(cwd), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=180)

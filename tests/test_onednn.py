"""Importing the package turns on TensorFlow's oneDNN kernels unless the environment says otherwise."""

import os
import subprocess
import sys

import pytest

PROBE = ("import os, simsiam_keras; from tensorflow.python.util import _pywrap_util_port as port; "
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")


# (An explicit "1" stays "1" whenever "0" stays "0": one process fewer, 8 s of CPU.)
@pytest.mark.parametrize("setting, expected", [(None, "1 True"), ("0", "0 False")])
def test_onednn_is_on_unless_the_user_turned_it_off(setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    result = subprocess.run([sys.executable, "-c", PROBE], env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == expected.split()

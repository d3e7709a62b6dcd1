"""Thread settings chosen before torch loads (core.runtime), in fresh interpreters."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env) -> str:
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def test_passive_wait_policy_is_set_before_torch_loads():
    out = _python("from core.runtime import configure_threads; ok = configure_threads(); import os; "
                  "print(ok, os.environ['OMP_WAIT_POLICY'])")
    assert out == "True PASSIVE"


def test_the_users_choice_wins_and_late_calls_say_so():
    assert _python("from core.runtime import configure_threads; configure_threads(); import os; "
                   "print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert _python("import torch; from core.runtime import configure_threads; import os; "
                   "print(configure_threads(), os.environ.get('OMP_WAIT_POLICY'))") == "False None"


def test_entry_points_configure_before_importing_torch():
    code = ("import runpy, sys; sys.argv = ['core', '--help']\n"
            "try:\n    runpy.run_module('core', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import os; print(os.environ.get('OMP_WAIT_POLICY'))")
    assert _python(code).splitlines()[-1] == "PASSIVE"


def test_generation_worker_thread_hands_back_results_and_errors():
    import threading

    import pytest

    from core.backends.hf import in_worker_thread

    assert in_worker_thread(lambda: threading.current_thread().name) == "hf-generate"
    with pytest.raises(ZeroDivisionError):
        in_worker_thread(lambda: 1 / 0)

"""int8 quantisation runs on a worker thread (the auto engine's measurement): it must neither
print NNCF's progress bars nor swallow what other threads print meanwhile."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

from polypviewer.engine.backends.quantise import quantise_int8  # noqa: E402


def test_quantising_on_a_worker_thread_swallows_no_other_output(capsys: pytest.CaptureFixture[str]) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    model = ov.convert_model(net.eval(), example_input=torch.zeros(1, 3, 16, 16))
    rng = np.random.default_rng(0)
    frames = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(4)]
    done = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            quantise_int8(model, frames, keep_float=[])
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=work)
    worker.start()
    printed = 0
    while not done.is_set() or printed == 0:
        print(f"main thread line {printed}")
        printed += 1
        time.sleep(0.002)
    worker.join()
    assert not errors, errors
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"main thread line {k}" for k in range(printed)]  # all of ours, nothing of NNCF's
    assert printed > 1  # the worker really ran while the main thread printed

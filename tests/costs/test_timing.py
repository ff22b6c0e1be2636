"""The one timing loop: interleaved rounds, untimed warm-up, one quartile definition, the
thread pin restored."""

from __future__ import annotations

import pytest
import torch

from se_search.costs.timing import interleaved, synchronizer, torch_threads

CPU = torch.device("cpu")


def test_rounds_rotate_and_warmup_is_untimed() -> None:
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    rounds: list[tuple[int, int]] = []
    times = interleaved(
        runners, device=CPU, rounds=3, warmup=2, progress=lambda r, n: rounds.append((r, n))
    )
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    # 2 warm-up rounds then 3 timed, each rotated by one: abc bca cab abc bca
    assert "".join(calls) == "abcbcacababcbca"
    assert rounds == [(1, 3), (2, 3), (3, 3)]


def test_each_runner_is_timed_alone() -> None:
    import time

    slow = {"fast": lambda: None, "slow": lambda: time.sleep(0.01)}
    times = interleaved(slow, device=CPU, rounds=4)
    assert min(times["slow"]) >= 9.0 > max(times["fast"])


def test_thread_pin_is_restored_even_on_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == before
    with torch_threads(None) as used:
        assert used == before


def test_cpu_needs_no_synchronisation() -> None:
    assert synchronizer(CPU)() is None

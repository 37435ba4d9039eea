"""StageRunner under two real gloo processes: the collectives of every stage pair up."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
import traceback

import pytest

from reptune.workflow.stages import StageRunner, no_collectives


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, run_dir: str, scenario: str, results) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
    )
    try:
        import torch.distributed as dist
        from accelerate import PartialState

        PartialState._reset_state()
        state = PartialState(cpu=True, backend="gloo")
        assert state.num_processes == 2
        stages = StageRunner(run_dir, state)
        got = SCENARIOS[scenario](stages, rank)
        results.put((rank, "ok", got))
    except BaseException as err:  # reported to the test, whatever it is
        results.put((rank, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _late_rank_and_slow_main_stage(stages: StageRunner, rank: int):
    if rank == 1:
        time.sleep(1.0)  # rank 0 finishes stage "a" and writes its marker meanwhile
    a = stages.run("a", lambda: {"x": 1}, {"s": 1})
    b = stages.run("b", lambda: time.sleep(0.5) or {"y": 2}, {"s": 2})
    c = stages.run("c", lambda: rank, {"s": 3}, main_process_only=False)
    return [a, b, c, stages.skipped]


def _collective_in_a_main_stage(stages: StageRunner, rank: int):
    import torch
    import torch.distributed as dist

    def stage():
        dist.all_reduce(torch.ones(1))  # would pair with rank 1's broadcast
        return 1

    stages.run("bad", stage, {})


def _rerun_skips_on_every_rank(stages: StageRunner, rank: int):
    first = stages.run("a", lambda: {"x": 1}, {"s": 1})
    again = StageRunner(stages.run_dir, stages.state)
    if rank == 1:
        time.sleep(0.5)
    second = again.run("a", lambda: {"x": "rerun"}, {"s": 1})
    changed = again.run("a", lambda: {"x": "changed"}, {"s": 2})
    return [first, second, changed, again.skipped]


SCENARIOS = {
    "late_rank": _late_rank_and_slow_main_stage,
    "collective": _collective_in_a_main_stage,
    "rerun": _rerun_skips_on_every_rank,
}


def _launch(tmp_path, scenario: str) -> dict:
    ctx = multiprocessing.get_context("fork")
    results, port = ctx.Queue(), _free_port()
    procs = [
        ctx.Process(target=_rank, args=(r, port, str(tmp_path / "run"), scenario, results))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    out = {}
    for _ in procs:
        rank, status, value = results.get(timeout=90)
        out[rank] = (status, value)
    for p in procs:
        p.join(timeout=30)
    return out


@pytest.mark.parametrize("round_", range(3))
def test_a_late_rank_never_pairs_its_barrier_with_another_stage(tmp_path, round_):
    out = _launch(tmp_path, "late_rank")
    assert out[0][0] == "ok", out[0][1]
    assert out[1][0] == "ok", out[1][1]
    assert out[0][1] == [{"x": 1}, {"y": 2}, 0, []]
    assert out[1][1] == [{"x": 1}, {"y": 2}, 1, []]


def test_a_collective_in_a_main_process_stage_fails_on_every_rank_at_once(tmp_path):
    out = _launch(tmp_path, "collective")
    assert out[0][0] == "error" and "called the collective" in out[0][1], out[0][1]
    assert out[1][0] == "error" and "failed on the main process" in out[1][1], out[1][1]
    assert "all_reduce" in out[1][1]


def test_a_rerun_skips_or_reruns_on_every_rank_alike(tmp_path):
    out = _launch(tmp_path, "rerun")
    for rank in (0, 1):
        assert out[rank] == ("ok", [{"x": 1}, {"x": 1}, {"x": "changed"}, ["a"]]), out[rank]


def test_no_collectives_restores_torch_distributed():
    import torch.distributed as dist

    barrier = dist.barrier
    with pytest.raises(RuntimeError, match="stage 'x' runs on the main process alone"):
        with no_collectives("x"):
            dist.barrier()
    assert dist.barrier is barrier

"""app.process.runner.OutputPump on real pipes and the real gevent loop.

Output is moved in hub callbacks; errors are raised in the runner.
"""

from __future__ import annotations

import json
import os

import gevent
import pytest

from app.config import Settings
from app.process.runner import OutputPump
from app.store.eventlog import EventLog


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    return read_end, write_end


def _outputs(log: EventLog) -> list[tuple[str, str]]:
    read = log.read_after(0, limit=10_000)
    return [(event.kind, json.loads(event.frame.split(b"data: ", 1)[1])["out"]) for event in read.events]


def test_output_of_both_pipes_arrives_in_order_and_the_pump_ends_at_eof():
    log = EventLog(1 << 20)
    pump = OutputPump(log, Settings(), on_limit=lambda: None)
    out_r, out_w = _pipe()
    err_r, err_w = _pipe()
    pump.add(out_r, "stdout")
    pump.add(err_r, "stderr")
    runner = gevent.spawn(pump.run, ())

    def write() -> None:
        for index in range(20):
            os.write(out_w, b"line %d\n" % index)
            gevent.sleep(0.001)
        os.write(err_w, "caf\u00e9".encode()[:4])  # half of a two-byte character, then the rest
        gevent.sleep(0.01)
        os.write(err_w, "caf\u00e9".encode()[4:] + b"\n")
        os.close(out_w)
        os.close(err_w)

    writer = gevent.spawn(write)
    runner.join(timeout=10)
    writer.join(timeout=1)
    assert runner.successful()
    outputs = _outputs(log)
    assert "".join(text for kind, text in outputs if kind == "stdout") == "".join(f"line {i}\n" for i in range(20))
    # The split character is carried to the next event, never replaced by U+FFFD.
    assert [text for kind, text in outputs if kind == "stderr"] == ["caf", "\u00e9\n"]
    assert not pump.pipes  # every watcher stopped and freed
    os.close(out_r)
    os.close(err_r)


def test_one_round_reads_stdout_first_and_each_pipe_once():
    """Both pipes readable in the same round: stdout's event comes first, whichever was written first.

    A pipe is read once per round, so what stdout gets while stderr is read waits for the next round.
    """
    log = EventLog(1 << 20)
    pump = OutputPump(log, Settings(), on_limit=lambda: None)
    out_r, out_w = _pipe()
    err_r, err_w = _pipe()
    pump.add(out_r, "stdout")
    pump.add(err_r, "stderr")
    os.write(err_w, b"err1\n")
    os.write(out_w, b"out1\n")
    real_move = pump._move

    def move(fd: int, name: str) -> None:
        real_move(fd, name)
        if name == "stdout" and not os.get_blocking(out_w) and len(_outputs(log)) == 1:
            os.write(out_w, b"out2\n")  # written during the round, after stdout was read

    os.set_blocking(out_w, False)  # marks the first round
    pump._move = move
    pump.readable(err_r, "stderr")  # the round starts from stderr's watcher: it still reads stdout first
    os.set_blocking(out_w, True)
    assert _outputs(log) == [("stdout", "out1\n"), ("stderr", "err1\n")]
    pump.readable(out_r, "stdout")
    assert _outputs(log)[2:] == [("stdout", "out2\n")]
    pump.pipes.close()
    for fd in (out_r, out_w, err_r, err_w):
        os.close(fd)


def test_a_failure_while_moving_output_is_raised_in_the_runners_greenlet():
    class BrokenLog(EventLog):
        def append(self, *args, **kwargs):
            raise RuntimeError("the log is broken")

    pump = OutputPump(BrokenLog(1 << 20), Settings(), on_limit=lambda: None)
    out_r, out_w = _pipe()
    pump.add(out_r, "stdout")
    runner = gevent.spawn(pump.run, ())
    gevent.sleep(0.01)
    os.write(out_w, b"boom\n")
    runner.join(timeout=10)
    assert isinstance(runner.exception, RuntimeError)
    assert not pump.pipes
    # The hub survived it: the loop still serves other greenlets.
    assert gevent.spawn(lambda: 42).get(timeout=1) == 42
    os.close(out_w)
    os.close(out_r)


def test_the_pump_waits_for_a_far_behind_owner_and_goes_on_when_it_catches_up():
    log = EventLog(4096)  # the owner may lag by a quarter of it: 1,024 output bytes
    log.claim_owner()
    pump = OutputPump(log, Settings(), on_limit=lambda: None)
    out_r, out_w = _pipe()
    pump.add(out_r, "stdout")
    runner = gevent.spawn(pump.run, ())
    os.write(out_w, b"x" * 2000 + b"\n")
    gevent.sleep(0.05)
    os.write(out_w, b"second\n")
    gevent.sleep(0.05)
    assert log.output_bytes == 2001  # the second write waits in the pipe for the owner
    log.owner_read_through(log.last_id)
    gevent.sleep(0.05)
    assert log.output_bytes == 2008
    os.close(out_w)
    runner.join(timeout=10)
    assert runner.successful()
    os.close(out_r)


@pytest.mark.parametrize("limit", [1, 10, 4096])
def test_output_beyond_the_limit_is_never_appended_and_the_job_is_stopped(limit):
    log = EventLog(1 << 20)
    stops = []
    pump = OutputPump(log, Settings(max_output_bytes=limit), on_limit=lambda: stops.append(1))
    out_r, out_w = _pipe()
    pump.add(out_r, "stdout")
    runner = gevent.spawn(pump.run, ())
    os.write(out_w, b"y" * 5000)
    gevent.sleep(0.05)
    os.close(out_w)
    runner.join(timeout=10)
    assert runner.successful()
    assert log.output_bytes == limit
    assert stops
    os.close(out_r)

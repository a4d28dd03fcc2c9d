"""Auto-batching policy (serving.pipeline.collect_batches) on upstream's real ThreadChannel: a
lone client never waits, queued requests share a batch, a partial batch waits only for clients
whose requests are on the way, and never longer than the timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from paddle_serving_server.pipeline.channel import ChannelData, ChannelDataType, ThreadChannel

from serving.pipeline import collect_batches

OP = "model"
# seconds: a timeout no test may sit out; a result under half of it did not wait for it, even
# on a machine busy enough to delay a thread by seconds
LONG = 10.0


def _channel() -> ThreadChannel:
    channel = ThreadChannel(name="model_input")
    channel.add_producer("@read")
    channel.add_consumer(OP)
    return channel


def _push(channel: ThreadChannel, *ids: int) -> None:
    for data_id in ids:
        data = ChannelData(ChannelDataType.DICT.value, dictdata={"image": ""}, data_id=data_id,
                           log_id=data_id)
        channel.push(data, "@read")


def _one_image(item: dict) -> tuple[int, int]:
    return 1, 1


def _next_batch(channel: ThreadChannel, batch_size: int, timeout: float,
                clients: Callable[[], int]) -> tuple[list[int], float]:
    started = time.monotonic()
    batch = next(collect_batches(channel, OP, batch_size, timeout, clients, _one_image, 10**9))
    return [item["@read"].id for item in batch], time.monotonic() - started


def test_a_lone_client_never_waits_for_company() -> None:
    channel = _channel()
    _push(channel, 1)
    ids, seconds = _next_batch(channel, 4, LONG, lambda: 1)
    assert ids == [1]
    assert seconds < LONG / 2


def test_queued_requests_share_a_batch_up_to_batch_size() -> None:
    channel = _channel()
    _push(channel, 1, 2, 3, 4, 5, 6)
    batches = collect_batches(channel, OP, 4, LONG, lambda: 0, _one_image, 10**9)
    assert [item["@read"].id for item in next(batches)] == [1, 2, 3, 4]
    assert [item["@read"].id for item in next(batches)] == [5, 6]


def test_a_partial_batch_waits_for_requests_on_their_way() -> None:
    channel = _channel()
    _push(channel, 1)
    late = threading.Timer(0.2, _push, (channel, 2, 3))
    late.start()
    ids, seconds = _next_batch(channel, 4, LONG, lambda: 3)
    late.join()
    assert ids == [1, 2, 3]  # it waited for them: they came 0.2 s after it started
    assert seconds < LONG / 2  # and only for them, not for the timeout


def test_a_partial_batch_waits_no_longer_than_the_timeout() -> None:
    channel = _channel()
    _push(channel, 1)
    ids, seconds = _next_batch(channel, 4, 0.3, lambda: 4)
    assert ids == [1]
    assert 0.3 <= seconds < LONG / 2

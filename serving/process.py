"""Process-wide settings a worker applies before it loads its model. The service
(`python -m serving run`) and the benchmark's in-process limit (bench.inprocess) both call
`configure_process`, so the limit runs the model exactly as a service worker does.
"""

from __future__ import annotations

import logging

from serving.config import Runtime
from serving.memory import reuse_freed_memory
from serving.options import ServiceOptions
from serving.preprocess import use_image_threads

log = logging.getLogger(__name__)

# A negative threshold turns off the executor's eager deletion of intermediate tensors.
_NO_EAGER_DELETION = {"FLAGS_eager_delete_tensor_gb": -1.0}


def keep_intermediate_tensors() -> None:
    """Turns off Paddle's garbage collection of intermediate tensors in this process; each
    predictor keeps them and the next call reuses them.

    Why: for a PIR program on CPU, Paddle's executor hands every tensor it can free to a
    one-thread work queue that spin-waits for more work (InterpreterCoreEventGarbageCollector,
    allow_spinning). The peach classifier woke that thread 64 times per predictor call, and
    each wake-up preempted the predicting thread on the worker's core. Kept instead, the
    tensors cost about 50 MB of RSS per peach worker (batch 4). Legacy programs (the
    traffic-light detector) never used that thread. Must run before the predictor is built."""
    import paddle

    paddle.set_flags(_NO_EAGER_DELETION)


def configure_process(runtime: Runtime, options: ServiceOptions) -> None:
    use_image_threads(runtime.image_threads)
    if options.reuse_freed_memory and reuse_freed_memory():
        log.info("heap: freed buffers stay mapped for reuse (runtime reuse_freed_memory)")
    if not options.free_intermediate_tensors:
        keep_intermediate_tensors()
        log.info("paddle: intermediate tensors are kept for the next call "
                 "(runtime free_intermediate_tensors=false)")

"""Compatibility layer: makes Paddle Serving 0.9.0, paddledet 2.6.0 and paddleclas 2.6.0 run on
Python 3.11 + paddlepaddle 3.x + numpy 2 + protobuf >= 4, without editing site-packages.

Import this package before anything from paddle / paddle_serving_* / ppdet / paddleclas:

    import compat  # noqa: F401  (first import of every entry point)

Every fix is registered as a *post-import fix*: a function applied to a module right after the
module executes, so nothing heavy is imported here and a fix only costs something when its target
is used. The fixes themselves, each with its root cause, live in `compat.serving` (Paddle Serving),
`compat.ppdet` (paddledet) and `compat.paddleclas` (paddleclas).
`compat.applied` lists what has run, for tests.
"""

from __future__ import annotations

import grpc  # noqa: F401  # must precede paddle: Paddle issue 70538 (segfault in inflateReset2)

from compat import hooks, paddleclas, ppdet, serving

hooks.install()
serving.install()
ppdet.install()
paddleclas.install()

applied = hooks.applied

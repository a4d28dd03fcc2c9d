"""Send images to a pipeline service over gRPC with Paddle Serving's PipelineClient."""

import sys

import grpc
from paddle_serving_server.pipeline import PipelineClient

from clients.common import REFUSED_BY_TRANSPORT, Reply, Send, default_port, parser, run

# No answer at all: the service is down, unreachable, or did not answer in time.
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def rpc_sender(endpoint: str, timeout: float) -> Send:
    client = PipelineClient()
    client.connect([endpoint])

    def send(items: dict[str, str]) -> Reply:
        # PipelineClient.predict has no timeout; its asynchronous form returns the gRPC future
        # (`call_future_`), whose result() takes one.
        future = client.predict(feed_dict=dict(items), fetch=None, asyn=True)
        try:
            response = future.call_future_.result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ConnectionError(f"no answer within {timeout:g} s") from None
        except grpc.RpcError as error:
            if error.code() in UNREACHABLE:
                raise ConnectionError(error.details()) from None
            # gRPC itself refused the call (e.g. RESOURCE_EXHAUSTED: over max_body_bytes)
            return Reply(REFUSED_BY_TRANSPORT, f"gRPC {error.code().name}: {error.details()}",
                         [], [])
        return Reply(response.err_no, response.err_msg, list(response.key),
                     list(response.value))

    return send


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "rpc").parse_args(argv)
    endpoint = f"{args.host}:{args.port or default_port(args.service, 'rpc')}"
    return run(args, rpc_sender(endpoint, args.timeout), f"rpc {endpoint}")


if __name__ == "__main__":
    sys.exit(main())

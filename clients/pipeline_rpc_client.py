"""Send images to a pipeline service over gRPC with Paddle Serving's PipelineClient."""

import sys

from paddle_serving_server.pipeline import PipelineClient

from clients.common import Reply, Send, default_port, parser, run


def rpc_sender(endpoint: str, timeout: float) -> Send:
    client = PipelineClient()
    client.connect([endpoint])

    def send(items: dict[str, str]) -> Reply:
        # PipelineClient.predict has no timeout; its asynchronous form returns the gRPC future
        # (`call_future_`), whose result() takes one.
        future = client.predict(feed_dict=dict(items), fetch=None, asyn=True)
        try:
            response = future.call_future_.result(timeout=timeout)
        except Exception as error:  # grpc.RpcError / FutureTimeoutError: no answer at all
            raise ConnectionError(_rpc_error_text(error)) from None
        return Reply(response.err_no, response.err_msg, list(response.key),
                     list(response.value))

    return send


def _rpc_error_text(error: Exception) -> str:
    details = getattr(error, "details", None)
    return details() if callable(details) else (str(error) or type(error).__name__)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "rpc").parse_args(argv)
    endpoint = f"{args.host}:{args.port or default_port(args.service, 'rpc')}"
    return run(args, rpc_sender(endpoint, args.timeout), f"rpc {endpoint}")


if __name__ == "__main__":
    sys.exit(main())

"""Send images to a pipeline service over HTTP: POST /<service>/prediction."""

import sys

from clients.common import Reply, Send, default_port, parser, run
from serving.protocol import http_url, post_http


def http_sender(url: str, timeout: float) -> Send:
    def send(items: dict[str, str]) -> Reply:
        body = post_http(url, items, timeout)
        return Reply(int(body.get("err_no", -1)), str(body.get("err_msg", "")),
                     list(body.get("key", [])), list(body.get("value", [])))

    return send


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, "http").parse_args(argv)
    url = http_url(args.host, args.port or default_port(args.service, "http"), args.service)
    return run(args, http_sender(url, args.timeout), url)


if __name__ == "__main__":
    sys.exit(main())

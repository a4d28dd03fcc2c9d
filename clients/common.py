"""What the HTTP and RPC clients share: arguments, image collection, batching, output, drawing.

Exit status: 0 all images predicted, 1 the service refused or failed an image (its err_no and
err_msg are printed; err_no -1: refused by the transport itself, its status in err_msg), 2 the
service could not be reached. Anything else (a bug) ends with its traceback and status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from model.spec import ModelSpecError
from serving.control.layout import Layout, ports_for
from serving.protocol import decode_results, request_items

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
EXIT_OK, EXIT_FAILED_IMAGE, EXIT_UNREACHABLE = 0, 1, 2
REFUSED_BY_TRANSPORT = -1  # err_no of a request refused before the service's pipeline saw it


@dataclass
class Reply:
    """The parts of a pipeline response the clients use (HTTP JSON or gRPC message)."""

    err_no: int
    err_msg: str
    keys: list[str]
    values: list[str]


@dataclass
class Outcome:
    image: str
    ok: bool
    predictions: list[dict[str, Any]] = field(default_factory=list)
    err_no: int = 0
    err_msg: str = ""


Send = Callable[[dict[str, str]], Reply]  # request items -> reply; raises OSError if unreachable


def parser(description: str, transport: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"""\
examples:
  python clients/pipeline_{transport}_client.py --service peach peach.jpg more_peaches/
  python clients/pipeline_{transport}_client.py --service traffic_light --json lights/ > out.json
  python clients/pipeline_{transport}_client.py --service traffic_light --visualize vis/ a.png

exit status: 0 ok, 1 an image failed (err_no/err_msg printed), 2 service unreachable""")
    p.add_argument("images", nargs="+", type=Path, help="image files and/or folders of images")
    p.add_argument("--service", default="peach", help="service name (default: peach)")
    p.add_argument("--host", default="127.0.0.1", help="service host (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help=f"{transport.upper()} port (default: the service's, from "
                        "models/<service>/model.yml or SERVING_<NAME>_*_PORT)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.add_argument("--batch", type=int, default=1, help="images per request (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document, nothing else")
    p.add_argument("--visualize", type=Path, metavar="DIR",
                   help="write annotated copies of the images into DIR")
    return p


def default_port(service: str, transport: str) -> int:
    try:
        ports = ports_for(Layout().spec(service))
    except ModelSpecError as error:
        raise SystemExit(f"no default port for service {service!r} ({error}); pass --port") \
            from None
    return ports.http if transport == "http" else ports.rpc


def collect_images(paths: Sequence[Path]) -> list[Path]:
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            images.append(path)
        else:
            raise SystemExit(f"{path}: no such file or folder")
    if not images:
        raise SystemExit(f"no images found in {[str(p) for p in paths]}")
    return images


def batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + max(1, size)]


def predict_batch(send: Send, images: Sequence[Path]) -> list[Outcome]:
    items = request_items([image.read_bytes() for image in images])
    reply = send(items)
    if reply.err_no != 0:
        return [Outcome(str(image), False, err_no=reply.err_no, err_msg=reply.err_msg)
                for image in images]
    results = decode_results(reply.keys, reply.values)
    return [Outcome(str(image), True, predictions=results[key])
            for image, key in zip(images, items, strict=True)]


def run(args: argparse.Namespace, send: Send, endpoint: str) -> int:
    images = collect_images(args.images)
    outcomes: list[Outcome] = []
    try:
        for batch in batches(images, args.batch):
            outcomes += predict_batch(send, batch)
    except OSError as error:
        print(f"error: cannot reach {endpoint}: {error} (is the service running? "
              "`python -m serving status`)", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.visualize:
        for outcome in outcomes:
            if outcome.ok:
                draw(Path(outcome.image), outcome.predictions, args.visualize)
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], indent=1))
    else:
        for outcome in outcomes:
            print(describe(outcome))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print(f"{len(failed)} of {len(outcomes)} images failed", file=sys.stderr)
    return EXIT_FAILED_IMAGE if failed else EXIT_OK


def describe(outcome: Outcome) -> str:
    if not outcome.ok:
        return f"{outcome.image}: FAILED err_no={outcome.err_no}: {outcome.err_msg}"
    if not outcome.predictions:
        return f"{outcome.image}: nothing found"
    if "bbox" not in outcome.predictions[0]:
        top = outcome.predictions[0]
        others = ", ".join(f"{p['label']} {p['score']:.3f}" for p in outcome.predictions[1:])
        return f"{outcome.image}: {top['label']} ({top['score']:.3f})" + \
            (f"  [{others}]" if others else "")
    lines = [f"{outcome.image}: {len(outcome.predictions)} found"]
    lines += [f"    {p['label']:<12} {p['score']:.3f}  box "
              + " ".join(f"{v:.1f}" for v in p["bbox"]) for p in outcome.predictions]
    return "\n".join(lines)


# --- drawing (Pillow 9.5 and 10+: textbbox, never the removed ImageDraw.textsize) -------------

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230)]


def _font(image_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", max(11, image_height // 40))
    except OSError:  # no TrueType font installed: Pillow's built-in bitmap font
        return ImageFont.load_default()


def _label(canvas: ImageDraw.ImageDraw, xy: tuple[float, float], text: str,
           colour: tuple[int, int, int], font: Any) -> None:
    left, top, right, bottom = canvas.textbbox(xy, text, font=font)
    canvas.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
    canvas.text(xy, text, fill=(0, 0, 0) if sum(colour) > 400 else (255, 255, 255), font=font)


def draw(image_path: Path, predictions: list[dict[str, Any]], out_dir: Path) -> Path:
    image = Image.open(image_path).convert("RGB")
    canvas = ImageDraw.Draw(image)
    font = _font(image.height)
    for p in predictions if predictions and "bbox" in predictions[0] else []:
        colour = PALETTE[p["class_id"] % len(PALETTE)]
        x1, y1, x2, y2 = p["bbox"]
        canvas.rectangle((x1, y1, x2, y2), outline=colour, width=max(2, image.height // 200))
        text = f"{p['label']} {p['score']:.2f}"
        text_height = canvas.textbbox((0, 0), text, font=font)[3]
        _label(canvas, (x1 + 2, max(0.0, y1 - text_height - 4)), text, colour, font)
    if predictions and "bbox" not in predictions[0]:
        top = predictions[0]
        _label(canvas, (6, 6), f"{top['label']} {top['score']:.2f}",
               PALETTE[top["class_id"] % len(PALETTE)], font)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{image_path.stem}.png"
    image.save(out)
    return out

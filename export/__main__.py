"""python -m export: turn a Paddle inference model into a patched Paddle Serving model folder."""

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from export.errors import ExportError

EXAMPLES = """\
SOURCE is one of:
  an inference model folder   inference.pdmodel or inference.json + inference.pdiparams
                              (+ infer_cfg.yml, copied along), as tools/export_model.py writes it
  a training checkpoint       model.pdparams, with --config (PaddleClas or PaddleDetection YAML)
  a serving folder            holding serving_server/ and/or serving_client/: patched only

examples:
  python -m export models/peach/inference --patch prototxt_patches/peach.yml \\
      --model models/peach --out build/serving/peach
  python -m export output/best_model.pdparams --config my_yolov3.yml \\
      --patch prototxt_patches/traffic_light.yml --out build/serving/traffic_light
  python -m export old_tutorial_export/ --patch prototxt_patches/traffic_light.yml   # in place
  python -m export models/peach/inference --patch prototxt_patches/peach.yml \\
      --model models/peach --out build/serving/peach --int8   # + the ONNX models

Writes OUT/serving_server/ (model files, serving_server_conf.prototxt + .stream.prototxt,
model_checksums.sha256) and OUT/serving_client/ (serving_client_conf.prototxt + .stream.prototxt).
--onnx adds serving_server/inference.onnx, for the onnxruntime and openvino engines; with --model
it must answer the description's sample images like the Paddle program. --int8 adds
inference_int8.onnx too, quantised on the description's calibration images (needs --model).
Exit status 2 on bad input, with a message saying what is wrong.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, help="inference folder, .pdparams or serving folder")
    parser.add_argument("--out", type=Path, help="serving folder to write (default for a serving "
                        "folder SOURCE: patch in place)")
    parser.add_argument("--patch", type=Path, help="prototxt patch YAML to apply")
    parser.add_argument("--config", type=Path, help="model config YAML (checkpoint SOURCE only)")
    parser.add_argument("--model", type=Path, metavar="MODEL_YML",
                        help="the model's description (models/<name>/model.yml or its folder): "
                             "fail unless its feeds and fetches are the patched aliases")
    parser.add_argument("--onnx", action="store_true",
                        help="also write the ONNX model (engines onnxruntime, openvino)")
    parser.add_argument("--int8", action="store_true",
                        help="also write the ONNX model and its INT8 quantisation (needs --model)")
    return parser.parse_args(argv)


def quiet_paddle() -> None:
    """Keep the log readable: paddle's C++ INFO lines and import-time warnings add nothing here."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.filterwarnings("ignore", message="No ccache found")


UNTRUSTED_CHECKPOINT = ("warning: {source} is a pickle: loading it runs any code it holds. "
                        "Export only checkpoints you made or trust.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.source.suffix == ".pdparams":  # paddle.load unpickles it
        logging.getLogger("export").warning(UNTRUSTED_CHECKPOINT.format(source=args.source))
    quiet_paddle()
    from export.convert import convert  # imports paddle: after the environment is set
    from model.spec import ModelSpec, ModelSpecError

    try:
        spec = ModelSpec.load(args.model) if args.model else None
        onnx = "int8" if args.int8 else "fp32" if args.onnx else ""
        written = convert(args.source, args.out, args.patch, args.config, spec, onnx)
    except (ExportError, ModelSpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.getLogger("export").info("serving model ready: %s", written)
    return 0


if __name__ == "__main__":
    sys.exit(main())

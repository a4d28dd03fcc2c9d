"""Export stage: Paddle inference model / training checkpoint -> Paddle Serving model folder.

`python -m export --help` is the entry point. Services call `verify_checksums(serving_server_dir)`
at load to check the model files against the manifest written at export.
Modules: model_io (read the model's interface), serving_folder (write the GeneralModelConfig
prototxt + binary twin), patch (declarative prototxt patches), checksums, convert (the stage);
onnx, onnx_models, parity, quantize (the ONNX and INT8 models of the onnxruntime and openvino
engines, checked against Paddle Inference).
"""

from export.checksums import verify_checksums
from export.errors import ChecksumError, ExportError

__all__ = ["ChecksumError", "ExportError", "verify_checksums"]

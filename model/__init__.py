"""The model contract: what a served model is, independent of any serving framework.

- spec: the description, models/<name>/model.yml (labels, preprocessing, feeds and fetches,
  postprocessing, runtime settings, service name and ports, sample images)
- settings: the runtime settings, one typed table
- request, errors: a request's images checked against the limits; the stable error codes
- preprocess, postprocess: the declared steps, replayed; outputs -> per-image results
- engine: the engine that runs the program (Paddle Inference)
- model: `Model`, load / preprocess / predict / postprocess, and a batch API
- process: process-wide settings applied before a model loads

Nothing here imports Paddle Serving: training, export, the benchmark and the serving pipeline
all build on it.
"""

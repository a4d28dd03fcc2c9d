"""Serve stage: Paddle Serving pipeline web services built from each model's description."""

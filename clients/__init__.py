"""Command-line clients of the pipeline services (HTTP and RPC)."""

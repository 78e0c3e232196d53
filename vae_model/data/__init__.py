"""Datasets: loading sources, validating them, and the canonical Parquet snapshot."""

from vae_model.data.dataset import ImageData, row_hashes, split_by_hash, split_by_seed
from vae_model.data.snapshot import read_snapshot, write_snapshot
from vae_model.data.sources import load_source

__all__ = ["ImageData", "load_source", "read_snapshot", "row_hashes", "split_by_hash", "split_by_seed", "write_snapshot"]

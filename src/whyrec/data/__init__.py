"""Data layer: loaders for public formats, preprocessing, splits, the Dataset currency."""

from whyrec.data.build import build_dataset
from whyrec.data.dataset import Dataset
from whyrec.data.raw import RawData
from whyrec.data.registry import load_dataset, prepare_dataset

__all__ = ["Dataset", "RawData", "build_dataset", "load_dataset", "prepare_dataset"]

"""Procedural generators for the two synthetic Long Range Arena tasks, writing the official file formats."""
from .listops import generate_listops, write_listops
from .pathfinder import PathfinderConfig, generate_pathfinder_sample, write_pathfinder

__all__ = ["generate_listops", "write_listops", "PathfinderConfig", "generate_pathfinder_sample",
           "write_pathfinder"]

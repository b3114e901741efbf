"""One command per paper table: the job graph of a table's cells and seeds (`graph`), its launchers (`launch`:
in order on this machine, or through submitit on SLURM / submitit's local executor), the state of every job
(`state`) and the GPU-hour estimate of a dry run (`estimate`). The command is `scripts/reproduce.py --suite paper`
(docs/CLUSTER.md)."""
from lion.reproduce.graph import Graph, Job, build_graph, cell_id

__all__ = ["Graph", "Job", "build_graph", "cell_id"]

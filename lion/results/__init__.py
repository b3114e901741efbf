"""The paper's numbers (`paper.yaml`) and the code that lays the project's finished runs out as the paper's tables.

    python scripts/make_tables.py --runs logs/ --out results.md
"""
from lion.results.tables import collect, load_paper, make_tables  # noqa: F401

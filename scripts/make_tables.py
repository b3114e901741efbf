"""Write the paper's Tables A-D (and the proxy suite's table P) from finished runs, the paper's numbers beside.

    python scripts/make_tables.py --runs logs/                    # print every table
    python scripts/make_tables.py --runs logs/ --out results.md --tables ABC

Reads every metrics.json under --runs (recursively; see docs/DESIGN.md "Run directory") and the JSON files the
benchmark scripts write (Table D). Absent runs are shown as "not run", never filled in; seeds are averaged and counted.
The paper's numbers live in lion/results/paper.yaml. See docs/REPRODUCE.md.
"""
import sys

from lion.results.tables import main

if __name__ == "__main__":
    sys.exit(main())

"""Write the paper's Tables A-D (and the proxy suite's table P) from finished runs, the paper's numbers beside.

    python scripts/make_tables.py --runs logs/                    # print every table
    python scripts/make_tables.py --runs logs/ --out results.md --tables ABC

Reads every metrics.json under --runs (recursively; see docs/DESIGN.md "Run directory") and the JSON files the
benchmark scripts write (Table D). Absent runs are shown as "not run", never filled in; seeds are averaged and counted.
The paper's numbers live in lion/results/paper.yaml. See docs/REPRODUCE.md.

Scores: Table A top-1 accuracy; Table B masked-LM accuracy (15% masking) and GLUE, whose column is the mean over the
eight tasks of each task's score as the paper computes it (MNLI mean of matched and mismatched accuracy, MRPC F1,
STS-B Spearman, QQP mean of accuracy and F1, CoLA Matthews correlation, the rest accuracy; a run's `score`), each
run's final evaluation; a second per-task table gives the GLUE benchmark's own task scores (MRPC mean of F1 and
accuracy, STS-B mean of Pearson and Spearman; a run's `glue_score`). Tables C and P: test accuracy.
"""
import sys

from lion.results.tables import main

if __name__ == "__main__":
    sys.exit(main())

"""Train the shipped induction model and write it into the package (see sweep.models.induction).

python -m sweep.models.train_induction [--out DIR] [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sweep.models.induction import DATA, train


def main() -> None:
    p = argparse.ArgumentParser(description="Train and ship the induction demo model.")
    p.add_argument("--out", type=Path, default=DATA)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(train(args.out, args.steps, args.seed), indent=1))  # noqa: T201


if __name__ == "__main__":
    main()

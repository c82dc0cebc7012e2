"""Train a DA3 student network.

    python training/train.py --config training/configs/tiny_default.yaml [--key=value ...] [--resume]
    torchrun --nproc_per_node 2 training/train.py --config training/configs/tiny_default.yaml

``--key=value`` overrides any field of :class:`da3_core.train.loop.TrainConfig`; ``--resume`` continues from the
newest checkpoint in ``out_dir`` (the same curve as an uninterrupted run). See ``da3_core/train/loop.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from da3_core.train.distributed import cleanup_distributed  # noqa: E402
from da3_core.train.loop import Trainer, default_config_path, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(default_config_path()), help="YAML config (default: tiny_default.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    args, overrides = ap.parse_known_args(argv)
    cfg = load_config(args.config, overrides)
    try:
        Trainer(cfg, resume=args.resume).fit()
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main()

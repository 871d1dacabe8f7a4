"""Accuracy on labeled data, float against 8- and 16-bit, side by side (docs/eval.md).

DATA is a list file of 'path label' lines, an ImageNet-style folder of class folders, or
unlabeled images (then top-1 agreement with float and the output SNR are reported).

Examples:
  tidlc eval model.onnx --data val.txt --mean 123.7,116.3,103.5 --scale 0.017 --calib calib.txt
  tidlc eval ../shared/corpus/caffe/cifar10_quick/cifar10_quick.prototxt --data samples/ --json eval.json
"""
from __future__ import annotations

import argparse
import sys

from tidlc.cli_options import add_model_options, add_quant_options

NAME = "eval"
HELP = "accuracy (top-1/top-5) or agreement with float, per precision, on a data set"


def _list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="a model file")
    p.add_argument("--data", required=True, metavar="DATA", help="list file, class folders or images")
    p.add_argument("--task", choices=("classify",), default="classify", help="what the outputs are (classify)")
    p.add_argument("--precision", type=_list, default=("float", "8", "16"), metavar="LIST",
                   help="comma-separated: float, 8, 16 (default all three)")
    p.add_argument("--frames", type=int, metavar="N", help="evaluate the first N frames only")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the frames in N worker processes (identical results; one kernel thread each)")
    p.add_argument("--json", metavar="FILE", help="also write the tidlc.eval/1 document ('-': print it instead)")
    add_model_options(p)
    add_quant_options(p)


def run(args, options) -> int:
    from tidlc.evaluate import evaluate, render_text, write_json
    live = sys.stderr.isatty() and args.json != "-"
    last = {}

    def progress(label: str, done: int, total: int) -> None:
        if live and (done == total or done - last.get(label, 0) >= max(1, total // 20)):
            last[label] = done
            print(f"\reval {label}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    result = evaluate(args.model, args.data, options, precisions=args.precision, frames=args.frames,
                      task=args.task, progress=progress, workers=args.workers)
    if args.json == "-":
        import json
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return 0
    sys.stdout.write(render_text(result))
    if args.json:
        write_json(result, args.json)
        print(f"  wrote {args.json}")
    return 0

"""Coverage-guided fuzzing of one target with atheris (libFuzzer for Python), where it helps:
the structured mutators of fuzz/mutate.py explore formats broadly, atheris follows the branches
of tidlc's own readers. ``pip install atheris``, then::

    python -m fuzz.coverage_guided --target prototxt -- -runs=20000 -timeout=5 -rss_limit_mb=2048

Seeds are the target's seed files (written to a corpus folder first). An internal error (any
exception but TidlcError) stops the run with libFuzzer's crash report and the crashing input saved
as ``crash-*``; replay it with ``python -m fuzz.coverage_guided --target T crash-...``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.coverage_guided")
    p.add_argument("--target", required=True)
    p.add_argument("libfuzzer_args", nargs="*", help="arguments for libFuzzer (after --)")
    args = p.parse_args(argv)
    try:
        import atheris
    except ImportError:
        print("coverage-guided fuzzing needs atheris: pip install atheris", file=sys.stderr)
        return 2
    from fuzz.runner import load_target
    from tidlc.diagnostics import TidlcError
    with atheris.instrument_imports(include=["tidlc"]):
        import tidlc.cli  # noqa: F401 - instrument tidlc before the target imports its readers
    target = load_target(args.target)
    seeds = [s for s in target.seeds() if s.main is not None]
    work = tempfile.mkdtemp(prefix=f"atheris-{args.target}-")
    corpus = os.path.join(work, "corpus")
    os.makedirs(corpus)
    for i, seed in enumerate(seeds):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as fh:
            fh.write(seed.files[seed.main])
    case_dir = os.path.join(work, "case")
    from fuzz.runner import Seed, _write
    counter = [0]

    def one_input(data: bytes) -> None:
        seed = seeds[counter[0] % len(seeds)]
        counter[0] += 1
        shutil.rmtree(case_dir, ignore_errors=True)
        os.makedirs(case_dir)
        path = _write(Seed({**seed.files, seed.main: data}, seed.main), case_dir)
        try:
            target.run(path)
        except TidlcError:
            pass
        except SystemExit as exc:
            if exc.code not in (0, 1, 2, None):
                raise

    atheris.Setup([sys.argv[0], *args.libfuzzer_args, corpus], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

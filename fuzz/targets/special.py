"""Special files as any input: FIFOs, /dev/zero and /dev/null (through symlinks), a directory,
an empty file, a symlink loop, a missing path, an unreadable file and a socket, given to every
command that reads files (as the model, the compiled folder or its net.bin, --input, --calib,
an entry of a calibration list, perf, an import config and the model it names, the weights
sidecar of a .tir). Nothing may block: each one must be refused by name at once (or read as the
ordinary file it is). Nothing is mutated: every input index replays one (command, kind) case."""
from __future__ import annotations

import os
import shutil
import socket

from fuzz.common import TINY_NET, compiled
from fuzz.runner import Seed, cli


def _fifo(path: str) -> None:
    os.mkfifo(path)


def _link(target: str):
    def make(path: str) -> None:
        os.symlink(target, path)
    return make


def _empty(path: str) -> None:
    open(path, "wb").close()


def _loop(path: str) -> None:
    os.symlink(os.path.basename(path), path)  # points at itself


def _missing(path: str) -> None:
    pass


def _unreadable(path: str) -> None:  # (root reads it anyway: then it is just a short bad file)
    with open(path, "wb") as fh:
        fh.write(b"x")
    os.chmod(path, 0)


def _socket(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)  # the socket file stays after the socket is closed


KINDS = {"fifo": _fifo, "zero": _link("/dev/zero"), "null": _link("/dev/null"), "dir": os.mkdir,
         "empty": _empty, "loop": _loop, "missing": _missing, "unreadable": _unreadable, "socket": _socket}


def _copy_compiled(folder: str, skip: str = "") -> None:
    src = compiled("bin")
    for name in ("net.bin", "io.bin"):
        if name != skip:
            shutil.copy(os.path.join(src, name), os.path.join(folder, name))


def _copy_tir(folder: str, skip: str = "") -> None:
    src = compiled("qir")
    for name in ("model.tir", "model.weights"):
        if name != skip:
            shutil.copy(os.path.join(src, name), os.path.join(folder, name))


# command -> (the special file's name, the other files, how to run it with the special path)
def _model(cmd: tuple):
    return lambda path: cli(*cmd[:1], path, *cmd[1:])


COMMANDS = {
    "ir onnx": ("model.onnx", {}, _model(("ir",))),
    "ir tir": ("model.tir", {}, _model(("ir",))),
    "ir prototxt": ("model.prototxt", {}, _model(("ir",))),
    "ir unknown suffix": ("model", {}, _model(("ir",))),
    "compile model": ("model.tflite", {}, _model(("compile", "--emit", "none"))),
    "compile config": ("import.txt", {}, _model(("compile", "--emit", "none"))),
    "run outdir": ("out", {}, _model(("run",))),
    "run net.bin": ("net.bin", {}, lambda p: (_copy_compiled(os.path.dirname(p), "net.bin"),
                                              cli("run", os.path.dirname(p)))),
    "run io.bin": ("io.bin", {}, lambda p: (_copy_compiled(os.path.dirname(p), "io.bin"),
                                            cli("run", os.path.dirname(p)))),
    "run --input": ("x.npy", {}, lambda p: cli("run", compiled("bin"), "--input", p)),
    "run tir --input": ("x.npy", {}, lambda p: cli("run", os.path.join(compiled("ir"), "model.tir"), "--input", p)),
    "compile --calib": ("calib.npy", {"tiny.prototxt": TINY_NET},
                        lambda p: cli("-p", "quantize", "compile", os.path.join(os.path.dirname(p), "tiny.prototxt"),
                                      "--calib", p, "--emit", "none", "--random-weights", "0")),
    "compile --calib list": ("frame.png", {"tiny.prototxt": TINY_NET, "list.txt": b"frame.png 0\n"},
                             lambda p: cli("-p", "quantize", "compile",
                                           os.path.join(os.path.dirname(p), "tiny.prototxt"), "--calib",
                                           os.path.join(os.path.dirname(p), "list.txt"), "--emit", "none",
                                           "--random-weights", "0")),
    "compile --calib folder": ("frames/a.npy", {"tiny.prototxt": TINY_NET},
                               lambda p: cli("-p", "quantize", "compile",
                                             os.path.join(os.path.dirname(os.path.dirname(p)), "tiny.prototxt"),
                                             "--calib", os.path.dirname(p), "--emit", "none", "--random-weights", "0")),
    "perf": ("net.bin", {}, _model(("perf",))),
    "perf outdir": ("out", {}, _model(("perf",))),
    "config inputNetFile": ("model.prototxt", {"import.txt": b"inputNetFile = model.prototxt\nrandParams = 1\n"},
                            lambda p: cli("compile", os.path.join(os.path.dirname(p), "import.txt"),
                                          "--emit", "none")),
    "config inData": ("calib.npy", {"tiny.prototxt": TINY_NET,
                                    "import.txt": b"inputNetFile = tiny.prototxt\nrandParams = 1\ninData = calib.npy\n"
                                                  b"inFileFormat = 1\n"},
                      lambda p: cli("-p", "quantize", "compile", os.path.join(os.path.dirname(p), "import.txt"),
                                    "--emit", "none")),
    "tir weights": ("model.weights", {}, lambda p: (_copy_tir(os.path.dirname(p), "model.weights"),
                                                    cli("ir", os.path.join(os.path.dirname(p), "model.tir")))),
    "compile --weights": ("w.caffemodel", {"tiny.prototxt": TINY_NET},
                          lambda p: cli("compile", os.path.join(os.path.dirname(p), "tiny.prototxt"), "--weights", p,
                                        "--emit", "none")),
}
CASES = [(cmd, kind) for cmd in COMMANDS for kind in KINDS]


def seeds() -> list[Seed]:
    out = []
    for cmd, kind in CASES:
        name, others, _ = COMMANDS[cmd]
        out.append(Seed({**others, name: KINDS[kind]}, name))
    return out


def mutate(data, rng, others):
    return data  # the special file is the case: nothing to mutate


def run(path: str) -> None:
    index = int(os.path.basename(os.path.dirname(path.replace("/frames/", "/"))))  # the runner's case folder
    cmd, _ = CASES[index % len(CASES)]
    COMMANDS[cmd][2](path)

"""List installed plugins, frontends, passes, backends and ops."""
from __future__ import annotations

import argparse

NAME = "plugins"
HELP = "list installed plugins, frontends, passes, backends and ops"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No arguments of its own (the global -p no:NAME applies)."""


def run(args, options) -> int:
    from tidlc.compiler import plugins_for
    from tidlc.ir.opdef import OPS
    plugins = plugins_for(options)
    print("plugins:")
    for name, dist in plugins.plugin_names():
        print(f"  {name:<24} {dist}")
    reg = plugins.registry
    print("frontends:")
    for name, fe in sorted(reg.frontends.items()):
        print(f"  {name:<24} {' '.join(fe.suffixes):<20} {fe.description}  [{fe.plugin}]")
    print("passes:")
    for name, cls in sorted(reg.passes.items()):
        level = "backend" if cls.opt_level is None else f"-O{cls.opt_level}"
        print(f"  {name:<24} {level:<8} {cls.summary}  [{reg.owner[('pass', name)]}]")
    print("backends:")
    for name in sorted(reg.backends):
        print(f"  {name:<24} [{reg.owner[('backend', name)]}]")
    plugin_ops = {name: owner for (kind, name), owner in reg.owner.items() if kind == "op"}
    builtin = [n for n in OPS.names() if n not in plugin_ops]
    print(f"ops: {len(builtin)} builtin ({', '.join(builtin)})")
    for name, owner in sorted(plugin_ops.items()):
        print(f"  {name:<24} [{owner}]")
    return 0

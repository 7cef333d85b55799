"""Register Pear's own timm models whenever timm is in use, without importing it.

`import pear` stays free of torch and timm (the command line's help is instant), yet
`timm.create_model("pear_vit_tiny6_patch4_32", pretrained=True)` must work after it. So
`register()` adds the model at once when timm is already imported, and otherwise leaves a
one-shot import hook that adds it right after timm itself has finished importing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_MODELS = "pear.harness.pear_vit"  # importing it runs timm's @register_model


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds timm as the other finders do, and wraps its loader to register Pear's models after it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; and find_spec below must not come back here
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            importlib.import_module(_MODELS)

        spec.loader.exec_module = exec_module
        return spec


def register() -> None:
    if "timm" in sys.modules:
        importlib.import_module(_MODELS)
    elif not any(isinstance(f, _AfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimm())

"""Find the user's own callable by its name: ``package.module:function`` or ``path/to/file.py:function``.

Models (``--model``), data sets (``--dataset``) and augmentations (``--augment``) are named this
way, as in uvicorn or gunicorn; ``kind`` ("model", "dataset", "augment") starts every error
message, which is raised as ``error``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable


def a(noun: str) -> str:
    """``noun`` with its indefinite article: "an int", "a str"."""
    return f"{'an' if noun[:1] in tuple('aeiouAEIOU') else 'a'} {noun}"


def is_import_path(name: str) -> bool:
    """Whether ``name`` looks like ``where:attr`` (both parts present)."""
    where, sep, attr = name.rpartition(":")
    return bool(sep and where and attr)


def short_name(name: str) -> str:
    """What a figure's title calls a model or data set: ``SmallCNN`` for ``path/to/file.py:SmallCNN``."""
    return name.rpartition(":")[2] if is_import_path(name) else name


def load_callable(name: str, kind: str, error: type[Exception]) -> Callable[..., Any]:
    """The callable that ``module:function`` or ``path/to/file.py:function`` names; ``file.py:Class.method``
    works too. Each failure is one ``error`` that says what was looked for and where.

    Looked up afresh each time, so that a function redefined in a notebook (``__main__:f``) or a file
    edited since is what runs; a module is imported once (``sys.modules``), a file run once per content."""
    where, _, attr = name.rpartition(":")
    module = _load_file(name, where, kind, error) if where.endswith(".py") or os.sep in where \
        else _import(name, where, kind, error)
    target = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise error(f"{kind} {name}: {where} has no {attr!r}") from None
    if not callable(target):
        raise error(f"{kind} {name}: {attr} is {a(type(target).__name__)}, not a class or function")
    return target


# Files run so far, by path and a hash of their source: a file is run again when it has changed (an
# edit between two studies of one notebook), not on every lookup (every trial builds its model).
_FILE_MODULES: dict[tuple[Path, str], ModuleType] = {}


def _load_file(name: str, where: str, kind: str, error: type[Exception]) -> ModuleType:
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise error(f"{kind} {name}: no file {path}")
    key = (path, hashlib.sha1(path.read_bytes()).hexdigest())
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    module_name = f"lrfind_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:          # a suffix Python does not run (.txt, .ipynb)
        raise error(f"{kind} {name}: {path} is not a Python source file; give a .py file "
                    "(from a notebook: save the class or function in one), or a module's name")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module                 # pickling and dataclasses look modules up there
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise error(f"{kind} {name}: running {path} failed ({type(e).__name__}: {e})") from e
    _FILE_MODULES[key] = module
    return module


def _import(name: str, where: str, kind: str, error: type[Exception]) -> ModuleType:
    if os.getcwd() not in sys.path:                   # the console script's path lacks the working directory
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and where.startswith(e.name):
            raise error(f"{kind} {name}: no module {e.name!r} (looked in the working directory and "
                        "sys.path; a file can be named as path/to/file.py:function)") from None
        raise error(f"{kind} {name}: importing {where} failed ({type(e).__name__}: {e})") from e
    except Exception as e:
        raise error(f"{kind} {name}: importing {where} failed ({type(e).__name__}: {e})") from e


def callable_name(target: Callable[..., Any], kind: str, error: type[Exception]) -> str:
    """``module:qualname`` of a class or function defined at the top level of a module (``__main__``
    included: a script's or a notebook's own), by which ``load_callable`` finds it again."""
    if any(c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module" for c in type(target).__mro__):
        raise error(f"{kind} is an instance of {type(target).__name__}, built already: every trial trains one "
                    f"of its own, so give what builds it, a class or a function defined at the top level of a "
                    f"module (model=MyNet, not model=MyNet())")
    qualname = getattr(target, "__qualname__", "")
    module = getattr(target, "__module__", None)
    if not module or not qualname or "<" in qualname:     # <lambda>, <locals>
        raise error(f"{kind} {qualname or target!r}: give a class or function defined at the top level of "
                    "a module (a lambda or a function inside a function has no name to find it by)")
    return f"{module}:{qualname}"

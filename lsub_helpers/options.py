"""Options as frozen dataclasses that a function accepts whole (``options=``) or field by field (keywords).

A function with many settings takes one frozen options dataclass; :func:`keyword_options` lets its callers
keep passing each setting as a keyword, as they did before the dataclass existed::

    @keyword_options(AttackOptions)
    def min_distance_attack(net, x0, label, *, options: AttackOptions) -> AttackResult: ...

    min_distance_attack(net, x0, y, steps=50, seed=1)                       # keywords, as before
    min_distance_attack(net, x0, y, options=AttackOptions(steps=50, seed=1))  # the same call
    min_distance_attack(net, x0, y, options=opts, seed=2)                   # ``opts`` with seed 2

Keywords given beside ``options`` replace those fields of it; without ``options`` the keywords fill a fresh
one (the dataclass's defaults for the rest).  The defaults live in the dataclass only; the wrapped
function's signature (``help``, ``inspect.signature``) lists ``options`` and every field as a keyword.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable, TypeVar

__all__ = ["keyword_options"]

F = TypeVar("F", bound=Callable)


def _field_parameter(f: dataclasses.Field) -> inspect.Parameter:
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = inspect.Parameter.empty  # a required setting (e.g. the number of epochs)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=f.type)


def keyword_options(cls: type) -> Callable[[F], F]:
    """Decorate a function taking a keyword-only ``options: cls`` so that it also takes every field of
    ``cls`` as a keyword argument (see the module docstring)."""
    names = tuple(f.name for f in dataclasses.fields(cls))

    def decorate(func: F) -> F:
        sig = inspect.signature(func)
        if "options" not in sig.parameters or sig.parameters["options"].kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{func.__qualname__} must take a keyword-only `options` argument")
        clash = set(names) & set(sig.parameters)
        if clash:
            raise TypeError(f"{func.__qualname__} takes {sorted(clash)} itself and as fields of {cls.__name__}")

        @functools.wraps(func)
        def wrapper(*args, options=None, **kwargs):
            given = {k: kwargs.pop(k) for k in names if k in kwargs}
            if options is None:
                options = cls(**given)
            elif not isinstance(options, cls):
                raise TypeError(f"options must be a {cls.__name__}, got {type(options).__name__}")
            elif given:
                options = dataclasses.replace(options, **given)
            return func(*args, options=options, **kwargs)

        params = list(sig.parameters.values())
        first_kw = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.KEYWORD_ONLY), len(params))
        opt = sig.parameters["options"].replace(default=None, annotation=f"{cls.__name__} | None")
        rest = [p for p in params[first_kw:] if p.name != "options"]
        wrapper.__signature__ = sig.replace(
            parameters=params[:first_kw] + [opt] + [_field_parameter(f) for f in dataclasses.fields(cls)] + rest)
        return wrapper  # type: ignore[return-value]

    return decorate

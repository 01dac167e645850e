"""A griffe extension (mkdocs.yml: the Python handler's `extensions`): a function or class
whose docstring is assigned at import time (`RNN.__doc__ = _DOC.format(...)`), which reading the
source cannot see, gets the docstring that Python gives it, so its reference entry shows it."""
import importlib
import inspect

import griffe


class RuntimeDocstrings(griffe.Extension):
    def on_function(self, *, func, loader, **kwargs):
        self._fill(func)

    def on_class(self, *, cls, loader, **kwargs):
        self._fill(cls)

    @staticmethod
    def _fill(obj):
        if obj.docstring is not None or obj.parent is None or not obj.parent.is_module:
            return
        try:
            value = getattr(importlib.import_module(obj.parent.path), obj.name)
        except (ImportError, AttributeError):
            return
        doc = inspect.getdoc(value)
        if doc and not (inspect.isclass(value) and doc.startswith(f"{obj.name}(")):
            obj.docstring = griffe.Docstring(doc, parent=obj)

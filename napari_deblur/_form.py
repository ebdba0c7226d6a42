"""Form fields for method and PSF-model parameters, built from the catalog and the typed signatures.

A parameter becomes: a dropdown when its values are a fixed set (a ``Literal[...]`` annotation, or
the choices listed in :data:`deblur_ops.apps.catalog.PARAMETER_INFO`); a check box for booleans; a
spin box for integers; and a :class:`NumberEdit` text field for floats, which shows ``0.065`` and
``1e-4`` as they are (a spin box with fixed decimals rounds them to 0.06 and 0.00). Labels,
units and tooltips come from :func:`deblur_ops.apps.catalog.parameter_info`.
"""
from __future__ import annotations

import json
import typing

from magicgui import widgets

from deblur_ops.apps import catalog


class NumberEdit(widgets.LineEdit):
    """A text field for a number, shown as typed; empty means "automatic" (the function's None default).

    Args:
        kind: ``float`` or ``int``.
        value: initial number, or None for an empty field.
    """

    def __init__(self, *, kind: type = float, value=None, **kwargs):
        self.kind = kind
        super().__init__(value="" if value is None else format_number(value), **kwargs)

    def number(self):
        """The number typed, None when empty.

        Raises:
            ValueError: the text is not a number of the field's kind (the message names the field).
        """
        text = str(self.value).strip()
        if not text:
            return None
        try:
            return int(text) if self.kind is int else float(text)
        except ValueError:
            example = "12" if self.kind is int else "0.065 or 1e-4"
            raise ValueError(f"{self.label!r} must be {'an integer' if self.kind is int else 'a number'} "
                             f"(e.g. {example}) or empty for automatic, got {text!r}") from None


def format_number(value) -> str:
    """Up to 6 significant digits, no trailing zeros: 0.065 -> '0.065', 1e-4 -> '0.0001', 2.0 -> '2'."""
    return f"{value:.6g}"


def _literal_choices(function, name: str) -> tuple:
    if function is None:
        return ()
    try:
        hint = typing.get_type_hints(function).get(name)
    except (NameError, TypeError):
        return ()
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return ()


def label_for(name: str) -> str:
    info = catalog.parameter_info(name)
    return f"{info.label} ({info.unit})" if info.unit else info.label


def field_for(parameter: catalog.Parameter, function=None):
    """The form field for one parameter of ``function`` (a method or PSF model)."""
    info = catalog.parameter_info(parameter.name)
    value = parameter.default
    shown = "empty (automatic)" if value is None else (format_number(value) if isinstance(value, float) else value)
    tooltip = f"{info.tooltip}. Default: {shown}. [{parameter.name}]"
    common = {"name": parameter.name, "label": label_for(parameter.name), "tooltip": tooltip}
    choices = _literal_choices(function, parameter.name) or info.choices
    if choices and (value is None or value in choices):
        return widgets.ComboBox(choices=list(choices), value=value if value is not None else choices[0], **common)
    if isinstance(value, bool):
        return widgets.CheckBox(value=value, **common)
    if isinstance(value, int) and info.kind is not float:
        return widgets.SpinBox(value=value, min=0, max=1_000_000, **common)
    if isinstance(value, float) or (value is None and info.kind in (float, int)):
        return NumberEdit(kind=info.kind or float, value=value, **common)
    return widgets.LineEdit(value="" if value is None else str(value), **common)


def read_field(field):
    """The value to pass on, or None to leave the function's default (an empty text field).

    Raises:
        ValueError: a number field holds text that is not a number.
    """
    if isinstance(field, NumberEdit):
        return field.number()
    if not isinstance(field, widgets.LineEdit):
        return field.value
    text = field.value.strip()
    if not text:
        return None
    try:
        return json.loads(f"[{text}]") if "," in text else json.loads(text)
    except json.JSONDecodeError:
        return text


def values(container) -> dict:
    """The parameters a form sets (fields left empty are left to the function's defaults)."""
    found = {field.name: read_field(field) for field in container}
    return {name: value for name, value in found.items() if value is not None}

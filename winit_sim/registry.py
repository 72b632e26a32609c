"""Registries and their specs: ``"name:key=value,..."`` and ``(name, {key: value})``.

Init schemes, activations and layer kinds share this syntax. Each registry
entry declares its parameters with defaults and carries its behaviour as
metadata; the registry assigns every entry its kernel code (its position), so
no code is ever written by hand. Parsing checks names, values and ranges, so a
bad spec fails here with a clear message, never inside a kernel.
"""
from dataclasses import dataclass, field, replace
import math


@dataclass(frozen=True)
class Param:
    """One parameter of a registry entry.

    ``choices`` makes it a string parameter (an integer given for one, as in
    ``("residual", {"branch": 2})``, is read as its string); otherwise it is a
    float that must be finite and at least ``minimum`` (when given), a whole
    number when ``integer``. ``words`` are strings accepted beside numbers (as
    ``alpha=inv_sqrt_depth``).
    """
    default: object
    minimum: float | None = None
    choices: tuple = ()
    auto: bool = False  # also accepts the string "auto"
    positive: bool = False  # must be > minimum, not only >=
    integer: bool = False
    words: tuple = ()


@dataclass(frozen=True)
class Entry:
    """A registry entry: canonical name, aliases, declared parameters, kernel code.

    ``code`` is assigned by the :class:`Registry` (the entry's position); kinds
    of entry add their behaviour as further fields (see
    :class:`winit_sim.activations.Activation`, :class:`winit_sim.inits.Init`).
    """
    name: str
    params: dict = field(default_factory=dict)
    aliases: tuple = ()
    doc: str = ""
    code: int = -1


@dataclass(frozen=True)
class Spec:
    """A resolved spec: the registry entry and a full parameter dict."""
    entry: Entry
    params: dict

    @property
    def name(self):
        return self.entry.name

    def value(self, attribute):
        """An entry's metadata for these parameters: a constant, or a callable of the params."""
        v = getattr(self.entry, attribute)
        return v(self.params) if callable(v) else v

    def canonical(self):
        """Canonical string: the name plus every parameter that differs from its default."""
        extra = [f"{k}={_fmt(v)}" for k, v in sorted(self.params.items())
                 if v != self.entry.params[k].default]
        return self.name + (":" + ",".join(extra) if extra else "")

    def __str__(self):
        return self.canonical()


def _fmt(v):
    return repr(float(v)) if isinstance(v, float) else str(v)


class Registry:
    """Name -> Entry lookup with aliases; entry ``i`` gets kernel code ``i``."""

    def __init__(self, kind, entries):
        self.kind = kind
        entries = [replace(e, code=i) for i, e in enumerate(entries)]
        self.entries = {e.name: e for e in entries}
        if len(self.entries) != len(entries):
            raise ValueError(f"duplicate {kind} names")
        self._lookup = {}
        for e in entries:
            for n in (e.name,) + e.aliases:
                self._lookup[n] = e

    def __getitem__(self, name):
        return self.entries[name]

    def __iter__(self):
        return iter(self.entries.values())

    def names(self):
        return list(self.entries)

    def code(self, name):
        """The kernel code of an entry (what the kernels compare against)."""
        return self.entries[name].code

    def select(self, predicate):
        """Names of the entries for which ``predicate(entry)`` holds (derived lists)."""
        return [e.name for e in self.entries.values() if predicate(e)]

    def choices(self):
        parts = []
        for e in self.entries.values():
            parts.append(e.name + (f" [{', '.join(e.aliases)}]" if e.aliases else ""))
        return ", ".join(parts)

    def resolve(self, spec):
        """Turn a string, ``(name, params)`` tuple or Spec into a validated Spec."""
        if isinstance(spec, Spec):
            return spec
        if isinstance(spec, str):
            name, _, rest = spec.partition(":")
            name = name.strip()
            given = {}
            if rest.strip():
                for item in rest.split(","):
                    key, eq, value = item.partition("=")
                    if not eq or not key.strip():
                        raise ValueError(
                            f"bad {self.kind} parameter {item!r} in {spec!r}: "
                            f"expected key=value, as in 'he_normal:mode=fan_out'")
                    given[key.strip()] = value.strip()
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
            name, given = spec[0], spec[1]
            if given is None:
                given = {}
            if not isinstance(given, dict):
                raise TypeError(f"{self.kind} parameters must be a dict, got {type(given).__name__}")
        else:
            raise TypeError(f"{self.kind} must be a name string like 'relu' or a "
                            f"(name, params) tuple, got {spec!r}")
        entry = self._lookup.get(name.lower())
        if entry is None:
            raise ValueError(f"unknown {self.kind} {name!r}; valid choices: {self.choices()}")
        params = {k: p.default for k, p in entry.params.items()}
        for key, value in given.items():
            if key not in entry.params:
                valid = ", ".join(entry.params) or "none"
                raise ValueError(f"unknown parameter {key!r} for {self.kind} {entry.name!r}; "
                                 f"valid parameters: {valid}")
            params[key] = _check_value(self.kind, entry.name, key, entry.params[key], value)
        return Spec(entry, params)


def _check_value(kind, name, key, param, value):
    where = f"{kind} {name!r} parameter {key!r}"
    if (param.auto and value == "auto") or (param.words and value in param.words):
        return value
    if param.choices:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value not in param.choices:
            raise ValueError(f"{where} must be one of {', '.join(param.choices)}, got {value!r}")
        return value
    if isinstance(value, bool):
        raise TypeError(f"{where} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        alternatives = ("auto",) * param.auto + param.words
        raise TypeError(f"{where} must be a number{''.join(' or ' + w for w in alternatives)}, "
                        f"got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{where} must be finite, got {value!r}")
    if param.minimum is not None and (v <= param.minimum if param.positive else v < param.minimum):
        raise ValueError(f"{where} must be {'>' if param.positive else '>='} {param.minimum:g}, "
                         f"got {v:g}" + (" (negative)" if v < 0 else ""))
    if param.integer:
        if v != int(v):
            raise ValueError(f"{where} must be a whole number, got {v:g}")
        return int(v)
    return v

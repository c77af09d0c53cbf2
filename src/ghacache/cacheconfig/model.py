"""BuildKit's ``cacheconfig.v0`` document (``application/vnd.buildkit.cacheconfig.v0``).

Parsed into frozen values and written back exactly as Go's ``encoding/json`` writes the
structs in ``cache/remotecache/v1/types/spec.go``: field order, ``omitempty`` rules (a
``parent`` of 0 is omitted, so a missing ``parent`` reads as 0; "no parent" is -1),
``createdAt`` always present, no spaces, and ``<``, ``>``, ``&`` escaped. Timestamps are kept
as the exact strings BuildKit wrote, so a document round-trips byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ghacache.errors import RemoteProtocolError

MEDIA_TYPE = "application/vnd.buildkit.cacheconfig.v0"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, written for unset createdAt
# Merging identifies a layer by its whole stack (every blob down to the base), so the work
# grows with the sum of all layers' depths. Real caches stay far below this (images have
# at most a few hundred layers); a hostile document of one deep chain would not.
MAX_STACK_LAYERS = 1_000_000


class CacheConfigError(RemoteProtocolError):
    """A cacheconfig document is malformed or inconsistent."""


@dataclass(frozen=True, kw_only=True)
class LayerAnnotations:
    """What the gha/s3/azblob backends store per layer (they have no OCI manifest)."""

    media_type: str = ""
    diff_id: str = ""
    size: int = 0
    created_at: str = ZERO_TIME


@dataclass(frozen=True, kw_only=True)
class CacheLayer:
    blob: str
    parent: int = -1  # index into layers, or -1
    annotations: LayerAnnotations | None = None


@dataclass(frozen=True, kw_only=True)
class CacheResult:
    layer: int
    created_at: str = ZERO_TIME


@dataclass(frozen=True, kw_only=True)
class ChainedResult:
    layers: tuple[int, ...]
    created_at: str = ZERO_TIME


@dataclass(frozen=True, kw_only=True)
class CacheInput:
    link: int  # index into records
    selector: str = ""


@dataclass(frozen=True, kw_only=True)
class CacheRecord:
    digest: str
    results: tuple[CacheResult, ...] = ()
    chains: tuple[ChainedResult, ...] = ()
    inputs: tuple[tuple[CacheInput, ...], ...] = ()


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    layers: tuple[CacheLayer, ...] = ()
    records: tuple[CacheRecord, ...] = ()

    def validate(self) -> CacheConfig:
        """Check every index points inside the document and parents do not loop.

        Raises:
            CacheConfigError: a dangling index, an empty input, or a parent loop.
        """
        n_layers, n_records = len(self.layers), len(self.records)
        for i, layer in enumerate(self.layers):
            if not -1 <= layer.parent < n_layers:
                raise CacheConfigError(f"layer {i} has an invalid parent index {layer.parent}")
        self._check_stacks()
        for r, rec in enumerate(self.records):
            for res in rec.results:
                if not 0 <= res.layer < n_layers:
                    raise CacheConfigError(f"record {r} points at missing layer {res.layer}")
            for chain in rec.chains:
                if any(not 0 <= x < n_layers for x in chain.layers):
                    raise CacheConfigError(f"record {r} has a chain with a missing layer")
            for k, alternatives in enumerate(rec.inputs):
                if not alternatives:
                    raise CacheConfigError(f"record {r} input {k} has no alternatives")
                for alt in alternatives:
                    if not 0 <= alt.link < n_records:
                        raise CacheConfigError(
                            f"record {r} input {k} links to missing record {alt.link}"
                        )
        return self

    def _check_stacks(self) -> None:
        """Refuse parent loops, and stacks deeper in all than ``MAX_STACK_LAYERS``.

        Each layer's depth is computed once (memoised), so this is linear in the layers.
        """
        depth: list[int] = [0] * len(self.layers)  # 0: not known yet
        total = 0
        for i in range(len(self.layers)):
            path: list[int] = []
            on_path: set[int] = set()
            j = i
            while j != -1 and depth[j] == 0:
                if j in on_path:
                    raise CacheConfigError(f"layer {i} has a looping parent chain")
                on_path.add(j)
                path.append(j)
                j = self.layers[j].parent
            below = 0 if j == -1 else depth[j]
            for k in reversed(path):
                below += 1
                depth[k] = below
            total += depth[i]
            if total > MAX_STACK_LAYERS:
                raise CacheConfigError(
                    f"layer stacks hold over {MAX_STACK_LAYERS} layers in all; not a BuildKit cache"
                )

    def chain_of(self, layer: int) -> tuple[str, ...]:
        """Blob digests of a layer's stack, base first."""
        blobs: list[str] = []
        while layer != -1:
            blobs.append(self.layers[layer].blob)
            layer = self.layers[layer].parent
        return tuple(reversed(blobs))

    def blobs(self) -> set[str]:
        return {layer.blob for layer in self.layers}


# -- decoding ---------------------------------------------------------------------------


def _get(obj: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = obj.get(name, default)
    if value is None:
        return default
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise CacheConfigError(f"field {name!r} must be an integer")
    if kind is not int and not isinstance(value, kind):
        raise CacheConfigError(f"field {name!r} must be {kind.__name__}")
    if kind is str:
        check_text(value, name)
    return value


def check_text(value: str, what: str) -> str:
    """``value`` if it can be written back as UTF-8 (no lone surrogate, JSON's ``\\ud800``).

    Raises:
        CacheConfigError: it cannot.
    """
    try:
        value.encode()
    except UnicodeEncodeError:
        raise CacheConfigError(f"{what} holds a lone surrogate, not valid Unicode") from None
    return value


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CacheConfigError(f"{what} must be an object")
    return value


def _annotations(value: Any) -> LayerAnnotations | None:
    if value is None:
        return None
    a = _obj(value, "layer annotations")
    return LayerAnnotations(
        media_type=_get(a, "mediaType", str, ""),
        diff_id=_get(a, "diffID", str, ""),
        size=_get(a, "size", int, 0),
        created_at=_get(a, "createdAt", str, ZERO_TIME),
    )


def parse(data: bytes | str) -> CacheConfig:
    """Parse and validate a cacheconfig document.

    Raises:
        CacheConfigError: not JSON, wrong types, or inconsistent indexes.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise CacheConfigError(f"cache config is not valid JSON: {exc}") from exc
    doc = _obj(doc, "cache config")
    layers = tuple(
        CacheLayer(
            blob=_get(lo, "blob", str, ""),
            parent=_get(lo, "parent", int, 0),
            annotations=_annotations(lo.get("annotations")),
        )
        for lo in (_obj(x, "layer") for x in _get(doc, "layers", list, []))
    )
    records = []
    for x in _get(doc, "records", list, []):
        ro = _obj(x, "record")
        records.append(
            CacheRecord(
                digest=_get(ro, "digest", str, ""),
                results=tuple(
                    CacheResult(
                        layer=_get(o, "layer", int, 0),
                        created_at=_get(o, "createdAt", str, ZERO_TIME),
                    )
                    for o in (_obj(y, "result") for y in _get(ro, "layers", list, []))
                ),
                chains=tuple(
                    ChainedResult(
                        layers=tuple(_ints(_get(o, "layers", list, []))),
                        created_at=_get(o, "createdAt", str, ZERO_TIME),
                    )
                    for o in (_obj(y, "chain") for y in _get(ro, "chains", list, []))
                ),
                inputs=tuple(
                    tuple(
                        CacheInput(
                            link=_get(o, "link", int, 0), selector=_get(o, "selector", str, "")
                        )
                        for o in (_obj(z, "input") for z in _list(alts))
                    )
                    for alts in _get(ro, "inputs", list, [])
                ),
            )
        )
    return CacheConfig(layers=layers, records=tuple(records)).validate()


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise CacheConfigError("record inputs must be lists of alternatives")
    return value


def _ints(values: list[Any]) -> list[int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise CacheConfigError("chain layers must be integers")
    return values


# -- encoding ---------------------------------------------------------------------------


def _layer_json(layer: CacheLayer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if layer.blob:
        out["blob"] = layer.blob
    if layer.parent != 0:
        out["parent"] = layer.parent
    if layer.annotations is not None:
        a = layer.annotations
        ann: dict[str, Any] = {}
        if a.media_type:
            ann["mediaType"] = a.media_type
        if a.diff_id:
            ann["diffID"] = a.diff_id
        if a.size:
            ann["size"] = a.size
        ann["createdAt"] = a.created_at
        out["annotations"] = ann
    return out


def _record_json(rec: CacheRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rec.results:
        out["layers"] = [{"layer": r.layer, "createdAt": r.created_at} for r in rec.results]
    if rec.chains:
        out["chains"] = [{"layers": list(c.layers), "createdAt": c.created_at} for c in rec.chains]
    if rec.digest:
        out["digest"] = rec.digest
    if rec.inputs:
        out["inputs"] = [
            [({"selector": i.selector} if i.selector else {}) | {"link": i.link} for i in alts]
            for alts in rec.inputs
        ]
    return out


def to_dict(config: CacheConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.layers:
        out["layers"] = [_layer_json(layer) for layer in config.layers]
    if config.records:
        out["records"] = [_record_json(r) for r in config.records]
    return out


def dumps(config: CacheConfig) -> bytes:
    """Serialise like Go's ``json.Marshal`` of BuildKit's structs."""
    text = json.dumps(to_dict(config), separators=(",", ":"), ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text.encode()


# encoding/json escapes these even outside HTML contexts.
_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}

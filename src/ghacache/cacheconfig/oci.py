"""The OCI side of BuildKit's cache: manifests, descriptors and the two config flavours.

BuildKit's ``type=local`` cache keeps layer metadata in the manifest's descriptors
(``containerd.io/uncompressed``, ``buildkit/createdat``) and a cacheconfig without layer
annotations; ``type=gha`` has no manifest, so it writes the same metadata into each config
layer's ``annotations``. These pure functions convert between the two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

from ghacache.cacheconfig.model import (
    MEDIA_TYPE as CONFIG_MEDIA_TYPE,
)
from ghacache.cacheconfig.model import (
    ZERO_TIME,
    CacheConfig,
    CacheConfigError,
    LayerAnnotations,
    check_text,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DEFAULT_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
ANN_UNCOMPRESSED = "containerd.io/uncompressed"
ANN_CREATED = "buildkit/createdat"
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_IMAGE_NAME = "io.containerd.image.name"
MAX_MANIFEST_BYTES = 1024 * 1024  # BuildKit's readBlob limit for manifests and configs


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))  # Go sorts map keys
        return out

    @classmethod
    def from_json(cls, value: Any) -> Descriptor:
        if not isinstance(value, dict):
            raise CacheConfigError("descriptor must be an object")
        media, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
        ann = value.get("annotations") or {}
        if not isinstance(media, str) or not isinstance(digest, str) or not _is_size(size):
            raise CacheConfigError("descriptor needs mediaType, digest and a size of 0 or more")
        if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
            raise CacheConfigError("descriptor annotations must map strings to strings")
        for text in (media, digest, *ann, *ann.values()):
            check_text(text, "descriptor")
        return cls(media_type=media, digest=digest, size=size, annotations=dict(ann))


def _is_size(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def descriptors(value: Any, what: str) -> list[Descriptor]:
    """A JSON list of descriptors (absent or null: none).

    Raises:
        CacheConfigError: not a list, or an item is not a descriptor.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise CacheConfigError(f"{what} must be a list of descriptors")
    return [Descriptor.from_json(d) for d in value]


def go_json(value: Any) -> bytes:
    """Compact JSON like Go's encoder (HTML characters escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def parse_manifest(data: bytes) -> tuple[Descriptor, list[Descriptor]]:
    """The cacheconfig descriptor and layer descriptors of a cache manifest.

    Accepts the OCI image manifest (BuildKit's default since v0.21), and the older OCI index
    or Docker manifest list whose last cacheconfig entry is the config.

    Raises:
        CacheConfigError: over 1 MiB, not JSON, or no cacheconfig in it.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise CacheConfigError("cache manifest is larger than 1 MiB")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise CacheConfigError(f"cache manifest is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CacheConfigError("cache manifest must be an object")
    if "config" in doc:
        config = Descriptor.from_json(doc["config"])
        layers = descriptors(doc.get("layers"), "manifest layers")
    else:
        entries = descriptors(doc.get("manifests"), "manifest list")
        configs = [d for d in entries if d.media_type == CONFIG_MEDIA_TYPE]
        if not configs:
            raise CacheConfigError("cache manifest lists no cacheconfig")
        config = configs[-1]
        layers = [d for d in entries if d.media_type != CONFIG_MEDIA_TYPE]
    if config.media_type != CONFIG_MEDIA_TYPE:
        raise CacheConfigError(
            f"manifest config has media type {config.media_type!r}, not a cache config"
        )
    return config, layers


def image_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """An OCI image manifest whose config is the cacheconfig (BuildKit's default shape)."""
    return go_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [d.to_json() for d in layers],
        }
    )


def annotate(config: CacheConfig, descriptors: dict[str, Descriptor]) -> CacheConfig:
    """The gha flavour: copy each layer's descriptor metadata into its annotations.

    Raises:
        CacheConfigError: a layer has no descriptor, or its descriptor has no diffID
            (``containerd.io/uncompressed``), which BuildKit's importer requires.
    """
    layers = []
    for layer in config.layers:
        desc = descriptors.get(layer.blob)
        if desc is None:
            raise CacheConfigError(f"layer {layer.blob} has no descriptor in the manifest")
        diff_id = desc.annotations.get(ANN_UNCOMPRESSED, "")
        if not diff_id:
            raise CacheConfigError(f"layer {layer.blob} has no {ANN_UNCOMPRESSED} annotation")
        ann = LayerAnnotations(
            media_type=desc.media_type,
            diff_id=diff_id,
            size=desc.size,
            created_at=desc.annotations.get(ANN_CREATED, ZERO_TIME),
        )
        layers.append(replace(layer, annotations=ann))
    return replace(config, layers=tuple(layers))


def strip(config: CacheConfig) -> CacheConfig:
    """The local flavour: no layer annotations (they live in the manifest)."""
    return replace(
        config, layers=tuple(replace(layer, annotations=None) for layer in config.layers)
    )


def layer_descriptors(config: CacheConfig) -> list[Descriptor]:
    """Descriptors of a gha-flavour config's layers, in layer order, one per blob.

    Raises:
        CacheConfigError: a layer lacks its diffID annotation.
    """
    out: dict[str, Descriptor] = {}
    for layer in config.layers:
        a = layer.annotations
        if a is None or not a.diff_id:
            raise CacheConfigError(f"layer {layer.blob} has no diffID annotation")
        annotations = {ANN_UNCOMPRESSED: a.diff_id}
        if a.created_at != ZERO_TIME:
            annotations[ANN_CREATED] = a.created_at
        out.setdefault(
            layer.blob,
            Descriptor(
                media_type=a.media_type or DEFAULT_LAYER_MEDIA_TYPE,
                digest=layer.blob,
                size=a.size,
                annotations=annotations,
            ),
        )
    return list(out.values())

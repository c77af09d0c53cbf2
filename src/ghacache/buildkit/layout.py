"""BuildKit's local cache directory (an OCI image layout), read and written.

``--cache-to type=local,dest=DIR`` writes it and ``--cache-from type=local,src=DIR`` reads
it::

    DIR/oci-layout            {"imageLayoutVersion":"1.0.0"}
    DIR/index.json            OCI index; one manifest per tag (annotation ref.name)
    DIR/blobs/sha256/<hex>    layers, the cacheconfig and the cache manifest
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ghacache.cacheconfig.model import MEDIA_TYPE as CONFIG_MEDIA_TYPE
from ghacache.cacheconfig.model import CacheConfig, CacheConfigError, dumps, parse
from ghacache.cacheconfig.oci import (
    ANN_IMAGE_NAME,
    ANN_REF_NAME,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    annotate,
    descriptors,
    go_json,
    image_manifest,
    layer_descriptors,
    parse_manifest,
    strip,
)

DEFAULT_TAG = "latest"


@dataclass(frozen=True, kw_only=True)
class LocalCache:
    """A cache read from a layout: the gha-flavour config and where each blob lies."""

    config: CacheConfig  # with layer annotations, as the gha backend stores it
    blobs: dict[str, Path]  # digest -> file
    manifest: Descriptor


def blob_path(root: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise CacheConfigError(f"unsupported digest {digest!r}")
    return root / "blobs" / "sha256" / hexpart


def _read_small(root: Path, digest: str) -> bytes:
    path = blob_path(root, digest)
    try:
        if not path.is_file():
            raise CacheConfigError(f"blob {digest} is missing from {root}")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise CacheConfigError(f"blob {digest} is larger than 1 MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise CacheConfigError(f"blob {digest} cannot be read: {exc}") from exc
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise CacheConfigError(f"blob {digest} does not match its digest")
    return data


def read_layout(root: Path, tag: str = DEFAULT_TAG) -> LocalCache:
    """Read the cache tagged ``tag`` from a BuildKit local cache directory.

    Raises:
        CacheConfigError: no such directory or tag, a missing or corrupt manifest/config,
            or a layer without its diffID.
    """
    try:
        index = json.loads((root / "index.json").read_bytes())
    except FileNotFoundError as exc:
        raise CacheConfigError(f"{root} is not a BuildKit cache directory (no index.json)") from exc
    except OSError as exc:
        raise CacheConfigError(f"{root}/index.json cannot be read: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise CacheConfigError(f"{root}/index.json is not valid JSON") from exc
    if not isinstance(index, dict):
        raise CacheConfigError(f"{root}/index.json is not an OCI index (not an object)")
    manifests = descriptors(index.get("manifests"), "index.json manifests")
    chosen = [m for m in manifests if m.annotations.get(ANN_IMAGE_NAME) == tag] or [
        m for m in manifests if m.annotations.get(ANN_REF_NAME) == tag
    ]
    if not chosen:
        raise CacheConfigError(f"{root} has no cache tagged {tag!r}")
    manifest = chosen[-1]
    config_desc, layers = parse_manifest(_read_small(root, manifest.digest))
    config = parse(_read_small(root, config_desc.digest))
    gha = annotate(config, {d.digest: d for d in layers})
    return LocalCache(
        config=gha,
        blobs={d.digest: blob_path(root, d.digest) for d in layers},
        manifest=manifest,
    )


def _write_blob(root: Path, data: bytes) -> Descriptor:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(root, digest)
    if not path.exists():
        _atomic_write(path, data)
    return Descriptor(media_type="", digest=digest, size=len(data))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_layout(root: Path, config: CacheConfig, *, tag: str = DEFAULT_TAG) -> Descriptor:
    """Write the config and manifest for ``config`` (gha flavour) and tag it.

    Layer blobs must already be in ``root/blobs/sha256`` (see ``blob_path``). An existing
    manifest with the same tag is replaced; other tags stay.

    Returns:
        The manifest descriptor added to index.json.
    """
    layers = layer_descriptors(config)
    config_blob = _write_blob(root, dumps(strip(config)))
    config_desc = Descriptor(
        media_type=CONFIG_MEDIA_TYPE, digest=config_blob.digest, size=config_blob.size
    )
    manifest_blob = _write_blob(root, image_manifest(config_desc, layers))
    manifest = Descriptor(
        media_type=OCI_MANIFEST,
        digest=manifest_blob.digest,
        size=manifest_blob.size,
        annotations={ANN_REF_NAME: tag},
    )
    _atomic_write(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    try:
        index = json.loads((root / "index.json").read_text())
    except (FileNotFoundError, ValueError):
        index = {}
    kept = [
        d
        for d in index.get("manifests") or []
        if not (isinstance(d, dict) and (d.get("annotations") or {}).get(ANN_REF_NAME) == tag)
    ]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*kept, manifest.to_json()]}
    _atomic_write(root / "index.json", go_json(index))
    return manifest

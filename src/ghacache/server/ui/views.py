"""What the dashboard pages show, assembled from catalog rows (pure: no IO, no HTTP)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ghacache.cacheconfig import keys as bk
from ghacache.index import Entry
from ghacache.index.catalog import RepoUsage
from ghacache.server.hitrate import Bucket
from ghacache.server.ui.charts import UsageBar, usage_bar


@dataclass(frozen=True, kw_only=True)
class RepoRow:
    """One repository on the overview."""

    repo: str
    owner: str
    name: str
    size: int
    count: int
    quota: int
    bar: UsageBar
    lookups: Bucket
    evicted: int


def split_repo(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    return owner, name


def repo_rows(
    usages: Iterable[RepoUsage],
    *,
    quotas: Mapping[str, int],
    lookups: Mapping[str, Bucket],
    evicted: Mapping[str, int],
) -> list[RepoRow]:
    """Every repository with entries, evictions or lookups, sorted by name.

    ``quotas`` must hold every repository named by the other arguments.
    """
    by_repo = {u.repo: u for u in usages}
    rows = []
    for repo in sorted(by_repo.keys() | lookups.keys() | evicted.keys()):
        usage = by_repo.get(repo)
        size, count = (usage.size, usage.count) if usage else (0, 0)
        owner, name = split_repo(repo)
        rows.append(
            RepoRow(
                repo=repo,
                owner=owner,
                name=name,
                size=size,
                count=count,
                quota=quotas[repo],
                bar=usage_bar(size, quotas[repo]),
                lookups=lookups.get(repo) or Bucket(start=0.0, hits=0, misses=0),
                evicted=evicted.get(repo, 0),
            )
        )
    return rows


def evictions_per_repo(counts: Mapping[tuple[str, str], tuple[int, int]]) -> dict[str, int]:
    """(repo, reason) -> (count, bytes) summed over reasons: repo -> entries removed."""
    out: dict[str, int] = {}
    for (repo, _reason), (count, _bytes) in counts.items():
        out[repo] = out.get(repo, 0) + count
    return out


@dataclass(frozen=True, kw_only=True)
class BuildkitFamily:
    """The index generations (``index-<scope>-1-<h8>#N``) of one BuildKit scope and git ref."""

    scope: str  # BuildKit's scope= (not the git ref)
    ref: str
    signed: bool
    generations: list[int]  # stored generations, newest first
    newest: Entry


def buildkit_families(entries: Iterable[Entry]) -> list[BuildkitFamily]:
    """Group index entries (oldest created first) by scope and ref; the newest created wins.

    Entries that are not BuildKit index generations are ignored.
    """
    found: dict[tuple[str, str], tuple[bk.IndexKey, list[int], Entry]] = {}
    for entry in entries:
        parsed = bk.parse_index_key(entry.key)
        if entry.version != bk.VERSION or parsed is None or parsed.generation is None:
            continue
        family = (entry.scope, parsed.base)
        generations = found[family][1] if family in found else []
        generations.append(parsed.generation)
        found[family] = (parsed, generations, entry)
    return [
        BuildkitFamily(
            scope=parsed.scope,
            ref=ref,
            signed=parsed.signed,
            generations=sorted(generations, reverse=True),
            newest=newest,
        )
        for (ref, _base), (parsed, generations, newest) in sorted(found.items())
    ]

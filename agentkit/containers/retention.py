"""Retention: finished run records (with their output and stderr) are pruned by age and/or count.

``AGENTKIT_RUN_RETENTION`` is an age (``30d``, ``12h``, ``90m``, ``45s``), a count (``5000``)
or both (``30d,5000``): a finished record goes once it is older than the age **or** beyond the
newest count. A running agent's record is never removed, checked three ways:

* only runs in the index are candidates, and the index holds finished runs only;
* runs this controller follows and every run the engine still lists (running, or ended but not
  yet recorded and removed) are skipped;
* on the host, a directory is removed only if it holds ``result.json`` (the mark of a finished
  run) and is not a symbolic link - checked by the same command that removes it.

Pruned ids get one ``pruned`` line in ``index.jsonl``; the index is compacted afterwards when
it carries many dead lines.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentkit.containers.models import ID_PATTERN, AgentStatus
from agentkit.errors import CommandFailed, ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agentkit.containers.registry import RunRegistry
    from agentkit.containers.runs import RunStore
    from agentkit.runtimes.base import Runtime

__all__ = ["PruneReport", "Retention", "prune_runs"]

PRUNE_INTERVAL = 3600.0  # seconds between background prunes while a controller runs
BATCH = 200  # record directories per host command
_PART = re.compile(r"(\d{1,9})([smhd]?)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# $@: run record directories. Removes each that holds result.json and is not a symbolic link,
# printing "<bytes>\t<dir>" for it first; others are left alone.
_REMOVE_FINISHED = r"""for d do
  if [ -L "$d" ] || [ ! -f "$d/result.json" ]; then continue; fi
  du -sb -- "$d" && rm -rf -- "$d"
done
exit 0
"""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many finished run records to keep (``None``: no bound)."""

    max_age_s: float | None = None
    max_count: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Retention | None:
        """``"30d"``, ``"5000"``, ``"30d,5000"``; ``None``/empty means keep everything."""
        if text is None or not text.strip():
            return None
        age: float | None = None
        count: int | None = None
        for part in re.split(r"[,\s]+", text.strip()[:100]):
            match = _PART.fullmatch(part)
            if not part or match is None:
                raise ConfigError(
                    f"AGENTKIT_RUN_RETENTION={text!r}: each part is an age like 30d, 12h, 90m "
                    "or a count like 5000 (e.g. '30d,5000')"
                )
            number, unit = int(match.group(1)), match.group(2)
            if unit:
                age = float(number * _UNIT[unit])
            else:
                count = number
        return cls(max_age_s=age, max_count=count)

    def describe(self) -> str:
        parts = []
        if self.max_age_s is not None:
            parts.append(f"younger than {self.max_age_s / 86400:g} days")
        if self.max_count is not None:
            parts.append(f"the newest {self.max_count}")
        return " and ".join(parts) or "everything"

    def expired(self, newest_first: list[AgentStatus], now: float) -> list[str]:
        """Ids of the runs this retention drops (``newest_first``: finished runs)."""
        out = []
        for rank, status in enumerate(newest_first):
            when = status.finished_at or status.created or 0.0
            too_many = self.max_count is not None and rank >= self.max_count
            too_old = self.max_age_s is not None and now - when > self.max_age_s
            if too_many or too_old:
                out.append(status.id)
        return out


@dataclass(slots=True)
class PruneReport:
    """What one prune did (``dry_run``: what it would do)."""

    retention: str
    candidates: int = 0
    pruned: list[str] = field(default_factory=list)
    skipped_live: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    kept: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "retention": self.retention,
            "candidates": self.candidates,
            "pruned": len(self.pruned),
            "pruned_ids": self.pruned[:50],
            "skipped_live": self.skipped_live,
            "bytes_freed": self.bytes_freed,
            "kept": self.kept,
            "dry_run": self.dry_run,
        }


async def prune_runs(
    retention: Retention,
    *,
    store: RunStore,
    registry: RunRegistry,
    runtime: Runtime,
    labels: Mapping[str, str | None],
    dry_run: bool = False,
    now: float | None = None,
) -> PruneReport:
    """Remove the finished records ``retention`` drops (never a running agent's)."""
    index = registry.index
    await index.refresh(force=True)
    finished = list(index.newest_first())
    candidates = retention.expired(finished, time.time() if now is None else now)
    report = PruneReport(retention.describe(), candidates=len(candidates), dry_run=dry_run)
    engine = {info.name for info in await runtime.list(labels)}
    live = {run.id for run in registry}
    chosen = []
    for run_id in candidates:
        if run_id in engine or run_id in live or not ID_PATTERN.fullmatch(run_id):
            report.skipped_live.append(run_id)
        else:
            chosen.append(run_id)
    if dry_run:
        report.pruned = chosen
        report.kept = len(finished) - len(chosen)
        return report
    for i in range(0, len(chosen), BATCH):
        batch = chosen[i : i + BATCH]
        result = await store.executor.run(
            ["sh", "-c", _REMOVE_FINISHED, "prune-runs", *(store.path(r) for r in batch)]
        )
        if not result.ok:
            raise CommandFailed(result)
        removed = []
        for line in result.stdout_text().splitlines():
            size, _, path = line.partition("\t")
            run_id = path.rstrip("/").rsplit("/", 1)[-1]
            if run_id in batch and size.isdigit():
                removed.append(run_id)
                report.bytes_freed += int(size)
        # a record that vanished already (another controller pruned it) goes from the index too
        gone = [r for r in batch if r not in removed and not await store.exists(r)]
        await index.drop(removed + gone)
        registry.pruned(removed + gone)
        report.pruned.extend(removed)
    report.kept = len(index)
    if index.wasted_lines > max(1000, len(index)):
        await index.compact()
    return report

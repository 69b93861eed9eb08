"""The queue index a tick keeps, by the blob ids of the queue and done files it was derived from.

A queue of 10,000 tasks is ~5 MB: parsing and validating it, finding its problems and walking it for
selection was most of a full tick, on every tick, though the files change only when someone edits
the queue or a task lands. The same bytes give the same answers, so what a tick derives
(ralph.queues.QueueIndex) is kept in `.ralph/cache/parallel/queue-index.json` under a key made of the
two files' git blob ids, the queue config that judged them valid, and the versions of the code that
did. A tick whose files did not change reads the index and builds only the tasks it starts.

The cache is only ever a shortcut: a file that is missing, damaged, edited by hand (its checksum no
longer matches) or written for other files is ignored, and the tick parses the queue as before.
Only a pair without problems is kept, so a bad queue is reported, from the files, on every tick.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic_core

from ralph import __version__
from ralph.bookkeeping import Mode, Source
from ralph.checkout import Checkout
from ralph.config import QueueConfig
from ralph.files import write_atomic
from ralph.queue import (
    MAX_QUEUE_BYTES,
    QueueFile,
    TaskStatus,
    parse_queue_bytes,
    read_queue_bytes,
)
from ralph.queues import QueueIndex, Queues, Ready

logger = logging.getLogger(__name__)

INDEX_NAME = "queue-index.json"
# Bumped whenever what QueueIndex holds, or how it is derived, changes: an index written by other code
# is another index.
INDEX_FORMAT = 1
# An index larger than this is not worth reading: no queue ralph accepts gives one.
MAX_INDEX_BYTES = 64 * 1024 * 1024


def blob_id(data: bytes | None, *, like: str = "0" * 40) -> str:
    """The id git gives these bytes as a blob (`git hash-object`) in a repository whose object ids look
    like `like` (40 hex digits: SHA-1; 64: SHA-256); "none" for a file that is absent."""
    if data is None:
        return "none"
    digest = hashlib.new("sha256" if len(like) == 64 else "sha1", usedforsecurity=False)
    digest.update(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


def read_base_queues(checkout: Checkout, source: Source, *, write: bool = True) -> Queues:
    """The queue and done archive as `source` has them, validated (QueueError on the first problem, as
    bookkeeping.read_queues followed by Queues.validate); `write`: keep the index of a new pair."""
    config = checkout.config.queue
    cache = checkout.paths.parallel / INDEX_NAME
    if source.mode is Mode.UNTRACKED:
        queue_path, done_path = checkout.paths.queue_file(), checkout.paths.done_file()
        local = read_queue_bytes(queue_path), read_queue_bytes(done_path)
        return read_pair(
            (blob_id(local[0]), blob_id(local[1])),
            lambda: local,
            sources=(str(queue_path), str(done_path)),
            names=(checkout.paths.relative(queue_path), checkout.paths.relative(done_path)),
            config=config,
            cache=cache,
            write=write,
        )
    names = (f"{source.label}:{source.queue_path}", f"{source.label}:{source.done_path}")
    return read_pair(
        (source.ids[source.queue_path], source.ids[source.done_path]),
        source.contents,
        sources=names,
        names=names,
        config=config,
        cache=cache,
        write=write,
    )


def read_pair(
    ids: tuple[str, str],
    contents: Callable[[], tuple[bytes | None, bytes | None]],
    *,
    sources: tuple[str, str],
    names: tuple[str, str],
    config: QueueConfig,
    cache: Path,
    write: bool,
) -> Queues:
    """Queues for the queue and done files of these blob ids (`contents` gives their bytes, None for an
    absent file: an empty queue, and is called only when the index is not kept), valid under `config`.

    `sources` name the files in parse errors, `names` in problems (as the callers always did).
    """

    def parse() -> tuple[QueueFile, QueueFile]:
        queue, done = contents()
        return parse_queue_bytes(queue, sources[0]), parse_queue_bytes(done, sources[1])

    key = index_key(*ids, config)
    index = load_index(cache, key)
    if index is not None:
        return Queues(queue_name=names[0], done_name=names[1], index=index, parse=parse)
    queue_file, done_file = parse()
    queues = Queues(queue_file, done_file, names[0], names[1])
    queues.validate(config)
    queues.index = QueueIndex.of(queue_file, done_file, valid_for=(config.id_prefix, config.id_width))
    if write:
        save_index(cache, key, queues.index)
    return queues


def keep_landed(checkout: Checkout, queue: bytes, done: bytes, queues: Queues, *, tip: str) -> None:
    """After this tick's own landing the files just pushed (at `tip`) are the base's, and their models
    are at hand: keep their index now, or the next tick, meeting new blob ids, parses and validates the
    whole queue again. Only a pair a read would accept is kept (within the size limit, no problems)."""
    config = checkout.config.queue
    if max(len(queue), len(done)) > MAX_QUEUE_BYTES or queues.problems(config):
        return
    index = QueueIndex.of(queues.queue, queues.done, valid_for=(config.id_prefix, config.id_width))
    key = index_key(blob_id(queue, like=tip), blob_id(done, like=tip), config)
    save_index(checkout.paths.parallel / INDEX_NAME, key, index)


def index_key(queue: str, done: str, config: QueueConfig) -> str:
    """What the index of the files of these blob ids depends on: their bytes (by the ids), the task ids
    the config allows, the code."""
    parts = (
        f"format {INDEX_FORMAT}",
        f"ralph {__version__}",
        f"pydantic-core {pydantic_core.__version__}",
        f"queue {queue}",
        f"done {done}",
        f"ids {config.id_prefix} {config.id_width}",
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# --- the file ------------------------------------------------------------------------------------
#
# Line one is the sha256 of the rest, which is the index as JSON: a hand edit or a torn copy does not
# match it and is ignored. The body is plain lists, read without pydantic (a few milliseconds for a
# 10,000-task queue, where validating the queue takes ~150).


def save_index(path: Path, key: str, index: QueueIndex) -> None:
    body = json.dumps(
        {
            "key": key,
            "valid_for": list(index.valid_for),
            "queue": [[i, s.value] for i, s in index.queue],
            "done": [[i, s.value] for i, s in index.done],
            "ready": [[r.position, r.id, r.status.value, r.scheduled_start, r.text] for r in index.ready],
            "scheduled": [at.isoformat() for at in index.scheduled],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    except OSError as e:  # a shortcut that cannot be kept is only slower next time
        logger.info("could not keep the queue index in %s: %s", path, e.strerror or e)


def load_index(path: Path, key: str) -> QueueIndex | None:
    """The index kept under `key`, or None when there is none that can be trusted."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_INDEX_BYTES + 1)
    except OSError:
        return None
    check, _, body = data.partition(b"\n")
    if len(data) > MAX_INDEX_BYTES or check != hashlib.sha256(body).hexdigest().encode():
        logger.debug("%s: damaged or edited; ignored", path)
        return None
    try:
        raw = json.loads(body)
        if raw["key"] != key:
            return None  # the index of other files, or of other code
        return _index_from(raw)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        logger.debug("%s: not a queue index (%s); ignored", path, e)
        return None


# A lookup, not TaskStatus(value): the enum's constructor is most of reading 10,000 statuses.
_STATUSES = {s.value: s for s in TaskStatus}


def _index_from(raw: dict[str, Any]) -> QueueIndex:
    queue = [(str(i), _STATUSES[s]) for i, s in raw["queue"]]
    ready = [
        Ready(int(n), str(i), _STATUSES[s], _optional(at), _optional(text))
        for n, i, s, at, text in raw["ready"]
    ]
    if any(not 0 <= r.position < len(queue) or queue[r.position][0] != r.id for r in ready):
        raise ValueError("a ready task is not where the queue has it")
    prefix, width = raw["valid_for"]
    return QueueIndex(
        queue=queue,
        done=[(str(i), _STATUSES[s]) for i, s in raw["done"]],
        ready=ready,
        scheduled=[_aware(datetime.fromisoformat(at)) for at in raw["scheduled"]],
        valid_for=(str(prefix), int(width)),
    )


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{value} has no offset")
    return value


def _optional(value: object) -> str | None:
    return None if value is None else str(value)

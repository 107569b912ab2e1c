"""models.check_memo: the data checks' answers, kept while the data is unchanged."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import InvalidInput
from models.check_memo import SKIPPED, CheckMemo


def test_requests_queued_behind_one_check_take_its_answer() -> None:
    """Five submissions naming the same new file each read it in turn behind the guard
    (review, session 20): the answer is looked up again once the guard is held."""
    memo, guard, runs = CheckMemo(4), threading.Lock(), []

    def check() -> None:
        runs.append(1)
        time.sleep(0.2)

    threads = [threading.Thread(target=memo.run, args=("k", (1,), check, guard)) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs) == 1


def test_what_the_system_caused_or_a_skipped_check_is_not_kept() -> None:
    """A permission denied (the image runs as a user of its own) or a MemoryError was kept
    as the file's refusal, and a chmod does not change a file's contents' signature."""
    memo, runs = CheckMemo(4), []

    def denied() -> None:
        runs.append("denied")
        try:
            raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise InvalidInput("v.npz: Permission denied", field="validation_data") from exc

    for _ in range(2):
        with pytest.raises(InvalidInput, match="Permission denied"):
            memo.run("k", (1,), denied)
    assert runs == ["denied", "denied"]

    def skipped() -> object:
        runs.append("skipped")
        return SKIPPED

    memo.run("s", (1,), skipped)
    memo.run("s", (1,), skipped)
    assert runs[-2:] == ["skipped", "skipped"]

    def refused() -> None:
        runs.append("refused")
        raise InvalidInput("labels must lie in 0..9", field="validation_data")

    for _ in range(2):
        with pytest.raises(InvalidInput, match="labels must lie"):
            memo.run("r", (1,), refused)
    assert runs.count("refused") == 1  # the data's own refusal is kept
    with pytest.raises(InvalidInput):
        memo.run("r", (2,), refused)  # until the data changes
    assert runs.count("refused") == 2

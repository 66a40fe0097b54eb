"""shared.ids: block-drawn random ids are valid UUIDv4 text, distinct, and not shared across fork."""

from __future__ import annotations

import os
import uuid

from shared.ids import BLOCK, random_hex, uuid4_text


def test_uuid4_text_is_canonical_version_4_and_distinct() -> None:
    ids = [uuid4_text() for _ in range(3 * BLOCK + 7)]  # crosses several refills
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_random_hex_is_128_bits_of_hex() -> None:
    values = {random_hex() for _ in range(1000)}
    assert len(values) == 1000
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in values)


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    uuid4_text()  # the parent holds a partly used block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next id and leave at once
        os.write(write, uuid4_text().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != uuid4_text()

"""Token ids to the text a client may see, one step at a time.

:class:`TextStream` turns a growing list of generated token ids into text deltas that are safe to
send: no broken UTF-8 (a byte-level tokenizer can split a character over several tokens; the
delta waits until the character is whole) and no piece of a stop string (text that could still
grow into one of the request's ``stop`` strings is held back until it cannot; once a stop string
appears, the text before it is the last delta and the stream is finished). OpenAI's API promises
both: a client never sees a stop string streamed and then cut, nor half a character.

The decoding follows the usual incremental scheme: the text of the tokens since a recent
``prefix`` offset is decoded whole and compared with the text of the same prefix, so a token
whose text depends on its neighbours (a leading space, a merged byte) decodes as it would in the
full sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"
"""What a tokenizer decodes an incomplete UTF-8 sequence to."""


class TextStream:
    """Feed generated ids with :meth:`push`; each call returns the text that became safe to send.

    ``stop``: strings that end the answer (not included in it). After a stop string, ``stopped``
    is True and :meth:`push` returns nothing more. :meth:`flush` returns the text held back at the
    end of the generation (a stop string's prefix that never completed). ``text`` is the whole
    answer sent so far.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self._prefix = 0  # ids[_prefix:_read] decode to text already taken
        self._read = 0
        self._held = ""  # safe UTF-8 not yet sent: it could begin a stop string
        self.text = ""
        self.stopped = False

    def push(self, new_ids: Sequence[int]) -> str:
        if self.stopped:
            return ""
        self.ids.extend(new_ids)
        piece = self._decode_new()
        if not piece:
            return ""
        return self._release(self._held + piece)

    def flush(self) -> str:
        """The text held back, at the end of the generation: a stop string's prefix that never
        completed, and bytes that never made a whole character (sent as U+FFFD, as a full decode
        shows them)."""
        if self.stopped:
            return ""
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        after = decode(self.ids[self._prefix :], skip_special_tokens=True)
        self._prefix = self._read = len(self.ids)
        pending = self._held + (str(after[len(before) :]) if len(after) > len(before) else "")
        self._held = ""
        cut = min((i for i in (pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            pending = pending[:cut]
        self.text += pending
        return pending

    def _decode_new(self) -> str:
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read], skip_special_tokens=True)
        after = decode(self.ids[self._prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""  # nothing new, or a character still incomplete
        self._prefix, self._read = self._read, len(self.ids)
        return str(after[len(before) :])

    def _release(self, pending: str) -> str:
        if not self.stop:
            self.text += pending
            return pending
        cut = min((i for i in (pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            out = pending[:cut]
            self.text += out
            return out
        keep = _longest_stop_prefix(pending, self.stop)
        out = pending[: len(pending) - keep]
        self._held = pending[len(pending) - keep :]
        self.text += out
        return out


def _longest_stop_prefix(text: str, stops: Sequence[str]) -> int:
    """The length of the longest suffix of ``text`` that begins one of ``stops``."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best

"""Per-stream evidence: what one tool/model pair of a user does, apart from the rest.

A script runs on top of its owner's ordinary use, and in user-level features the
owner's traffic blurs the script's clockwork. Requests are therefore also split into
streams keyed by ``client/model`` (a script pins both; the owner's chat or coding tool
is another stream), and each stream keeps its own recent gaps, prompt fingerprints and
context sizes. At most ``MAX_STREAMS`` streams per user are tracked, space-saving style:
a new stream replaces the least used one, so a busy script is never the one evicted.

Regularity is robust: the median absolute deviation of log gaps over the last
``RING`` gaps, so a few pauses (a retry, a laptop lid) do not hide a cadence the way
they inflate a variance. It is re-measured every ``CHECK_EVERY`` requests of the
stream, which keeps the per-event cost O(1) and the state a deterministic function
of the events. Besides the robust spread, a window counts as paced by a script when its
gaps stay in a narrow band (log q95/q5) or never pause (log q95/median); scoring only
believes those after the stream has kept it up for a while.

Each stream also keeps an hourly activity mask (a process busy every hour of a day),
requests per 6 h block (growth free of the owner's daily rhythm), and its last few
session ids (ids rotated on a timer: each new session starts without a pause and two
are never open at once).
"""

from __future__ import annotations

import math
import struct
from array import array

MAX_STREAMS = 4
RING = 48  # recent gaps per stream
PROMPT_RING = 64  # recent prompt fingerprints per stream
CHECK_EVERY = 8
BREAK_MS = 15 * 60_000  # a pause this long ends a continuous run
REGULAR_RSD = 0.35  # robust sd of log gaps under which a stream counts as paced by a clock
BOUNDED_SPAN = 1.5  # ... or log(q95 / q5) of its gaps below this: a narrow band of gaps
CALM_HI = 0.6  # ... or log(q95 / median) below this: no pauses at all, only a slowest-call tail
# People's gap windows pass one of these tests now and then, but only for minutes (a
# stretch of an agent session, gaps seconds apart); a script passes for hours. Scoring
# therefore weighs how long a stream has stayed in the regime, not a single window.
BIG_CONTEXT = 100_000
LABEL_MAX = 48
HOUR_MS = 3_600_000
BLOCK_HOURS = 6  # growth resolution, as the user-level blocks
BLOCKS = 8
SESSION_RING = 8  # distinct session keys remembered per stream
MIN_SESSION = 4  # shorter sessions (a fresh id per request, say) say nothing about pauses
SEAMLESS_GAPS = 4.0  # a new session this soon (in median gaps) after the last request: no pause
_MASK64 = (1 << 64) - 1
_HEAD = struct.Struct("<qqqqiiQQdddddQqHHH")
VERSION = 0x85  # first byte of a serialised Streams; older state began with a count 0..4


def _fingerprint(prompt_hash: str) -> int:
    try:
        return int(prompt_hash[:4], 16) % 0xFFFF + 1 if prompt_hash else 0
    except ValueError:
        return 0


class Stream:
    """Recent behaviour of one client/model stream of one user."""

    __slots__ = (
        "big_bits",
        "blocks",
        "first_ts",
        "gaps",
        "hi",
        "hour",
        "hour_mask",
        "label",
        "last_ts",
        "med_gap",
        "n",
        "near",
        "prompts",
        "regular_since",
        "rep_bits",
        "rsd",
        "seam_bits",
        "seam_n",
        "sess_len",
        "sessions",
        "span",
        "up_since",
    )

    def __init__(self, label: str, ts: int) -> None:
        self.label = label
        self.first_ts = self.last_ts = self.up_since = ts
        self.n = 0
        self.regular_since = 0
        self.gaps = array("I", bytes(4 * RING))
        self.prompts = array("H", bytes(2 * PROMPT_RING))
        self.rep_bits = self.big_bits = 0  # last 64 requests: repeated prompt / ≥100k uncached
        self.med_gap = self.rsd = self.near = self.span = 0.0
        self.hi = 9.0  # log(q95 / median gap); large until measured
        self.hour = ts // HOUR_MS
        self.hour_mask = 1  # bit i: a request in the hour i hours before ``hour``
        self.blocks = array("H", bytes(2 * BLOCKS))  # requests per 6 h block (ring by block number)
        self.sessions = array("I", bytes(4 * SESSION_RING))  # last distinct session keys, newest last
        self.seam_bits = self.seam_n = 0  # new sessions begun without a pause, since the last overlap
        self.sess_len = 0  # requests in the current session

    def update(self, ts: int, uncached: int, prompt_hash: str, session: int = 0) -> None:
        gap = ts - self.last_ts
        if self.n:
            gap = max(0, gap)
            if gap > BREAK_MS:  # a pause ends a run, and any cadence with it
                self.up_since = ts
                self.regular_since = 0
            self.gaps[(self.n - 1) % RING] = min(gap, 0xFFFFFFFF)
        hour = ts // HOUR_MS
        if hour > self.hour:
            block, old = hour // BLOCK_HOURS, self.hour // BLOCK_HOURS
            for b in range(old + 1, min(block, old + BLOCKS) + 1):
                self.blocks[b % BLOCKS] = 0
            self.hour_mask = (self.hour_mask << min(hour - self.hour, 64)) & _MASK64 | 1
            self.hour = hour
        slot = self.hour // BLOCK_HOURS % BLOCKS
        if self.blocks[slot] < 0xFFFF:
            self.blocks[slot] += 1
        fp = _fingerprint(prompt_hash)
        seen = fp != 0 and fp in self.prompts
        self.prompts[self.n % PROMPT_RING] = fp
        self.rep_bits = ((self.rep_bits << 1) | seen) & _MASK64
        self.big_bits = ((self.big_bits << 1) | (uncached >= BIG_CONTEXT)) & _MASK64
        if self.n and session != self.sessions[-1]:
            self._new_session(session, gap)
            self.sess_len = 0
        elif not self.n:
            self.sessions[-1] = session
        if self.sess_len < 0xFFFF:
            self.sess_len += 1
        self.n += 1
        self.last_ts = max(self.last_ts, ts)
        if self.n % (CHECK_EVERY if self.n > RING else CHECK_EVERY // 2) == 0:
            self._measure()  # twice as often while the ring fills: first evidence sooner

    def _new_session(self, session: int, gap: int) -> None:
        """A script that rotates session ids starts each one the moment the last one ends, and
        never has two open at once; people pause between conversations, and agent users
        run several side by side (a return to an open one resets the evidence)."""
        ring = self.sessions
        if session in ring:  # back to one still open: sessions overlap
            self.seam_bits = self.seam_n = 0
            ring.remove(session)
        else:
            del ring[0]
            if self.sess_len >= MIN_SESSION:  # a conversation ended (not a fresh id per request)
                # A timer that rotates ids fires more often inside a long gap than a short one, so
                # the gap at a switch runs longer than the median gap even with no pause at all.
                seamless = self.med_gap > 0 and gap <= SEAMLESS_GAPS * self.med_gap * 1000
                self.seam_bits = ((self.seam_bits << 1) | seamless) & 0xFFFF
                self.seam_n = min(self.seam_n + 1, 0xFFFF)
        ring.append(session)

    def seamless_sessions(self, last: int = 12) -> tuple[int, int]:
        """(new sessions begun without a pause, new sessions) among the last ``last``."""
        n = min(last, self.seam_n)
        return (self.seam_bits & ((1 << n) - 1)).bit_count(), n

    def _measure(self) -> None:
        """Median gap, robust spread and near-identical share of the recent gaps."""
        count = min(self.n - 1, RING)
        if count < 12:
            return
        gaps = sorted(self.gaps[:count])
        med = gaps[count // 2]
        logs = sorted(abs(math.log((g + 50) / (med + 50))) for g in gaps)
        self.med_gap, self.rsd = med / 1000.0, 1.4826 * logs[count // 2]
        self.near = sum(1 for x in logs if x < 0.02) / count
        # Bounded gaps: a sleep(uniform(a, b)) loop never pauses; people's gaps are heavy-tailed.
        q95 = gaps[count - 1 - count // 20] + 50
        self.span = math.log(q95 / (gaps[count // 20] + 50))
        self.hi = math.log(q95 / (med + 50))  # a loop that never pauses: its slowest calls only
        if self.rsd >= REGULAR_RSD and self.span >= BOUNDED_SPAN and self.hi >= CALM_HI:
            self.regular_since = 0
        elif self.regular_since == 0:  # the cadence began when the gaps in the ring did,
            # or at the last pause, when the ring reaches back past one
            self.regular_since = max(self.first_ts, self.up_since, self.last_ts - sum(gaps))

    # ---- derived ----------------------------------------------------------------------

    def hours_without_rest(self, now: int) -> int:
        """Consecutive hours with requests, back from the current hour (or the one before)."""
        mask = (self.hour_mask << min(max(0, now // HOUR_MS - self.hour), 64)) & _MASK64
        if not mask & 1:
            mask >>= 1  # the current hour may only just have begun
        return (~mask & (mask + 1)).bit_length() - 1

    def block_counts(self, now: int) -> list[int]:
        """Requests per 6 h block, oldest first, ending with the block of ``now``."""
        current, last = now // HOUR_MS // BLOCK_HOURS, self.hour // BLOCK_HOURS
        return [self.blocks[b % BLOCKS] if last - BLOCKS < b <= last else 0
                for b in range(current - BLOCKS + 1, current + 1)]

    def recent(self) -> int:
        return min(self.n, 64)

    def repeat_share(self) -> float:
        return self.rep_bits.bit_count() / self.recent() if self.n else 0.0

    def big_share(self) -> float:
        return self.big_bits.bit_count() / self.recent() if self.n else 0.0

    # ---- serialisation ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        label = self.label.encode()
        head = _HEAD.pack(self.first_ts, self.last_ts, self.up_since, self.regular_since, self.n,
                          len(label), self.rep_bits, self.big_bits, self.med_gap,
                          self.rsd, self.near, self.span, self.hi, self.hour_mask, self.hour,
                          self.seam_bits, self.seam_n, self.sess_len)
        count = min(max(self.n - 1, 0), RING)
        prompts = min(self.n, PROMPT_RING)
        return (head + label + self.blocks.tobytes() + self.sessions.tobytes() + self.gaps[:count].tobytes()
                + self.prompts[:prompts].tobytes())

    @classmethod
    def from_bytes(cls, data: bytes, pos: int) -> tuple[Stream, int]:
        (first, last, up, regular, n, label_len, rep, big, med, rsd,
         near, span, hi, hour_mask, hour, seam_bits, seam_n, sess_len) = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        s = cls(data[pos:pos + label_len].decode(errors="replace"), first)
        pos += label_len
        s.last_ts, s.up_since, s.regular_since, s.n = last, up, regular, n
        s.rep_bits, s.big_bits, s.med_gap, s.rsd, s.near, s.span, s.hi = rep, big, med, rsd, near, span, hi
        s.hour_mask, s.hour, s.seam_bits, s.seam_n, s.sess_len = hour_mask, hour, seam_bits, seam_n, sess_len
        count, prompts = min(max(n - 1, 0), RING), min(n, PROMPT_RING)
        s.blocks = array("H", data[pos:pos + 2 * BLOCKS])
        pos += 2 * BLOCKS
        s.sessions = array("I", data[pos:pos + 4 * SESSION_RING])
        pos += 4 * SESSION_RING
        s.gaps[:count] = array("I", data[pos:pos + 4 * count])
        pos += 4 * count
        s.prompts[:prompts] = array("H", data[pos:pos + 2 * prompts])
        return s, pos + 2 * prompts


class Streams:
    """The few most active streams of one user."""

    __slots__ = ("table",)

    def __init__(self) -> None:
        self.table: dict[str, Stream] = {}

    def update(self, ts: int, client: str, model: str, uncached: int, prompt_hash: str,
               session: int = 0) -> None:
        label = f"{client or '-'}/{model}"[:LABEL_MAX]
        stream = self.table.get(label)
        if stream is None:
            if len(self.table) >= MAX_STREAMS:
                del self.table[min(self.table, key=lambda k: self.table[k].n)]
            stream = self.table[label] = Stream(label, ts)
        stream.update(ts, uncached, prompt_hash, session)

    def to_bytes(self) -> bytes:
        return bytes([VERSION, len(self.table)]) + b"".join(s.to_bytes() for s in self.table.values())

    @classmethod
    def from_bytes(cls, data: bytes, pos: int) -> tuple[Streams, int]:
        """Streams written before VERSION (a bare count, fewer fields) start over empty."""
        out = cls()
        if data[pos] != VERSION:
            return out, len(data)
        count, pos = data[pos + 1], pos + 2
        for _ in range(count):
            stream, pos = Stream.from_bytes(data, pos)
            out.table[stream.label] = stream
        return out, pos

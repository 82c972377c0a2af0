"""Online per-user features for bot detection, updated one event at a time in event time.

Everything is O(1) per event and bounded per user (about 1.8 KB serialised): decayed
moments instead of windows of raw events, bit masks for activity rhythm, a sampled
Bloom filter pair and a tiny heavy-hitter table for prompt repetition. Decays are per
event for shapes (gaps, sizes) and per clock unit for volumes, so a quiet user's
baseline does not move while they sleep.
"""

from __future__ import annotations

import math
import struct
import zlib

from stream_processors.detection.streams import Streams

SLOT_MS = 10 * 60_000  # rhythm resolution: ten minutes
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BLOCK_MS = 6 * HOUR_MS  # growth resolution: quarter days
BLOCKS = 16
SLOTS = 144  # one day of ten-minute slots
BIG_CONTEXT = 100_000  # uncached input tokens that only padding produces routinely
A_GAP = 1 / 48  # ~ the last 50 gaps
A_SHAPE = 1 / 64
A_CONC = 0.1  # per minute sample: ~10 minutes
MAX_SESSIONS = 24
MG_K = 4
MG_WINDOW = 2048
BLOOM_BITS = 4096
BLOOM_GEN = 256  # sampled inserts per filter generation
SAMPLE_MASK = 7  # 1 in 8 prompts (chosen by hash, so repeats are always sampled alike)
REGULAR_SD = 0.5  # sd of log inter-arrival gaps below which a cadence counts as scripted
_M64 = (1 << 64) - 1
_SLOT_MASK = (1 << SLOTS) - 1
_SCALARS = struct.Struct("<qqqqqqqqqqq" + "d" * 24)
_FLOATS = struct.Struct("<" + "d" * (16 + BLOCKS))  # doubles: a restored state goes on bit for bit
_FLOATS_V1 = struct.Struct("<" + "f" * (16 + BLOCKS))  # the layout before: rounded to float32
_TRAILER = struct.Struct("<BQ")  # fields added after the streams, behind a version byte
TRAILER_VERSION = 2


def _mix(prompt_hash: str) -> int:
    try:
        value = int(prompt_hash[:16], 16)
    except ValueError:
        return 0
    return (value * 0x9E3779B97F4A7C15 + 1) & _M64


def _sd(mean: float, m2: float) -> float:
    return math.sqrt(max(0.0, m2 - mean * mean))


class UserFeatures:
    """Feature state of one user. Call ``update`` with events in (roughly) event-time order."""

    __slots__ = (
        "big",
        "big_hits",
        "block",
        "blocks",
        "bloom0",
        "bloom1",
        "bloom_count",
        "cache_share",
        "closed_tokens",
        "conc",
        "conc_ts",
        "d_n",
        "day",
        "day_base",
        "day_tokens",
        "first_ts",
        "g_m2",
        "g_mean",
        "hist",
        "hour",
        "hour_base",
        "hour_mask",
        "hour_tokens",
        "last_ts",
        "lg_m2",
        "lg_mean",
        "mg",
        "mg_n",
        "n",
        "n_gaps",
        "prev_gap",
        "regular_since",
        "rep",
        "rep_hits",
        "rep_n",
        "seq_bits",
        "sessions",
        "slot",
        "slot_mask",
        "ss_g_mean",
        "ss_last",
        "ss_lg_m2",
        "ss_lg_mean",
        "ss_n",
        "ss_regular_since",
        "streams",
        "sz_m2",
        "sz_mean",
        "tokens",
        "unc_mean",
    )

    def __init__(self) -> None:
        self.first_ts = self.last_ts = self.n = self.n_gaps = self.regular_since = 0
        self.ss_last = self.ss_n = self.ss_regular_since = self.hour = self.day = self.block = 0
        self.prev_gap = self.lg_mean = self.lg_m2 = self.g_mean = self.g_m2 = 0.0
        self.ss_lg_mean = self.ss_lg_m2 = self.ss_g_mean = self.conc = 0.0
        self.conc_ts = 0
        self.rep = self.sz_mean = self.sz_m2 = self.big = self.unc_mean = self.cache_share = 0.0
        self.rep_n = 0
        self.seq_bits = 0  # last 64 sampled prompts: 1 = seen before (a replayed sequence is all 1s)
        self.big_hits = 0.0  # near-limit uncached requests, halved every 6 h
        self.rep_hits = 0.0  # sampled repeats, halved every 6 h: repetition volume, not share
        self.hour_tokens = self.hour_base = self.day_tokens = self.day_base = self.tokens = 0.0
        self.d_n = 0
        self.closed_tokens = 0.0  # tokens of the day this update left behind (for peers); not stored
        self.hist = [0.0] * 16  # log2 buckets of gaps, 0.5 s .. 4.5 h
        self.blocks = [0.0] * BLOCKS  # requests per 6 h block, ring
        self.bloom0 = self.bloom1 = self.bloom_count = 0
        self.hour_mask = self.slot = self.slot_mask = 0
        self.sessions: dict[int, list[int]] = {}  # crc32(session) -> [first, last, count]
        self.mg: dict[int, int] = {}  # Misra-Gries heavy prompts
        self.mg_n = 0
        self.streams = Streams()  # per client/model evidence, apart from the owner's other use

    # ---- update -------------------------------------------------------------------

    def update(self, ts: int, tokens: int, uncached: int, cache_read: int,
               session_id: str, prompt_hash: str, client: str = "", model: str = "") -> None:
        if self.n == 0:
            self._start(ts)
        else:
            if ts < self.last_ts:
                ts = self.last_ts  # late event: never move the clock back
            self._gap(ts, (ts - self.last_ts) / 1000.0)
        self._clock(ts, tokens)
        key = self._session(ts, session_id)
        self._prompt(prompt_hash)
        self._size(uncached, cache_read)
        self.streams.update(ts, client, model, uncached, prompt_hash, key)
        self.n += 1
        self.last_ts = ts

    def _start(self, ts: int) -> None:
        self.first_ts = self.last_ts = self.conc_ts = ts
        self.hour, self.day = ts // HOUR_MS, ts // DAY_MS
        self.block, self.slot = ts // BLOCK_MS, ts // SLOT_MS

    def _gap(self, ts: int, gap: float) -> None:
        lg = math.log(gap + 0.05)
        if self.n_gaps == 0:
            self.lg_mean, self.lg_m2, self.g_mean, self.g_m2 = lg, lg * lg, gap, gap * gap
        else:
            self.lg_mean += A_GAP * (lg - self.lg_mean)
            self.lg_m2 += A_GAP * (lg * lg - self.lg_m2)
            self.g_mean += A_GAP * (gap - self.g_mean)
            self.g_m2 += A_GAP * (gap * gap - self.g_m2)
        self.n_gaps += 1
        hist = self.hist
        bucket = min(15, max(0, int(lg * 1.4427) + 1))
        for i in range(16):
            hist[i] *= 1 - A_SHAPE
        hist[bucket] += A_SHAPE
        regular = self.n_gaps >= 24 and self.lg_m2 - self.lg_mean * self.lg_mean < REGULAR_SD**2
        if not regular:
            self.regular_since = 0
        elif self.regular_since == 0:
            # The moments summarise ~1/A_GAP gaps, so the cadence began that long ago.
            self.regular_since = max(self.first_ts, ts - int(self.g_mean * 1000 / A_GAP / 2))

    def _clock(self, ts: int, tokens: int) -> None:
        hour = ts // HOUR_MS
        if hour != self.hour:
            if self.hour_tokens > 0:  # baseline of active hours only: night zeros are not "normal"
                self.hour_base = self.hour_tokens if self.hour_base == 0 else (
                    self.hour_base + 0.1 * (self.hour_tokens - self.hour_base))
            self.hour_mask = (self.hour_mask << min(hour - self.hour, 48)) & ((1 << 48) - 1)
            self.hour, self.hour_tokens = hour, 0.0
        self.hour_mask |= 1
        self.hour_tokens += tokens
        day = ts // DAY_MS
        if day != self.day:
            self.closed_tokens = self.day_tokens
            for _ in range(min(day - self.day, 7)):  # idle days count as zero usage
                self.day_base = self.day_tokens if self.d_n == 0 else (
                    self.day_base + 0.3 * (self.day_tokens - self.day_base))
                self.d_n += 1
                self.day_tokens = 0.0
            self.day = day
        self.day_tokens += tokens
        self.tokens += tokens
        block = ts // BLOCK_MS
        if block != self.block:
            self.rep_hits *= 0.5 ** min(block - self.block, 60)
            self.big_hits *= 0.5 ** min(block - self.block, 60)
            for b in range(self.block + 1, min(block, self.block + BLOCKS) + 1):
                self.blocks[b % BLOCKS] = 0.0
            self.block = block
        self.blocks[block % BLOCKS] += 1
        slot = ts // SLOT_MS
        if slot != self.slot:
            self.slot_mask = (self.slot_mask << min(slot - self.slot, SLOTS)) & _SLOT_MASK
            self.slot = slot
        self.slot_mask |= 1

    def _session(self, ts: int, session_id: str) -> int:
        key = zlib.crc32(session_id.encode())
        sessions = self.sessions
        entry = sessions.get(key)
        if entry is not None:
            entry[1] = ts
            entry[2] += 1
        else:
            self._session_start(ts)
            if len(sessions) >= MAX_SESSIONS:
                del sessions[min(sessions, key=lambda k: sessions[k][1])]
            sessions[key] = [ts, ts, 1]
        if ts - self.conc_ts >= 60_000:  # sample concurrency once a minute of event time
            cutoff = ts - 300_000
            live = sum(1 for e in sessions.values() if e[1] >= cutoff and e[2] >= 2)
            self.conc += A_CONC * (live - self.conc)
            self.conc_ts = ts
        return key

    def _session_start(self, ts: int) -> None:
        if self.ss_n > 0:
            gap = (ts - self.ss_last) / 1000.0
            lg = math.log(gap + 0.05)
            if self.ss_n == 1:
                self.ss_lg_mean, self.ss_lg_m2, self.ss_g_mean = lg, lg * lg, gap
            else:
                self.ss_lg_mean += A_GAP * (lg - self.ss_lg_mean)
                self.ss_lg_m2 += A_GAP * (lg * lg - self.ss_lg_m2)
                self.ss_g_mean += A_GAP * (gap - self.ss_g_mean)
            regular = self.ss_n >= 24 and self.ss_lg_m2 - self.ss_lg_mean**2 < REGULAR_SD**2
            if not regular:
                self.ss_regular_since = 0
            elif self.ss_regular_since == 0:
                self.ss_regular_since = max(self.first_ts, ts - int(self.ss_g_mean * 1000 / A_GAP / 2))
        self.ss_n += 1
        self.ss_last = ts

    def _prompt(self, prompt_hash: str) -> None:
        if not prompt_hash:
            return
        h = _mix(prompt_hash)
        mg = self.mg
        if h in mg:
            mg[h] += 1
        elif len(mg) < MG_K:
            mg[h] = 1
        else:
            for k in list(mg):
                mg[k] -= 1
                if mg[k] == 0:
                    del mg[k]
        self.mg_n += 1
        if self.mg_n >= MG_WINDOW:  # halve: a sliding-ish window without storing events
            self.mg_n //= 2
            self.mg = {k: v // 2 for k, v in mg.items() if v > 1}
        if h & SAMPLE_MASK:
            return
        bits = (1 << ((h >> 8) & 4095)) | (1 << ((h >> 20) & 4095)) | (1 << ((h >> 32) & 4095)) | (
            1 << ((h >> 44) & 4095))
        seen = (self.bloom0 & bits) == bits or (self.bloom1 & bits) == bits
        self.rep += (1 / 32 if self.rep_n < 32 else A_SHAPE) * (seen - self.rep)
        self.rep_n += 1
        self.rep_hits += seen
        self.seq_bits = ((self.seq_bits << 1) | seen) & _M64
        self.bloom0 |= bits
        self.bloom_count += 1
        if self.bloom_count >= BLOOM_GEN:  # rotate: remember the last 256..512 sampled prompts
            self.bloom1, self.bloom0, self.bloom_count = self.bloom0, 0, 0

    def _size(self, uncached: int, cache_read: int) -> None:
        ls = math.log(uncached + 1.0)
        a = 1.0 / (self.n + 1) if self.n < 32 else A_SHAPE
        self.sz_mean += a * (ls - self.sz_mean)
        self.sz_m2 += a * (ls * ls - self.sz_m2)
        self.big += a * ((uncached >= BIG_CONTEXT) - self.big)
        self.big_hits += uncached >= BIG_CONTEXT
        self.unc_mean += a * (uncached - self.unc_mean)
        self.cache_share += a * (cache_read / (cache_read + uncached + 1.0) - self.cache_share)

    # ---- derived features ---------------------------------------------------------

    def gap_sd_log(self) -> float:
        return _sd(self.lg_mean, self.lg_m2)

    def gap_cv(self) -> float:
        return _sd(self.g_mean, self.g_m2) / self.g_mean if self.g_mean > 0 else 0.0

    def burstiness(self) -> float:
        """(sigma - mu) / (sigma + mu) of gaps: -1 periodic, 0 Poisson, -> 1 bursty."""
        sd = _sd(self.g_mean, self.g_m2)
        return (sd - self.g_mean) / (sd + self.g_mean) if sd + self.g_mean > 0 else 0.0

    def gap_entropy(self) -> float:
        """Shannon entropy (bits) of the log2 gap histogram: ~0 for a fixed cadence."""
        total = sum(self.hist)
        return -sum(p / total * math.log2(p / total) for p in self.hist if p > 0) if total else 0.0

    def session_gap_sd_log(self) -> float:
        return _sd(self.ss_lg_mean, self.ss_lg_m2)

    def size_sd_log(self) -> float:
        return _sd(self.sz_mean, self.sz_m2)

    def top_prompt_share(self) -> float:
        """Share of recent requests taken by the (at most MG_K) most frequent prompts."""
        return sum(self.mg.values()) / self.mg_n if self.mg_n else 0.0

    def repeats_estimate(self) -> float:
        """Repeated prompts in roughly the last 6-12 h (sampled 1 in 8, scaled back up)."""
        return self.rep_hits * (SAMPLE_MASK + 1)

    def recent_repeats(self, sampled: int = 16) -> tuple[int, int]:
        """(repeats, sampled prompts) among the last ``sampled`` sampled prompts (~8x requests)."""
        n = min(sampled, self.rep_n)
        return (self.seq_bits & ((1 << n) - 1)).bit_count(), n

    def active_hours(self, hours: int = 24) -> int:
        return (self.hour_mask & ((1 << hours) - 1)).bit_count()

    def longest_idle_min(self, now: int) -> int:
        """Longest run of silent ten-minute slots over the last 24 h, in minutes."""
        shift = min(max(0, now // SLOT_MS - self.slot), SLOTS)
        mask = (self.slot_mask << shift) & _SLOT_MASK
        span = min(SLOTS, (now - self.first_ts) // SLOT_MS + 1)
        longest = run = 0
        for i in range(span):
            run = 0 if mask >> i & 1 else run + 1
            longest = max(longest, run)
        return longest * 10

    def active_slots(self, slots: int) -> int:
        return (self.slot_mask & ((1 << slots) - 1)).bit_count()

    def block_counts(self) -> list[float]:
        """Requests per 6 h block, oldest first, ending with the current block."""
        return [self.blocks[(self.block - i) % BLOCKS] for i in range(BLOCKS - 1, -1, -1)]

    def hours_observed(self) -> float:
        return (self.last_ts - self.first_ts) / HOUR_MS

    # ---- serialisation ------------------------------------------------------------

    def to_bytes(self) -> bytes:
        ints = (self.first_ts, self.last_ts, self.n, self.n_gaps, self.regular_since, self.ss_last,
                self.ss_n, self.ss_regular_since, self.conc_ts, self.rep_n, self.mg_n)
        floats = (self.prev_gap, self.lg_mean, self.lg_m2, self.g_mean, self.g_m2, self.ss_lg_mean,
                  self.ss_lg_m2, self.ss_g_mean, self.conc, self.rep, self.sz_mean, self.sz_m2,
                  self.big, self.unc_mean, self.cache_share, self.hour_tokens, self.hour_base,
                  self.day_tokens, self.day_base, self.tokens, float(self.d_n), float(self.bloom_count),
                  self.rep_hits, self.big_hits)
        head = _SCALARS.pack(*ints, *floats) + _FLOATS.pack(*self.hist, *self.blocks)
        clock = struct.pack("<qqqq", self.hour, self.day, self.block, self.slot)
        masks = self.hour_mask.to_bytes(6, "little") + self.slot_mask.to_bytes(18, "little")
        blooms = self.bloom0.to_bytes(512, "little") + self.bloom1.to_bytes(512, "little")
        sess = b"".join(struct.pack("<Iqqi", k, *v) for k, v in self.sessions.items())
        mg = b"".join(struct.pack("<Qi", k, v) for k, v in self.mg.items())
        return (head + clock + masks + blooms + bytes([len(self.sessions), len(self.mg)]) + sess + mg
                + self.streams.to_bytes() + _TRAILER.pack(TRAILER_VERSION, self.seq_bits))

    @classmethod
    def from_bytes(cls, data: bytes, wide: bool = True) -> UserFeatures:
        """``wide=False`` reads the older layout (gap histogram and blocks as float32)."""
        f = cls()
        values = _SCALARS.unpack_from(data, 0)
        (f.first_ts, f.last_ts, f.n, f.n_gaps, f.regular_since, f.ss_last, f.ss_n,
         f.ss_regular_since, f.conc_ts, f.rep_n, f.mg_n) = values[:11]
        (f.prev_gap, f.lg_mean, f.lg_m2, f.g_mean, f.g_m2, f.ss_lg_mean, f.ss_lg_m2, f.ss_g_mean,
         f.conc, f.rep, f.sz_mean, f.sz_m2, f.big, f.unc_mean, f.cache_share, f.hour_tokens,
         f.hour_base, f.day_tokens, f.day_base, f.tokens, d_n, bloom_count, f.rep_hits,
         f.big_hits) = values[11:]
        f.d_n, f.bloom_count = int(d_n), int(bloom_count)
        pos = _SCALARS.size
        floats = _FLOATS if wide else _FLOATS_V1
        arrays = floats.unpack_from(data, pos)
        f.hist, f.blocks = list(arrays[:16]), list(arrays[16:])
        pos += floats.size
        f.hour, f.day, f.block, f.slot = struct.unpack_from("<qqqq", data, pos)
        pos += 32
        f.hour_mask = int.from_bytes(data[pos:pos + 6], "little")
        f.slot_mask = int.from_bytes(data[pos + 6:pos + 24], "little")
        pos += 24
        f.bloom0 = int.from_bytes(data[pos:pos + 512], "little")
        f.bloom1 = int.from_bytes(data[pos + 512:pos + 1024], "little")
        pos += 1024
        n_sess, n_mg = data[pos], data[pos + 1]
        pos += 2
        for _ in range(n_sess):
            k, first, last, count = struct.unpack_from("<Iqqi", data, pos)
            f.sessions[k] = [first, last, count]
            pos += 24
        for _ in range(n_mg):
            k, v = struct.unpack_from("<Qi", data, pos)
            f.mg[k] = v
            pos += 12
        if pos < len(data):  # state written before streams existed has none
            f.streams, pos = Streams.from_bytes(data, pos)
        if pos < len(data) and data[pos] == TRAILER_VERSION:  # ... nor this
            _, f.seq_bits = _TRAILER.unpack_from(data, pos)
        return f

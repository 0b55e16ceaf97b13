"""Decode a camera stream or a file into sampled RGB frames (PyAV). Knows nothing of Kafka.

Sources
    Local files (any container FFmpeg reads), ``rtsp://``/``rtsps://`` (TCP by
    default, UDP on request), ``http(s)://`` (files or streams), and the other
    network schemes FFmpeg speaks (``rtmp``, ``udp``, ``srt``...). Schemes in
    ``LIVE_SCHEMES`` are treated as live cameras, everything else as a
    recording (pass ``live=`` to override).

Sampling
    Frames are chosen by presentation time, never by counting: the timeline is
    cut into slots of ``1/target_fps`` seconds and the first frame whose PTS
    falls into a new slot is emitted. A 10 fps file sampled at 5 fps gives
    every other frame; a variable-frame-rate source gives one frame per slot
    whatever its spacing; a source slower than ``target_fps`` gives every
    frame. Only emitted frames are converted to RGB (and downscaled), which is
    where most of the per-frame cost would otherwise go.

Time
    ``pts_s`` is seconds since the start of the stream. A frame the decoder
    releases up to ``_LATE_FRAME_MAX_S`` behind the last one (out of order,
    after damage) is dropped (``stats.late_frames``); a larger step back is a
    reset (camera restart) and the timeline is kept continuous across it
    (``stats.discontinuities``). ``source_ts`` is an aware UTC wall-clock time:

    * recordings: ``start_wallclock`` (default: the moment the source was
      opened) + ``pts_s``;
    * live streams: the capture time. When the RTSP server sends RTCP sender
      reports, FFmpeg maps PTS to the camera's NTP clock
      (``start_time_realtime``) and that is used if it is within
      ``CLOCK_PLAUSIBLE_S`` of this machine's clock (GStreamer's server sends
      its first report after a second or two, so the first frames use the
      fallback). Otherwise arrival times anchor the PTS timeline: PTS 0 is
      put at the earlier of the connection's start and the least-delayed
      frame's (arrival - PTS) seen so far, so the frames buffered while the
      stream was probed are not all stamped with the same instant.
      ``source_ts`` never goes backwards and never runs ahead of this
      machine's clock.

Recording
    ``packet_sink`` (set on a sampler before iterating) receives every
    demuxed video packet right after it was decoded, for remuxing it
    (``ingest.recorder``); ``wallclock_at(pts)`` maps a packet's PTS onto the
    clock frames are stamped with, so recorded footage and published frames
    share one timeline.

What FFmpeg may open
    Every source is opened with a ``protocol_whitelist`` for its kind
    (``PROTOCOLS``: a file reads files only; rtsp its RTP/UDP/TCP/TLS
    transports; http(s) http, https, tcp, tls), which also binds every open
    FFmpeg makes on its behalf (a playlist's entries, a redirect). Recordings
    are also held to the containers a camera recording uses
    (``RECORDING_FORMATS``), so a playlist (HLS), a concat list or an image
    pattern named as a file is refused: it cannot make ingest read other local
    files or internal URLs. A refused source is a ``SourceError`` like any
    other that cannot be opened.

Size
    Frames wider than ``max_width`` or with more than ``max_pixels`` pixels are
    downscaled (aspect kept) when converted to RGB.

Errors (decided, see ``SourceError``)
    * The source cannot be opened (not found, not a media file, truncated
      before its index, unreachable, no video stream): ``SourceError`` from
      ``open_source``/``sample_frames`` before any frame.
    * A packet that fails to decode is logged, counted
      (``stats.decode_errors``) and skipped; more than
      ``max_consecutive_errors`` in a row ends the iteration with
      ``SourceError`` (decode failure mid-stream).
    * Recordings: every decodable frame is yielded first; then, if the file
      was damaged (undecodable packets, a read error, or frames missing
      before the duration the container declares: truncation), the iterator
      raises ``SourceError`` with ``partial=True`` instead of ending quietly,
      so the caller knows the footage was incomplete. A clean file just ends.
    * Live streams never end quietly: a lost connection, a read timeout or
      the server closing the stream all raise ``SourceError`` so the caller
      reconnects. A stalled RTSP server is noticed after about twice
      ``timeout_s`` (FFmpeg's RTSP demuxer waits out one more read).
    * Damage the H.264 decoder conceals raises nothing: it decodes garbled
      P/B-frame data without an error, and frames that reference a lost
      keyframe can vanish silently. Only what FFmpeg reports is counted.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "srt", "tcp", "mms", "mmsh"})
NETWORK_SCHEMES = LIVE_SCHEMES | {"http", "https", "hls"}
# A camera clock (RTCP/NTP) further than this from ours is not trusted.
CLOCK_PLAUSIBLE_S = 300.0
# Containers whose declared duration is reliable enough to detect truncation.
_DURATION_TRUSTED_FORMATS = ("mov", "mp4", "matroska", "webm", "avi", "flv")
_SLOT_TOLERANCE_S = 1e-3
# A frame at most this far behind the last one is late (dropped); further back is a reset.
_LATE_FRAME_MAX_S = 2.0

_hwaccel_unavailable: str | None = None  # why CUDA decode failed once in this process

# FFmpeg's protocol_whitelist per URL scheme ("" is a local path); a scheme not listed is refused.
PROTOCOLS = {
    "": "file",
    "rtsp": "rtsp,rtp,srtp,udp,tcp,tls",
    "rtsps": "rtsp,rtp,srtp,udp,tcp,tls",
    "http": "http,https,tcp,tls",
    "https": "http,https,tcp,tls",
    "rtmp": "rtmp,rtmps,tcp,tls",
    "rtmps": "rtmp,rtmps,tcp,tls",
    "rtp": "rtp,srtp,udp",
    "udp": "udp",
    "srt": "srt",
    "tcp": "tcp",
    "mms": "mmsh,mmst,http,tcp",
    "mmsh": "mmsh,http,tcp",
}
# rtsp_transport=http/https tunnels RTSP through HTTP.
_RTSP_TUNNEL_PROTOCOLS = ",http,https"
# FFmpeg's format_whitelist of recordings: the demuxers of the containers cameras and recorders write (a demuxer
# matches when one of its names does: "mov" is mov/mp4, "matroska" is matroska/webm). No playlists (hls), concat
# lists, image patterns or other demuxers that open further files or URLs.
RECORDING_FORMATS = "mov,matroska,avi,mpegts,flv,h264,hevc,mjpeg"


class SourceError(Exception):
    """A source could not be opened, read or decoded.

    ``str(err)`` reads ``"source <url>: <cause>"`` with any password in the
    URL masked. Attributes: ``source`` (masked URL), ``cause``, ``partial``
    (True when frames were yielded before the failure), ``frames_yielded``.
    """

    def __init__(self, source: str, cause: str, *, partial: bool = False, frames_yielded: int = 0):
        self.source = redact_url(source)
        self.cause = cause
        self.partial = partial
        self.frames_yielded = frames_yielded
        super().__init__(f"source {self.source}: {cause}")


@dataclass(frozen=True, slots=True)
class SampledFrame:
    index: int  # index of this frame among all frames the source decoded (0-based)
    pts_s: float  # presentation time, seconds since the start of the stream
    source_ts: datetime  # aware UTC wall-clock time of capture (see module doc)
    image: np.ndarray  # RGB uint8, shape (height, width, 3)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class SourceStats:
    """Counters of one opened source (read them while or after iterating)."""

    live: bool = False
    hwaccel: bool = False  # hardware decoding in use
    clock: str = ""  # "file", "rtcp" (camera NTP clock) or "arrival"
    decoded_frames: int = 0
    yielded_frames: int = 0
    decode_errors: int = 0  # packets that failed to decode and were skipped
    corrupt_frames: int = 0  # frames the decoder flagged as concealed/corrupt (still yielded)
    late_frames: int = 0  # frames released out of order (a little behind the timeline), dropped
    discontinuities: int = 0  # PTS jumps backwards by more than _LATE_FRAME_MAX_S (stream restart)
    last_pts_s: float | None = None
    declared_duration_s: float | None = None
    extra: dict = field(default_factory=dict)


def redact_url(url: str) -> str:
    """Mask the password of ``scheme://user:password@host/...`` for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _scheme(url: str) -> str:
    if "://" not in url:
        return ""  # a local path (also Windows drive letters)
    return url.split("://", 1)[0].lower()


def is_live(url: str) -> bool:
    """Whether a URL names a live stream (camera) rather than a recording."""
    return _scheme(url) in LIVE_SCHEMES


def _open_options(url: str, timeout_s: float, rtsp_transport: str, *, recording: bool) -> dict[str, str]:
    """FFmpeg's options for opening ``url``: timeouts, and what it may open (see "What FFmpeg may open")."""
    scheme = _scheme(url)
    if scheme not in PROTOCOLS:
        raise SourceError(url, f"unsupported URL scheme {scheme!r}: use a file path or one of "
                               f"{', '.join(sorted(s for s in PROTOCOLS if s))}")
    options = {"protocol_whitelist": PROTOCOLS[scheme]}
    if recording:
        options["format_whitelist"] = RECORDING_FORMATS
    micros = str(int(timeout_s * 1_000_000))
    if scheme in ("rtsp", "rtsps"):
        if rtsp_transport not in ("tcp", "udp", "udp_multicast", "http", "https"):
            raise ValueError(f"rtsp_transport must be tcp, udp, udp_multicast, http or https, got {rtsp_transport!r}")
        if rtsp_transport in ("http", "https"):
            options["protocol_whitelist"] += _RTSP_TUNNEL_PROTOCOLS
        # "timeout" is the RTSP demuxer's socket I/O timeout in microseconds.
        options.update(rtsp_transport=rtsp_transport, timeout=micros)
    elif scheme in NETWORK_SCHEMES:
        options["rw_timeout"] = micros
    return options


def _refusal(url: str) -> str:
    """Why a recording FFmpeg would not open under its whitelists was refused, naming the kind of file when it can."""
    kind = "FFmpeg would need a container or a protocol a recording may not use"
    if not _scheme(url):
        try:
            with open(url, "rb") as f:
                head = f.read(64).lstrip()
        except OSError:
            head = b""
        if head.startswith(b"#EXTM3U"):
            kind = "it is an HLS playlist"
        elif head.startswith(b"ffconcat"):
            kind = "it is a concat list"
    return (f"refused: {kind} (a recording is read through {PROTOCOLS[_scheme(url)]} only, in one of the containers "
            f"{RECORDING_FORMATS}; playlists, concat lists and other files that name further files or URLs are not read)")


def _describe_open_error(url: str, exc: BaseException, elapsed_s: float, timeout_s: float, *, recording: bool) -> str:
    network = _scheme(url) in NETWORK_SCHEMES
    detail = getattr(exc, "strerror", None) or str(exc)  # strerror leaves out the (unmasked) URL
    if isinstance(exc, av.error.ArgumentError) and recording:  # EINVAL: what FFmpeg answers a format off the whitelist
        return _refusal(url)
    if isinstance(exc, av.error.FileNotFoundError):
        return "not found (no such file)" if not network else f"not found ({detail})"
    if isinstance(exc, av.error.IsADirectoryError):
        return "is a directory, not a media file"
    if isinstance(exc, av.error.PermissionError):
        return "permission denied"
    if isinstance(exc, av.error.ConnectionRefusedError):
        return "unreachable: connection refused"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "not found (HTTP 404)"
    if isinstance(exc, (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError)):
        return f"access refused by the server ({detail}): check the credentials"
    if isinstance(exc, av.error.HTTPError):
        return f"HTTP error from the server ({detail})"
    if isinstance(exc, (av.error.ProtocolNotFoundError, av.error.DemuxerNotFoundError)):
        return f"unsupported URL scheme or format ({detail})"
    if network and (isinstance(exc, (av.error.TimeoutError, av.error.ExitError)) or elapsed_s >= 0.9 * timeout_s):
        return f"unreachable: no answer within {timeout_s:g} s"
    if isinstance(exc, av.error.InvalidDataError):
        if network:
            return "the server's answer is not a stream FFmpeg can read"
        return ("unreadable or corrupt file: not a media container FFmpeg recognises, "
                "or truncated before its index (e.g. an MP4 cut before its moov atom)")
    if isinstance(exc, OSError) and not isinstance(exc, av.error.FFmpegError):
        return f"cannot open ({detail})"
    return f"cannot open ({type(exc).__name__}: {detail})"


def _av_open(url: str, options: dict[str, str], timeout_s: float, hwaccel_obj) -> "av.container.InputContainer":
    kwargs = {"options": options, "timeout": (timeout_s, timeout_s)}
    if hwaccel_obj is not None:
        kwargs["hwaccel"] = hwaccel_obj
    return av.open(url, mode="r", **kwargs)


def open_source(url: str, *, hwaccel: bool = False, timeout_s: float = 10, rtsp_transport: str = "tcp",
                recording: bool | None = None) -> "av.container.InputContainer":
    """Open ``url`` with PyAV and check that it has a video stream.

    ``timeout_s`` bounds both the connection and every later read of a
    network source. ``hwaccel=True`` asks for CUDA decoding with software
    fallback; if that cannot be set up (no GPU: PyAV raises
    ``PermissionError``), the source is reopened without it, and the
    failure is logged once per process. A ``recording`` (default: not a live
    scheme) must be in one of ``RECORDING_FORMATS``. Raises ``SourceError``.
    """
    global _hwaccel_unavailable
    if not url:
        raise SourceError(url, "empty source URL")
    if _scheme(url) == "file":
        url = url[len("file://"):]
    recording = not is_live(url) if recording is None else recording
    options = _open_options(url, timeout_s, rtsp_transport, recording=recording)
    container = None
    if hwaccel and _hwaccel_unavailable is None:
        from av.codec.hwaccel import HWAccel

        try:
            container = _av_open(url, options, timeout_s, HWAccel(device_type="cuda", allow_software_fallback=True))
        except Exception as exc:  # PermissionError without a GPU; anything else: try without
            _hwaccel_unavailable = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
            log.warning("CUDA decoding unavailable (%s); decoding %s in software from now on",
                        _hwaccel_unavailable, redact_url(url))
    elif hwaccel:
        log.debug("CUDA decoding known to be unavailable (%s); software decoding %s", _hwaccel_unavailable, redact_url(url))
    if container is None:
        started = time.monotonic()
        try:
            container = _av_open(url, options, timeout_s, None)
        except Exception as exc:
            raise SourceError(url, _describe_open_error(url, exc, time.monotonic() - started, timeout_s,
                                                        recording=recording)) from exc
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise SourceError(url, f"no video stream (streams found: {kinds})")
    return container


class FrameSampler(Iterator[SampledFrame]):
    """Iterator of ``SampledFrame`` over one source; opens it on construction.

    Use as an iterator (``for frame in sampler``) and close it (or use it as a
    context manager) to release the connection early. ``stats`` holds the
    counters. See the module docstring for sampling, time and error rules.
    """

    def __init__(
        self,
        url: str,
        target_fps: float,
        *,
        max_width: int | None = None,
        max_pixels: int | None = None,
        realtime: bool = False,
        start_wallclock: datetime | None = None,
        hwaccel: bool = False,
        timeout_s: float = 10,
        rtsp_transport: str = "tcp",
        live: bool | None = None,
        threads: int | None = None,
        thread_type: str = "SLICE",
        keyframes_only: bool = False,
        max_consecutive_errors: int = 100,
    ):
        if not target_fps > 0:
            raise ValueError(f"target_fps must be > 0, got {target_fps}")
        if max_width is not None and max_width < 2:
            raise ValueError(f"max_width must be >= 2 or None, got {max_width}")
        if max_pixels is not None and max_pixels < 4:
            raise ValueError(f"max_pixels must be >= 4 or None, got {max_pixels}")
        if start_wallclock is not None and start_wallclock.tzinfo is None:
            raise ValueError("start_wallclock must be timezone-aware")
        self.url = url
        self.target_fps = float(target_fps)
        self.max_width = max_width
        self.max_pixels = max_pixels
        self.realtime = realtime
        self.keyframes_only = keyframes_only
        self.max_consecutive_errors = max_consecutive_errors
        self.live = is_live(url) if live is None else live
        self.stats = SourceStats(live=self.live)
        self._open_started = datetime.now(timezone.utc)
        self._container = open_source(url, hwaccel=hwaccel, timeout_s=timeout_s, rtsp_transport=rtsp_transport,
                                      recording=not self.live)
        self._anchor = (start_wallclock or datetime.now(timezone.utc)).astimezone(timezone.utc)
        self._stream = self._container.streams.video[0]
        # Kept apart from the stream: the recorder asks for times after the container is closed, and a closed
        # container's stream reads freed memory (a last segment once ended 42 years late).
        self._time_base = self._stream.time_base
        cc = self._stream.codec_context
        self.stats.hwaccel = bool(getattr(cc, "is_hwaccel", False))
        # Slice threading by default: frame threading adds a frame of latency per
        # thread and, on a damaged stream, loses frames and hides decode errors.
        self._stream.thread_type = thread_type
        if threads is not None:
            cc.thread_count = threads
        if keyframes_only:
            cc.skip_frame = "NONKEY"
        self.stats.clock = "arrival" if self.live else "file"
        self.stats.declared_duration_s = None if self.live else self._declared_duration()
        self._last_duration_s = 0.0
        self._reformatter = VideoReformatter()
        # The timeline (see _frames and wallclock_at).
        self._pts0: int | None = None  # raw PTS of the timeline's zero
        self._offset_s = 0.0  # added after PTS resets to keep pts_s continuous
        self._live_base: datetime | None = None  # wall clock of pts_s == 0 (live, arrival clock)
        self._rtcp_base: datetime | None = None  # wall clock of raw PTS 0 (live, camera clock)
        self.packet_sink: Callable[[av.Packet], None] | None = None
        self._gen = self._frames()

    # -- iterator protocol -------------------------------------------------
    def __iter__(self) -> "FrameSampler":
        return self

    def __next__(self) -> SampledFrame:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
        self._container.close()

    def __enter__(self) -> "FrameSampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def anchor(self) -> datetime:
        """A recording's wall clock of ``pts_s == 0`` (``start_wallclock``, or when it was opened)."""
        return self._anchor

    @property
    def width(self) -> int:
        return self._stream.codec_context.width

    @property
    def height(self) -> int:
        return self._stream.codec_context.height

    @property
    def video_stream(self) -> "av.video.stream.VideoStream":
        """The decoded stream (a template for remuxing its packets)."""
        return self._stream

    def wallclock_at(self, pts: int) -> datetime | None:
        """Wall-clock time of raw PTS ``pts`` (stream time base) on the timeline frames are stamped with.

        None until the clock is known: before the first decoded frame, and for
        live sources before the first sampled one. Frames themselves may sit up
        to a few milliseconds off it (a live ``source_ts`` never goes backwards
        nor into the future).
        """
        if self._pts0 is None:
            return None
        tb = self._time_base
        if not self.live:
            return self._anchor + timedelta(seconds=float((pts - self._pts0) * tb) + self._offset_s)
        if self._rtcp_base is not None:
            return self._rtcp_base + timedelta(seconds=float(pts * tb))
        if self._live_base is not None:
            return self._live_base + timedelta(seconds=float((pts - self._pts0) * tb) + self._offset_s)
        return None

    @property
    def nominal_fps(self) -> float | None:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else None

    # -- internals ---------------------------------------------------------
    def _declared_duration(self) -> float | None:
        stream, container = self._stream, self._container
        if not any(name in container.format.name for name in _DURATION_TRUSTED_FORMATS):
            return None
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        # A container-level duration covers every stream: only trust it alone.
        if container.duration is not None and len(container.streams) == 1:
            start = (container.start_time or 0) / av.time_base
            return container.duration / av.time_base - start
        return None

    def _frame_period(self) -> float:
        rate = self.nominal_fps
        return 1.0 / rate if rate and rate < 1000 else 0.04

    def _live_clock_base(self, raw_s: float) -> datetime | None:
        """Wall clock of PTS 0 from the camera's RTCP/NTP clock, if FFmpeg has it and it is sane."""
        realtime_us = getattr(self._container, "start_time_realtime", None)
        if realtime_us is None or realtime_us <= 0:
            return None
        base = datetime.fromtimestamp(realtime_us / 1e6, tz=timezone.utc)
        offset = (base + timedelta(seconds=raw_s) - datetime.now(timezone.utc)).total_seconds()
        if abs(offset) > CLOCK_PLAUSIBLE_S:
            if not self.stats.extra.get("rtcp_clock_rejected"):
                self.stats.extra["rtcp_clock_rejected"] = offset
                log.warning("%s: camera clock is %+.1f s off ours; using arrival time instead", redact_url(self.url), offset)
            return None
        return base

    def _frames(self) -> Iterator[SampledFrame]:
        stream, stats, url = self._stream, self.stats, self.url
        tb = stream.time_base
        period = self._frame_period()
        last_pts_s: float | None = None
        last_slot = -1
        consecutive_errors = 0
        frame_index = -1
        prev_ts: datetime | None = None
        pace_wall0 = pace_pts0 = None
        read_error: BaseException | None = None
        slot_len = 1.0 / self.target_fps

        packets = self._container.demux(stream)
        try:
            while True:
                try:
                    packet = next(packets)
                except (StopIteration, av.error.EOFError):
                    break
                except Exception as exc:  # a read error: network loss, timeout, damaged container
                    read_error = exc
                    break
                try:
                    frames = packet.decode()
                    decode_error = None
                except av.error.FFmpegError as exc:
                    frames, decode_error = (), exc
                if self.packet_sink is not None and packet.size:  # after decoding: the sink may rebase it
                    self.packet_sink(packet)
                if decode_error is not None:
                    exc = decode_error
                    stats.decode_errors += 1
                    consecutive_errors += 1
                    log.warning("%s: skipped a packet that failed to decode (pts=%s): %s",
                                redact_url(url), packet.pts, getattr(exc, "strerror", None) or exc)
                    if consecutive_errors > self.max_consecutive_errors:
                        raise SourceError(url, f"decode failure mid-stream: {consecutive_errors} packets in a row failed "
                                               f"to decode (last: {getattr(exc, 'strerror', None) or exc})",
                                          partial=stats.yielded_frames > 0, frames_yielded=stats.yielded_frames) from exc
                    continue
                consecutive_errors = 0
                for frame in frames:
                    frame_index += 1
                    stats.decoded_frames += 1
                    if getattr(frame, "is_corrupt", False):
                        stats.corrupt_frames += 1
                    # --- timeline -------------------------------------------------
                    if frame.pts is None:
                        pts_s = (last_pts_s + period) if last_pts_s is not None else 0.0
                        raw_s = None
                    else:
                        if self._pts0 is None:
                            start = stream.start_time
                            self._pts0 = frame.pts if (self.live or start is None or start > frame.pts) else start
                        raw_s = float(frame.pts * tb)
                        pts_s = float((frame.pts - self._pts0) * tb) + self._offset_s
                        if last_pts_s is not None and pts_s < last_pts_s:
                            # Decoded frames come in presentation order. A small step back is a
                            # frame the decoder released out of order after damage: drop it.
                            # A large one is a reset (camera restart, concatenated file).
                            if last_pts_s - pts_s <= _LATE_FRAME_MAX_S:
                                stats.late_frames += 1
                                log.debug("%s: dropped a frame %.3f s behind the timeline",
                                          redact_url(url), last_pts_s - pts_s)
                                continue
                            stats.discontinuities += 1
                            log.warning("%s: PTS went back %.3f s; timeline kept continuous",
                                        redact_url(url), last_pts_s - pts_s)
                            shift = (last_pts_s + period) - pts_s
                            self._offset_s += shift
                            pts_s += shift
                            self._rtcp_base = None  # the camera's mapping no longer holds
                    last_pts_s = pts_s
                    stats.last_pts_s = pts_s
                    dur = getattr(frame, "duration", None)
                    self._last_duration_s = float(dur * tb) if dur else period
                    # --- sampling by presentation time ---------------------------
                    slot = math.floor((pts_s + _SLOT_TOLERANCE_S) / slot_len)
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                    # --- wall clock -----------------------------------------------
                    if not self.live:
                        source_ts = self._anchor + timedelta(seconds=pts_s)
                    else:
                        now = datetime.now(timezone.utc)
                        if self._rtcp_base is None and raw_s is not None and self._offset_s == 0.0:
                            self._rtcp_base = self._live_clock_base(raw_s)
                            if self._rtcp_base is not None and stats.clock != "rtcp":
                                stats.clock = "rtcp"
                                log.info("%s: using the camera's RTCP clock for capture times", redact_url(url))
                        if self._rtcp_base is not None and raw_s is not None:
                            source_ts = self._rtcp_base + timedelta(seconds=raw_s)
                        else:
                            if self._live_base is None:
                                # Opening probes about a second of packets, which then arrive in
                                # a burst: the connection's start bounds the first capture better.
                                self._live_base = min(now - timedelta(seconds=pts_s), self._open_started)
                            source_ts = self._live_base + timedelta(seconds=pts_s)
                        if source_ts > now:  # a capture cannot lie in the future: re-anchor
                            if self._rtcp_base is None:
                                self._live_base = now - timedelta(seconds=pts_s)
                            source_ts = now
                        if prev_ts is not None and source_ts <= prev_ts:
                            source_ts = prev_ts + timedelta(microseconds=1)
                        prev_ts = source_ts
                    # --- pixels ---------------------------------------------------
                    image = self._to_rgb(frame)
                    if self.realtime and not self.live:
                        if pace_wall0 is None:
                            pace_wall0, pace_pts0 = time.monotonic(), pts_s
                        delay = pace_wall0 + (pts_s - pace_pts0) - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    stats.yielded_frames += 1
                    yield SampledFrame(index=frame_index, pts_s=pts_s, source_ts=source_ts, image=image)
        finally:
            self._container.close()

        self._finish(read_error, period)

    def _to_rgb(self, frame) -> np.ndarray:
        # One reformatter per source keeps libswscale's context between frames
        # (frame.to_ndarray would build a new one for every frame).
        width, height = new_w, new_h = frame.width, frame.height
        if self.max_width is not None and new_w > self.max_width:
            new_w, new_h = self.max_width, max(2, round(height * self.max_width / width))
        if self.max_pixels is not None and new_w * new_h > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))  # floored: within the cap
            new_w, new_h = max(2, math.floor(width * scale)), max(2, math.floor(height * scale))
        if (new_w, new_h) != (width, height):
            out = self._reformatter.reformat(frame, format="rgb24", width=new_w, height=new_h, interpolation="AREA")
        else:
            out = self._reformatter.reformat(frame, format="rgb24")
        return out.to_ndarray()

    def _finish(self, read_error: BaseException | None, period: float) -> None:
        """End of input: decide between a quiet end and a SourceError (see module doc)."""
        stats, url = self.stats, self.url
        partial = stats.yielded_frames > 0
        n = stats.yielded_frames
        if read_error is not None:
            detail = getattr(read_error, "strerror", None) or str(read_error)
            if self.live:
                if isinstance(read_error, (av.error.TimeoutError, av.error.ExitError)):
                    cause = "stream lost: no data within the read timeout"
                else:
                    cause = f"stream lost: {type(read_error).__name__}: {detail}"
            else:
                cause = f"read error after {stats.decoded_frames} frames, file damaged or truncated ({detail})"
            raise SourceError(url, cause, partial=partial, frames_yielded=n) from read_error
        if self.live:
            raise SourceError(url, f"stream ended (the server closed it after {stats.decoded_frames} frames)",
                              partial=partial, frames_yielded=n)
        if stats.decoded_frames == 0:
            raise SourceError(url, f"no decodable video frames ({stats.decode_errors} packets failed to decode)",
                              partial=False, frames_yielded=0)
        declared = stats.declared_duration_s
        if declared is not None and stats.last_pts_s is not None and not self.keyframes_only:
            covered = stats.last_pts_s + self._last_duration_s
            if declared - covered > period + 0.02:  # at least a frame missing at the end
                raise SourceError(url, f"truncated: frames end at {covered:.2f} s of the {declared:.2f} s the container "
                                       f"declares ({stats.decoded_frames} frames decoded, {stats.decode_errors} packets "
                                       f"failed)", partial=partial, frames_yielded=n)
        if stats.decode_errors:
            raise SourceError(url, f"corrupt data: {stats.decode_errors} packets failed to decode and were skipped "
                                   f"({stats.decoded_frames} frames decoded)", partial=partial, frames_yielded=n)


def sample_frames(
    url: str,
    target_fps: float,
    *,
    max_width: int | None = None,
    max_pixels: int | None = None,
    realtime: bool = False,
    start_wallclock: datetime | None = None,
    **kwargs,
) -> FrameSampler:
    """Open ``url`` and iterate frames sampled at ``target_fps`` by presentation time.

    Returns a ``FrameSampler`` (an iterator of ``SampledFrame`` with ``stats``
    and ``close()``). Extra keyword arguments go to ``FrameSampler``
    (``hwaccel``, ``timeout_s``, ``rtsp_transport``, ``live``, ``threads``, ``thread_type``,
    ``keyframes_only``, ``max_consecutive_errors``). Opening errors raise
    ``SourceError`` here, before iteration. Set ``packet_sink`` on the
    result to receive the packets as well (see "Recording" above).
    """
    return FrameSampler(url, target_fps, max_width=max_width, max_pixels=max_pixels, realtime=realtime,
                        start_wallclock=start_wallclock, **kwargs)


__all__ = [
    "LIVE_SCHEMES",
    "PROTOCOLS",
    "RECORDING_FORMATS",
    "FrameSampler",
    "SampledFrame",
    "SourceError",
    "SourceStats",
    "is_live",
    "open_source",
    "redact_url",
    "sample_frames",
]

"""The match stage: embeddings in, watchlist search in Milvus, face tracks, alerts and ended tracks out.

Each face is searched in the watchlist (the ``search_k`` closest entries) and
joins a track of its camera (``match.tracking``); the track aggregates each
person's scores over its faces and raises at most one alert per (track,
person) (``match.decision``). The alert points at the track's best face for
the person: its transient evidence (frame and crop) is copied server-side to
the ``alerts/`` prefix of the evidence bucket, which keeps it as long as the
alert retention says. An ended track is published on the tracks topic.

Authorised use: a face is searched and tracked only when a deployment covers
its camera, capture time and run (``accountability.deployments``); the search
is limited to the persons those deployments name, and every alert carries the
deployment (and case) that allowed it. A face outside every deployment is
not searched, and its transient evidence is deleted.

Passers-by forgotten: match knows which transient objects each open track
holds (``accountability.retention.TransientRefs``). When a track ends (a gap
in source time, eviction, a live camera quiet for ``match.track_idle_s`` of
wall time, or the end of the run it belongs to) its crops, and frames no open
track holds, are deleted ``retention.passerby_grace_s`` later, audited with
counts. A housekeeping thread does that and ends quiet tracks (their
``TrackEndedEvent`` goes out with the runtime's next tick or batch). Match
keeps to its tracks: the retention sweep by age
(``accountability.retention.Housekeeper``) runs apart, as ``vigil housekeep``
(the ``vigil-housekeep`` CronJob).

Restarts and rebalances: each (run, camera)'s tracks are written to match's
changelog (``match.state``, ``vigil.match-state.v1``) after the batch's outputs
are delivered and before its offsets commit. A batch works on copies, kept
only once every output exists, so a batch that fails part-way (S3, Milvus) is
retried from the same state. After a restart or a partition move, the
instance that gets the camera reads the changelog and carries on the same
tracks: the same sighting keeps its track id and alert id whichever instance
handles it, and a face redelivered after a crash is not applied twice.
Stopping leaves the tracks open (they live on in the changelog).

Missing evidence: when the best face's frame or crop is gone before match
copies it (deleted, lost), the alert is still raised, with
``evidence_missing`` naming what is absent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict

import numpy as np
from prometheus_client import Counter, Gauge

from accountability.actors import service_actor
from accountability.audit import AuditLog, AuditUnavailable
from accountability.deployments import DeploymentTable, may_match, persons_of
from accountability.retention import TransientRefs, delete_audited
from match.decision import alert_id, best_per_person, face_weight
from match.state import CameraState, read_changelog, state_event
from match.tracking import Ended, Face, Track, step
from runtime.stream import StreamProcessor
from schemas.events import AlertEvent, Box, EmbeddingEvent, TrackedFace, TrackEndedEvent
from schemas.stages import MATCH
from schemas.topics import ALERTS, MATCH_STATE, TRACKS
from storage.objects import ObjectNotFound, ObjectStore, StorageError, evidence_key
from storage.vectors import DIM, Watchlist

log = logging.getLogger(__name__)

# (run, camera) pairs with open tracks; beyond this the least recently active pair's tracks are ended
# (reason evicted): a finished replay run's last tracks would otherwise stay open for ever.
MAX_OPEN_CAMERAS = 1024

TRACKS_OPEN = Gauge("vigil_tracks_open", "Face tracks a match consumer holds open.", ["stage"])
OUTSIDE_DEPLOYMENTS = Counter("vigil_faces_outside_deployments_total", "Faces no active deployment covered: not searched, evidence deleted.",
                              ["stage", "camera"])
EVIDENCE_MISSING = Counter("vigil_alert_evidence_missing_total", "Alerts raised without an evidence object (gone before match copied it).",
                           ["stage", "kind"])
HOUSEKEEPING_EVERY_S = 0.5


def _face_key(event: EmbeddingEvent) -> tuple:
    return event.run_id, event.camera_id, event.face_event_id


class MatchProcessor(StreamProcessor):
    stage = MATCH

    def __init__(self, settings):
        super().__init__(settings)
        self.cameras: OrderedDict[tuple, CameraState] = OrderedDict()  # (run, camera) -> its open tracks, LRU order
        self.restored: dict[tuple, CameraState] = {}  # the changelog as last read: taken up when a camera's face comes
        self.dirty: set[tuple] = set()  # cameras whose state changed since the last checkpoint (idle ends)
        self.to_checkpoint: set[tuple] = set()  # cameras whose state the batch in hand changed
        self.refs = TransientRefs()
        self.last_face_at: dict[tuple, float] = {}  # (run, camera) -> monotonic time its last face was processed
        self.pending: list[tuple] = []  # ends of idle tracks, published with the next batch
        self.forget: list[tuple[float, list[str]]] = []  # (due, transient keys no open track holds)
        self.lock = threading.Lock()  # between batches and the housekeeping thread
        self.actor = service_actor(self.name)
        self._stopping = threading.Event()
        self._housekeeping: threading.Thread | None = None

    def start(self) -> None:
        self.watchlist = Watchlist(self.settings.milvus)
        self.watchlist.ensure_collection(create=False)  # a dropped watchlist stops match; an empty one would hide it
        # One search before /readyz turns ready: the first real face does not pay for loading the collection.
        probe = np.zeros((1, DIM), dtype=np.float32)
        probe[0, 0] = 1.0
        self.watchlist.search(probe, limit=1, consistency_level="Bounded")
        self.store = ObjectStore(self.settings.s3)
        self.store.ensure_buckets()
        self.deployments = DeploymentTable(self.settings).start()
        self.audit = AuditLog(self.settings, client_id="vigil-match-retention")
        self.assigned()
        self._housekeeping = threading.Thread(target=self._housekeep, name="match-housekeeping", daemon=True)
        self._housekeeping.start()

    def assigned(self) -> None:
        """Partitions (re)assigned: cameras may have moved here, or away and back, so every state comes from the changelog."""
        restored = read_changelog(self.settings.kafka)
        with self.lock:
            self.cameras.clear()
            self.last_face_at.clear()
            self.refs = TransientRefs()  # kept by the tracks taken up again (_take_up)
            self.restored = restored
        log.info("track state read from the changelog", extra={"cameras": len(restored)})

    def _take_up(self, key: tuple) -> CameraState:
        """A camera's state: in hand, else as the changelog left it (this instance now gets its faces), else empty."""
        if key not in self.cameras:
            state = self.restored.pop(key, None) or CameraState()
            for track in state.tracks:  # the transient evidence an alert or the end of the track may still need
                for face in (track.last_ref, *(ev.best_face for ev in track.persons.values())):
                    self.refs.hold(track.track_id, face.crop_key, face.snapshot_key)
            self.cameras[key] = state
        return self.cameras[key]

    def process(self, embeddings: list[EmbeddingEvent]) -> list[tuple]:
        with self.lock:
            return self._process(embeddings)

    def checkpoint(self) -> list[tuple]:
        """The state of each camera the batch changed, once its outputs are delivered (and before its offsets commit)."""
        with self.lock:
            keys, self.to_checkpoint = self.to_checkpoint, set()
            return [(MATCH_STATE, state_event(*key, self.cameras.get(key) or self.restored.get(key) or CameraState()))
                    for key in sorted(keys, key=str)]

    def _process(self, embeddings: list[EmbeddingEvent]) -> list[tuple]:
        covering = {_face_key(e): self.deployments.covering(e.camera_id, e.source_ts, e.run_id) for e in embeddings}
        working: dict[tuple, CameraState] = {}  # copies; kept only when the whole batch succeeded
        todo: dict[tuple, EmbeddingEvent] = {}
        fresh: list[EmbeddingEvent] = []  # not applied before, in arrival order
        for event in embeddings:
            key = (event.run_id, event.camera_id)
            if key not in working:
                working[key] = self._take_up(key).copy()
            if working[key].seen(event.face_event_id, event.source_ts) or _face_key(event) in todo:
                continue  # a redelivery: its outputs were delivered before its camera's state was written
            working[key].applying(event.face_event_id, event.source_ts)
            fresh.append(event)
            if covering[_face_key(event)]:
                todo[_face_key(event)] = event
        hits = self._search(todo, covering)

        held: list[tuple[str, str, str]] = []  # (track, crop, frame) of each face applied
        ended_ids: list[str] = []
        outside: list[EmbeddingEvent] = []
        outputs: list[tuple] = list(self.pending)
        for event in fresh:
            face_key = _face_key(event)
            if not covering[face_key]:
                outside.append(event)
                continue
            key = (event.run_id, event.camera_id)
            state = working[key]
            result = step(state.tracks, self._face(event, hits[face_key]), self.settings.match,
                          run_id=event.run_id, camera_id=event.camera_id)
            state.tracks = result.tracks
            held.append((result.track.track_id, event.crop_key, event.snapshot_key))
            ended_ids += [ended.track.track_id for ended in result.ended]
            outputs += [self._ended(key, ended) for ended in result.ended]
            outputs += [self._alert(key, result.track, person, score, covering[face_key]) for person, score in result.alerts]

        # Every output exists (evidence copied): keep the new state.
        self.pending = []
        now = time.monotonic()
        for key, state in working.items():
            self.cameras[key] = state
            self.cameras.move_to_end(key)
            self.last_face_at[key] = now
        self.to_checkpoint |= {(e.run_id, e.camera_id) for e in fresh} | self.dirty
        self.dirty = set()
        for track, crop, frame in held:
            self.refs.hold(track, crop, frame)
        forgotten = [key for track in ended_ids for key in self.refs.release(track)]
        for event in outside:
            OUTSIDE_DEPLOYMENTS.labels(self.name, event.camera_id).inc()
            forgotten += [event.crop_key, event.snapshot_key]
        while len(self.cameras) > MAX_OPEN_CAMERAS:
            key, state = self.cameras.popitem(last=False)
            self.last_face_at.pop(key, None)
            outputs += [self._ended(key, Ended(track, "evicted")) for track in state.tracks]
            forgotten += [k for track in state.tracks for k in self.refs.release(track.track_id)]
            self.restored[key] = CameraState(applied=state.applied, applied_until=state.applied_until)  # no tracks, same faces applied
            self.to_checkpoint.add(key)
        self._forget_later(forgotten)
        TRACKS_OPEN.labels(self.name).set(sum(len(state.tracks) for state in self.cameras.values()))
        return outputs

    def _search(self, todo: dict[tuple, EmbeddingEvent], covering: dict) -> dict:
        """Each face's hits among the persons its deployments let match (one search per distinct set of persons)."""
        groups: dict[tuple | None, list[tuple]] = defaultdict(list)
        for face_key in todo:
            persons = persons_of(covering[face_key])
            groups[None if persons is None else tuple(persons)].append(face_key)
        hits = {}
        for persons, keys in groups.items():
            vectors = np.asarray([todo[k].embedding for k in keys], dtype=np.float32)
            found = self.watchlist.search(vectors, limit=self.settings.match.search_k, consistency_level="Bounded",
                                          persons=None if persons is None else list(persons))
            hits.update(zip(keys, found))
        return hits

    # -- forgetting passers-by -----------------------------------------------------------------------------------

    def _forget_later(self, keys: list[str]) -> None:
        if keys:
            self.forget.append((time.monotonic() + self.settings.retention.passerby_grace_s, keys))

    def _end_quiet_tracks(self, idle_s: float) -> None:
        """End the tracks no later face can join: a live camera's once match has seen no face of it for ``idle_s`` of
        wall time; a run's once the run's deployment has ended (a run's faces can stall behind a fault for minutes, and
        wall time says nothing then). Their ends go out with the next batch or tick, the emptied state with its checkpoint."""
        now = time.monotonic()
        over = {run_id for run_id, _ in (*self.cameras, *self.restored) if run_id is not None and self.deployments.run_over(run_id)}
        for key in [k for k in self.restored if k[0] in over]:
            self._take_up(key)
        for key, state in list(self.cameras.items()):
            run_id = key[0]
            quiet = run_id in over if run_id is not None else now - self.last_face_at.get(key, now) >= idle_s
            if not quiet or not state.tracks:
                continue
            self.last_face_at.pop(key, None)
            self.pending += [self._ended(key, Ended(track, "gap")) for track in state.tracks]
            self._forget_later([k for track in state.tracks for k in self.refs.release(track.track_id)])
            state.tracks = ()
            self.dirty.add(key)

    def has_pending(self) -> bool:
        """Outputs or state waiting for the next batch (ended tracks): the runtime's tick delivers them without one."""
        with self.lock:
            return bool(self.pending or self.dirty)

    def _delete_due(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        due, later = [], []
        for item in self.forget:
            (due if everything or item[0] <= now else later).append(item)
        keys = [key for _, batch in due for key in batch]
        if not keys:
            return
        try:
            delete_audited(self.audit, self.actor, self.store, self.settings.s3.evidence_bucket, keys, "passerby",
                           "transient evidence of ended face tracks (matched or not: alert evidence was copied first)")
        except (AuditUnavailable, StorageError) as exc:  # kept for the next round: nothing is deleted unaudited
            log.warning("transient evidence not deleted yet: %s", exc)
            return
        self.forget = later

    def _housekeep(self) -> None:
        while not self._stopping.wait(HOUSEKEEPING_EVERY_S):
            with self.lock:
                self._end_quiet_tracks(self.settings.match.track_idle_s)
                self._delete_due()

    def stop(self) -> None:
        """Open tracks live on in the changelog (the next instance carries them on); evidence of ended ones goes now."""
        self._stopping.set()
        if self._housekeeping is None:
            return
        self._housekeeping.join(30)
        with self.lock:
            self._delete_due(everything=True)
        self.deployments.stop()
        self.audit.close()

    def _face(self, event: EmbeddingEvent, hits) -> Face:
        box = event.box
        ref = TrackedFace(face_event_id=event.face_event_id, source_ts=event.source_ts, trace_id=event.trace_id, box=box,
                          crop_key=event.crop_key, snapshot_key=event.snapshot_key, model=event.model)
        return Face(
            face_event_id=event.face_event_id,
            frame_event_id=event.frame_event_id,
            source_ts=event.source_ts,
            box=(box.x1, box.y1, box.x2, box.y2),
            embedding=np.asarray(event.embedding, dtype=np.float64),
            weight=face_weight(min(box.width, box.height), event.det_prob, event.quality),
            scores=best_per_person(hits),
            ref=ref,
        )

    def _alert(self, key: tuple, track: Track, person_id: str, track_score: float, deployments: list) -> tuple:
        # The search was limited to these deployments' persons, so one of them names the person.
        deployment = next(d for d in deployments if may_match(d, person_id))
        run_id, camera_id = key
        evidence = track.persons[person_id]
        face: TrackedFace = evidence.best_face
        ident = alert_id(track.track_id, person_id)
        snapshot_key, crop_key = (
            evidence_key("alerts", camera_id, face.source_ts, f"{ident}-{kind}.jpg") for kind in ("snapshot", "crop")
        )
        bucket = self.settings.s3.evidence_bucket
        missing = []
        for kind, source, target in (("snapshot", face.snapshot_key, snapshot_key), ("crop", face.crop_key, crop_key)):
            try:
                self.store.copy(bucket, source, target)
            except ObjectNotFound:  # deleted or lost before the alert: the alert stands on its scores, and says so
                log.warning("alert %s raised without its %s: s3://%s/%s is gone", ident, kind, bucket, source)
                EVIDENCE_MISSING.labels(self.name, kind).inc()
                missing.append(kind)
        return (ALERTS, AlertEvent(
            event_id=ident,
            alert_id=ident,
            camera_id=camera_id,
            source_ts=face.source_ts,
            trace_id=face.trace_id,
            run_id=run_id,
            person_id=person_id,
            score=evidence.best_score,
            threshold=self.settings.match.threshold,
            face_event_id=face.face_event_id,
            box=face.box,
            snapshot_key=snapshot_key,
            crop_key=crop_key,
            model=face.model,
            track_id=track.track_id,
            track_score=round(track_score, 6),
            track_faces=track.faces,
            deployment_id=deployment.deployment_id,
            case=deployment.case,
            evidence_missing=missing,
        ))

    def _ended(self, key: tuple, ended: Ended) -> tuple:
        run_id, camera_id = key
        track = ended.track
        x1, y1, x2, y2 = track.last_box
        return (TRACKS, TrackEndedEvent(
            event_id=f"{track.track_id}-end",
            camera_id=camera_id,
            source_ts=track.last_seen,
            trace_id=track.last_ref.trace_id,
            run_id=run_id,
            track_id=track.track_id,
            reason=ended.reason,
            started_at=track.started_at,
            first_face_event_id=track.first_face_event_id,
            last_face_event_id=track.last_face_event_id,
            faces=track.faces,
            last_box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
            alerted_person_ids=list(track.alerted),
        ))

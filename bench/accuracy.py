"""Verification accuracy of the shipped pipeline on the face-pairs photos in tests/data/face-pairs.

    python -m bench.accuracy [--device cpu] [--threads 2]

Pipeline under test: ``detect.model.FaceDetector`` with the project's
``DetectSettings`` defaults on each whole photo (EXIF-rotated,
as enrolment loads photos), then ``embed.model.FaceEmbedder``; a pair's score
is the cosine similarity of the two embeddings, "same person" when it reaches
``MatchSettings().threshold`` (read from ``runtime.settings``).

- Each distinct photo is detected and embedded once. When a photo holds several
  faces, the **largest** is used (the detector returns faces largest first; the
  run prints whether that was also the most probable one).
- A photo without a detected face makes every pair that uses it an error: its
  score is set to -inf for a same-person pair (always rejected) and +inf for a
  different-person pair (always accepted), so it counts against AUC, EER, TAR
  and accuracy alike. The tables say how many photos and pairs that hit.
- Pair files: ``face-recognition-pivot.csv`` (280 pairs; paths are deepface's,
  the basename is used) with deepface's own model distances beside ours
  (score = -distance), and ``master.csv`` (300 pairs).
- ROC, AUC, EER and TAR@FAR are computed here with NumPy. TAR at FAR x is the
  highest true-accept rate at a threshold whose false-accept rate is <= x; with
  140 different-person pairs one false accept is already 0.71 %, so "FAR 0.1 %"
  means no false accept at all.
- Threshold not tuned on the evaluation pairs: the one with FAR <= 0.1 % (and
  1 %) on the different-identity pairs of ``identities.csv`` that appear in
  neither pair file (the photos overlap: every identities.csv photo is in the
  pivot file), checked against the faces of the photos in no pair file
  (different people standing in one photo).
- Alignment: the shipped box+margin crop against a similarity transform of the
  five MTCNN landmarks onto a template (``detect.align``): InsightFace's
  ArcFace template scaled to 160, and the mean landmark position of the
  box+margin crops of these photos (label-free: FaceNet's training geometry
  without the in-plane rotation).

The dataset is the repository's ``tests/data/face-pairs`` (``synthetic.footage.face_pairs_dir``).
Nothing is cached. The last line printed is ``AUC=.. TAR@FAR1=.. ACC@default=..``
for the pivot pairs with the shipped pipeline.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import machine


PIVOT_FILE = "face-recognition-pivot.csv"
MASTER_FILE = "master.csv"
IDENTITIES_FILE = "identities.csv"
DEEPFACE_MODELS = ("VGG-Face", "Facenet", "OpenFace", "DeepFace")  # columns <model>_cosine: distances


# --------------------------------------------------------------------------------------------
# Metrics (pure NumPy). Convention: a higher score means "more likely the same person", and a
# pair is accepted when score >= threshold.
# --------------------------------------------------------------------------------------------

def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if y.all() or not y.any():
        raise ValueError("need at least one same-person (positive) and one different-person (negative) pair")
    return s, y


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, one per distinct score, from strictest to loosest.

    Point i accepts the pairs with ``score >= thresholds[i]``. The first point is
    (0, 0) with threshold +inf, "reject everything"; the last is (1, 1). Tied
    scores form one point (a diagonal step, counted as half in the AUC).
    +/-inf scores are allowed (failed detections).
    """
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.nonzero(s[1:] != s[:-1])[0], s.size - 1]  # != keeps inf ties together
    tps = np.cumsum(y)[last_of_run]
    fps = np.cumsum(~y)[last_of_run]
    fpr = np.r_[0.0, fps / (~y).sum()]
    tpr = np.r_[0.0, tps / y.sum()]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds


def auc(fpr, tpr) -> float:
    """Area under a curve by the trapezoid rule (``fpr`` non-decreasing)."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc_auc(scores, labels) -> float:
    """ROC AUC: the chance that a random same-person pair outscores a random different-person pair (ties 1/2)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return auc(fpr, tpr)


def eer(fpr, tpr, thresholds) -> tuple[float, float]:
    """Equal error rate and the threshold where it is reached.

    Walks the ROC until the false-reject rate (1 - tpr) no longer exceeds the
    false-accept rate and interpolates linearly between that point and the one
    before; the threshold is that of the point reached.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = 1.0 - np.asarray(tpr, dtype=np.float64)
    d = fnr - fpr  # +1 at (0, 0), -1 at (1, 1): crosses zero once, going down
    i = int(np.argmax(d <= 0))
    if i == 0:
        return float(fpr[0]), float(thresholds[0])
    t = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1])), float(thresholds[i])


def tar_at_far(fpr, tpr, thresholds, far: float) -> tuple[float, float]:
    """(TAR, threshold): the highest true-accept rate at a threshold whose false-accept rate is <= ``far``.

    The threshold is the strictest one that reaches that TAR. When even the
    strictest real threshold exceeds the budget, the answer is the "reject
    everything" point: TAR 0 at threshold +inf.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    ok = np.nonzero(fpr <= far + 1e-12)[0]  # a prefix of the ROC: fpr is non-decreasing
    best = tpr[ok].max()
    i = int(ok[np.argmax(tpr[ok] >= best)])
    return float(tpr[i]), float(thresholds[i])


def accuracy_at(scores, labels, threshold: float) -> float:
    """Fraction of pairs decided right when "same" means ``score >= threshold``."""
    s, y = _check(scores, labels)
    return float(np.mean((s >= threshold) == y))


def best_accuracy(scores, labels) -> tuple[float, float]:
    """(accuracy, threshold) at the best threshold chosen on these very pairs (an oracle, optimistic)."""
    s, y = _check(scores, labels)
    fpr, tpr, thr = roc_curve(s, y)
    p, n = y.sum(), (~y).sum()
    acc = (tpr * p + (1.0 - fpr) * n) / (p + n)
    i = int(np.argmax(acc))
    return float(acc[i]), float(thr[i])


def threshold_at_far(impostor_scores, far: float) -> float:
    """Lowest threshold that accepts at most ``floor(far * n)`` of these different-person scores.

    Accepting means ``score >= threshold``; the returned value lies just above
    the (k+1)-th highest score, k = floor(far * n). -inf when every score may be
    accepted.
    """
    s = np.sort(np.asarray(impostor_scores, dtype=np.float64).reshape(-1))[::-1]
    if s.size == 0:
        raise ValueError("no impostor scores")
    k = int(np.floor(far * s.size + 1e-9))
    if k >= s.size:
        return float("-inf")
    return float(np.nextafter(s[k], np.inf))


@dataclass
class Row:
    name: str
    n_same: int
    n_diff: int
    auc: float
    eer: float
    eer_threshold: float
    tar_far1: float
    tar_far01: float
    acc_default: float | None = None
    best_acc: float | None = None
    best_threshold: float | None = None
    failed_photos: int = 0
    failed_pairs: int = 0
    extra: dict = field(default_factory=dict)


def evaluate(name: str, scores, labels, default_threshold: float | None = None, *, failed_photos: int = 0,
             failed_pairs: int = 0) -> Row:
    s, y = _check(scores, labels)
    fpr, tpr, thr = roc_curve(s, y)
    e, e_thr = eer(fpr, tpr, thr)
    row = Row(name=name, n_same=int(y.sum()), n_diff=int((~y).sum()), auc=auc(fpr, tpr), eer=e, eer_threshold=e_thr,
              tar_far1=tar_at_far(fpr, tpr, thr, 0.01)[0], tar_far01=tar_at_far(fpr, tpr, thr, 0.001)[0],
              failed_photos=failed_photos, failed_pairs=failed_pairs)
    if default_threshold is not None:
        row.acc_default = accuracy_at(s, y, default_threshold)
        row.best_acc, row.best_threshold = best_accuracy(s, y)
    finite = np.isfinite(s)
    row.extra["same_min"] = float(s[y & finite].min()) if (y & finite).any() else float("nan")
    row.extra["diff_max"] = float(s[~y & finite].max()) if (~y & finite).any() else float("nan")
    row.extra["same_mean"] = float(s[y & finite].mean()) if (y & finite).any() else float("nan")
    row.extra["diff_mean"] = float(s[~y & finite].mean()) if (~y & finite).any() else float("nan")
    return row


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    a: str  # photo file name
    b: str
    same: bool
    distances: dict = field(default_factory=dict, compare=False, hash=False)  # deepface model -> cosine distance


def _decision(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("yes", "no"):
        raise ValueError(f"unexpected decision {text!r}")
    return value == "yes"


def read_pivot(root: Path) -> list[Pair]:
    pairs = []
    with open(root / PIVOT_FILE, newline="") as fh:
        for row in csv.DictReader(fh):
            dist = {m: float(row[f"{m}_cosine"]) for m in DEEPFACE_MODELS if row.get(f"{m}_cosine", "").strip()}
            pairs.append(Pair(os.path.basename(row["file_x"]), os.path.basename(row["file_y"]), _decision(row["decision"]), dist))
    return pairs


def read_master(root: Path) -> list[Pair]:
    with open(root / MASTER_FILE, newline="") as fh:
        return [Pair(os.path.basename(r["file_x"]), os.path.basename(r["file_y"]), _decision(r["Decision"])) for r in csv.DictReader(fh)]


def read_identities(root: Path) -> dict[str, str]:
    with open(root / IDENTITIES_FILE, newline="") as fh:
        return {r["file"]: r["identity"] for r in csv.DictReader(fh)}


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------

@dataclass
class PhotoFaces:
    name: str
    size: tuple[int, int]  # w, h
    faces: list  # DetectedFace, largest first
    image: np.ndarray | None = field(default=None, repr=False)


def detect_photos(detector, root: Path, names: list[str]) -> dict[str, PhotoFaces]:
    from vigil.enroll import load_photo  # photos are read exactly as enrolment reads them

    out = {}
    for name in names:
        try:
            image = load_photo(root / name)
        except ValueError as exc:
            print(f"  cannot read {name}: {exc}", file=sys.stderr)
            out[name] = PhotoFaces(name, (0, 0), [], None)
            continue
        faces = detector.detect([image])[0]
        out[name] = PhotoFaces(name, (image.shape[1], image.shape[0]), faces, image)
    return out


def pair_scores(emb: dict[str, np.ndarray | None], pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray, int]:
    """Cosine scores, labels and the number of pairs hit by a failed detection (scored as errors)."""
    scores = np.empty(len(pairs))
    labels = np.array([p.same for p in pairs])
    failed = 0
    for i, p in enumerate(pairs):
        ea, eb = emb.get(p.a), emb.get(p.b)
        if ea is None or eb is None:
            failed += 1
            scores[i] = -np.inf if p.same else np.inf  # always the wrong decision
        else:
            scores[i] = float(np.dot(ea.astype(np.float64), eb.astype(np.float64)))
    return scores, labels, failed


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def _f(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if np.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--weights", type=Path, default=None, help="converted FaceNet weights (default: models.weights_dir)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from importlib.metadata import PackageNotFoundError, version

    try:
        fnp_version = version("facenet-pytorch")
    except PackageNotFoundError:
        fnp_version = "?"
    from detect.align import align_face, arcface_template, landmarks_in_crop
    from detect.model import FaceDetector
    from embed.model import FaceEmbedder
    from runtime.device import pick_device
    from runtime.settings import DetectSettings, MatchSettings, ModelSettings
    from synthetic.footage import face_pairs_dir

    info = machine()
    print("# Vigil accuracy benchmark: face-pairs verification   (python -m bench.accuracy)")
    print(f"date {info['date']}   commit {info['commit']}")
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), {info['platform']}")
    print(f"python {info['python']}, torch {torch.__version__} ({args.threads} threads, device {args.device}), "
          f"facenet-pytorch {fnp_version}, numpy {np.__version__}")

    root = face_pairs_dir()
    device = pick_device(args.device)
    detect_settings = DetectSettings()
    default_threshold = float(MatchSettings().threshold)
    detector = FaceDetector(detect_settings, device)
    embedder = FaceEmbedder(args.weights or ModelSettings().weights_dir, device)
    print(f"detector: MTCNN, DetectSettings defaults ({', '.join(f'{k}={v}' for k, v in detect_settings.model_dump().items())})")
    print(f"embedder: {embedder.model_id}; shipped threshold MatchSettings().threshold = {default_threshold}")

    pivot, master = read_pivot(root), read_master(root)
    ids = read_identities(root)
    pair_photos = sorted({n for p in pivot + master for n in (p.a, p.b)} | set(ids))
    all_photos = sorted(p.name for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    other_photos = [n for n in all_photos if n not in set(pair_photos)]

    # ---- detection: every photo once ------------------------------------------------------
    t0 = time.perf_counter()
    photos = detect_photos(detector, root, pair_photos + other_photos)
    detect_s = time.perf_counter() - t0
    failed = sorted(n for n in pair_photos if not photos[n].faces)
    multi = [n for n in pair_photos if len(photos[n].faces) > 1]
    print()
    print(f"photos: {len(pair_photos)} in the pair files (+{len(other_photos)} others), detected in {detect_s:.1f} s "
          f"({1000 * detect_s / len(photos):.0f} ms per photo, whole photos in)")
    print(f"failed detections (no face found; every pair using them counts as an error): {len(failed)}"
          + (f" ({', '.join(failed)})" if failed else ""))
    for n in multi:
        faces = photos[n].faces
        most_probable = int(np.argmax([f.prob for f in faces]))
        print(f"  {n}: {len(faces)} faces, using the largest ({faces[0].width:.0f} px, p={faces[0].prob:.4f})"
              f" - {'also' if most_probable == 0 else 'NOT'} the most probable")

    # ---- embeddings: shipped crops and two landmark alignments --------------------------
    chosen = {n: photos[n].faces[0] for n in pair_photos if photos[n].faces}
    in_crop = [landmarks_in_crop(f.landmarks, f.box, *photos[n].size, detect_settings.crop_size, detect_settings.crop_margin)
               for n, f in chosen.items()]
    in_crop = [t for t in in_crop if t is not None]
    mean_template = np.mean(in_crop, axis=0)
    size = detect_settings.crop_size
    variants = {
        "box+margin (shipped)": {n: f.crop for n, f in chosen.items()},
        "5-point similarity, ArcFace template": {n: align_face(photos[n].image, f.landmarks, arcface_template(size), size)
                                                 for n, f in chosen.items()},
        "5-point similarity, mean box+margin template": {n: align_face(photos[n].image, f.landmarks, mean_template, size)
                                                         for n, f in chosen.items()},
    }
    t0 = time.perf_counter()
    embeddings: dict[str, dict[str, np.ndarray | None]] = {}
    for name, crops in variants.items():
        names = list(crops)
        vectors = embedder.embed([crops[n] for n in names])
        embeddings[name] = {n: None for n in pair_photos} | dict(zip(names, vectors))
    embed_s = time.perf_counter() - t0
    shipped = embeddings["box+margin (shipped)"]
    print(f"embedded {len(chosen)} faces x {len(variants)} crop variants in {embed_s:.1f} s")

    # ---- the two pair files -----------------------------------------------------------------
    results = {}
    for label, pairs in ((PIVOT_FILE, pivot), (MASTER_FILE, master)):
        scores, labels, failed_pairs = pair_scores(shipped, pairs)
        used = {n for p in pairs for n in (p.a, p.b)}
        row = evaluate("Vigil (MTCNN + FaceNet CASIA 512-d)", scores, labels, default_threshold,
                       failed_photos=sum(1 for n in used if n in failed), failed_pairs=failed_pairs)
        results[label] = (row, scores, labels)
        print()
        print(f"## {label}: {len(pairs)} pairs ({row.n_same} same / {row.n_diff} different) over {len(used)} photos")
        print(table(
            ["metric", "value"],
            [["ROC AUC", _f(row.auc)],
             ["EER (threshold)", f"{_pct(row.eer)} ({_f(row.eer_threshold, 3)})"],
             ["TAR @ FAR 1 %", _pct(row.tar_far1)],
             ["TAR @ FAR 0.1 %", _pct(row.tar_far01) + (" (= no false accept)" if row.n_diff < 1000 else "")],
             [f"accuracy @ shipped threshold {default_threshold:g}", _pct(row.acc_default)],
             ["best accuracy on these pairs (oracle threshold)", f"{_pct(row.best_acc)} ({_f(row.best_threshold, 3)})"],
             ["same-person score min / mean", f"{_f(row.extra['same_min'], 3)} / {_f(row.extra['same_mean'], 3)}"],
             ["different-person score max / mean", f"{_f(row.extra['diff_max'], 3)} / {_f(row.extra['diff_mean'], 3)}"],
             ["failed detections: photos / pairs (scored as errors)", f"{row.failed_photos} / {row.failed_pairs}"]]))

    # ---- deepface's models beside ours (pivot) ---------------------------------------------
    ours = results[PIVOT_FILE][0]
    rows = [[ours.name, _f(ours.auc), _pct(ours.eer), _pct(ours.tar_far1)]]
    labels = np.array([p.same for p in pivot])
    for model in DEEPFACE_MODELS:
        dist = np.array([p.distances.get(model, np.nan) for p in pivot])
        keep = ~np.isnan(dist)
        r = evaluate(model, -dist[keep], labels[keep])
        rows.append([f"deepface {model} (cosine distance)" + ("" if keep.all() else f", {keep.sum()} pairs"),
                     _f(r.auc), _pct(r.eer), _pct(r.tar_far1)])
    print()
    print(f"## {PIVOT_FILE}: deepface's own models (distances from the CSV) beside Vigil")
    print(table(["model", "AUC", "EER", "TAR @ FAR 1 %"], rows))

    # ---- a threshold not tuned on the evaluation pairs --------------------------------------
    in_files = {frozenset((p.a, p.b)) for p in pivot + master}
    id_photos = sorted(ids)
    held_out = [(a, b) for a, b in itertools.combinations(id_photos, 2)
                if ids[a] != ids[b] and frozenset((a, b)) not in in_files]
    n_diff_all = sum(1 for a, b in itertools.combinations(id_photos, 2) if ids[a] != ids[b])
    overlap = len(set(id_photos) & {n for p in pivot for n in (p.a, p.b)})

    def held_out_scores(emb):
        return np.array([float(np.dot(emb[a], emb[b])) if emb[a] is not None and emb[b] is not None else np.inf
                         for a, b in held_out])

    imp = held_out_scores(shipped)
    thr_far01 = threshold_at_far(imp, 0.001)
    thr_far1 = threshold_at_far(imp, 0.01)
    # Photos in no pair file: faces standing side by side in one photo are different people.
    disjoint_scores = []
    disjoint_faces = 0
    for n in other_photos:
        faces = photos[n].faces
        if len(faces) < 2:
            continue
        disjoint_faces += len(faces)
        vec = embedder.embed([f.crop for f in faces])
        disjoint_scores += [float(vec[i] @ vec[j]) for i, j in itertools.combinations(range(len(faces)), 2)]
    print()
    print("## Threshold chosen without the evaluation pairs")
    print(f"identities.csv photos also in {PIVOT_FILE}: {overlap} of {len(id_photos)} (all overlap: no photo-disjoint "
          f"identities set exists). Method: FAR on the different-identity pairs of identities.csv that are in neither "
          f"pair file ({len(held_out)} of {n_diff_all}; the pairs are disjoint, the photos are not); "
          f"cross-check: max score among different people in one photo of the {len(other_photos)} photos in no pair file "
          f"({disjoint_faces} faces, {len(disjoint_scores)} pairs).")
    srt = np.sort(imp)[::-1]
    print(f"held-out different-identity scores: max {srt[0]:.3f}, 2nd {srt[1]:.3f}, 99th pct {np.percentile(imp, 99):.3f}, "
          f"mean {imp.mean():.3f}; in-photo different-people max "
          f"{max(disjoint_scores) if disjoint_scores else float('nan'):.3f}")
    candidates = [("shipped default", default_threshold), ("FAR <= 1 % on held-out impostors", thr_far1),
                  ("FAR <= 0.1 % on held-out impostors", thr_far01),
                  ("max held-out impostor score (FAR 0 on them)", float(np.nextafter(srt[0], np.inf)))]
    rows = []
    for label, thr in candidates:
        cells = [label, _f(thr, 3)]
        for f in (PIVOT_FILE, MASTER_FILE):
            _, s, y = results[f]
            far = float(np.mean(s[~y] >= thr))
            frr = float(np.mean(s[y] < thr))
            cells += [f"{_pct(accuracy_at(s, y, thr))} (FAR {_pct(far)}, FRR {_pct(frr)})"]
        n_fa = int(np.sum(imp >= thr))
        cells.append(f"{100 * n_fa / imp.size:.2f} % ({n_fa}/{imp.size})")
        rows.append(cells)
    print(table(["threshold", "value", "pivot accuracy", "master accuracy", "held-out FAR"], rows))

    # ---- alignment ------------------------------------------------------------------------------
    print()
    print(f"## Alignment on {PIVOT_FILE}: box+margin crop vs 5-point similarity transform")
    print(f"mean box+margin landmark template (160 px, from {len(in_crop)} unclipped crops, no labels): "
          + " ".join(f"({x:.1f},{y:.1f})" for x, y in mean_template))
    id_pairs = [Pair(a, b, ids[a] == ids[b]) for a, b in itertools.combinations(id_photos, 2)]
    rows = []
    for name, emb in embeddings.items():
        s, y, _ = pair_scores(emb, pivot)
        r = evaluate(name, s, y, default_threshold)
        thr = threshold_at_far(held_out_scores(emb), 0.001)
        r_all = evaluate(name, *pair_scores(emb, id_pairs)[:2])
        rows.append([name, _f(r.auc), _pct(r.eer), _pct(r.tar_far1), _pct(r.tar_far01), _pct(r.acc_default),
                     f"{_f(thr, 3)} / {_pct(accuracy_at(s, y, thr))}",
                     f"{r.extra['same_min']:.3f} / {r.extra['diff_max']:.3f}",
                     f"{_f(r_all.auc)} / {_pct(r_all.tar_far01)}"])
    print(table(["crop", "AUC", "EER", "TAR@FAR1%", "TAR@FAR0.1%", f"ACC@{default_threshold:g}",
                 "held-out FAR0.1% thr / pivot ACC", "same min / diff max",
                 f"all {len(id_pairs)} id pairs: AUC / TAR@FAR0.1%"], rows))

    total_s = time.perf_counter() - started
    print()
    print(f"wall time {total_s:.1f} s (detection {detect_s:.1f} s, embedding {embed_s:.1f} s)")
    print(f"AUC={ours.auc:.4f} TAR@FAR1={ours.tar_far1:.4f} ACC@default={ours.acc_default:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

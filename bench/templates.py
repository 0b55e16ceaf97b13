"""Enrolment on face-pairs: which template to keep per person, and when a photo is a near-duplicate.

    python -m bench.templates [--enrolled 2,3]

Every photo of ``identities.csv`` is detected (shipped ``DetectSettings``) and
embedded once, as enrolment does.

1. **Template strategy.** For each identity with more photos than it enrols,
   its first ``k`` photos are enrolled and the rest are probes. Each probe is
   scored against every enrolled identity, two ways:

   - **all vectors** (shipped): one watchlist entry per photo, the person's
     score is the best of them (what match does with ``search_k`` hits);
   - **normalised mean**: one entry per person, the L2-normalised mean of its
     photos' vectors.

   Same-identity scores are genuine, the others impostor; the table gives
   ROC AUC, TAR at FAR 1 % and 0.1 %, and TAR / FAR at the shipped threshold
   (``MatchSettings().threshold``).
2. **Near-duplicates.** The cosine between different photos of one person,
   against the cosine between a photo and its own re-saved copy (70 % size,
   JPEG quality 70): ``enroll.duplicate_similarity`` must lie between the two.

The last line is ``strategy=<best by TAR@FAR1 then AUC> duplicate_gap=<lowest copy - highest different photo>``.
"""

from __future__ import annotations

import argparse
import io
import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.accuracy import auc, roc_curve, tar_at_far
from bench.common import REPO, machine, print_machine, print_tables

STRATEGIES = ("all vectors (shipped)", "normalised mean")


@dataclass
class StrategyResult:
    strategy: str
    enrolled: int
    genuine: np.ndarray
    impostor: np.ndarray

    def __post_init__(self) -> None:
        scores = np.concatenate([self.genuine, self.impostor])
        labels = np.concatenate([np.ones(len(self.genuine), bool), np.zeros(len(self.impostor), bool)])
        fpr, tpr, thr = roc_curve(scores, labels)
        self.auc = auc(fpr, tpr)
        self.tar_far1 = tar_at_far(fpr, tpr, thr, 0.01)[0]
        self.tar_far01 = tar_at_far(fpr, tpr, thr, 0.001)[0]

    def row(self, threshold: float) -> list[str]:
        return [self.strategy, str(self.enrolled), f"{len(self.genuine)} / {len(self.impostor)}", f"{self.auc:.4f}",
                f"{100 * self.tar_far1:.1f} %", f"{100 * self.tar_far01:.1f} %",
                f"{100 * np.mean(self.genuine >= threshold):.1f} %", f"{100 * np.mean(self.impostor >= threshold):.2f} %"]

    def key(self) -> tuple[float, float]:
        return self.tar_far1, self.auc


HEADER = ["strategy", "photos enrolled", "genuine / impostor scores", "AUC", "TAR@FAR1%", "TAR@FAR0.1%",
          "TAR @ threshold", "FAR @ threshold"]


def compare_strategies(vectors: dict[str, list[np.ndarray]], enrolled: int) -> list[StrategyResult]:
    """Scores of each strategy with the first ``enrolled`` vectors of each person as the gallery (see the module doc)."""
    gallery = {p: np.stack(v[:enrolled]) for p, v in vectors.items() if len(v) > enrolled}
    if len(gallery) < 2:
        raise ValueError(f"need two people with more than {enrolled} photos")
    means = {p: g.mean(axis=0) / np.linalg.norm(g.mean(axis=0)) for p, g in gallery.items()}
    genuine: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    impostor: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for person in gallery:
        for probe in vectors[person][enrolled:]:
            for other, entries in gallery.items():
                into = genuine if other == person else impostor
                into[STRATEGIES[0]].append(float((entries @ probe).max()))
                into[STRATEGIES[1]].append(float(means[other] @ probe))
    return [StrategyResult(s, enrolled, np.array(genuine[s]), np.array(impostor[s])) for s in STRATEGIES]


def duplicate_scores(vectors: dict[str, list[np.ndarray]], copies: dict[str, list[np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:
    """(cosines between different photos of one person, cosines between a photo and its re-saved copy)."""
    different = [float(a @ b) for v in vectors.values() for a, b in itertools.combinations(v, 2)]
    same_photo = [float(a @ c) for p in vectors for a, c in zip(vectors[p], copies[p]) if c is not None]
    return np.array(different), np.array(same_photo)


def resaved(image: np.ndarray, scale: float = 0.7, quality: int = 70) -> np.ndarray:
    img = Image.fromarray(image)
    img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.templates", description=__doc__.split("\n")[0])
    parser.add_argument("--enrolled", default="2,3", help="photos enrolled per person, a comma-separated list (default 2,3)")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    args = parser.parse_args(argv)

    from detect.model import FaceDetector
    from embed.model import FaceEmbedder
    from runtime.device import pick_device
    from runtime.settings import DetectSettings, EnrollSettings, MatchSettings
    from vigil.enroll import load_photo
    from synthetic.footage import identities

    print_machine(machine())
    people = identities()
    device = pick_device("auto")
    detector, embedder = FaceDetector(DetectSettings(), device), FaceEmbedder(REPO / "models", device)

    def embed_one(image: np.ndarray) -> np.ndarray | None:
        faces = detector.detect([image])[0]  # largest first
        return embedder.embed([faces[0].crop])[0] if faces else None

    vectors: dict[str, list[np.ndarray]] = {}
    copies: dict[str, list[np.ndarray | None]] = {}
    missed = 0
    for person, photos in people.items():
        for photo in photos:
            image = load_photo(photo)
            vector = embed_one(image)
            if vector is None:
                missed += 1
                continue
            vectors.setdefault(person, []).append(vector)
            copies.setdefault(person, []).append(embed_one(resaved(image)))
    print(f"{sum(len(v) for v in vectors.values())} photos of {len(vectors)} people embedded; no face found in {missed}")

    threshold = MatchSettings().threshold
    results = [r for k in (int(x) for x in args.enrolled.split(",") if x) for r in compare_strategies(vectors, k)]
    print(f"\ntemplate strategy (threshold {threshold}):")
    print_tables(HEADER, [r.row(threshold) for r in results], args.markdown)

    different, same_photo = duplicate_scores(vectors, copies)
    limit = EnrollSettings().duplicate_similarity
    rows = [["different photos of one person", str(len(different)), f"{different.max():.3f}", f"{np.percentile(different, 99):.3f}",
             f"{different.mean():.3f}", f"{100 * np.mean(different >= limit):.1f} % (wrongly refused)"],
            ["a photo and its re-saved copy", str(len(same_photo)), f"{same_photo.min():.3f}", f"{np.percentile(same_photo, 1):.3f}",
             f"{same_photo.mean():.3f}", f"{100 * np.mean(same_photo >= limit):.1f} % (refused)"]]
    print(f"\nnear-duplicates (enroll.duplicate_similarity = {limit}):")
    print_tables(["pairs", "n", "extreme (max / min)", "99th / 1st pct", "mean", f">= {limit}"], rows, args.markdown)

    best = max(results, key=lambda r: r.key())
    print(f"\nstrategy={best.strategy.split(' (')[0].replace(' ', '_')} duplicate_gap={same_photo.min() - different.max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

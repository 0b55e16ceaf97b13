"""Watchlist proposals: an enroller's request to enrol a person, waiting for an authoriser's approval before it can match.

A proposal (its photos and what the enrolment will record: reason, source,
expiry) is kept in the console's state folder, owner-only, until an authoriser
decides. Approval enrols the photos through the same ``vigil.enroll.Enroller``
the CLI uses; approval or rejection deletes the proposal's photos. Nobody
decides on their own proposal.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.files import write_private
from schemas.events import new_id, utc_now

PHOTO_SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png"}


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    proposal_id: str
    person_id: str
    reason: str
    source: str | None
    expires_at: datetime
    photos: list[str] = Field(description="File names of the proposed photos, in the order given.")
    proposed_by: str
    proposed_at: datetime
    status: Literal["pending", "approved", "rejected"] = "pending"
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    enrolled: int | None = Field(None, description="Photos enrolled on approval.")
    refused: dict[str, str] = Field(default_factory=dict, description="Photo -> why enrolment refused it, on approval.")


class ProposalStore:
    """One folder per proposal under ``root`` (0700): ``proposal.json`` and its photos."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()

    def _dir(self, proposal_id: str) -> Path:
        if not proposal_id.isalnum():
            raise KeyError(proposal_id)
        return self.root / proposal_id

    def create(self, *, person_id: str, reason: str, source: str | None, expires_at: datetime, proposed_by: str,
               photos: list[tuple[str, bytes]], proposal_id: str | None = None) -> Proposal:
        """Store a pending proposal; ``photos`` are (media type, bytes)."""
        proposal = Proposal(proposal_id=proposal_id or new_id(), person_id=person_id, reason=reason, source=source,
                            expires_at=expires_at, photos=[f"photo-{i}{PHOTO_SUFFIXES[media]}" for i, (media, _) in enumerate(photos)],
                            proposed_by=proposed_by, proposed_at=utc_now())
        folder = self._dir(proposal.proposal_id)
        folder.mkdir(parents=True, mode=0o700)
        for name, (_, data) in zip(proposal.photos, photos):
            write_private(folder / name, data)
        self._save(proposal)
        return proposal

    def _save(self, proposal: Proposal) -> None:
        write_private(self._dir(proposal.proposal_id) / "proposal.json", proposal.model_dump_json(indent=1).encode())

    def get(self, proposal_id: str) -> Proposal:
        try:
            return Proposal.model_validate_json((self._dir(proposal_id) / "proposal.json").read_bytes())
        except FileNotFoundError:
            raise KeyError(proposal_id) from None

    def list(self) -> list[Proposal]:
        if not self.root.is_dir():
            return []
        found = [self.get(d.name) for d in self.root.iterdir() if (d / "proposal.json").is_file()]
        return sorted(found, key=lambda p: p.proposed_at, reverse=True)

    def photo_paths(self, proposal: Proposal) -> list[Path]:
        return [self._dir(proposal.proposal_id) / name for name in proposal.photos]

    def decide(self, proposal: Proposal, **changes) -> Proposal:
        """Record the decision and delete the photos: after it the proposal holds no face."""
        decided = proposal.model_copy(update={**changes, "decided_at": utc_now()})
        with self._lock:
            for path in self.photo_paths(proposal):
                path.unlink(missing_ok=True)
            self._save(decided)
        return decided

    def claim(self, proposal_id: str) -> Proposal:
        """The pending proposal, locked against a second decision (``release`` it after)."""
        with self._lock:
            proposal = self.get(proposal_id)
            marker = self._dir(proposal_id) / ".deciding"
            if proposal.status != "pending" or marker.exists():
                raise ValueError(f"proposal {proposal_id} is already {proposal.status if proposal.status != 'pending' else 'being decided'}")
            marker.touch()
            return proposal

    def release(self, proposal_id: str) -> None:
        (self._dir(proposal_id) / ".deciding").unlink(missing_ok=True)


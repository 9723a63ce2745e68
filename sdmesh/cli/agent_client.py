"""How the CLI reaches an agent's API: the token (``--token``, ``--token-file``) and the CA
that verifies an https agent (``--ca``), next to ``--agent``.

The options are not passed to the commands: they land in the click context's ``meta``, and
:func:`open_agent` (the one place requests go out) reads them there. So every command that
takes ``--agent`` gains them without a new parameter, and so do commands added later.

By default the CLI talks to the local agent's Unix socket and sends no token at all
(transport.py). Given an ``http://`` loopback ``--agent`` and none of ``--token``,
``--token-file`` (or their variables), a request to the agent on this host (at the ``api``
port of the agent's config file) carries the token that config's ``api-token-file`` holds, if
this user can read it, and only after the agent proved it holds that token.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sdmesh.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE
from sdmesh.cli.errors import AgentError
from sdmesh.cli.transport import AGENT_CONFIG

if TYPE_CHECKING:
    import http.client
    import ssl
    import urllib.request

F = TypeVar("F", bound=Callable[..., Any])

_META = "sdmesh.agent_client"


@dataclass
class Connection:
    """What a command was told about reaching its agent."""

    token: str | None = None
    token_file: str | None = None
    ca: str | None = None
    insecure_token: bool = False
    """Send the token over plain http to another host anyway (``--insecure-token``)."""
    local_tokens: dict[str, str | None] = field(default_factory=dict)
    """``local_agent_token`` by URL origin, looked up once: ``--wait`` polls many times."""
    tls: ssl.SSLContext | None = None
    """``ssl_context()``, built once (it loads the CA file or the system's CAs)."""

    def bearer(self) -> str | None:
        """The token to send: ``--token``, else the one in ``--token-file``."""
        if self.token:
            return self.token.strip()
        if self.token_file:
            from sdmesh.agent.api_auth import read_token_file
            from sdmesh.agent.config import ConfigError

            try:
                token, _ = read_token_file(self.token_file, "--token-file")
            except ConfigError as error:
                click.echo(f"sdmesh: error: {error}", err=True)
                sys.exit(EXIT_BAD_INPUT)
            self.token = token  # read once: --wait polls many times
            return token
        return None

    def bearer_for(self, url: str) -> str | None:
        """``bearer()``, else the local agent's own token for ``url`` (``local_agent_token``)."""
        given = self.bearer()
        if given or self.token_file:
            return given
        origin = _origin_of(url)
        if origin not in self.local_tokens:
            self.local_tokens[origin] = local_agent_token(url)
        return self.local_tokens[origin]

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the agent against ``--ca`` if given, else against the system's CAs."""
        import ssl

        if self.tls is not None:
            return self.tls
        try:
            self.tls = ssl.create_default_context(cafile=self.ca)
            return self.tls
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "strerror", None) or error
            click.echo(f"sdmesh: error: --ca {self.ca}: {reason}", err=True)
            sys.exit(EXIT_BAD_INPUT)


def connection() -> Connection:
    """This command's connection settings (defaults outside a click command)."""
    context = click.get_current_context(silent=True)
    if context is None:
        return Connection()
    found = context.meta.setdefault(_META, Connection())
    assert isinstance(found, Connection)
    return found


def _remember(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(context: click.Context, _: click.Parameter, value: Any) -> None:
        if value is not None:
            setattr(context.meta.setdefault(_META, Connection()), field, value)

    return callback


def connection_options(function: F) -> F:
    """``--token``, ``--token-file``, ``--insecure-token`` and ``--ca`` for a command that has
    ``--agent``."""
    function = click.option(
        "--insecure-token",
        envvar="SDMESH_INSECURE_TOKEN",
        is_flag=True,
        default=None,
        expose_value=False,
        callback=_remember("insecure_token"),
        help="Send the token over plain http:// to another host anyway: anyone on the way can "
        "read it (also SDMESH_INSECURE_TOKEN=1). Prefer https://.",
    )(function)
    function = click.option(
        "--ca",
        envvar="SDMESH_CA",
        metavar="FILE",
        expose_value=False,
        callback=_remember("ca"),
        type=click.Path(dir_okay=False),
        help="PEM file of the CA (or self-signed certificate) an https agent's certificate "
        "must chain to [the system's CAs] (also SDMESH_CA).",
    )(function)
    function = click.option(
        "--token-file",
        envvar="SDMESH_TOKEN_FILE",
        metavar="FILE",
        expose_value=False,
        callback=_remember("token_file"),
        type=click.Path(dir_okay=False),
        help="File holding the agent's API token (also SDMESH_TOKEN_FILE).",
    )(function)
    return click.option(
        "--token",
        envvar="SDMESH_TOKEN",
        metavar="TOKEN",
        expose_value=False,
        callback=_remember("token"),
        help="The agent's API token, needed unless the agent is on this host (also "
        "SDMESH_TOKEN; prefer it or --token-file: other users can see arguments).",
    )(function)


def local_agent_token(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The token of the agent on this host if ``url`` is that agent: a loopback host at the
    port of the ``api`` its config file (``SDMESH_CONFIG``, else ``AGENT_CONFIG``) sets, and
    the ``api-token-file`` that file names is readable. None otherwise, quietly: most users
    cannot read the token (they use the socket), and a 401 says what to pass. Never for
    another host: the token would leave the machine; and sent only after the agent's proof
    (transport.with_proof)."""
    import tomllib
    from urllib.parse import urlsplit

    from sdmesh.agent.api_auth import is_loopback_host, read_token_file
    from sdmesh.agent.config import DEFAULT_API, ConfigError, parse_address

    environ = os.environ if environ is None else environ
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
        if scheme not in ("http", "https") or not is_loopback_host(parts.hostname or ""):
            return None
    except ValueError:
        return None
    path = environ.get("SDMESH_CONFIG") or AGENT_CONFIG
    try:
        with open(path, "rb") as handle:
            settings = tomllib.load(handle)
        api = settings.get("api")
        api_host, api_port = (
            DEFAULT_API if api is None else parse_address(str(api), DEFAULT_API[1], "api")
        )
    except (OSError, ValueError, ConfigError):  # ValueError: not TOML, or not UTF-8
        return None
    token_file = settings.get("api-token-file")
    listens_on_loopback = is_loopback_host(api_host) or api_host in ("0.0.0.0", "::")
    if not isinstance(token_file, str) or not listens_on_loopback or port != api_port:
        return None
    try:
        token, _ = read_token_file(token_file)
    except ConfigError:
        return None
    return token


def open_agent(call: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    """The request with this command's token and TLS settings: over the agent's socket (no
    token), over http only after the agent proved it holds the token (transport.py), over
    https with the certificate checked. A refused token, a refused socket, a failed proof or
    TLS handshake become an ``AgentError`` that says what to do about it; every other error
    is raised as ``urlopen`` raises it."""
    import ssl
    import urllib.error
    import urllib.request

    from sdmesh.cli import transport

    settings = connection()
    plain_http = call.full_url.lower().startswith("http:")
    token = None if transport.is_unix(call.full_url) else settings.bearer_for(call.full_url)
    try:
        if transport.is_unix(call.full_url):
            return _over_socket(call, timeout)  # type: ignore[no-any-return]
        if token:
            refuse_clear_text_token(call, settings)
            if plain_http:
                return transport.with_proof(call, token, timeout)  # type: ignore[no-any-return]
            # Unredirected: a redirect to another host must not carry the token along.
            call.add_unredirected_header("Authorization", f"Bearer {token}")
        context = settings.ssl_context() if call.full_url.lower().startswith("https:") else None
        response = urllib.request.urlopen(call, timeout=timeout, context=context)
    except transport.ProofFailed as failed:
        raise _unproven(call, failed) from None
    except urllib.error.HTTPError as error:
        if error.code != 401:
            raise
        error.close()
        given = "was refused" if token else "is needed"
        raise AgentError(
            f"the agent at {_origin(call)} answered 401: a token {given}; use the agent's "
            "socket (the default, for root and the group sdmesh), or pass a token with "
            "--token-file (or SDMESH_TOKEN_FILE, SDMESH_TOKEN; 'sdmesh token create' makes one)",
            EXIT_BAD_INPUT,
            401,
        ) from None
    except urllib.error.URLError as error:
        if not isinstance(error.reason, ssl.SSLError):
            raise
        hint = (
            "; pass the CA that signed its certificate (or the certificate itself) with --ca "
            "FILE or SDMESH_CA"
            if isinstance(error.reason, ssl.SSLCertVerificationError)
            else ""
        )
        reason = getattr(error.reason, "verify_message", None) or error.reason.reason
        raise AgentError(
            f"TLS with the agent at {_origin(call)} failed ({reason or error.reason}){hint}",
            EXIT_FAILURE,
        ) from None
    return response  # type: ignore[no-any-return]


def _over_socket(call: urllib.request.Request, timeout: float) -> Any:
    """The request over the agent's socket; a socket this user may not open is a clear
    "permission denied" (exit 2), and nothing else is tried."""
    import errno

    from sdmesh.cli import transport

    path = transport.unix_path(call.full_url)
    try:
        return transport.over_socket(call, timeout)
    except PermissionError:
        raise AgentError(
            f"permission denied: you may not use the agent's socket {path} (root and the "
            "members of its group, sdmesh by default, may); ask an administrator to add you "
            "to the group, or pass --agent URL with a token",
            EXIT_BAD_INPUT,
            403,
        ) from None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ECONNREFUSED):
            raise AgentError(
                f"no agent answers on {path} ({error.strerror}); is 'sdmesh join' running "
                "on this host? (--agent unix:/PATH or URL, or SDMESH_AGENT, picks another)",
                EXIT_FAILURE,
            ) from None
        raise


def _unproven(call: urllib.request.Request, failed: object) -> AgentError:
    status = getattr(failed, "status", None)
    said = f"it answered {status}" if status is not None else "no answer"
    return AgentError(
        f"the endpoint at {_origin(call)} did not prove it is the agent holding your token "
        f"({said}): another program may hold that port, or the token was revoked; the token "
        "was not sent",
        EXIT_BAD_INPUT if status == 404 else EXIT_FAILURE,
    )


def refuse_clear_text_token(call: urllib.request.Request, settings: Connection) -> None:
    """A token over plain http to another host can be read by anyone on the way: an
    ``AgentError`` (exit 2) saying what to do instead, unless ``--insecure-token`` says it is
    meant."""
    from urllib.parse import urlsplit

    from sdmesh.agent.api_auth import is_loopback_host

    parts = urlsplit(call.full_url)
    if parts.scheme.lower() != "http" or settings.insecure_token:
        return
    try:
        host = parts.hostname or ""
    except ValueError:
        return  # a malformed URL: urlopen says what is wrong with it
    if is_loopback_host(host):
        return
    raise AgentError(
        f"refusing to send the API token to {_origin(call)} over plain http: anyone on the "
        "network could read it; use https:// (the agent's tls-cert), or pass "
        "--insecure-token (SDMESH_INSECURE_TOKEN=1) on a network you trust",
        EXIT_BAD_INPUT,
    )


def _origin(call: urllib.request.Request) -> str:
    return _origin_of(call.full_url)


def _origin_of(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


__all__ = [
    "Connection",
    "connection",
    "connection_options",
    "local_agent_token",
    "open_agent",
    "refuse_clear_text_token",
]

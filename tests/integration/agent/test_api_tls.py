"""A secured control API end to end: HTTPS with a self-signed certificate, a token for peers
that are not loopback, the CLI against it, and `sdmesh join` refusing an exposed API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sdmesh.agent.agent import Agent
from sdmesh.agent.config import AgentConfig
from sdmesh.transport import load_security

from .test_agent_loopback import free_port

TOKEN = "integration-token-0123456789abcdefghijkl"


@dataclass
class Secrets:
    cert: Path
    key: Path
    token: Path
    other_cert: Path  # a CA that did not sign the agent's certificate


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, as `openssl req -x509` makes."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def secrets(tmp_path: Path) -> Secrets:
    cert, key = self_signed(tmp_path, "agent")
    other, _ = self_signed(tmp_path, "other")
    token = tmp_path / "api.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return Secrets(cert, key, token, other)


def sdmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (nothing of this test's environment leaks in by accident)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SDMESH_")}
    return subprocess.run(
        [sys.executable, "-m", "sdmesh", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def https_get(url: str, ca: Path, token: str | None = None) -> object:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return json.loads(response.read())


# -------------------------------------------------------------- `sdmesh join` over TLS
@pytest.fixture
def tls_agent(tmp_path: Path, secrets: Secrets) -> Iterator[str]:
    """A real `sdmesh join` serving its API over HTTPS, with a token; yields its URL."""
    gossip, api = free_port(pair=True), free_port()
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "sdmesh", "join", "--insecure", "--name", "tls"),
            *("--bind", f"127.0.0.1:{gossip}", "--api", f"127.0.0.1:{api}"),
            *("--state-dir", str(tmp_path / "state")),
            *("--tls-cert", str(secrets.cert), "--tls-key", str(secrets.key)),
            *("--api-token-file", str(secrets.token)),
        ],
        stdout=log,
        stderr=log,
    )
    url = f"https://127.0.0.1:{api}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                https_get(url + "/v1/health", secrets.cert, TOKEN)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    text = (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
                    raise AssertionError(f"the agent never served HTTPS:\n{text}") from None
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_join_serves_https_and_the_cli_verifies_it_with_ca(
    tls_agent: str, secrets: Secrets
) -> None:
    token = ("--token-file", str(secrets.token))  # loopback TCP is no credential
    listed = sdmesh("peers", "--json", "--agent", tls_agent, "--ca", str(secrets.cert), *token)
    assert listed.returncode == 0, listed.stderr
    (me,) = json.loads(listed.stdout)
    assert me["name"] == "tls"
    assert me["meta"]["api"] == tls_agent, "members advertise the https URL"

    # The same through the environment, and through the pools commands.
    env = {
        "SDMESH_AGENT": tls_agent,
        "SDMESH_CA": str(secrets.cert),
        "SDMESH_TOKEN_FILE": str(secrets.token),
    }
    status = sdmesh("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == []

    described = https_get(tls_agent + "/v1/health", secrets.cert, TOKEN)
    assert isinstance(described, dict) and described["name"] == "tls"


def test_the_cli_refuses_an_agent_certificate_it_cannot_verify(
    tls_agent: str, secrets: Secrets
) -> None:
    for ca in ([], ["--ca", str(secrets.other_cert)]):
        refused = sdmesh("peers", "--agent", tls_agent, *ca)
        assert refused.returncode == 1, refused.stderr
        assert "TLS with the agent" in refused.stderr and "--ca" in refused.stderr
        assert "Traceback" not in refused.stderr
    plain = sdmesh("peers", "--agent", tls_agent.replace("https:", "http:"))
    assert plain.returncode == 1, "plain HTTP is not served on the TLS port"
    assert "Traceback" not in plain.stderr


def test_a_missing_ca_file_is_bad_input(tls_agent: str, tmp_path: Path) -> None:
    missing = sdmesh("peers", "--agent", tls_agent, "--ca", str(tmp_path / "absent.pem"))
    assert missing.returncode == 2
    assert "--ca" in missing.stderr and "Traceback" not in missing.stderr


# --------------------------------------------------------------------- refusals
def test_join_refuses_an_exposed_api_without_tls(tmp_path: Path, secrets: Secrets) -> None:
    base = ("join", "--insecure", "--bind", "127.0.0.1:0", "--state-dir", str(tmp_path / "s"))
    bare = sdmesh(*base, "--api", "0.0.0.0:0")
    assert bare.returncode == 2
    assert "tls-cert" in bare.stderr
    assert "api-insecure" in bare.stderr and "Traceback" not in bare.stderr

    token_only = sdmesh(*base, "--api", "0.0.0.0:0", "--api-token-file", str(secrets.token))
    assert token_only.returncode == 2 and "tls-cert" in token_only.stderr

    through_env = sdmesh(*base, env={"SDMESH_API": "0.0.0.0:0"})
    assert through_env.returncode == 2 and "tls-cert" in through_env.stderr

    missing = sdmesh(*base, "--api-token-file", str(tmp_path / "absent"))
    assert missing.returncode == 2
    assert "api-token-file" in missing.stderr and "does not exist" in missing.stderr

    half_tls = sdmesh(*base, "--tls-cert", str(secrets.cert))
    assert half_tls.returncode == 2 and "tls-key" in half_tls.stderr


# ------------------------------------------- a token required: the agent in process
@pytest.fixture
async def remote_agent(
    tmp_path: Path, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """A real agent in this process, over HTTPS with a token (loopback TCP is no
    credential: every address this test reaches is loopback, and each needs the token)."""
    config = AgentConfig(
        name="remote",
        bind=("127.0.0.1", free_port(pair=True)),
        api=("127.0.0.1", free_port()),
        insecure=True,
        state_dir=tmp_path / "state",
        api_token_file=str(secrets.token),
        tls_cert=str(secrets.cert),
        tls_key=str(secrets.key),
    )
    agent = Agent(config, load_security(None, insecure=True))
    task = asyncio.create_task(agent.run())
    try:
        deadline = time.monotonic() + 30
        while agent.status != "running":
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "the agent did not start"
            await asyncio.sleep(0.05)
        yield f"https://127.0.0.1:{config.api[1]}"
    finally:
        agent.request_leave()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI in a subprocess, without blocking the loop the agent runs on."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SDMESH_")}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sdmesh", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_remote_cli_needs_the_token(remote_agent: str, secrets: Secrets) -> None:
    ca = ("--agent", remote_agent, "--ca", str(secrets.cert))

    code, out, err = await cli("peers", "--json", *ca)
    assert code == 2, err
    assert "401" in err and "--token-file" in err and "Traceback" not in err

    code, out, err = await cli("peers", "--json", *ca, "--token", "not-the-token")
    assert code == 2 and "refused" in err

    code, out, err = await cli("peers", "--json", *ca, "--token-file", str(secrets.token))
    assert code == 0, err
    assert [m["name"] for m in json.loads(out)] == ["remote"]

    code, out, err = await cli("status", "--json", *ca, env={"SDMESH_TOKEN": TOKEN})
    assert code == 0, err
    assert json.loads(out) == []


async def test_remote_http_clients_use_the_header_or_the_query(
    remote_agent: str, secrets: Secrets
) -> None:
    def get(path: str, token: str | None = None) -> int:
        try:
            https_get(remote_agent + path, secrets.cert, token)
            return 200
        except urllib.error.HTTPError as error:
            assert error.headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in json.loads(error.read())
            return error.code

    assert await asyncio.to_thread(get, "/v1/health") == 401
    assert await asyncio.to_thread(get, "/v1/health", TOKEN) == 200
    # The query carries the token for the event stream (EventSource) only.
    assert await asyncio.to_thread(get, f"/v1/health?access_token={TOKEN}") == 401
    assert await asyncio.to_thread(get, "/v1/events?access_token=nope") == 401

    def public(path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(secrets.cert))
        with urllib.request.urlopen(remote_agent + path, timeout=5, context=context) as answer:
            return bytes(answer.read())

    assert (await asyncio.to_thread(public, "/v1/openapi.yaml")).startswith(b"#")
    assert b"<html" in (await asyncio.to_thread(public, "/ui/")).lower()

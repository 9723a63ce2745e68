"""Operator signatures on pool submissions: signing on the CLI's side, checking on the agent's.

The CLI signs the request it is about to post (:func:`sign_request`): the pool's name, the
digest of the resolved descriptor it sends (the digest every agent computes again), and the
least role its components need. The agent reads the envelope back from the request
(:func:`envelope_of`), checks it as its hosts will (:func:`check_submission`), and keeps its
bytes with the pool's record, whence the shepherd puts it on every deploy and start order.

A request without a signature (the dashboard, curl) can be signed by the agent itself with an
operator key it was given for that purpose (:func:`agent_signature`), never beyond what the
caller's own API role allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdmesh.language import ResolvedDescriptor
from sdmesh.language.values import ComponentDescription
from sdmesh.lifecycle.model import Node
from sdmesh.pools.layout import is_leaf, skeleton, walk
from sdmesh.pools.records import PoolSpec
from sdmesh.pools.submission import SubmissionError
from sdmesh.trust.authorize import Refusal, authorize_submission, sign_for_caller
from sdmesh.trust.components import role_for_all
from sdmesh.trust.host import HostTrust
from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.signatures import DescriptorSignature, SignatureFormatError, sign_descriptor
from sdmesh.trust.store import TrustStore


def leaf_classes(tree: ComponentDescription) -> list[str]:
    """The ``sfClass`` of every leaf of a resolved ``sfConfig`` (what hosts run)."""
    classes: list[str] = []
    for node in walk(skeleton(tree)):
        sf_class = node.description.get("sfClass")
        if is_leaf(node) and isinstance(sf_class, str):
            classes.append(sf_class)
    return classes


def sign_request(
    body: dict[str, object],
    resolved: ResolvedDescriptor,
    key: OperatorKey,
    now: float,
    role: Role | None = None,
) -> DescriptorSignature:
    """Sign a ``POST /v1/pools`` body made by ``request_body`` (adds its ``signature``).

    ``role``: the role to sign with; by default the least the descriptor's components need.
    """
    name = body.get("name")
    if not isinstance(name, str):
        raise ValueError("the request has no pool name to sign")
    claimed = role if role is not None else role_for_all(leaf_classes(resolved.root))
    envelope = sign_descriptor(key, name, resolved.digest(), claimed, now)
    body["signature"] = envelope.to_text()
    return envelope


def envelope_of(body: Mapping[str, Any]) -> DescriptorSignature | None:
    """The signature a request carries (None without one); SubmissionError if malformed."""
    text = body.get("signature")
    if text is None:
        return None
    try:
        return DescriptorSignature.from_text(text)
    except SignatureFormatError as error:
        raise SubmissionError(str(error)) from None


def check_submission(
    envelope: DescriptorSignature | None,
    spec: PoolSpec,
    tree: ComponentDescription,
    trust: TrustStore,
    now: float,
) -> Refusal | None:
    """Whether this agent's host would run every component of the pool (the API answers a
    refusal with 403 and its message)."""
    return authorize_submission(envelope, spec.digest, spec.pool, leaf_classes(tree), trust, now)


def agent_signature(
    spec: PoolSpec,
    tree: ComponentDescription,
    key: OperatorKey,
    caller_role: Role,
    now: float,
) -> DescriptorSignature | Refusal:
    """The agent's own signature for an unsigned request, with the least role the pool needs;
    a Refusal when the caller's API role is below it (the agent's key must not lend a caller
    more than the caller has)."""
    return sign_for_caller(key, spec.digest, spec.pool, leaf_classes(tree), caller_role, now)


def leaf_refusal(
    trust: HostTrust, signature: bytes, spec: PoolSpec, pool: str, node: Node, now: float
) -> Refusal | None:
    """The host's check before it deploys or starts ``node`` of ``pool``: the order's
    envelope against the spec it is about to run and the node's ``sfClass`` (counted when
    refused)."""
    sf_class = node.description.get("sfClass")
    kind = sf_class if isinstance(sf_class, str) else ""
    return trust.check_leaf(signature, spec.digest, pool, kind, now)


def caller_refusal(
    envelope: DescriptorSignature, kinds: list[str], pool: str, caller_role: Role
) -> Refusal | None:
    """A Refusal when the API caller's role is below the role ``envelope`` was signed with,
    or below the least role the pool's component classes ``kinds`` need."""
    needed = max(envelope.role, role_for_all(kinds))
    if caller_role.allows(needed):
        return None
    return Refusal(
        "role-too-low",
        f"pool {pool} is signed as {envelope.role.label} and needs role {needed.label} "
        f"to submit, the request has {caller_role.label}",
    )


def submission_signature(
    body: Mapping[str, Any],
    spec: PoolSpec,
    tree: ComponentDescription,
    trust: HostTrust,
    caller_role: Role,
    now: float,
) -> bytes | Refusal:
    """What the API does with a submission's signature: the envelope bytes to keep with the
    pool's record, or the Refusal to answer with 403 (counted). An unsigned request is signed
    by the agent's own key when it has one (never beyond ``caller_role``), and refused
    otherwise; either way this host checks it as it will check every leaf.

    A signed request is refused too when the caller's API role is below the envelope's role
    or below what the pool's components need: an envelope is public (it travels with the
    pool's record and every order), so carrying one proves nothing about the caller, and a
    ``read`` caller must not resubmit an admin's shell pool with the admin's old signature.
    SubmissionError (400) for a malformed ``signature``."""
    envelope = envelope_of(body)
    classes = leaf_classes(tree)
    if envelope is not None:
        beyond = caller_refusal(envelope, classes, spec.pool, caller_role)
        if beyond is not None:
            trust.refusals.count(beyond)
            return beyond
    if envelope is None:
        made = trust.sign_for_caller(spec.digest, spec.pool, classes, caller_role, now)
        if isinstance(made, Refusal):
            return made
        envelope = made
    refusal = trust.check_submission(envelope, spec.digest, spec.pool, classes, now)
    if refusal is not None:
        return refusal
    assert envelope is not None  # check_submission refuses an unsigned pool
    return envelope.encode()

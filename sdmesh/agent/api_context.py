"""What the API's modules need from the agent, without importing the agent.

The route modules (api, api_observe, dashboard, api_tokens) and the metrics collector see the
agent through ``AgentView``, a protocol of the few attributes they read, and find it in the
aiohttp application under ``AGENT_KEY``. So the agent imports the API (it serves it), and
nothing in the API imports the agent back: no import cycle between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from sdmesh.agent.config import AgentConfig
    from sdmesh.agent.events import EventHub
    from sdmesh.agent.mesh import MeshNode
    from sdmesh.agent.pools import PoolService
    from sdmesh.dht import Dht
    from sdmesh.hypervisor import HypervisorDriver
    from sdmesh.trust.host import HostTrust


class AgentView(Protocol):
    """The agent as the API and the metrics see it (sdmesh.agent.agent.Agent is one)."""

    config: AgentConfig
    status: str
    node: MeshNode | None
    dht: Dht | None
    pools: PoolService | None
    hypervisor: HypervisorDriver | None
    events: EventHub
    trust: HostTrust | None

    def request_leave(self) -> None: ...

    def drops(self) -> dict[str, int]: ...

    def dht_drops(self) -> dict[str, int]: ...

    def peers(self) -> list[dict[str, object]]: ...


AGENT_KEY = web.AppKey("agent", object)


def agent_of(request: web.Request) -> AgentView:
    """The agent ``build_app`` put in the request's application."""
    agent = request.app[AGENT_KEY]
    return agent  # type: ignore[return-value]


def pool_service(request: web.Request) -> PoolService:
    """The agent's pool service; 503 while the agent is still starting."""
    agent = agent_of(request)
    service = agent.pools
    if service is None:
        if agent.config.witness:  # never will: it only votes (docs/ha.md)
            raise web.HTTPConflict(text="a witness runs no pools")
        raise web.HTTPServiceUnavailable(text="the agent is still starting; try again")
    return service


def failed(error: Exception) -> web.HTTPException:
    """A ``PoolError`` as the HTTP answer its ``status`` asks for (400 by default)."""
    status = getattr(error, "status", 400)
    kinds: dict[int, type[web.HTTPException]] = {
        403: web.HTTPForbidden,  # e.g. a termination the pool's shepherd refused
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        503: web.HTTPServiceUnavailable,  # leaving, or no majority of the mesh: ask another
    }
    return kinds.get(status, web.HTTPBadRequest)(text=str(error))


__all__ = ["AGENT_KEY", "AgentView", "agent_of", "failed", "pool_service"]

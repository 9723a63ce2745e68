"""``isolation`` from descriptors: the VM's own, else a container's; stop by default."""

from __future__ import annotations

import pytest

from sdmesh.ha.policy import IsolationError, fenceable, isolation_response, rebuildable
from sdmesh.language import resolve_text
from sdmesh.lifecycle.model import Node
from sdmesh.pools.layout import skeleton, walk


def pool(vm_extra: str = "", pool_extra: str = "") -> Node:
    text = f"""
#include "org/smartfrog/components.sf"
#include "ch/cern/openlab/smartdomains/components.sf"
sfConfig extends Compound {{
    pool extends Compound {{
        {pool_extra}
        vm extends KvmDomain {{ memory 256; restart "always"; {vm_extra} }}
    }}
}}
"""
    return next(n for n in walk(skeleton(resolve_text(text).root)) if n.name == "vm")


def test_default_is_stop_and_fenceable() -> None:
    vm = pool()
    assert isolation_response(vm) == "stop"
    assert fenceable("always", "stop") and rebuildable("on-failure", "stop")


def test_keep_from_the_vm_or_a_container_is_neither_fenced_nor_rebuilt() -> None:
    assert isolation_response(pool('isolation "keep";')) == "keep"
    assert isolation_response(pool(pool_extra='isolation "keep";')) == "keep"
    assert isolation_response(pool('isolation "stop";', 'isolation "keep";')) == "stop"
    assert not fenceable("always", "keep") and not rebuildable("always", "keep")
    assert not fenceable("never", "stop")


def test_a_wrong_value_names_the_component() -> None:
    with pytest.raises(IsolationError, match=r"sfConfig:pool:vm: isolation must be"):
        isolation_response(pool('isolation "kep";'))


def test_layout_carries_the_isolation_and_refuses_a_wrong_one() -> None:
    from sdmesh.language import resolve_text as resolve
    from sdmesh.pools.layout import LayoutError, layout

    def text(extra: str) -> str:
        return f"""
#include "org/smartfrog/components.sf"
#include "ch/cern/openlab/smartdomains/components.sf"
sfConfig extends Compound {{
    vm extends KvmDomain {{ memory 256; restart "always"; {extra} }}
}}
"""

    assert layout(resolve(text("")).root).units["sfConfig:vm"].isolation == "stop"
    assert layout(resolve(text('isolation "keep";')).root).units["sfConfig:vm"].isolation == "keep"
    with pytest.raises(LayoutError, match="isolation must be"):
        layout(resolve(text('isolation "maybe";')).root)

"""A device that is not here (phone, board, laptop): its figures feed projections (analysis.cost), labelled
`projected`. Nothing runs on it: it has no capability, so no backend is planned on it."""
from __future__ import annotations

from ..contracts import Adapter, register_adapter
from ..errors import Unsupported


@register_adapter
class ProfileAdapter(Adapter):
    name = "profile"

    def setup(self) -> None:
        raise Unsupported(f"{self.profile.name} is a device profile for projections (slmbench report --cost), "
                          "not a device on this machine")

    def info(self) -> dict:
        return {"adapter": "profile", "profile": self.profile.name}

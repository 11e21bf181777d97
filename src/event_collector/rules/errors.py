"""The one error of the rules: a file, or a plan, that cannot be put in force."""

from __future__ import annotations

from ..exceptions import ConfigError


class RulesError(ConfigError, ValueError):
    """RULES_FILE refused. The message names the place in the file (`sources.shop-web.events.purchase.policy:
    ...`) or, for a conflict with the live indices, the field, its old type and its new one. A ConfigError, so
    that a bad file at start-up stops the collector as any bad setting does."""

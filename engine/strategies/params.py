"""Re-export of `engine.params` (ParamSpec moved there so that engine.aggregation, which the
strategies import, can use it without importing the strategies package)."""

from engine.params import ParamSpec, parse_component, resolve_options

__all__ = ["ParamSpec", "parse_component", "resolve_options"]

"""The agent's one configuration file: metric weights, detection, the watch loop's schedule,
alert channels and stores, in YAML, validated with errors that name the key at fault.

``load_agent_config(path)`` (the file given, else ``$CXAGENT_CONFIG``, else every default) or
``load_config(path)`` return an ``AgentConfig``; ``docs/configuration.md`` documents every
setting. ``cxagent config check [FILE]`` (or ``python -m cxagent.config [FILE]``) checks a file
and prints the effective settings. The alert channel models are ``cxagent.alerts.settings``'s.
"""

from cxagent.alerts.settings import (  # the channel models: defined there, used here
    CHANNEL_KINDS,
    Channel,
    ChannelBase,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
)
from cxagent.config.check import check_config
from cxagent.config.errors import ConfigError, Problem
from cxagent.config.load import (
    CONFIG_ENV,
    dump_config,
    find_config,
    load_agent_config,
    load_config,
    parse_config,
    validate_config,
)
from cxagent.config.schema import (
    AgentConfig,
    CXWeights,
    DataSection,
    DetectionSection,
    MetricsSection,
    Setting,
    StoreSection,
    WatchSection,
    WorkbenchSection,
    format_duration,
    parse_duration,
    settings,
    weighted_components,
)

__all__ = [
    "CHANNEL_KINDS",
    "CONFIG_ENV",
    "AgentConfig",
    "CXWeights",
    "Channel",
    "ChannelBase",
    "ConfigError",
    "DataSection",
    "DetectionSection",
    "EmailChannel",
    "MetricsSection",
    "Problem",
    "Setting",
    "SlackChannel",
    "StoreSection",
    "WatchSection",
    "WebhookChannel",
    "WorkbenchSection",
    "check_config",
    "dump_config",
    "find_config",
    "format_duration",
    "load_agent_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "settings",
    "validate_config",
    "weighted_components",
]

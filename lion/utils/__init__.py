"""Framework utilities: config checks (`checks`), the run directory (`run`), building objects from configs
(`instantiate`) and the resumable training loader (`resumable`). Importing registers the config resolvers."""
from lion.utils.checks import ConfigError, check_config
from lion.utils.run import register_resolvers

register_resolvers()

__all__ = ["ConfigError", "check_config", "register_resolvers"]

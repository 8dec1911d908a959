"""The clean room server: brands learn how their audiences overlap, and nothing more.

Domain modules (matching, release, audit, storage) import no gRPC; `cleanroom.service`
puts them behind the API of `protos/cleanroom/v1`.
"""

from cleanroom.clean_room import CleanRoom
from cleanroom.config import Config, load_config
from cleanroom.errors import CleanRoomError, CleanRoomInternalError, ConfigError

__all__ = [
    "CleanRoom",
    "CleanRoomError",
    "CleanRoomInternalError",
    "Config",
    "ConfigError",
    "load_config",
]

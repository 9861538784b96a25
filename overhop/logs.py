"""Structured logging: how Overhop's log lines are filtered, formatted and written.

Call `configure_logging(level, human_friendly, stream)` once at start-up (again in tests);
get loggers with `get_logger(__name__)`, typically at module level.

Levels, most to least severe: error, warn, info, debug, verbose. Log with the method of the
same name: `log.error(...)`, `log.warn(...)`, `log.info(...)`, `log.debug(...)` and
`log.verbose("event", key=value)` for the level below debug (numeric level 5). Bound
loggers (`log.bind(...)`) have the same methods, `verbose` included.

Output is one JSON object per line with `timestamp` (ISO 8601, UTC), `level`, `event`,
`logger` and the event's keys; with `human_friendly` it is structlog's console format,
coloured only when the stream is a terminal. Keys bound with
`structlog.contextvars.bind_contextvars(...)` / `bound_contextvars(...)` (per-connection
ids, for instance) are added to every line logged in that context.

Levels are filtered by the logger class itself (`structlog.make_filtering_bound_logger`),
so a call below the configured level is a method returning None. `get_logger` returns a
`Logger` whose methods are swapped when `configure_logging` runs again; a logger made by
`.bind()` keeps the configuration in force when it was bound, so bind after configuring.
"""

import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS: dict[str, int] = {"error": 40, "warn": 30, "info": 20, "debug": 10, "verbose": 5}
VERBOSE = LEVELS["verbose"]

# structlog method names -> the level names Overhop prints.
_LEVEL_NAMES = {"critical": "error", "exception": "error", "error": "error",
                "warning": "warn", "warn": "warn", "info": "info", "debug": "debug",
                "verbose": "verbose"}


def _nop(self: Any, event: str, *args: Any, **kw: Any) -> None:
    return None


def _verbose(self: Any, event: str, *args: Any, **kw: Any) -> Any:
    # Interpolates positional arguments the way structlog's own level methods do.
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        event = event % args[0]
    elif args:
        event = event % args
    return self._proxy_to_logger("verbose", event, **kw)


def _make_wrapper_class(level: str) -> type:
    """The filtering bound-logger class for `level`, with a `verbose` method."""
    enabled = level == "verbose"
    # structlog has no level below debug: verbose is built on the pass-everything class.
    base = structlog.make_filtering_bound_logger(0 if enabled else LEVELS[level])
    minimum = LEVELS[level]
    methods: dict[str, Callable[..., Any]] = {
        "verbose": _verbose if enabled else _nop,
        "is_enabled_for": lambda self, lvl: lvl >= minimum,
        "get_effective_level": lambda self: minimum,
    }
    return type(f"OverhopLoggerAt{level.capitalize()}", (base,), methods)


_WRAPPER_CLASSES = {level: _make_wrapper_class(level) for level in LEVELS}


class _LineWriter:
    """The wrapped logger: writes each rendered event as one line to a stream."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream  # None: whatever sys.stderr is at write time
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        stream = sys.stderr if self._stream is None else self._stream
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    error = warn = warning = info = debug = verbose = exception = critical = msg


def _add_level(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
    return event_dict


_configured = False
_settings: tuple[str, bool] = ("info", False)


def configure_logging(level: str, human_friendly: bool, stream: TextIO | None = None) -> None:
    """Send log lines at `level` and above to `stream` (default: sys.stderr when written)."""
    global _configured, _settings
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]
    if human_friendly:
        isatty = getattr(sys.stderr if stream is None else stream, "isatty", None)
        processors.append(structlog.dev.ConsoleRenderer(
            colors=bool(isatty and isatty()),
            exception_formatter=structlog.dev.plain_traceback))
    else:
        processors += [structlog.processors.format_exc_info,
                       structlog.processors.JSONRenderer(default=str)]
    writer = _LineWriter(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=_WRAPPER_CLASSES[level],
        context_class=dict,
        logger_factory=lambda *args: writer,
        # Logger handles hold their bound logger and are rebuilt below on every call.
        cache_logger_on_first_use=False,
    )
    _configured = True
    _settings = (level, human_friendly)
    for handle in list(_handles):
        handle._attach()


def current_settings() -> tuple[str, bool]:
    """(level, human_friendly) as last configured: a child process logs the same way."""
    return _settings


class Logger:
    """A named logger that follows reconfiguration.

    Its level methods are the methods of a structlog bound logger built for the current
    configuration and swapped in by `configure_logging`, so a call costs what a call on a
    plain bound logger costs: a filtered-out level is a method that returns None.
    All take `(event, *args, **kw)`; `exception` also attaches the exception being handled.
    """

    __slots__ = ("__weakref__", "_bound", "_name", "bind", "debug", "error", "exception",
                 "info", "verbose", "warn", "warning")

    bind: Callable[..., Any]
    error: Callable[..., None]
    exception: Callable[..., None]
    warn: Callable[..., None]
    warning: Callable[..., None]
    info: Callable[..., None]
    debug: Callable[..., None]
    verbose: Callable[..., None]

    def __init__(self, name: str) -> None:
        self._name = name
        self._attach()
        _handles.add(self)

    @property
    def name(self) -> str:
        return self._name

    def _attach(self) -> None:
        bound = structlog.get_logger().bind(logger=self._name)
        self._bound = bound
        self.bind = bound.bind
        self.error = bound.error
        self.exception = bound.exception
        self.warn = self.warning = bound.warning
        self.info = bound.info
        self.debug = bound.debug
        self.verbose = bound.verbose

    def is_enabled_for(self, level: str) -> bool:
        """Whether a call at `level` (a name from LEVELS) would be written."""
        return bool(self._bound.is_enabled_for(LEVELS[level]))


_handles: weakref.WeakSet[Logger] = weakref.WeakSet()  # every live Logger, for reconfiguration


def get_logger(name: str) -> Logger:
    """The logger for `name` (use the module's `__name__`); info to stderr until configured."""
    if not _configured:
        configure_logging("info", human_friendly=False)
    return Logger(name)

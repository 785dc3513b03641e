"""lote's settings as lote itself reads them (src/settings), so that a deployment file lote would
refuse at start (exit 2) fails here first.

The keys are those of config/default.toml plus the TLS keys it leaves commented, with [[models]]
tables whose tasks are read from src/settings/mod.rs; LOTE__SECTION__KEY variables override the
file; durations are humantime's. Both the Kubernetes and the Compose checks go through here, so
the two can never disagree about what a valid lote.toml is.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from typing import Any

from .common import ROOT, CheckError, Unrunnable

# Addresses that accept connections from outside the container (probes, Prometheus, ports).
ALL_INTERFACES = ("0.0.0.0", "[::]")


@cache
def known_keys() -> dict[str, Any]:
    defaults = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    defaults["server"]["tls"] = {"cert": "", "key": "", "client_ca": ""}
    return defaults


@cache
def tasks() -> set[str]:
    source = (ROOT / "src" / "settings" / "mod.rs").read_text()
    block = re.search(r"\bTask\s*\{(.*?)\}", source, re.S)
    if block is None:
        raise Unrunnable("cannot find the Task names in src/settings/mod.rs")
    return set(re.findall(r'"([a-z-]+)"', block.group(1)))


# humantime's units (lote parses durations with humantime), months and years left out.
DURATION_UNITS = {
    **dict.fromkeys(["nsec", "ns"], 1e-9),
    **dict.fromkeys(["usec", "us"], 1e-6),
    **dict.fromkeys(["msec", "ms"], 1e-3),
    **dict.fromkeys(["seconds", "second", "sec", "s"], 1),
    **dict.fromkeys(["minutes", "minute", "min", "m"], 60),
    **dict.fromkeys(["hours", "hour", "hr", "h"], 3600),
    **dict.fromkeys(["days", "day", "d"], 86400),
    **dict.fromkeys(["weeks", "week", "w"], 604800),
}


def seconds(text: Any, what: str) -> float:
    """A humantime duration ("5s", "1m 30s", "500ms") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", str(text))
    if not parts or re.sub(r"[\d.\sa-z]", "", str(text)):
        raise CheckError(f'{what}: {text!r} is not a duration such as "60s"')
    total = 0.0
    for number, unit in parts:
        if unit not in DURATION_UNITS:
            raise CheckError(f"{what}: unknown unit {unit!r} in {text!r}")
        total += float(number) * DURATION_UNITS[unit]
    return total


def settings_errors(settings: dict[str, Any], origin: str) -> list[str]:
    """Keys lote would refuse (it stops at start with exit 2), and values it would refuse.
    `settings` is the file with its LOTE__ variables applied (apply_env)."""
    errors = []
    known = known_keys()

    def walk(table: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            name = f"{prefix}{key}"
            if key not in schema:
                errors.append(f"unknown key `{name}` in {origin}")
            elif isinstance(schema[key], dict):
                if isinstance(value, dict):
                    walk(value, schema[key], f"{name}.")
                else:
                    errors.append(f"`{name}` in {origin} must be a table")

    models = settings.get("models", [])
    walk({k: v for k, v in settings.items() if k != "models"}, known, "")
    if not isinstance(models, list):
        errors.append(f"`models` in {origin} must be [[models]] tables")
        models = []
    served = tasks()
    names = set()
    for index, model in enumerate(models):
        where = f"models[{index}] in {origin}"
        for key in model:
            if key not in ("name", "task", "path"):
                errors.append(f"unknown key `{key}` in {where}")
        for key in ("name", "task", "path"):
            if not isinstance(model.get(key), str) or not model.get(key):
                errors.append(f"{where}: `{key}` is required")
        if model.get("task") and model["task"] not in served:
            errors.append(f"{where}: unknown task {model['task']!r}")
        if model.get("name") in names:
            errors.append(f"{where}: model name {model['name']!r} used twice")
        names.add(model.get("name"))
    device = settings.get("device", {})
    if "kind" in device and not re.fullmatch(r"auto|cpu|cuda:\d+", str(device["kind"])):
        errors.append(f"device.kind {device['kind']!r} in {origin}: not auto, cpu or cuda:N")
    if "dtype" in device and device["dtype"] not in ("fp32", "bf16", "fp16"):
        errors.append(f"device.dtype {device['dtype']!r} in {origin}: not fp32, bf16 or fp16")
    for section, key in [
        ("server", "drain_delay"),
        ("server", "shutdown_timeout"),
        ("batching", "max_batch_delay"),
    ]:
        if key in settings.get(section, {}):
            try:
                seconds(settings[section][key], f"{section}.{key} in {origin}")
            except CheckError as error:
                errors.extend(error.details)
    return errors


def apply_env(settings: dict[str, Any], env: dict[str, str], origin: str) -> list[str]:
    """Applies LOTE__SECTION__KEY variables to `settings` in place, as lote does."""
    errors = []
    known = known_keys()
    for var, value in env.items():
        if not var.startswith("LOTE__"):
            continue
        path = var[len("LOTE__") :].lower().split("__")
        schema: Any = known
        for part in path:
            if not isinstance(schema, dict) or part not in schema:
                errors.append(f"{var} in {origin} names no setting")
                break
            schema = schema[part]
        else:
            table = settings
            for part in path[:-1]:
                table = table.setdefault(part, {})
            table[path[-1]] = value
    return errors


def effective(settings: dict[str, Any], section: str, key: str) -> Any:
    """The value lote runs with: the file's (after apply_env), else config/default.toml's."""
    value = settings.get(section, {}).get(key)
    return known_keys()[section][key] if value is None else value


def amqp_enabled(settings: dict[str, Any]) -> bool:
    return str(effective(settings, "amqp", "enabled")).lower() == "true"


def addr_port(addr: str, what: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.+):(\d+)", str(addr))
    if match is None:
        raise CheckError(f"{what} {addr!r} is not HOST:PORT")
    return match.group(1), int(match.group(2))


def stop_budget(settings: dict[str, Any], origin: str) -> tuple[float, str]:
    """How long lote may take to stop (drain, then the longest batch), and how to say so."""
    drain = seconds(effective(settings, "server", "drain_delay"), f"server.drain_delay ({origin})")
    stop = seconds(
        effective(settings, "server", "shutdown_timeout"), f"server.shutdown_timeout ({origin})"
    )
    return drain + stop, (
        f"server.drain_delay {effective(settings, 'server', 'drain_delay')} + "
        f"server.shutdown_timeout {effective(settings, 'server', 'shutdown_timeout')}"
    )

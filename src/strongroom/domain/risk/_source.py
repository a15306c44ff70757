"""Policy source text: parse YAML or JSON, and say where in it a problem is.

Rules:

1. Text that opens with ``{`` or ``[`` is JSON, parsed by the JSON parser (so
   JSON means JSON); anything else is YAML, parsed by PyYAML's safe loader.
2. Every error carries the 1-based line and column of the node it concerns,
   found by walking the composed YAML node tree (JSON is composed as YAML
   for its marks) along the error's location.
3. Duplicate keys are errors (PyYAML and ``json`` would silently keep the last).
4. YAML anchors and aliases are refused: a policy has no use for them, and
   they would let a small text expand into a huge document.
5. A text over ``MAX_POLICY_BYTES`` is refused before it is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

MAX_POLICY_BYTES: Final = 256 * 1024
MAX_REPORTED_ERRORS: Final = 50

Loc = tuple[str | int, ...]

_PATTERN_WORDS: Final[dict[str, str]] = {
    r"^[A-Z]{3}$": "a three-letter ISO 4217 currency code in capitals, like EUR",
    r"^[A-Z]{2}$": "a two-letter ISO 3166 country code in capitals, like DE",
    r"^[a-z][a-z0-9_]{0,62}$": (
        "a name of lowercase letters, digits and underscores that starts with a letter"
    ),
    r"^[0-9]{6,8}$": "a BIN of 6 to 8 digits, written as a quoted string",
}


@dataclass(frozen=True, slots=True)
class PolicyError:
    """One problem in a policy text: where (1-based line and column) and what."""

    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.column}: {self.message}"


class PolicyInvalid(ValueError):
    """Raised when a policy text cannot be parsed or is not a valid policy.

    ``errors`` lists every problem found, in source order.
    """

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        self.errors = tuple(errors)
        count = len(self.errors)
        summary = "; ".join(str(error) for error in self.errors[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        plural = "" if count == 1 else "s"
        super().__init__(f"The policy is invalid ({count} problem{plural}): {summary}{more}")


class _AliasRefused(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("alias")
        self.mark = mark


class _PolicyLoader(yaml.SafeLoader):
    """The safe loader, refusing anchors and aliases."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(event.start_mark)
        return super().compose_node(parent, index)


def _mark_position(mark: yaml.Mark | None) -> tuple[int | None, int | None]:
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def _fail(message: str, line: int | None = None, column: int | None = None) -> PolicyInvalid:
    return PolicyInvalid([PolicyError(line, column, "", message)])


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree and the constructed data of a YAML text.

    Raises:
        PolicyInvalid: the text is not well-formed YAML, or uses aliases.
    """
    loader = _PolicyLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except _AliasRefused as exc:
        line, column = _mark_position(exc.mark)
        raise _fail("YAML anchors and aliases are not allowed in a policy.", line, column) from None
    except yaml.MarkedYAMLError as exc:
        line, column = _mark_position(exc.problem_mark or exc.context_mark)
        problem = exc.problem or exc.context or "malformed input"
        raise _fail(f"The YAML is malformed: {problem}.", line, column) from None
    except yaml.YAMLError:
        raise _fail("The YAML is malformed.") from None
    finally:
        loader.dispose()
    return root, data


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a policy may hold; write a finite number")


def _duplicate_keys(node: yaml.Node | None, path: str = "") -> list[PolicyError]:
    errors: list[PolicyError] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            child = f"{path}.{name}" if path else name
            if name in seen:
                line, column = _mark_position(key.start_mark)
                errors.append(PolicyError(line, column, child, f"{child} appears more than once."))
            seen.add(name)
            errors.extend(_duplicate_keys(value, child))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            errors.extend(_duplicate_keys(item, f"{path}[{index}]"))
    return errors


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """Parsed policy text: the data, and the node tree that locates errors in it."""

    data: Any
    root: yaml.Node | None
    is_json: bool

    def position(self, loc: Loc) -> tuple[int | None, int | None]:
        """Line and column of the node at ``loc``, or of the nearest enclosing node."""
        node = self.root
        last_key: yaml.Node | None = None
        for segment in loc:
            if segment == "[key]":
                node = last_key
                break
            if isinstance(node, yaml.MappingNode) and isinstance(segment, str):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == segment:
                        last_key, node = key, value
                        break
                else:
                    break
            elif isinstance(node, yaml.SequenceNode) and isinstance(segment, int):
                if not 0 <= segment < len(node.value):
                    break
                node = node.value[segment]
            else:
                break
        return _mark_position(node.start_mark if node is not None else None)

    def error(self, loc: Loc, message: str) -> PolicyError:
        line, column = self.position(loc)
        return PolicyError(line, column, _path(loc), message)

    def validation_errors(
        self, exc: ValidationError, kinds: Mapping[str, type[BaseModel]], root: type[BaseModel]
    ) -> list[PolicyError]:
        """pydantic's errors as located sentences, in source order."""
        located = []
        for details in exc.errors(include_url=False):
            loc, kind = _strip_tag(tuple(details["loc"]), kinds)
            message = _sentence(details, loc, kind, kinds, root, self.is_json)
            # An unknown key is shown at the key itself, not at its value.
            where = (*loc, "[key]") if details["type"] == "extra_forbidden" else loc
            located.append(self.error(where, message))
        located.sort(key=lambda e: (e.line or 0, e.column or 0))
        if len(located) > MAX_REPORTED_ERRORS:
            rest = len(located) - MAX_REPORTED_ERRORS
            located = located[:MAX_REPORTED_ERRORS]
            located.append(PolicyError(None, None, "", f"{rest} more problems are not shown."))
        return located


def parse_source(text: str) -> SourceDocument:
    """Parse a policy text as JSON or YAML (rule 1).

    Raises:
        PolicyInvalid: the text is too large, empty, malformed, has duplicate
            keys or aliases, or is not a mapping.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise _fail(f"The policy is larger than {MAX_POLICY_BYTES // 1024} KiB.")
    stripped = text.lstrip()
    if not stripped:
        raise _fail(
            "The policy is empty; it needs review_threshold, decline_threshold and factors."
        )
    is_json = stripped[0] in "{["
    if is_json:
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise _fail(f"The JSON is malformed: {exc.msg}.", exc.lineno, exc.colno) from None
        except ValueError as exc:
            raise _fail(f"{exc}.") from None
        try:
            root, _ = _compose(text)
        except PolicyInvalid:
            # Rare JSON that YAML reads differently (tabs, some escapes): the data
            # is still right, only the line numbers are lost.
            root = None
    else:
        root, data = _compose(text)
    duplicates = _duplicate_keys(root)
    if duplicates:
        raise PolicyInvalid(duplicates)
    if not isinstance(data, dict):
        line, column = _mark_position(root.start_mark if root is not None else None)
        raise _fail(
            "The policy must be a mapping with review_threshold, decline_threshold and factors.",
            line or 1,
            column or 1,
        )
    return SourceDocument(data, root, is_json)


def _strip_tag(loc: Loc, kinds: Mapping[str, type[BaseModel]]) -> tuple[Loc, str | None]:
    """Drop the discriminator tag pydantic puts after a factor's index."""
    if len(loc) > 2 and loc[0] == "factors" and isinstance(loc[1], int) and loc[2] in kinds:
        return (*loc[:2], *loc[3:]), str(loc[2])
    return loc, None


def _path(loc: Loc) -> str:
    path = ""
    for segment in loc:
        if segment == "[key]":
            continue
        if isinstance(segment, int):
            path += f"[{segment}]"
        else:
            path += f".{segment}" if path else segment
    return path or "policy"


def _short(value: Any) -> str | None:
    if isinstance(value, bool | int | float | str) or value is None:
        shown = repr(value)
        return shown if len(shown) <= 40 else None
    return None


def _sentence(
    details: ErrorDetails,
    loc: Loc,
    kind: str | None,
    kinds: Mapping[str, type[BaseModel]],
    root: type[BaseModel],
    is_json: bool,
) -> str:
    error_type = details["type"]
    ctx = details.get("ctx") or {}
    path = _path(loc)
    owner = f"a {kind} factor" if kind else ("a policy" if len(loc) == 1 else "this mapping")
    # The model whose field is at fault: a factor's kind, the policy at the top level.
    model = kinds.get(kind or "") if kind else (root if len(loc) == 1 else None)
    if error_type == "missing":
        needs = ""
        if model is not None:
            required = [n for n, f in model.model_fields.items() if f.is_required()]
            needs = f" ({owner} needs {', '.join(required)})"
        return f"{path} is required{needs}."
    if error_type == "extra_forbidden":
        if model is not None:
            return f"{path} is not a setting of {owner}; it takes {', '.join(model.model_fields)}."
        return f"{path} is not a known setting; check its spelling."
    if error_type == "union_tag_invalid":
        return (
            f"{path}.kind {ctx.get('tag')!r} is not a factor kind; use one of {', '.join(kinds)}."
        )
    if error_type == "union_tag_not_found":
        return f"{path} needs a kind; use one of {', '.join(kinds)}."
    got = _short(details.get("input"))
    if error_type == "string_type" and isinstance(details.get("input"), bool) and not is_json:
        return (
            f"{path} must be text, but YAML reads {got} as a boolean (yes, no, on and off "
            "are booleans in YAML); put it in quotes."
        )
    if error_type == "string_pattern_mismatch":
        wanted = _PATTERN_WORDS.get(str(ctx.get("pattern")), f"text matching {ctx.get('pattern')}")
        return f"{path} must be {wanted}" + (f" (got {got})." if got else ".")
    message = details["msg"]
    if message.startswith("Input should be "):
        text = f"{path} must be {message.removeprefix('Input should be ')}"
    elif message.startswith("Value error, "):
        text = f"{path}: {message.removeprefix('Value error, ')}"
    else:
        text = f"{path}: {message[0].lower()}{message[1:]}"
    if got is not None and error_type not in {"too_long", "too_short"}:
        text += f" (got {got})"
    return text.rstrip(".") + "."

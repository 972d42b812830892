"""Op scenarios: a scenario that names an importable op instead of the MoE layer.

    own-op-off-by-one:
      why: the planted off-by-one and its fix, as a kernel team would keep them
      op: own_op.scenarios:scale_op          # a factory: module path, colon, attribute
      params: {n: 1000}                      # keyword arguments to the factory, shared by every variant
      capture_sizes: [1, 2, 4]
      variants:
        buggy:
          params: {off_by_one: true}
          expect: {verdict: oob-write, buffer: out, side: overflow, first: 0, last: 3, bytes: 4}
        fixed: {expect: clean}

The factory returns `OpSpec(op, inputs, reference=None, constants=None, tolerance=None)`, or a tuple
`(op, inputs)` or `(op, inputs, reference)`; each variant's cases then run through `graph_harness.check`.
Loading the YAML imports nothing: the factory is imported when a case runs.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, model_validator

from graph_harness.core.expect import Expectation
from graph_harness.core.verdict import Verdict
from graph_harness.errors import bad_value
from graph_harness.schema import ID_PATTERN, Count, Frozen, ScenarioBase, rule

if TYPE_CHECKING:
    from graph_harness.core.check import Prepared

_OP_PATTERN = r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*"


@dataclass(frozen=True)
class OpSpec:
    """What an op scenario's factory returns: the arguments of `graph_harness.check` that describe the op."""

    op: Callable[..., Any]
    inputs: Callable[[int, int], Mapping[str, Any]]
    reference: Callable[..., Any] | None = None
    constants: Mapping[str, Any] | None = None
    tolerance: float | None = None


def _verdict_alone(value: object) -> object:
    """`expect: clean` is `expect: {verdict: clean}`."""
    return {"verdict": value} if isinstance(value, str) else value


class ExpectSpec(Frozen):
    """An expectation as YAML writes it: the verdict, and for oob-write what is known of its violation."""

    verdict: Verdict
    buffer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    side: Literal["overflow", "underflow"] | None = None
    first: Annotated[int, Field(strict=True)] | None = None
    last: Annotated[int, Field(strict=True)] | None = None
    bytes: Count | None = None
    extent: Count | None = None
    match: Annotated[str, StringConstraints(min_length=1)] | None = None
    arg: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None  # the kernel's parameter
    also: tuple[ExpectSpec, ...] = ()  # further violations the case must show as well (`gh.expect.all_of`)

    @model_validator(mode="after")
    def _as_matcher(self) -> ExpectSpec:
        """The same checks as `gh.expect`'s, with the field at fault."""
        try:
            self.matcher()
        except ValueError as err:
            field, _, why = str(err).partition(": ")
            got, _, allowed = why.removeprefix("got ").partition("; allowed: ")
            if allowed:  # "also: got clean; allowed: oob-write and oob-read expectations"
                raise rule(allowed, field, got) from None
            raise rule(why, field, str(getattr(self, field, ""))) from None
        return self

    def matcher(self) -> Expectation:
        """The core expectation this entry states."""
        stated = {k: getattr(self, k) for k in type(self).model_fields if k != "also"}
        return Expectation(**stated, also=tuple(a.matcher() for a in self.also))


# A verdict alone, or a mapping (the file schema says both: graph_harness.suite.files.scenario_file_schema).
Expect = Annotated[ExpectSpec, BeforeValidator(_verdict_alone)]


def _variant_id(text: str) -> str:
    if not re.fullmatch(ID_PATTERN, text):
        raise rule("lowercase letters, digits, '.', '_', '-'")
    return text


def _op_path(text: str) -> str:
    if not re.fullmatch(_OP_PATTERN, text):
        raise rule("module.path:attribute, e.g. own_op.scenarios:scale_shift_case")
    return text


VariantId = Annotated[str, AfterValidator(_variant_id)]


class OpVariant(Frozen):
    """One variant of an op scenario: factory parameters over the scenario's, and what it must show."""

    params: dict[str, Any] = Field(default_factory=dict)
    expect: Expect = ExpectSpec(verdict=Verdict.CLEAN)
    expect_at: dict[Count, Expect] = Field(default_factory=dict)  # per capture size, where the figures differ


class OpScenario(ScenarioBase):
    """A scenario whose op comes from the user's own package, named `module:factory`."""

    op: Annotated[str, AfterValidator(_op_path)]
    params: dict[str, Any] = Field(default_factory=dict)
    tolerance: Annotated[float, Field(gt=0)] | None = None  # else the factory's, else graph_harness.check's
    # Where the op's package imports from when it is not installed: a folder, relative to this file (default: the
    # folder above this file's). A fuzz reproduction written elsewhere names its scenario's.
    import_root: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    variants: Annotated[dict[VariantId, OpVariant], Field(min_length=1)]

    @model_validator(mode="after")
    def _cross_check(self) -> OpScenario:
        self._check_cpu_sizes()
        for name, variant in self.variants.items():
            stray = sorted(set(variant.expect_at) - set(self.capture_sizes))
            if stray:
                raise rule(f"capture sizes of the scenario ({', '.join(map(str, self.capture_sizes))})",
                           f"variants.{name}.expect_at", ", ".join(map(str, stray)))
        return self

    def summary(self) -> str:
        """`op own_op.scenarios:scale_op`."""
        return f"op {self.op}"

    def variant_names(self) -> tuple[str, ...]:
        """The variants, in the order the file gives them."""
        return tuple(self.variants)

    def expected(self, variant: str, size: int | None = None) -> Verdict:
        chosen = self.variants[variant]
        return chosen.expect_at.get(size, chosen.expect).verdict if size is not None else chosen.expect.verdict

    def expectation(self, variant: str, size: int) -> Expectation:
        """What `variant` must show at capture size `size`."""
        chosen = self.variants[variant]
        return chosen.expect_at.get(size, chosen.expect).matcher()

    def stated_bytes(self, scenario_id: str, variant: str, size: int) -> tuple[str | None, int | None, int] | None:
        e = self.expectation(variant, size)
        if e.verdict is not Verdict.OOB_WRITE:
            return None
        extent = e.extent if e.extent is not None else (
            e.last + 1 if e.side == "overflow" and e.last is not None else
            -e.first if e.side == "underflow" and e.first is not None else None)
        return None if extent is None else (e.buffer, None, extent)

    def package_root(self) -> Path | None:
        """The folder the op's package imports from when it is not installed: `import_root`, else the folder above
        this file's."""
        if self.import_root is not None:
            root = Path(self.import_root)
            return root if root.is_absolute() or self.source is None else self.source.parent / root
        return None if self.source is None else self.source.parent.parent

    def factory(self, scenario_id: str) -> Callable[..., Any]:
        """The factory `op` names, imported now; BadInput says what failed."""
        module_name, _, attribute = self.op.partition(":")
        try:
            module = _import(module_name, self.package_root())
            target: Any = module
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as err:
            raise bad_value(self.where(scenario_id), "op", repr(self.op), "an importable module:attribute",
                            f"{type(err).__name__}: {err}") from None
        if not callable(target):
            raise bad_value(self.where(scenario_id), "op", repr(self.op), "a callable factory",
                            f"it is {type(target).__name__}")
        return target  # type: ignore[no-any-return]

    def spec(self, scenario_id: str, variant: str) -> OpSpec:
        """What the factory makes of the scenario's parameters and the variant's over them."""
        params = {**self.params, **self.variants[variant].params}
        made = self.factory(scenario_id)(**params)
        if isinstance(made, OpSpec):
            return made
        if isinstance(made, tuple) and len(made) in (2, 3):
            return OpSpec(*made)
        raise bad_value(self.where(scenario_id), "op", repr(self.op),
                        "a factory returning OpSpec, (op, inputs) or (op, inputs, reference)",
                        f"it returned {type(made).__name__}")

    def prepare(self, scenario_id: str, variant: str, sizes: Sequence[int], *, seed: int | None = None,
                budget: int | None = None) -> Prepared:
        from graph_harness.core import phases
        from graph_harness.core.check import DEFAULT_TOLERANCE, prepare

        with phases.timed("weights"):  # the factory makes the op's constants
            spec = self.spec(scenario_id, variant)
        seed = self.seed if seed is None else seed
        # One slab for every size, as a server captures them: one op, graphs captured into one pool, so that what
        # one size's capture does to the op's caches reaches the graphs captured before it.
        return prepare(spec.op, spec.inputs, list(sizes), reference=spec.reference, constants=spec.constants,
                       tolerance=self.tolerance or spec.tolerance or DEFAULT_TOLERANCE,
                       expect=lambda size: self.expectation(variant, size), seed=seed, guard_budget=budget,
                       name=scenario_id, variant=variant, repro=lambda size: self.repro(scenario_id, variant, size,
                                                                                        seed))


def _import(module_name: str, root: Path | None) -> Any:
    """Import a module as named; failing that, with `root` (the project's folder) on the path, so that a scenario
    next to its package finds it whatever the working directory."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if root is None or not (err.name or "").startswith(module_name.split(".")[0]):
            raise
        folder = str(root.resolve())
        if folder in sys.path:
            raise
        sys.path.append(folder)
        return importlib.import_module(module_name)

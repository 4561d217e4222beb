"""The router configuration (`configs/router.yaml`, packaged as `model_selector/configs/router.yaml`): model catalog, decisions, selector settings.

The decision schema is the reference's (vLLM Semantic Router): each decision has a
priority, a rule tree of `type: domain` conditions, an algorithm and `modelRefs`.
Every problem is reported as one `ConfigError` naming the file, the decision and the fix.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from model_selector.core.algorithms import KNN, SELECTOR_ALGORITHMS

log = logging.getLogger(__name__)

# The default configuration ships in the package; a checkout also links it at configs/router.yaml.
PACKAGED_CONFIG = Path(str(resources.files("model_selector") / "configs" / "router.yaml"))


def default_config_path() -> Path:
    """configs/router.yaml when the current directory has one (a checkout, a user's project), else the
    packaged default."""
    local = Path("configs/router.yaml")
    return local if local.is_file() else PACKAGED_CONFIG

DOMAINS: tuple[str, ...] = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering",
    "health", "history", "law", "math", "other", "philosophy", "physics", "psychology",
)
OPERATORS: tuple[str, ...] = ("AND", "OR", "NOT")


class ConfigError(ValueError):
    """A configuration problem, with where it is and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_base_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL; write it like http://host:port/v1")
    return value


def _check_env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        # The value is not echoed: it may be a key pasted by mistake.
        raise ValueError("not an environment variable name; give the name of the variable that holds "
                         "the API key (e.g. OPENAI_API_KEY), never the key itself")
    return value


BaseUrl = Annotated[str, AfterValidator(_check_base_url)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]


class CatalogModel(_Strict):
    name: str = Field(min_length=1)
    price_per_million_output_tokens: float = Field(ge=0)
    # Where the gateway sends this model's requests; unset fields come from `gateway.upstream`.
    base_url: BaseUrl | None = None
    upstream_model: str | None = Field(default=None, min_length=1)
    api_key_env: EnvName | None = None


class Upstream(_Strict):
    """The default OpenAI-compatible endpoint of every catalog model."""
    base_url: BaseUrl = "http://127.0.0.1:9000/v1"
    api_key_env: EnvName | None = None
    timeout_s: float = Field(default=120.0, gt=0)


class GatewaySettings(_Strict):
    upstream: Upstream = Upstream()
    # When Triton cannot route a request: answer 503 (false) or send it to `default_model`.
    fallback_to_default_model: bool = False
    routing_timeout_s: float = Field(default=5.0, gt=0)


@dataclass(frozen=True)
class Endpoint:
    """Where and as what a catalog model is called upstream."""
    base_url: str
    model: str
    api_key_env: str | None


# domain_prior_weight: share of the domain prior (expected quality per domain and model) in
# a selector's output; the rest is the algorithm's own estimate for the query.
class KnnSettings(_Strict):
    k: int = Field(default=10, ge=1, le=256)
    domain_prior_weight: float = Field(default=0.5, ge=0, le=1)


class KmeansSettings(_Strict):
    n_clusters: int = Field(default=16, ge=2, le=4096)
    top_k: int = Field(default=3, ge=1)
    temperature: float = Field(default=9.0, gt=0)
    domain_prior_weight: float = Field(default=0.5, ge=0, le=1)
    seed: int = 42


class SvmSettings(_Strict):
    C: float = Field(default=1.0, gt=0)
    gamma: float = Field(default=1.0, gt=0)
    max_train: int = Field(default=10000, ge=50)
    domain_prior_weight: float = Field(default=0.5, ge=0, le=1)
    seed: int = 42


class MlpSettings(_Strict):
    """A multi-output perceptron: each model's probability of a correct answer (ReLU hidden
    layers, sigmoid outputs), trained with L2 penalty `alpha` for `max_iter` epochs of Adam."""
    hidden_sizes: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = Field(default=(128,), min_length=1)
    alpha: float = Field(default=0.1, ge=0)
    max_iter: int = Field(default=30, ge=1, le=2000)
    domain_prior_weight: float = Field(default=0.5, ge=0, le=1)
    seed: int = 42


class SelectorSettings(_Strict):
    knn: KnnSettings = KnnSettings()
    kmeans: KmeansSettings = KmeansSettings()
    svm: SvmSettings = SvmSettings()
    mlp: MlpSettings = MlpSettings()


class DomainCondition(_Strict):
    type: Literal["domain"]
    name: str


class RuleNode(_Strict):
    operator: Literal["AND", "OR", "NOT"]
    conditions: list[Union[DomainCondition, "RuleNode"]] = Field(min_length=1)


RuleNode.model_rebuild()


class Algorithm(BaseModel):
    # Per-algorithm blocks (`knn: {k: 5}`) are accepted for compatibility with the
    # reference's schema; their values must agree with `model_selection`.
    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class ModelRef(_Strict):
    model: str


class Decision(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    priority: int = 0
    rules: RuleNode
    algorithm: Algorithm
    modelRefs: list[ModelRef] = Field(min_length=1)
    cost_weight: float | None = Field(default=None, ge=0)

    @property
    def candidates(self) -> list[str]:
        return [ref.model for ref in self.modelRefs]


class RouterConfig(_Strict):
    models: list[CatalogModel] = Field(min_length=1)
    default_model: str
    domain_threshold: float = Field(default=0.5, ge=0, le=1)
    cost_weight: float = Field(default=0.0, ge=0)
    model_selection: SelectorSettings = SelectorSettings()
    decisions: list[Decision] = Field(default_factory=list)
    gateway: GatewaySettings = GatewaySettings()

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def price(self, model: str) -> float:
        return next(m.price_per_million_output_tokens for m in self.models if m.name == model)

    def endpoint(self, model: str) -> Endpoint:
        entry = next(m for m in self.models if m.name == model)
        upstream = self.gateway.upstream
        return Endpoint(base_url=(entry.base_url or upstream.base_url).rstrip("/"),
                        model=entry.upstream_model or entry.name,
                        api_key_env=entry.api_key_env or upstream.api_key_env)

    def decision_cost_weight(self, decision: Decision) -> float:
        return self.cost_weight if decision.cost_weight is None else decision.cost_weight


def _describe_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "top level"
    return f"{where}: {first['msg']}"


def _closest(name: str, choices: tuple[str, ...] | list[str]) -> str:
    normalised = name.replace("_", " ").replace("-", " ").strip().lower()
    if normalised in choices:
        return normalised
    match = difflib.get_close_matches(normalised, choices, n=1, cutoff=0.0)
    return match[0] if match else choices[0]


def _check_rule(node: RuleNode, fail: Any) -> None:
    if node.operator == "NOT" and len(node.conditions) != 1:
        fail(f"a NOT rule takes exactly one condition, got {len(node.conditions)}; "
             "wrap several in an AND or OR node")
    for child in node.conditions:
        if isinstance(child, RuleNode):
            _check_rule(child, fail)
        elif child.name not in DOMAINS:
            fail(f"unknown domain {child.name!r}; did you mean {_closest(child.name, DOMAINS)!r}? "
                 f"Valid domains: {', '.join(DOMAINS)}")


def _check_decision(raw: Any, index: int, config: dict[str, Any], catalog: list[str], fail_at: Any) -> None:
    name = raw.get("name") if isinstance(raw, dict) else None
    label = f"decision {name!r}" if name else f"decisions[{index}]"

    def fail(message: str) -> None:
        fail_at(label, message)

    if not isinstance(raw, dict):
        fail("each decision must be a mapping with name, priority, rules, algorithm and modelRefs")
    algo = raw.get("algorithm")
    algo_type = algo.get("type") if isinstance(algo, dict) else None
    if algo_type is not None and algo_type not in SELECTOR_ALGORITHMS:
        fail(f"unknown algorithm {algo_type!r}; use one of {', '.join(SELECTOR_ALGORITHMS)}")
    try:
        decision = Decision.model_validate(raw)
    except ValidationError as err:
        fail(f"malformed decision ({_describe_validation_error(err)}); a rule is "
             "{operator: AND|OR|NOT, conditions: [{type: domain, name: <domain>} | <rule>]}")
    _check_rule(decision.rules, fail)
    for model in decision.candidates:
        if model not in catalog:
            fail(f"modelRef {model!r} is not in the model catalog (`models`); add it there or use "
                 f"one of: {', '.join(catalog)}")
    if len(set(decision.candidates)) != len(decision.candidates):
        fail("modelRefs lists a model twice; list each candidate once")
    block = algo.get(decision.algorithm.type) if isinstance(algo, dict) else None
    if decision.algorithm.type == KNN.name and isinstance(block, dict) and "k" in block:
        k = (config.get("model_selection") or {}).get(KNN.name, {}).get("k", KnnSettings().k)
        if block["k"] != k:
            fail(f"algorithm.knn.k = {block['k']} differs from model_selection.knn.k = {k}; the KNN "
                 "selector is built once for all decisions: set k in model_selection.knn")


def _problems(data: Any, source: str) -> Iterator[str]:
    """Every problem of a parsed document in our layout; a top-level one ends the list."""

    def fail_at(where: str, message: str) -> None:
        raise ConfigError(f"{source}: {where}: {message}")

    try:
        if not isinstance(data, dict):
            fail_at("top level", "expected a mapping with `models`, `default_model` and `decisions`")
        body = {k: v for k, v in data.items() if k != "decisions"}
        try:
            RouterConfig.model_validate({**body, "decisions": []})
        except ValidationError as err:
            fail_at("top level", _describe_validation_error(err))
        catalog = [m["name"] for m in data["models"]]
        if len(set(catalog)) != len(catalog):
            dup = next(n for n in catalog if catalog.count(n) > 1)
            fail_at("models", f"model {dup!r} is listed twice in the catalog; keep one entry")
        if data["default_model"] not in catalog:
            fail_at("default_model", f"{data['default_model']!r} is not in the model catalog (`models`)")
        decisions = data.get("decisions") or []
        if not isinstance(decisions, list):
            fail_at("decisions", "must be a list of decisions")
    except ConfigError as err:
        yield str(err)
        return
    seen: set[str] = set()
    for index, raw in enumerate(decisions):
        try:
            _check_decision(raw, index, data, catalog, fail_at)
            if raw["name"] in seen:
                fail_at(f"decision {raw['name']!r}", "duplicate decision name; give every decision a unique name")
            seen.add(raw["name"])
        except ConfigError as err:
            yield str(err)


def _our_layout(data: Any, source: str) -> tuple[Any, str, list[str], list[str]]:
    """(document in our layout, layout name, notes, problems) for either layout."""
    from model_selector.core.reference_config import is_reference_layout, translate

    if not is_reference_layout(data):
        return data, "model-selector", [], []
    mapping = translate(data)
    return (mapping.data, mapping.layout, [f"{source}: {n}" for n in mapping.notes],
            [f"{source}: {p}" for p in mapping.problems])


def parse_config(data: Any, source: str = "<config>") -> RouterConfig:
    """Validate a parsed YAML document (ours or the reference's layout); raise ConfigError
    with one clear message."""
    data, layout, notes, problems = _our_layout(data, source)
    for note in notes:
        log.info("%s", note)
    problem = next(iter(problems), None) or next(_problems(data, source), None)
    if problem:
        raise ConfigError(problem)
    return RouterConfig.model_validate(data)


@dataclass
class ConfigReport:
    layout: str
    config: RouterConfig | None
    notes: list[str]
    problems: list[str]


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; pass --config with the path of your router.yaml") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None


def check_config(path: str | Path) -> ConfigReport:
    """Every note and problem of a configuration file, for `model-selector config check`."""
    path = Path(path)
    try:
        raw = _read_yaml(path)
    except ConfigError as err:
        return ConfigReport("unreadable", None, [], [str(err)])
    data, layout, notes, problems = _our_layout(raw, str(path))
    problems = problems + list(_problems(data, str(path)))
    config = None if problems else RouterConfig.model_validate(data)
    return ConfigReport(layout, config, notes, problems)


def load_config(path: str | Path) -> RouterConfig:
    path = Path(path)
    return parse_config(_read_yaml(path), str(path))

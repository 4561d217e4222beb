"""vLLM Semantic Router's configuration layouts, mapped onto ours.

Two layouts are read besides our own:

- the seed's: `decisions`, `default_model` and `model_selection.ml` at the top level;
- v0.3: `routing.decisions`, `providers.models`, `providers.defaults.default_model` and
  `global.router.model_selection.ml`.

Decisions keep the same schema (priority, rule tree, algorithm, modelRefs). The catalog
comes from `providers.models`, or, where there is none, from the models the decisions
name. A price is taken from `pricing` when one is there. Everything else is listed by
key, as mapped or as not supported, so that a user sees exactly what was ignored.
Nothing here is needed at serve time for our own layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model_selector.core.algorithms import KMEANS, KNN, MLP, SELECTOR_ALGORITHMS, SVM

REFERENCE_KEYS = ("routing", "providers", "global")
# Per-million-token output price keys seen in the reference's `pricing` blocks.
PRICE_KEYS = ("completion_per_1m", "output_per_1m", "completion", "output")
MODEL_REF_KEYS = ("model",)


@dataclass
class Mapping:
    layout: str
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was mapped or ignored, by key
    problems: list[str] = field(default_factory=list)  # what cannot be honoured


def is_reference_layout(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    if any(key in data for key in REFERENCE_KEYS):
        return True
    ml = data.get("model_selection")
    return isinstance(ml, dict) and "ml" in ml


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _price(entry: dict) -> float | None:
    pricing = entry.get("pricing")
    if isinstance(pricing, dict):
        for key in PRICE_KEYS:
            if isinstance(pricing.get(key), (int, float)):
                return float(pricing[key])
    return None


def _catalog(data: dict, decisions: list, mapping: Mapping) -> list[dict]:
    providers = _get(data, "providers", "models")
    if providers is None:
        providers = data.get("models")
    entries: list[dict] = []
    if isinstance(providers, dict):  # {name: {...}}
        entries = [{"name": name, **(props if isinstance(props, dict) else {})} for name, props in providers.items()]
    elif isinstance(providers, list):
        entries = [p if isinstance(p, dict) else {"name": str(p)} for p in providers]
    if not entries:
        named = []
        for decision in decisions:
            for ref in (decision.get("modelRefs") or []) if isinstance(decision, dict) else []:
                if isinstance(ref, dict) and ref.get("model") not in named:
                    named.append(ref.get("model"))
        entries = [{"name": name} for name in named if name]
        mapping.notes.append("no model list: the catalog is every model the decisions name")
    catalog = []
    for entry in entries:
        name = entry.get("name") or entry.get("model")
        if not name:
            mapping.problems.append(f"providers.models: an entry without `name` ({entry})")
            continue
        price = entry.get("price_per_million_output_tokens", _price(entry))
        if price is None:
            price = 0.0
            mapping.notes.append(f"model {name!r}: no output price (`pricing.completion_per_1m`); counted as free, "
                                 "so the cost trade-off never avoids it")
        ignored = sorted(set(entry) - {"name", "model", "pricing", "price_per_million_output_tokens"})
        if ignored:
            mapping.notes.append(f"model {name!r}: {', '.join(ignored)} not supported (endpoints belong in "
                                 "`gateway` and per-model `base_url`); ignored")
        catalog.append({"name": str(name), "price_per_million_output_tokens": float(price)})
    return catalog


def _decision(raw: Any, index: int, mapping: Mapping) -> Any:
    if not isinstance(raw, dict):
        return raw
    label = f"decision {raw.get('name', index)!r}"
    decision = {k: v for k, v in raw.items()
                if k in ("name", "description", "priority", "rules", "algorithm", "modelRefs", "cost_weight")}
    dropped = sorted(set(raw) - set(decision))
    if dropped:
        mapping.notes.append(f"{label}: {', '.join(dropped)} not supported; ignored")
    refs = []
    for ref in raw.get("modelRefs") or []:
        if isinstance(ref, dict):
            extra = sorted(set(ref) - set(MODEL_REF_KEYS))
            if extra:
                mapping.notes.append(f"{label}: modelRefs[].{', '.join(extra)} not supported; ignored")
            refs.append({"model": ref.get("model")})
        else:
            refs.append(ref)
    if "modelRefs" in raw:
        decision["modelRefs"] = refs
    return decision


def _selection(ml: Any, mapping: Mapping, where: str) -> dict:
    if not isinstance(ml, dict):
        return {}
    ours: dict[str, dict] = {}
    for algorithm, block in ml.items():
        if algorithm == "models_path":
            mapping.notes.append(f"{where}.models_path: pretrained selectors are imported once with "
                                 f"`model-selector import --from {block}`")
            continue
        if algorithm not in SELECTOR_ALGORITHMS or not isinstance(block, dict):
            mapping.notes.append(f"{where}.{algorithm}: no such selector here ({', '.join(SELECTOR_ALGORITHMS)}); "
                                 "ignored")
            continue
        settings: dict[str, Any] = {}
        for key, value in block.items():
            target = {(KNN.name, "k"): "k", (SVM.name, "gamma"): "gamma", (SVM.name, "C"): "C",
                      (KMEANS.name, "num_clusters"): "n_clusters", (KMEANS.name, "n_clusters"): "n_clusters"
                      }.get((algorithm, key))
            if target:
                settings[target] = value
            elif key == "pretrained_path":
                mapping.notes.append(f"{where}.{algorithm}.pretrained_path: import it with "
                                     f"`model-selector import --from {str(value).rsplit('/', 1)[0] or '.'}`")
            elif (algorithm, key) == (MLP.name, "device"):
                mapping.notes.append(f"{where}.mlp.device: the MLP runs inside router_heads, on the device of "
                                     "its config.pbtxt (build --device)")
            elif (algorithm, key) == (SVM.name, "kernel"):
                if str(value).lower() != "rbf":
                    mapping.problems.append(f"{where}.svm.kernel {value!r}: our SVM selector is RBF only")
            else:
                mapping.notes.append(f"{where}.{algorithm}.{key} not supported; ignored")
        ours[algorithm] = settings
    return ours


def translate(data: dict) -> Mapping:
    """Our layout for a reference configuration, with notes on every key not carried over."""
    v03 = any(key in data for key in REFERENCE_KEYS)
    mapping = Mapping("vLLM Semantic Router v0.3" if v03 else "vLLM Semantic Router (seed)", {})
    raw_decisions = _get(data, "routing", "decisions") if v03 else data.get("decisions")
    raw_decisions = raw_decisions if isinstance(raw_decisions, list) else []
    decisions = [_decision(raw, i, mapping) for i, raw in enumerate(raw_decisions)]
    ours: dict[str, Any] = {"models": _catalog(data, raw_decisions, mapping), "decisions": decisions}
    default = _get(data, "providers", "defaults", "default_model") or data.get("default_model")
    if default:
        ours["default_model"] = default
    else:
        mapping.problems.append("no default model (`providers.defaults.default_model` or `default_model`)")
    ml_where = "global.router.model_selection.ml" if v03 else "model_selection.ml"
    selection = _selection(_get(data, *ml_where.split(".")), mapping, ml_where)
    per_decision_k = {d["algorithm"][KNN.name]["k"] for d in decisions
                      if isinstance(_get(d, "algorithm", KNN.name, "k"), int)}
    if "k" not in selection.get(KNN.name, {}) and len(per_decision_k) == 1:
        selection.setdefault(KNN.name, {})["k"] = per_decision_k.pop()
        mapping.notes.append(f"model_selection.knn.k = {selection['knn']['k']}, from the decisions' algorithm.knn.k")
    if selection:
        ours["model_selection"] = selection
    for key in ("domain_threshold", "cost_weight", "gateway"):
        if key in data:
            ours[key] = data[key]
    handled = {"decisions", "default_model", "model_selection", "models", "domain_threshold", "cost_weight",
               "gateway", "routing", "providers", "global"}
    for key in sorted(set(data) - handled):
        mapping.notes.append(f"{key} not supported; ignored")
    if v03:
        for section, keys in (("routing", {"decisions"}), ("providers", {"models", "defaults"})):
            block = data.get(section)
            for key in sorted(set(block) - keys) if isinstance(block, dict) else []:
                mapping.notes.append(f"{section}.{key} not supported; ignored")
    mapping.data = ours
    return mapping

"""The federation benchmark's plans come from the verticals' recipes (benchmarks/federation_plans.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# loaded by path: with benchmarks/ on sys.path, its federation.py would shadow the federation package
_SPEC = importlib.util.spec_from_file_location(
    "federation_plans", Path(__file__).resolve().parents[1] / "benchmarks" / "federation_plans.py"
)
plans = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(plans)


@pytest.mark.parametrize("vertical", ["medical", "finance", "manufacturing"])
def test_a_plan_is_the_verticals_federated_recipe_plus_the_benchmarks_runs(vertical):
    from common.registry import get_task
    from federation.recipes import resolve

    plan = plans.plan_for(vertical)
    recipe = resolve(get_task(vertical), "federated")
    assert plan["recipe"] == recipe
    assert (plan["rounds"], plan["epochs"]) == (recipe.settings["rounds"], recipe.settings["local_epochs"])
    runs = plans.run_names(plan)
    seeds = plan["int8_seeds"]
    assert {"fedavg", "one_of_three_failing", *(f"int8_seed{s}" for s in seeds)} <= set(runs)
    assert {plans.dp_name(z) for z in plan["dp_noise"]} <= set(runs)
    # a recipe's site knobs are measured against the same run without them
    knobs = {k for k in plans.SITE_KNOBS if recipe.settings.get(k)}
    assert set(plan["site_knobs"]) == knobs and ("fedavg_plain" in runs) == bool(knobs)
    if knobs:
        assert all(runs["fedavg_plain"][k] is False for k in knobs)
    central = plans.central_names(plan)
    assert list(central)[0] == "centralized" and len(central) == len(seeds) + len(plans.long_seeds(plan))
